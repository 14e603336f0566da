// The dashboard: a live node table (#/?kind=&labelSelector=&healthy=&sort=) and a node page
// (#/node/NAME). Data comes from the registry's API through Feed (list, then watch).

import { ApiError, apiURL, auth, getJSON, request, uiURL } from './api.js';
import { h, ago, clock, clockTime, duration, fullTime } from './dom.js';
import { Feed, readEvents } from './feed.js';
import { toYAML } from './yaml.js';

const HEALTH_STATES = ['ALIVE', 'NOT_READY', 'OFFLINE'];
const HEALTH_RANK = { OFFLINE: 0, NOT_READY: 1, ALIVE: 2 };
const $ = (selector) => document.querySelector(selector);

let config = null;
let view = null;
let lastListHash = '#/';

async function loadConfig(signal) {
  if (config) return;
  const { body } = await getJSON(uiURL('config.json'), { signal });
  config = body;
  $('#version').textContent = `registry ${config.version}`;
}

const cfg = (key, fallback) => (config && config[key] !== undefined ? config[key] : fallback);
const nameOf = (entry) => entry.passport.metadata.name;
const nodeHash = (name) => `#/node/${encodeURIComponent(name)}`;
const readyOf = (entry) =>
  ((entry.passport.status || {}).conditions || []).find((c) => c.type === 'Ready') || null;

// -- connection state: top bar, banner, token prompt ------------------------------------

const connection = {
  state: 'connecting',
  info: {},
  set(state, info) {
    this.state = state;
    this.info = info || {};
    if (state === 'unauthorized') openLogin(this.info.error);
    renderConnection();
  },
};

const CONNECTION_LABELS = {
  connecting: 'connecting…',
  live: 'live',
  disconnected: 'disconnected',
  unauthorized: 'token required',
  invalid: 'stopped',
};

