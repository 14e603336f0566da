// The dashboard: a live node table (#/?kind=&labelSelector=&healthy=&sort=) and a node page
// (#/node/NAME). Data comes from the registry's Kubernetes API through Feed (list, then
// watch NodePassport objects: top-level metadata/spec/status, the registry's view in status).

import { ApiError, apiURL, auth, getJSON, request, uiURL } from './api.js';
import { h, ago, clock, clockTime, duration, fullTime } from './dom.js';
import { Feed, RESOURCE, readWatch, versionOf } from './feed.js';
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
const nodeHash = (name) => `#/node/${encodeURIComponent(name)}`;

// A NodePassport object: the passport as the node sent it, the registry's view in status.
const nameOf = (node) => node.metadata.name;
const kindOf = (node) => node.metadata.nodeType;
const specOf = (node) => node.spec || {};
const statusOf = (node) => node.status || {};
const healthOf = (node) => statusOf(node).healthState;
const seenOf = (node) => Date.parse(statusOf(node).lastSeen);
const versionOfNode = (node) => Number(node.metadata.resourceVersion);
const readyOf = (node) => (statusOf(node).conditions || []).find((c) => c.type === 'Ready') || null;
/** The verifier's view (#12): absent until a verifier recorded results for the node. */
const verificationOf = (node) => statusOf(node).verification || null;
/** Trusted unless a claim the node still makes has Failed (the registry's Trusted condition). */
const trustedOf = (node) => {
  const verification = verificationOf(node);
  return verification ? verification.trusted !== false : true;
};

/** A field selector term (Kubernetes escapes `\`, `,` and `=` in values). */
const fieldTerm = (field, value) => `${field}=${String(value).replace(/[\\,=]/g, (c) => `\\${c}`)}`;

/** The object split as the page shows it: the node's passport, and what the registry added. */
function splitObject(node) {
  const owned = cfg('registryFields', { metadata: [], status: [] });
  const passport = {};
  const registry = {};
  for (const [key, value] of Object.entries(node)) {
    const mine = owned[key];
    if (!mine || !value || typeof value !== 'object') {
      passport[key] = value;
      continue;
    }
    passport[key] = {};
    for (const [field, item] of Object.entries(value)) {
      if (!mine.includes(field)) passport[key][field] = item;
      else (registry[key] = registry[key] || {})[field] = item;
    }
  }
  return { passport, registry };
}

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
      ? `Following the registry's watch of ${RESOURCE} from resourceVersion ${info.resourceVersion}`
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

