// Live data: list once, then follow the watch, Kubernetes-informer style. The watch is the
// one kubectl and client-go read (`nodepassports?watch=true&resourceVersion=N`: one JSON event
// a line), read with fetch() and a streaming reader so the bearer token goes along.
//
//  - Every event's object carries its metadata.resourceVersion (BOOKMARKs too): a watch
//    stream that ends or breaks is resumed at once from the last one, without listing again.
//  - If the registry cannot be reached, the feed is "disconnected": it retries with
//    exponential backoff (0.5 s .. 10 s, jittered) and, once back, lists again and watches
//    from the new list (after an outage the registry may be another instance).
//  - 410 Gone, or an ERROR event in the stream: list again, then watch from the new list.
//  - 401/403: wait for a token to be entered, then list again.
//  - 400/422 (e.g. a bad label selector): stop and report it; nothing to retry.
//  - No bytes for two bookmark intervals: the connection is assumed dead and dropped.

import { ApiError, Unreachable, apiURL, auth, getJSON, request } from './api.js';

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 10000];
const PAGE_SIZE = 1000;
export const RESOURCE = 'nodepassports';

class StreamBroken extends Error {
  constructor(message, lived) {
    super(message);
    this.lived = lived;
  }
}

/** The resource version an event brings the watcher to (BOOKMARKs carry one too). */
export const versionOf = (event) =>
  (event.object && event.object.metadata && event.object.metadata.resourceVersion) || '';

/**
 * Read a watch response to its end, calling onEvent({type, object}) for each line.
 * A line cut off by the end of the stream is dropped: the resume re-sends that event.
 */
export async function readWatch(response, onEvent, onBytes) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let rest = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      if (onBytes) onBytes();
      const lines = (rest + value).split('\n');
      rest = lines.pop();
      for (const line of lines) {
        if (!line.trim()) continue;
        let event;
        try {
          event = JSON.parse(line);
        } catch (err) {
          console.error('dashboard: a watch line is not JSON', err, line);
          continue;
        }
        onEvent(event);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

export class Feed {
  /**
   * params():        query parameters of the list and the watch ({labelSelector, fieldSelector})
   * prepare(signal): runs before each list (load config, look a node up)
   * onSnapshot(items, resourceVersion, response), onEvent(event), onState(state, info)
   * states: connecting | live | disconnected | unauthorized | invalid
   */
  constructor({ params, prepare, onSnapshot, onEvent, onState, bookmarkSeconds }) {
    this.params = params || (() => ({}));
    this.prepare = prepare || (async () => {});
    this.onSnapshot = onSnapshot;
    this.onEvent = onEvent;
    this.onState = onState;
    this.bookmarkSeconds = bookmarkSeconds || (() => 30);
    this.stopped = false;
    this.abort = new AbortController();
    this.resourceVersion = null;
    this.lostAt = null;
    this.listedAt = 0;
    this.wakeUp = null;
    this.state = null;
  }

  start() {
    this.run();
    return this;
  }

  stop() {
    this.stopped = true;
    this.abort.abort();
    this.wake();
  }

  /** Retry now (the "retry" button, the browser coming back online). */
  wake() {
    if (this.wakeUp) this.wakeUp();
  }

  setState(state, info = {}) {
    if (this.stopped) return;
    this.state = state;
    this.onState(state, info);
  }

  async run() {
    let relist = true;
    let attempt = 0;
    this.setState('connecting');
    while (!this.stopped) {
      try {
        if (relist) {
          await this.prepare(this.abort.signal);
          await this.list();
          relist = false;
        }
        const opened = Date.now();
        const outcome = await this.watch();
        attempt = 0;
        if (outcome === 'expired') relist = true;
        if (Date.now() - opened < 1000) await this.sleep(1000); // never a hot loop
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
          this.setState('unauthorized', { error: err });
          await new Promise((resolve) => {
            auth.changed().then(resolve);
            this.abort.signal.addEventListener('abort', resolve);
          });
          this.setState('connecting');
          relist = true;
          attempt = 0;
          continue;
        }
        if (err instanceof ApiError && (err.status === 400 || err.status === 422)) {
          this.setState('invalid', { error: err });
          return;
        }
        if (err instanceof ApiError && err.status === 410) {
          relist = true;
          if (Date.now() - this.listedAt < 1000) await this.sleep(1000);
          continue;
        }
        if (err instanceof StreamBroken) {
          // An open stream broke: resume from the last id at once (if the registry is
          // gone, that attempt fails as Unreachable and the backoff below starts).
          this.lostAt = this.lostAt || Date.now();
          if (err.lived < 1000) await this.sleep(1000);
          continue;
        }
        this.lostAt = this.lostAt || Date.now();
        relist = true;
        const base = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
        const delay = Math.round(base * (0.8 + Math.random() * 0.4));
        attempt += 1;
        this.setState('disconnected', { error: err, lostAt: this.lostAt, retryAt: Date.now() + delay });
        await this.sleep(delay);
      }
    }
  }

  sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const onOnline = () => done();
      function done() {
        clearTimeout(timer);
        window.removeEventListener('online', onOnline);
        resolve();
      }
      window.addEventListener('online', onOnline);
      this.wakeUp = done;
    }).finally(() => {
      this.wakeUp = null;
    });
  }

  async list() {
    const items = [];
    let first = null;
    let token;
    do {
      const page = await getJSON(
        apiURL(RESOURCE, { ...this.params(), limit: PAGE_SIZE, continue: token }),
        { signal: this.abort.signal },
      );
      first = first || page;
      items.push(...page.body.items);
      token = page.body.metadata.continue;
    } while (token && !this.stopped);
    if (this.stopped) return;
    this.resourceVersion = first.body.metadata.resourceVersion;
    this.listedAt = Date.now();
    this.onSnapshot(items, this.resourceVersion, first);
  }

  async watch() {
    const stream = new AbortController();
    const stopStream = () => stream.abort();
    this.abort.signal.addEventListener('abort', stopStream);
    const url = apiURL(RESOURCE, {
      ...this.params(),
      watch: 'true',
      resourceVersion: this.resourceVersion,
      allowWatchBookmarks: 'true',
    });
    let lastBytes = Date.now();
    let expired = false;
    let watchdog = null;
    let opened = 0;
    try {
      const response = await request(url, { signal: stream.signal });
      opened = Date.now();
      this.lostAt = null;
      this.setState('live', { resourceVersion: this.resourceVersion });
      const silence = () => this.bookmarkSeconds() * 2000 + 10000;
      watchdog = setInterval(() => {
        if (Date.now() - lastBytes > silence()) stream.abort();
      }, 1000);
      await readWatch(
        response,
        (event) => {
          if (this.stopped || expired) return;
          if (event.type === 'ERROR') {
            // Its object is a Status (410 Expired: this watcher fell behind the kept
            // history); the registry ends the stream after it.
            expired = true;
            return;
          }
          const version = versionOf(event);
          if (version) this.resourceVersion = version;
          if (event.type === 'BOOKMARK') return;
          try {
            this.onEvent(event);
          } catch (err) {
            console.error('dashboard: cannot apply a watch event', err, event);
          }
        },
        () => {
          lastBytes = Date.now();
        },
      );
      return expired ? 'expired' : 'ended';
    } catch (err) {
      if (this.stopped || err instanceof ApiError || err instanceof Unreachable) throw err;
      if (expired) return 'expired';
      const message = err && err.message ? err.message : String(err);
      throw new StreamBroken(message, Date.now() - opened);
    } finally {
      clearInterval(watchdog);
      this.abort.signal.removeEventListener('abort', stopStream);
      stream.abort();
    }
  }
}