function renderConnection() {
  const { state, info } = connection;
  const badge = $('#conn');
  badge.className = `conn conn-${state}`;
  badge.textContent = CONNECTION_LABELS[state] || state;
  badge.title =
    state === 'live'
      ? `Following the registry's watch (Server-Sent Events) from resourceVersion ${info.resourceVersion}`
      : (info.error && info.error.message) || '';
  $('#signout').hidden = !auth.token();
  const banner = $('#banner');
  const action = $('#banner-action');
  if (state === 'disconnected') {
    const retryIn = Math.max(0, Math.ceil((info.retryAt - Date.now()) / 1000));
    const stale = duration((Date.now() - info.lostAt) / 1000);
    banner.className = 'banner banner-error';
    $('#banner-title').textContent = 'Disconnected — retrying';
    $('#banner-text').textContent =
      `${retryIn ? `in ${retryIn} s` : 'now'}. The data below is ${stale} stale ` +
      `(last live at ${clockTime(info.lostAt)}). ${problem(info.error)}`;
    action.textContent = 'Retry now';
    action.onclick = () => view && view.feed && view.feed.wake();
    banner.hidden = false;
  } else if (state === 'unauthorized' && !$('#login').open) {
    banner.className = 'banner banner-warn';
    $('#banner-title').textContent = 'Token required.';
    $('#banner-text').textContent = 'This registry only answers requests with a bearer token.';
    action.textContent = 'Enter token';
    action.onclick = () => openLogin(info.error);
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

function problem(error) {
  if (error instanceof ApiError) return `The registry answered ${error.status}: ${error.message}`;
  return `The registry does not answer${error && error.message ? ` (${error.message})` : ''}.`;
}

function openLogin(error) {
  const message = $('#login-error');
  const hadToken = Boolean(auth.token());
  if (error && error.status === 401 && hadToken) {
    auth.clear();
    message.textContent = `The registry refused the token: ${error.message}`;
  } else if (error && error.status === 403) {
    message.textContent = `This token may not read the registry: ${error.message}`;
  } else {
    message.textContent = '';
  }
  message.hidden = !message.textContent;
  const dialog = $('#login');
  if (!dialog.open) dialog.showModal();
  $('#login-token').focus();
}

function setupLogin() {
  $('#login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('#login-token');
    const token = input.value.trim();
    if (!token) return;
    input.value = '';
    $('#login').close();
    auth.set(token);
    renderConnection();
  });
  $('#login').addEventListener('close', renderConnection);
  $('#signout').addEventListener('click', () => {
    auth.clear();
    restart();
  });
}

// -- shared cells ------------------------------------------------------------------------

function healthBadge(entry) {
  const state = entry.healthState;
  const ready = readyOf(entry);
  const title = [
    `${state}: as recorded by the registry's lifecycle controller` +
      ` (passes every ${cfg('controllerPeriodSeconds', 5)} s).`,
    ready && ready.message ? `Ready=${ready.status} (${ready.reason}): ${ready.message}` : '',
  ].join(' ');
  return h(
    'span',
    { class: 'health-cell' },
    h('span', { class: `health health-${state}`, title }, state),
    state === 'ALIVE' && !entry.schedulable
      ? h(
          'span',
          {
            class: 'chip chip-warn',
            title: 'Heartbeating, but not in phase Running or reporting Ready=False: only_healthy skips it',
          },
          'unschedulable',
        )
      : null,
  );
}

/** A "last heartbeat" element; tick() keeps its text current. */
function heartbeat(tag, entry, receivedAt) {
  const el = h(tag, {
    class: 'age',
    dataset: { seen: String(Date.parse(entry.lastSeen)), health: entry.healthState },
  });
  const notReady = cfg('notReadyAfterSeconds', 20);
  const ttl = cfg('ttlSeconds', 30);
  const grace = cfg('gracePeriodSeconds', 60);
  const seen = Date.parse(entry.lastSeen);
  const lines = [
    `lastSeen ${fullTime(seen)}, as the registry reported it at ${clockTime(receivedAt)}.`,
    'Heartbeats are not streamed: the registry reports a silent node by changing its health ' +
      `(NOT_READY after ${notReady} s, OFFLINE after ${ttl} s, removed ${grace} s later).`,
  ];
  if (entry.healthState === 'ALIVE') {
    lines.push(
      `ALIVE: the registry had a heartbeat from it within the last ${notReady} s ` +
        `(its controller checks every ${cfg('controllerPeriodSeconds', 5)} s).`,
    );
  } else if (entry.healthState === 'OFFLINE') {
    lines.push(`Removed at about ${clockTime(seen + (ttl + grace) * 1000)} unless it heartbeats.`);
  }
  el.title = lines.join('\n');
  updateAge(el);
  return el;
}

function updateAge(el) {
  const seen = Number(el.dataset.seen);
  const limit = cfg('notReadyAfterSeconds', 20);
  const text =
    el.dataset.health === 'ALIVE' && (clock.now() - seen) / 1000 >= limit
      ? `< ${duration(limit)} ago`
      : ago(seen);
  if (el.textContent !== text) el.textContent = text;
}

function tasks(entry) {
  const max = entry.passport.spec.maxConcurrentTasks;
  const current = (entry.passport.status || {}).currentTasks || 0;
  return `${current} / ${max === null || max === undefined ? '∞' : max}`;
}

function endpoint(spec, full) {
  const ep = spec.endpoint;
  if (!ep) return h('span', { class: 'muted' }, '—');
  return h(
    'span',
    {
      class: full ? null : 'ellipsis',
      title: `${ep.protocol} ${ep.address}${ep.queue ? `, queue ${ep.queue}` : ''}`,
    },
    h('span', { class: 'chip chip-proto' }, ep.protocol),
    ' ',
    ep.address,
    full && ep.queue ? h('span', { class: 'muted' }, ` · queue ${ep.queue}`) : null,
  );
}

/** At most `max` chips, then "+N" with the rest in its tooltip. */
function chips(texts, cls, max = 3, titles = []) {
  const shown = texts.slice(0, max).map((text, i) => h('span', { class: `chip ${cls}`, title: titles[i] }, text));
  if (texts.length > max) {
    const rest = texts.slice(max);
    shown.push(h('span', { class: 'chip chip-more', title: rest.join('\n') }, `+${rest.length}`));
  }
  return shown;
}

// -- the node table ------------------------------------------------------------------------

const COLUMNS = [
  ['name', 'Name'],
  ['kind', 'Kind'],
  ['health', 'Health'],
  ['phase', 'Phase'],
  [null, 'Capabilities'],
  [null, 'Labels'],
  [null, 'Endpoint'],
  ['seen', 'Last heartbeat'],
  ['tasks', 'Tasks'],
];
const SORT_KEYS = {
  name: (e) => nameOf(e),
  kind: (e) => `${e.nodeKind}\u0000${nameOf(e)}`,
  health: (e) => `${HEALTH_RANK[e.healthState]}\u0000${nameOf(e)}`,
  phase: (e) => `${(e.passport.status || {}).phase}\u0000${nameOf(e)}`,
  seen: (e) => Date.parse(e.lastSeen),
  tasks: (e) => (e.passport.status || {}).currentTasks || 0,
};
const KINDS = ['agent', 'orchestrator', 'monitoring', 'tool', 'storage', 'gateway', 'external'];

function listQuery(params) {
  const sort = params.get('sort') || 'name';
  return {
    kind: params.get('kind') || '',
    labelSelector: params.get('labelSelector') || '',
    healthy: params.get('healthy') === 'true' ? 'true' : '',
    sort: SORT_KEYS[sort.replace(/^-/, '')] ? sort : 'name',
  };
}

function listHash(query) {
  const params = new URLSearchParams();
  for (const key of ['kind', 'labelSelector', 'healthy', 'sort']) {
    if (query[key] && !(key === 'sort' && query[key] === 'name')) params.set(key, query[key]);
  }
  const text = params.toString();
  return text ? `#/?${text}` : '#/';
}

class ListView {
  constructor(params) {
    this.query = listQuery(params);
    this.nodes = new Map();
    this.loaded = false;
    this.error = null;
    this.scheduled = false;
    this.build();
    this.syncControls();
    this.startFeed();
    this.render();
  }

  build() {
    this.kindSelect = h(
      'select',
      { id: 'kind', onchange: () => this.navigate({ kind: this.kindSelect.value }) },
      h('option', { value: '' }, 'all kinds'),
      KINDS.map((kind) => h('option', { value: kind }, kind)),
    );
    this.selectorInput = h('input', {
      id: 'selector',
      type: 'text',
      placeholder: 'zone=eu-west-1,capability.python=true',
      autocomplete: 'off',
      spellcheck: 'false',
      title: 'A Kubernetes label selector (kubectl syntax), sent to the registry as labelSelector',
    });
    this.healthyBox = h('input', {
      id: 'healthy',
      type: 'checkbox',
      onchange: () => this.navigate({ healthy: this.healthyBox.checked ? 'true' : '' }),
    });
    this.selectorError = h('div', { id: 'selector-error', class: 'error', role: 'alert', hidden: true });
    const form = h(
      'form',
      {
        class: 'filters',
        onsubmit: (event) => {
          event.preventDefault();
          this.navigate({ labelSelector: this.selectorInput.value.trim() });
        },
      },
      h('label', {}, 'Kind ', this.kindSelect),
      h('label', { class: 'grow' }, 'Label selector ', this.selectorInput),
      h('button', { type: 'submit' }, 'Apply'),
      h(
        'label',
        {
          title: 'What find_nodes(only_healthy=True) returns: ALIVE, phase Running, not Ready=False',
        },
        this.healthyBox,
        ' only healthy',
      ),
    );
    this.summary = h('section', { class: 'summary', id: 'summary' });
    this.headRow = h('tr');
    this.tbody = h('tbody');
    this.empty = h('p', { class: 'empty', id: 'empty' });
    this.el = h(
      'div',
      { class: 'list-view' },
      this.summary,
      form,
      this.selectorError,
      h('div', { class: 'table-wrap' }, h('table', { class: 'nodes', id: 'nodes' }, h('thead', {}, this.headRow), this.tbody)),
      this.empty,
    );
  }

  navigate(patch) {
    location.hash = listHash({ ...this.query, ...patch });
  }

  update(params) {
    const next = listQuery(params);
    const refetch = next.kind !== this.query.kind || next.labelSelector !== this.query.labelSelector;
    this.query = next;
    this.syncControls();
    if (refetch) this.startFeed();
    this.schedule();
  }

  syncControls() {
    this.kindSelect.value = this.query.kind;
    this.selectorInput.value = this.query.labelSelector;
    this.healthyBox.checked = this.query.healthy === 'true';
    const sort = this.query.sort.replace(/^-/, '');
    const descending = this.query.sort.startsWith('-');
    this.headRow.replaceChildren(
      ...COLUMNS.map(([key, label]) => {
        if (!key) return h('th', {}, label);
        const active = key === sort;
        const title =
          key === 'seen'
            ? 'The lastSeen the registry last reported. Heartbeats produce no watch events, so ' +
              `an ALIVE node shows "< ${cfg('notReadyAfterSeconds', 20)} s ago" once that is older.`
            : `Sort by ${label.toLowerCase()}`;
        return h(
          'th',
          {
            class: `sortable${active ? ` sorted${descending ? ' desc' : ''}` : ''}${key === 'tasks' ? ' num' : ''}`,
            title,
            onclick: () => this.navigate({ sort: active && !descending ? `-${key}` : key }),
          },
          label,
        );
      }),
    );
  }

  startFeed() {
    if (this.feed) this.feed.stop();
    this.nodes = new Map();
    this.loaded = false;
    this.error = null;
    const { kind, labelSelector } = this.query;
    this.feed = new Feed({
      params: () => ({ kind, labelSelector }),
      prepare: loadConfig,
      bookmarkSeconds: () => cfg('bookmarkIntervalSeconds', 30),
      onSnapshot: (items, resourceVersion, response) => {
        clock.calibrate(response.date, response.sentAt, response.receivedAt);
        const now = clock.now();
        this.nodes = new Map(items.map((entry) => [nameOf(entry), { entry, at: now }]));
        this.loaded = true;
        this.error = null;
        this.schedule();
      },
      onEvent: (event) => {
        const entry = event.object;
        if (event.type === 'DELETED') this.nodes.delete(nameOf(entry));
        else this.nodes.set(nameOf(entry), { entry, at: clock.now() });
        this.schedule();
      },
      onState: (state, info) => {
        this.waiting = state === 'unauthorized';
        if (!this.loaded) this.schedule();
        if (state === 'invalid') {
          this.error = info.error;
          this.nodes = new Map();
          this.loaded = true;
          this.schedule();
        }
        connection.set(state, info);
      },
    }).start();
  }

  destroy() {
    if (this.feed) this.feed.stop();
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.render();
    });
  }

  render() {
    const all = [...this.nodes.values()];
    this.renderSummary(all.map((n) => n.entry));
    const key = SORT_KEYS[this.query.sort.replace(/^-/, '')];
    const direction = this.query.sort.startsWith('-') ? -1 : 1;
    const shown = all
      .filter((n) => this.query.healthy !== 'true' || n.entry.schedulable)
      .sort((a, b) => {
        const x = key(a.entry);
        const y = key(b.entry);
        return (x < y ? -1 : x > y ? 1 : 0) * direction;
      });
    this.tbody.replaceChildren(...shown.map((n) => this.row(n.entry, n.at)));

    this.selectorError.hidden = !this.error;
    this.selectorError.textContent = this.error ? this.error.message : '';
    const filtered = this.query.kind || this.query.labelSelector;
    let empty = '';
    if (!this.loaded) empty = this.waiting ? 'Waiting for a token…' : 'Loading…';
    else if (this.error) empty = 'Nothing to show: the registry refused the filter (see above).';
    else if (!all.length) empty = filtered ? 'No node matches these filters.' : 'No nodes are registered.';
    else if (!shown.length) empty = 'No healthy node here: untick “only healthy” to see the others.';
    this.empty.textContent = empty;
    this.empty.hidden = !empty;
  }

  renderSummary(entries) {
    const health = Object.fromEntries(HEALTH_STATES.map((s) => [s, 0]));
    const kinds = new Map();
    let schedulable = 0;
    for (const entry of entries) {
      health[entry.healthState] = (health[entry.healthState] || 0) + 1;
      kinds.set(entry.nodeKind, (kinds.get(entry.nodeKind) || 0) + 1);
      if (entry.schedulable) schedulable += 1;
    }
    const counter = (label, value, cls, title) =>
      h(
        'div',
        { class: `counter ${cls}`, dataset: { counter: label }, title },
        h('span', { class: 'value' }, value),
        h('span', { class: 'label' }, label),
      );
    const filtered = this.query.kind || this.query.labelSelector;
    this.summary.replaceChildren(
      h(
        'div',
        { class: 'counters' },
        counter('nodes', entries.length, 'total', filtered ? 'Nodes matching the kind and selector' : 'All registered nodes'),
        HEALTH_STATES.map((s) => counter(s, health[s], `counter-${s}`, `Nodes recorded ${s}`)),
        counter('schedulable', schedulable, 'schedulable', 'What find_nodes(only_healthy=True) returns'),
      ),
      h(
        'div',
        { class: 'kinds' },
        h('span', { class: 'muted' }, 'By kind'),
        [...kinds.entries()]
          .sort()
          .map(([kind, count]) =>
            h(
              'button',
              {
                type: 'button',
                class: `chip chip-kind${this.query.kind === kind ? ' active' : ''}`,
                dataset: { kind },
                title: this.query.kind === kind ? 'Show all kinds' : `Show only ${kind} nodes`,
                onclick: () => this.navigate({ kind: this.query.kind === kind ? '' : kind }),
              },
              `${kind} `,
              h('b', {}, count),
            ),
          ),
        kinds.size ? null : h('span', { class: 'muted' }, '—'),
      ),
    );
  }

  row(entry, receivedAt) {
    const passport = entry.passport;
    const spec = passport.spec || {};
    const name = nameOf(entry);
    return h(
      'tr',
      { dataset: { node: name, health: entry.healthState } },
      h('td', { class: 'name' }, h('a', { href: nodeHash(name) }, name)),
      h('td', {}, entry.nodeKind),
      h('td', {}, healthBadge(entry)),
      h('td', {}, (passport.status || {}).phase || '—'),
      h(
        'td',
        { class: 'chips' },
        chips(
          (spec.capabilities || []).map((c) => c.name),
          'chip-cap',
          3,
          (spec.capabilities || []).map((c) => (c.version ? `${c.name} ${c.version}` : c.name)),
        ),
      ),
      h(
        'td',
        { class: 'chips' },
        chips(
          Object.entries(passport.metadata.labels || {}).map(([k, v]) => `${k}=${v}`),
          'chip-label',
        ),
      ),
      h('td', { class: 'endpoint' }, endpoint(spec, false)),
      heartbeat('td', entry, receivedAt),
      h('td', { class: 'num' }, tasks(entry)),
    );
  }
}