function healthBadge(node) {
  const state = healthOf(node);
  const ready = readyOf(node);
  const title = [
    `${state}: as recorded by the registry's lifecycle controller` +
      ` (passes every ${cfg('controllerPeriodSeconds', 5)} s).`,
    ready && ready.message ? `Ready=${ready.status} (${ready.reason}): ${ready.message}` : '',
  ].join(' ');
  return h(
    'span',
    { class: 'health-cell' },
    h('span', { class: `health health-${state}`, title }, state),
    state === 'ALIVE' && !statusOf(node).schedulable
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
function heartbeat(tag, node, receivedAt) {
  const seen = seenOf(node);
  const health = healthOf(node);
  const el = h(tag, { class: 'age', dataset: { seen: String(seen), health } });
  const notReady = cfg('notReadyAfterSeconds', 20);
  const ttl = cfg('ttlSeconds', 30);
  const grace = cfg('gracePeriodSeconds', 60);
  const lines = [
    `status.lastSeen ${fullTime(seen)}, as the registry reported it at ${clockTime(receivedAt)}.`,
    'Heartbeats are not streamed: the registry reports a silent node by changing its health ' +
      `(NOT_READY after ${notReady} s, OFFLINE after ${ttl} s, removed ${grace} s later).`,
  ];
  if (health === 'ALIVE') {
    lines.push(
      `ALIVE: the registry had a heartbeat from it within the last ${notReady} s ` +
        `(its controller checks every ${cfg('controllerPeriodSeconds', 5)} s).`,
    );
  } else if (health === 'OFFLINE') {
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

function tasks(node) {
  const max = specOf(node).maxConcurrentTasks;
  const current = statusOf(node).currentTasks || 0;
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
  name: (n) => nameOf(n),
  kind: (n) => `${kindOf(n)}\u0000${nameOf(n)}`,
  health: (n) => `${HEALTH_RANK[healthOf(n)]}\u0000${nameOf(n)}`,
  phase: (n) => `${statusOf(n).phase}\u0000${nameOf(n)}`,
  seen: (n) => seenOf(n),
  tasks: (n) => statusOf(n).currentTasks || 0,
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
    const fieldSelector = kind ? fieldTerm('metadata.nodeType', kind) : '';
    this.feed = new Feed({
      params: () => ({ labelSelector, fieldSelector }),
      prepare: loadConfig,
      bookmarkSeconds: () => cfg('bookmarkIntervalSeconds', 30),
      onSnapshot: (items, resourceVersion, response) => {
        clock.calibrate(response.date, response.sentAt, response.receivedAt);
        const now = clock.now();
        this.nodes = new Map(items.map((node) => [nameOf(node), { node, at: now }]));
        this.loaded = true;
        this.error = null;
        this.schedule();
      },
      onEvent: (event) => {
        const node = event.object;
        if (event.type === 'DELETED') this.nodes.delete(nameOf(node));
        else this.nodes.set(nameOf(node), { node, at: clock.now() });
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
    this.renderSummary(all.map((n) => n.node));
    const key = SORT_KEYS[this.query.sort.replace(/^-/, '')];
    const direction = this.query.sort.startsWith('-') ? -1 : 1;
    const shown = all
      .filter((n) => this.query.healthy !== 'true' || statusOf(n.node).schedulable)
      .sort((a, b) => {
        const x = key(a.node);
        const y = key(b.node);
        return (x < y ? -1 : x > y ? 1 : 0) * direction;
      });
    this.tbody.replaceChildren(...shown.map((n) => this.row(n.node, n.at)));

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

  renderSummary(nodes) {
    const health = Object.fromEntries(HEALTH_STATES.map((s) => [s, 0]));
    const kinds = new Map();
    let schedulable = 0;
    for (const node of nodes) {
      health[healthOf(node)] = (health[healthOf(node)] || 0) + 1;
      kinds.set(kindOf(node), (kinds.get(kindOf(node)) || 0) + 1);
      if (statusOf(node).schedulable) schedulable += 1;
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
        counter('nodes', nodes.length, 'total', filtered ? 'Nodes matching the kind and selector' : 'All registered nodes'),
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

  row(node, receivedAt) {
    const spec = specOf(node);
    const name = nameOf(node);
    return h(
      'tr',
      { dataset: { node: name, health: healthOf(node) } },
      h('td', { class: 'name' }, h('a', { href: nodeHash(name) }, name)),
      h('td', {}, kindOf(node)),
      h('td', {}, healthBadge(node)),
      h('td', {}, statusOf(node).phase || '—'),
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
          Object.entries(node.metadata.labels || {}).map(([k, v]) => `${k}=${v}`),
          'chip-label',
        ),
      ),
      h('td', { class: 'endpoint' }, endpoint(spec, false)),
      heartbeat('td', node, receivedAt),
      h('td', { class: 'num' }, tasks(node)),
    );
  }
}

// -- the node page -------------------------------------------------------------------------

/** The Trusted fact: yes, or no with the claims that failed. */
function trustText(node) {
  if (trustedOf(node)) return verificationOf(node) ? 'yes' : 'yes (nothing probed yet)';
  const states = verificationOf(node).capabilities || {};
  const failed = Object.keys(states).filter((name) => states[name] === 'Failed').sort();
  return `no — failed: ${failed.join(', ')}`;
}

/** What a health transition says: the watch has no HEALTH_CHANGED, only MODIFIED objects. */
function transitionDetail(row) {
  if (row.health === 'ALIVE') return 'heartbeats resumed';
  return row.ready ? `${row.ready.reason}: ${row.ready.message}` : '';
}

class NodeView {
  constructor(name) {
    this.name = name;
    this.node = null;
    this.receivedAt = 0;
    this.removed = null; // {at: ms or null} once it left the registry
    this.events = new Map(); // resourceVersion (or 'registered') -> row
    this.states = new Map(); // resourceVersion -> the node's healthState from then on
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
    this.claims = h('tbody');
    this.eventRows = h('tbody');
    this.historyNote = h('p', { class: 'muted small', id: 'history-note' });
    this.yaml = h('pre', { class: 'yaml', id: 'passport-yaml' });
    this.registryYaml = h('pre', { class: 'yaml yaml-registry', id: 'registry-yaml' });
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
          h('section', {}, h('h2', {}, 'Node'), this.facts),
          h(
            'section',
            {},
            h(
              'h2',
              {},
              'Capabilities ',
              h('span', { class: 'muted small' }, "each claim as the verifier last judged it (Unverified: never probed, or changed since)"),
            ),
            table('capabilities', ['Capability', 'Version', 'Verification', 'Reason', 'Checked', 'Message'], this.claims),
          ),
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
              "as the node sent it, as stored; while the node is silent, Ready is the registry's verdict",
            ),
          ),
          this.yaml,
          h(
            'h2',
            {},
            'Added by the registry ',
            h(
              'span',
              { class: 'muted small' },
              `the node never sends these; both together: kubectl get ${RESOURCE} ${this.name} -o yaml`,
            ),
          ),
          this.registryYaml,
        ),
      ),
    );
  }

  selector() {
    return fieldTerm('metadata.name', this.name);
  }

  startFeed() {
    this.feed = new Feed({
      params: () => ({ fieldSelector: this.selector() }),
      prepare: loadConfig,
      bookmarkSeconds: () => cfg('bookmarkIntervalSeconds', 30),
      onSnapshot: (items, resourceVersion, response) => {
        clock.calibrate(response.date, response.sentAt, response.receivedAt);
        const node = items.find((n) => nameOf(n) === this.name);
        if (node) {
          this.node = node;
          this.receivedAt = clock.now();
          this.removed = null;
          this.states.set(versionOfNode(node), healthOf(node));
        } else if (this.node && !this.removed) {
          this.removed = { at: null };
        }
        // Replay up to the node's own version (its last change), else up to the list's.
        if (this.history === 'loading') this.replay(node ? versionOfNode(node) : Number(resourceVersion));
        this.render();
      },
      onEvent: (event) => {
        if (nameOf(event.object) !== this.name) return;
        this.addEvent(event, false);
        if (event.type === 'DELETED') {
          this.removed = { at: clock.now() };
        } else {
          this.node = event.object;
          this.receivedAt = clock.now();
          this.removed = null;
        }
        this.render();
      },
      onState: (state, info) => connection.set(state, info),
    }).start();
  }

  /**
   * The node's past from the registry's watch history: this node's events from version 1 on
   * (the oldest a watch can name: "0" asks for the current state instead) up to `until`.
   */
  async replay(until) {
    if (until <= 1) {
      this.history = 'full'; // nothing after version 1 to replay
      this.noteRegistration();
      this.render();
      return;
    }
    this.history = 'replaying';
    this.replayAbort = new AbortController();
    const url = apiURL(RESOURCE, {
      watch: 'true',
      resourceVersion: '1',
      fieldSelector: this.selector(),
      timeoutSeconds: '2',
    });
    let caughtUp = false;
    let compacted = false;
    try {
      const response = await request(url, { signal: this.replayAbort.signal });
      await readWatch(response, (event) => {
        if (caughtUp || compacted) return;
        if (event.type === 'ERROR') {
          compacted = true;
          return;
        }
        this.addEvent(event, true);
        if (Number(versionOf(event)) >= until) {
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
    this.noteRegistration();
    this.render();
  }

  addEvent(event, replayed) {
    if (event.type === 'BOOKMARK') return;
    const node = event.object;
    const version = versionOfNode(node);
    if (this.events.has(version)) return;
    if (event.type !== 'DELETED') this.states.set(version, healthOf(node));
    this.events.set(version, {
      version,
      type: event.type,
      health: healthOf(node),
      phase: statusOf(node).phase || '',
      ready: readyOf(node),
      lastSeen: statusOf(node).lastSeen,
      registeredAt: statusOf(node).registeredAt,
      receivedAt: replayed ? null : clock.now(),
    });
  }

  /** The registration, from metadata.creationTimestamp, when its ADDED was not replayed. */
  noteRegistration() {
    const node = this.node;
    if (!node) return;
    const registeredAt = statusOf(node).registeredAt;
    for (const row of this.events.values()) {
      if (row.type === 'ADDED' && row.registeredAt === registeredAt) return;
    }
    this.events.set('registered', {
      version: null,
      type: 'ADDED',
      health: '',
      phase: '',
      ready: null,
      registeredAt,
      receivedAt: null,
      time: {
        at: Date.parse(node.metadata.creationTimestamp),
        how: 'metadata.creationTimestamp: this ADDED is older than the watch history replayed',
      },
      detail: 'registered (from metadata.creationTimestamp)',
    });
  }

  /**
   * The rows (oldest first) as shown: each with the health before it (a MODIFIED whose
   * health changed is a transition) and its time. Computed at each render, as a replayed
   * state may arrive after a live event.
   */
  annotate(rows) {
    const versions = [...this.states.keys()].sort((a, b) => a - b);
    let next = 0;
    let before = null;
    return rows.map((row) => {
      if (row.version !== null) {
        while (next < versions.length && versions[next] < row.version) {
          before = this.states.get(versions[next]);
          next += 1;
        }
      }
      const previous = row.type === 'MODIFIED' ? before : null;
      const shown = { ...row, previous, transition: Boolean(previous && previous !== row.health) };
      return { ...shown, ...this.timing(shown) };
    });
  }

  timing(row) {
    if (row.time) return row.time;
    if (row.receivedAt !== null) return { at: row.receivedAt, how: 'received live' };
    if (row.type === 'ADDED') return { at: Date.parse(row.registeredAt), how: 'status.registeredAt' };
    if (row.transition && row.health === 'NOT_READY' && row.ready && row.ready.lastTransitionTime) {
      return { at: Date.parse(row.ready.lastTransitionTime), how: "the Ready condition's lastTransitionTime" };
    }
    if (row.transition && row.health === 'OFFLINE') {
      const expiry = Date.parse(row.lastSeen) + cfg('ttlSeconds', 30) * 1000;
      if (expiry <= clock.now()) {
        return {
          at: expiry,
          approximate: true,
          how: 'lease expiry: last heartbeat + TTL (the controller records it within one pass)',
        };
      }
    }
    return { at: null, how: 'replayed from the registry history: the watch carries no time for this event' };
  }

  destroy() {
    this.destroyed = true;
    if (this.feed) this.feed.stop();
    if (this.replayAbort) this.replayAbort.abort();
  }

  render() {
    const node = this.node;
    this.header.replaceChildren(
      h('h1', {}, this.name),
      node ? healthBadge(node) : null,
      node ? h('span', { class: 'chip chip-kind' }, kindOf(node)) : null,
    );
    document.title = `${this.name} · Node Registry`;
    let notice = '';
    if (this.removed) {
      notice =
        `This node was removed from the registry${this.removed.at ? ` at ${clockTime(this.removed.at)}` : ''}` +
        '; what follows is what was last known of it.';
    } else if (!node && this.history !== 'loading') {
      notice = `No node called ${this.name} is registered; this page will show it when it registers.`;
    }
    this.notice.textContent = notice;
    this.notice.hidden = !notice;
    this.renderFacts(node);
    this.renderConditions(node);
    this.renderClaims(node);
    this.renderEvents();
    const { passport, registry } = node ? splitObject(node) : { passport: null, registry: null };
    const yaml = passport ? toYAML(passport) : '';
    if (this.yaml.textContent !== yaml) this.yaml.textContent = yaml;
    const added = registry ? toYAML(registry) : '';
    if (this.registryYaml.textContent !== added) this.registryYaml.textContent = added;
  }

  renderFacts(node) {
    if (!node) {
      this.facts.replaceChildren();
      return;
    }
    const status = statusOf(node);
    const registered = Date.parse(node.metadata.creationTimestamp);
    const pair = (label, ...value) => [h('dt', {}, label), h('dd', {}, ...value)];
    this.facts.replaceChildren(
      ...pair('Kind', kindOf(node)),
      ...pair('Phase', status.phase || '—'),
      ...pair('Schedulable', status.schedulable ? 'yes' : 'no'),
      ...pair('Trusted', h('span', { id: 'trusted', class: `trust trust-${trustedOf(node)}` }, trustText(node))),
      ...pair('Last heartbeat', heartbeat('span', node, this.receivedAt)),
      ...pair('Registered', h('span', { title: fullTime(registered) }, clockTime(registered))),
      ...pair('Tasks', tasks(node)),
      ...pair('Endpoint', endpoint(specOf(node), true)),
      ...pair('UID', h('code', {}, node.metadata.uid)),
      ...pair('Resource version', node.metadata.resourceVersion),
    );
  }

  renderClaims(node) {
    const claims = node ? specOf(node).capabilities || [] : [];
    const verification = node ? verificationOf(node) : null;
    const states = (verification && verification.capabilities) || {};
    const results = new Map(((verification && verification.results) || []).map((r) => [r.capability, r]));
    this.claims.replaceChildren(
      ...claims.map((c) => {
        const state = states[c.name] || 'Unverified';
        // A result of an older claim (another version or params) no longer speaks for it.
        const result = state === 'Unverified' ? null : results.get(c.name);
        const checked = result ? Date.parse(result.checkedAt) : null;
        return h(
          'tr',
          { dataset: { capability: c.name, state } },
          h('td', {}, c.name),
          h('td', {}, c.version || '—'),
          h('td', {}, h('span', { class: `verif verif-${state}` }, state)),
          h('td', {}, result ? result.reason : ''),
          h('td', {}, checked ? h('span', { title: fullTime(checked) }, clockTime(checked)) : h('span', { class: 'muted' }, '—')),
          h('td', { class: 'message' }, result ? result.message : ''),
        );
      }),
    );
    if (!claims.length) {
      this.claims.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'The node claims no capability.')));
    }
  }

  renderConditions(node) {
    const conditions = node ? statusOf(node).conditions || [] : [];
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
      full: `Replayed from the registry's watch history, then live since ${since}.`,
      compacted:
        "The registry's watch history no longer reaches back that far: showing the events " +
        `seen since this page opened (${since}).`,
      unavailable: `The watch history could not be read: showing the events seen since ${since}.`,
    };
    this.historyNote.textContent = notes[this.history];
    const order = (row) => (row.version === null ? 0 : row.version);
    const rows = [...this.events.values()].sort((a, b) => order(a) - order(b));
    const shown = this.annotate(rows).reverse().slice(0, 100);
    const health = (state) => h('span', { class: `health health-${state}` }, state);
    this.eventRows.replaceChildren(
      ...shown.map((e) =>
        h(
          'tr',
          { dataset: e.transition ? { event: e.type, transition: `${e.previous}>${e.health}` } : { event: e.type } },
          h('td', { title: e.how }, e.at === null ? 'earlier' : `${e.approximate ? '≈ ' : ''}${clockTime(e.at)}`),
          h(
            'td',
            {},
            h(
              'span',
              {
                class: `event event-${e.type}${e.transition ? ' event-transition' : ''}`,
                title: e.transition ? 'A MODIFIED whose status.healthState changed: a health transition' : null,
              },
              e.type,
            ),
          ),
          h(
            'td',
            { class: 'transition' },
            e.transition ? [health(e.previous), ' → '] : null,
            e.health ? health(e.health) : h('span', { class: 'muted' }, '—'),
          ),
          h('td', {}, e.phase),
          h('td', { class: 'num' }, e.version === null ? '—' : e.version),
          h('td', { class: 'message' }, e.transition ? transitionDetail(e) : e.detail || ''),
        ),
      ),
    );
    if (!shown.length && this.history !== 'loading' && this.history !== 'replaying') {
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
