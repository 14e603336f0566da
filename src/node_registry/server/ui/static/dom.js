// DOM building (text only: node data never becomes markup) and time formatting.

/** h('td', {class: 'x', onclick: f}, 'text', child...) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** The registry's clock as seen from here: browser time corrected by the Date header. */
export const clock = {
  offset: 0,
  now() {
    return Date.now() + this.offset;
  },
  /** Correct for skew above 2 s (the Date header has a resolution of one second). */
  calibrate(dateHeader, sentAt, receivedAt) {
    const server = Date.parse(dateHeader || '');
    if (Number.isNaN(server)) return;
    const offset = server + 500 - (sentAt + receivedAt) / 2;
    this.offset = Math.abs(offset) > 2000 ? offset : 0;
  },
};

export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 120) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) {
    const m = Math.floor((s % 3600) / 60);
    return `${Math.floor(s / 3600)} h${m ? ` ${m} min` : ''}`;
  }
  return `${Math.floor(s / 86400)} d`;
}

export function ago(timestamp) {
  const seconds = (clock.now() - timestamp) / 1000;
  return seconds < 1 ? 'just now' : `${duration(seconds)} ago`;
}

const pad = (n) => String(n).padStart(2, '0');

/** Local time: HH:MM:SS today, YYYY-MM-DD HH:MM:SS otherwise. */
export function clockTime(timestamp) {
  const d = new Date(timestamp);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

export function fullTime(timestamp) {
  return new Date(timestamp).toISOString();
}