// -- the node page -------------------------------------------------------------------------

function healthDetail(event, ready) {
  if (event.type !== 'HEALTH_CHANGED') return '';
  if (event.object.healthState === 'ALIVE') return 'heartbeats resumed';
  return ready ? `${ready.reason}: ${ready.message}` : '';
}

class NodeView {
  constructor(name) {
    this.name = name;
    this.entry = null;
    this.receivedAt = 0;
    this.removed = null; // {at: ms or null} once it left the registry
    this.kind = undefined;
    this.events = new Map(); // resourceVersion -> row
    this.history = 'loading';
    this.openedAt = clock.now();
    this.build();
    this.startFeed();
    this.render();
  }

  build() {
    const table = (id, labels, body) =>
      h('table', { id, class: 'grid' }, h('thead', {}, h('tr', {}, labels.map((l) => h('th', {}, l)))), body);
    this.header = h('div', { class: 'node-header' });
    this.notice = h('div', { class: 'notice', id: 'node-notice', hidden: true });
    this.facts = h('dl', { class: 'facts', id: 'facts' });
    this.conditions = h('tbody');
    this.eventRows = h('tbody');
    this.historyNote = h('p', { class: 'muted small', id: 'history-note' });
    this.yaml = h('pre', { class: 'yaml', id: 'passport-yaml' });
    this.el = h(
      'div',
      { class: 'node-view' },
      h('a', { class: 'back', href: lastListHash }, '← all nodes'),
      this.header,
      this.notice,
      h(
        'div',
        { class: 'columns' },
        h(
          'div',
          {},
          h('section', {}, h('h2', {}, 'Registry entry'), this.facts),
          h(
            'section',
            {},
            h('h2', {}, 'Conditions'),
            table('conditions', ['Type', 'Status', 'Reason', 'Message', 'Last heartbeat', 'Last transition'], this.conditions),
          ),
          h(
            'section',
            {},
            h('h2', {}, 'Recent events'),
            this.historyNote,
            table('events', ['Time', 'Event', 'Health', 'Phase', 'Version', 'Detail'], this.eventRows),
          ),
        ),
        h(
          'section',
          { class: 'passport' },
          h(
            'h2',
            {},
            'Passport ',
            h(
              'span',
              { class: 'muted small' },
              "as stored; while the node is silent its status shows the registry's verdict",
            ),
          ),
          this.yaml,
        ),
      ),
    );
  }

  startFeed() {
    this.feed = new Feed({
      params: () => (this.kind ? { kind: this.kind } : {}),
      prepare: async (signal) => {
        await loadConfig(signal);
        try {
          const { body } = await getJSON(apiURL(`nodes/${encodeURIComponent(this.name)}`), { signal });
          this.kind = body.nodeKind;
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 404)) throw err;
          this.kind = null; // not registered (yet): watch every kind for it
        }
      },
      bookmarkSeconds: () => cfg('bookmarkIntervalSeconds', 30),
      onSnapshot: (items, resourceVersion, response) => {
        clock.calibrate(response.date, response.sentAt, response.receivedAt);
        const entry = items.find((e) => nameOf(e) === this.name);
        if (entry) {
          this.entry = entry;
          this.receivedAt = clock.now();
          this.removed = null;
        } else if (this.entry && !this.removed) {
          this.removed = { at: null };
        }
        if (this.history === 'loading') this.replay(Number(resourceVersion));
        this.render();
      },
      onEvent: (event) => {
        if (nameOf(event.object) !== this.name) return;
        this.addEvent(event, false);
        if (event.type === 'DELETED') {
          this.removed = { at: clock.now() };
        } else {
          this.entry = event.object;
          this.receivedAt = clock.now();
          this.removed = null;
        }
        this.render();
      },
      onState: (state, info) => connection.set(state, info),
    }).start();
  }

  /** The node's past from the registry's watch history: watch from 0 up to the list. */
  async replay(until) {
    this.history = 'replaying';
    this.replayAbort = new AbortController();
    const url = apiURL('nodes', {
      watch: 'true',
      resourceVersion: '0',
      kind: this.kind || undefined,
      allowWatchBookmarks: 'false',
      timeoutSeconds: '2',
    });
    let caughtUp = false;
    let compacted = false;
    try {
      const response = await request(url, {
        headers: { Accept: 'text/event-stream' },
        signal: this.replayAbort.signal,
      });
      await readEvents(response, (sse) => {
        if (sse.type === 'ERROR') {
          compacted = true;
          return;
        }
        const event = JSON.parse(sse.data);
        if (nameOf(event.object) === this.name) this.addEvent(event, true);
        if (Number(sse.id) >= until) {
          caughtUp = true;
          this.replayAbort.abort();
        }
      });
      this.history = compacted ? 'compacted' : 'full';
    } catch (err) {
      if (this.destroyed) return;
      if (caughtUp) this.history = 'full';
      else if (err instanceof ApiError && err.status === 410) this.history = 'compacted';
      else this.history = 'unavailable';
    }
    this.render();
  }

  addEvent(event, replayed) {
    const entry = event.object;
    const version = Number(entry.resourceVersion);
    if (this.events.has(version)) return;
    const ready = readyOf(entry);
    let at = null;
    let how = 'replayed from the registry history: the watch carries no time for this event';
    let approximate = false;
    if (!replayed) {
      at = clock.now();
      how = 'received live';
    } else if (event.type === 'HEALTH_CHANGED' && entry.healthState === 'NOT_READY' && ready) {
      if (ready.lastTransitionTime) {
        at = Date.parse(ready.lastTransitionTime);
        how = "the Ready condition's lastTransitionTime";
      }
    } else if (event.type === 'HEALTH_CHANGED' && entry.healthState === 'OFFLINE') {
      const expiry = Date.parse(entry.lastSeen) + cfg('ttlSeconds', 30) * 1000;
      if (expiry <= clock.now()) {
        at = expiry;
        approximate = true;
        how = 'lease expiry: last heartbeat + TTL (the controller records it within one pass)';
      }
    } else if (event.type === 'ADDED') {
      at = Date.parse(entry.registeredAt);
      how = 'registeredAt';
    }
    this.events.set(version, {
      version,
      type: event.type,
      health: entry.healthState,
      previous: event.previousHealth || null,
      phase: (entry.passport.status || {}).phase || '',
      detail: healthDetail(event, ready),
      at,
      approximate,
      how,
    });
  }

  destroy() {
    this.destroyed = true;
    if (this.feed) this.feed.stop();
    if (this.replayAbort) this.replayAbort.abort();
  }

  render() {
    const entry = this.entry;
    this.header.replaceChildren(
      h('h1', {}, this.name),
      entry ? healthBadge(entry) : null,
      entry ? h('span', { class: 'chip chip-kind' }, entry.nodeKind) : null,
    );
    document.title = `${this.name} · Node Registry`;
    let notice = '';
    if (this.removed) {
      notice =
        `This node was removed from the registry${this.removed.at ? ` at ${clockTime(this.removed.at)}` : ''}` +
        '; what follows is what was last known of it.';
    } else if (!entry && this.history !== 'loading') {
      notice = `No node called ${this.name} is registered; this page will show it when it registers.`;
    }
    this.notice.textContent = notice;
    this.notice.hidden = !notice;
    this.renderFacts(entry);
    this.renderConditions(entry);
    this.renderEvents();
    const yaml = entry ? toYAML(entry.passport) : '';
    if (this.yaml.textContent !== yaml) this.yaml.textContent = yaml;
  }

  renderFacts(entry) {
    if (!entry) {
      this.facts.replaceChildren();
      return;
    }
    const status = entry.passport.status || {};
    const registered = Date.parse(entry.registeredAt);
    const pair = (label, ...value) => [h('dt', {}, label), h('dd', {}, ...value)];
    this.facts.replaceChildren(
      ...pair('Kind', entry.nodeKind),
      ...pair('Phase', status.phase || '—'),
      ...pair('Schedulable', entry.schedulable ? 'yes' : 'no'),
      ...pair('Last heartbeat', heartbeat('span', entry, this.receivedAt)),
      ...pair('Registered', h('span', { title: fullTime(registered) }, clockTime(registered))),
      ...pair('Tasks', tasks(entry)),
      ...pair('Endpoint', endpoint(entry.passport.spec || {}, true)),
      ...pair('Node ID', h('code', {}, entry.nodeId)),
      ...pair('Resource version', entry.resourceVersion),
    );
  }

  renderConditions(entry) {
    const conditions = entry ? (entry.passport.status || {}).conditions || [] : [];
    const time = (value) =>
      value ? h('span', { title: value }, clockTime(Date.parse(value))) : h('span', { class: 'muted' }, '—');
    this.conditions.replaceChildren(
      ...conditions.map((c) =>
        h(
          'tr',
          { dataset: { condition: c.type } },
          h('td', {}, c.type),
          h('td', {}, h('span', { class: `cond cond-${c.status}${c.type === 'Ready' ? ' cond-ready' : ''}` }, c.status)),
          h('td', {}, c.reason || ''),
          h('td', { class: 'message' }, c.message || ''),
          h('td', {}, time(c.lastHeartbeatTime)),
          h('td', {}, time(c.lastTransitionTime)),
        ),
      ),
    );
    if (!conditions.length) {
      this.conditions.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No conditions recorded yet.')));
    }
  }

  renderEvents() {
    const since = clockTime(this.openedAt);
    const notes = {
      loading: 'Loading…',
      replaying: "Replaying the registry's watch history…",
      full: `Replayed from the registry's watch history (resourceVersion 0 onwards), then live since ${since}.`,
      compacted:
        "The registry's watch history no longer reaches back that far: showing the events " +
        `seen since this page opened (${since}).`,
      unavailable: `The watch history could not be read: showing the events seen since ${since}.`,
    };
    this.historyNote.textContent = notes[this.history];
    const rows = [...this.events.values()].sort((a, b) => b.version - a.version).slice(0, 100);
    this.eventRows.replaceChildren(
      ...rows.map((e) =>
        h(
          'tr',
          { dataset: { event: e.type } },
          h('td', { title: e.how }, e.at === null ? 'earlier' : `${e.approximate ? '≈ ' : ''}${clockTime(e.at)}`),
          h('td', {}, h('span', { class: `event event-${e.type}` }, e.type)),
          h(
            'td',
            { class: 'transition' },
            e.previous && e.previous !== e.health
              ? [h('span', { class: `health health-${e.previous}` }, e.previous), ' → ']
              : null,
            h('span', { class: `health health-${e.health}` }, e.health),
          ),
          h('td', {}, e.phase),
          h('td', { class: 'num' }, e.version),
          h('td', { class: 'message' }, e.detail),
        ),
      ),
    );
    if (!rows.length && this.history !== 'loading' && this.history !== 'replaying') {
      this.eventRows.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No events yet.')));
    }
  }
}

// -- routing and the clock -------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const q = raw.indexOf('?');
  return {
    path: q < 0 ? raw : raw.slice(0, q),
    params: new URLSearchParams(q < 0 ? '' : raw.slice(q + 1)),
  };
}

function show(next) {
  if (view) view.destroy();
  view = next;
  $('#view').replaceChildren(next.el);
}

function route() {
  const { path, params } = parseHash();
  const match = path.match(/^\/node\/([^/]+)$/);
  if (match) {
    const name = decodeURIComponent(match[1]);
    if (!(view instanceof NodeView && view.name === name)) show(new NodeView(name));
    return;
  }
  lastListHash = location.hash || '#/';
  document.title = 'Nodes · Node Registry';
  if (view instanceof ListView) view.update(params);
  else show(new ListView(params));
}

function restart() {
  if (view) view.destroy();
  view = null;
  route();
}

function tick() {
  for (const el of document.querySelectorAll('[data-seen]')) updateAge(el);
  renderConnection();
}

setupLogin();
window.addEventListener('hashchange', route);
document.addEventListener('visibilitychange', () => {
  if (!document.hidden && view && view.feed) view.feed.wake();
});
setInterval(tick, 1000);
route();
