// The page's building blocks: DOM helpers, formats, panel notes and loaders, charts.

import { api, ApiError } from './api.js';
import { state } from './state.js';

export const PHASES = {
  idle: 'Idle', starting: 'Starting', harvesting: 'Harvesting', validation: 'Validation', agent_training: 'Agent training',
  production: 'Production', monitoring: 'Monitoring', cleanup: 'Cleanup',
};
export const PALETTE = ['#f2a65a', '#7bd389', '#e86f9c', '#4fc3c8', '#c9a0ff', '#d9d36a', '#ff8a80', '#80b3ff',
  '#a5d6a7', '#ffcc80', '#b0bec5', '#f48fb1'];

// ---------- DOM helpers ----------

export const $ = (selector, root = document) => root.querySelector(selector);

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = String(value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child); // strings become text nodes
  }
  return node;
}

export const DASH = '—';
export const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

export function fmtNum(value, digits = 2) {
  return isNum(value) ? value.toLocaleString(undefined, { maximumFractionDigits: digits }) : DASH;
}

export function fmtQuality(value) {
  return isNum(value) ? value.toLocaleString(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 2 }) : DASH;
}

export function fmtSigned(value, digits = 1, unit = '') {
  if (!isNum(value)) return DASH;
  const text = Math.abs(value).toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
  const sign = value > 0 ? '+' : value < 0 ? '−' : '';
  return `${sign}${text}${unit}`;
}

export function fmtDuration(seconds) {
  if (!isNum(seconds)) return DASH;
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function fmtMs(ms) {
  if (!isNum(ms)) return DASH;
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toLocaleString(undefined, { maximumFractionDigits: 2 })} s`;
}

export function parseTime(iso) {
  if (!iso) return null;
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? null : date;
}

export function fmtLocal(date, { seconds = false } = {}) {
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  const time = { hour: '2-digit', minute: '2-digit', ...(seconds ? { second: '2-digit' } : {}) };
  return sameDay
    ? date.toLocaleTimeString(undefined, time)
    : date.toLocaleString(undefined, { month: 'short', day: 'numeric', ...time });
}

/** A <time> node in the browser's local time (title: the UTC value), "—" for null. */
export function timeNode(iso, options) {
  const date = parseTime(iso);
  if (!date) return document.createTextNode(iso ? String(iso) : DASH);
  return h('time', { datetime: iso, title: `${date.toLocaleString()} (${iso})` }, fmtLocal(date, options));
}

/** A YYYY-MM-DD day as a short local label (no time-zone shift: it is a calendar day). */
export function fmtDay(day) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(day));
  if (!m) return String(day);
  return new Date(+m[1], +m[2] - 1, +m[3]).toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
}

export function setContent(node, ...children) {
  if (node) node.replaceChildren(...children.map((c) => (typeof c === 'string' ? document.createTextNode(c) : c)));
}

export function setField(root, field, ...children) {
  setContent($(`[data-field="${field}"]`, root), ...children);
}

export function showEmpty(forId, empty) {
  const note = $(`[data-empty-for="${forId}"]`);
  if (note) note.hidden = !empty;
}

/** Data warnings (subtle) and an API error (inline) of one section. */
export function notes(forId, { warnings = [], error = null } = {}) {
  const box = $(`[data-warnings-for="${forId}"]`);
  if (!box) return;
  const children = [];
  if (error) children.push(h('p', { class: 'message', 'data-kind': 'error', role: 'alert' }, errorText(error)));
  const list = [...new Set((warnings || []).map(String))];
  if (list.length) {
    children.push(h('details', {},
      h('summary', {}, `⚠ ${list.length} data warning${list.length > 1 ? 's' : ''}`),
      h('ul', {}, list.map((w) => h('li', {}, w)))));
  }
  box.replaceChildren(...children);
}

export function errorText(err) {
  if (err instanceof ApiError) return err.status ? `${err.message} (HTTP ${err.status})` : err.message;
  return String(err && err.message ? err.message : err);
}

export function touched() {
  setContent($('#last-refresh'), 'Updated ', timeNode(new Date().toISOString(), { seconds: true }));
}

/** A loader for one panel: GET `path`, then render(data, warnings), or the error in the panel's notes. */
export function loader(path, render, panel) {
  return async () => {
    try {
      const { data, warnings } = await api(path);
      render(data, warnings);
    } catch (err) {
      notes(panel, { error: err });
    }
  };
}
// ---------- charts ----------

export function chartsReady() {
  if (typeof window.Chart !== 'function') return false;
  if (!chartsReady.done) {
    const css = getComputedStyle(document.documentElement);
    window.Chart.defaults.color = css.getPropertyValue('--muted').trim() || '#8d9bab';
    window.Chart.defaults.borderColor = 'rgba(255, 255, 255, 0.08)';
    window.Chart.defaults.font.family = css.fontFamily;
    chartsReady.done = true;
  }
  return true;
}

export function baseOptions(extra = {}) {
  return {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    spanGaps: false,
    interaction: { mode: 'index', intersect: false },
    plugins: {
      legend: { position: 'bottom', labels: { boxWidth: 12, boxHeight: 12, padding: 10 } },
      tooltip: { callbacks: {} },
    },
    scales: {
      x: { ticks: { maxRotation: 0, autoSkip: true, autoSkipPadding: 14 } },
      y: {},
    },
    ...extra,
  };
}

/** Create or update a chart, keeping datasets the user hid in the legend hidden. */
export function drawChart(key, canvasId, type, labels, datasets, options) {
  const existing = state.charts[key];
  if (existing) {
    const hidden = new Set(existing.data.datasets.filter((_, i) => !existing.isDatasetVisible(i)).map((d) => d.label));
    existing.data.labels = labels;
    existing.data.datasets = datasets.map((d) => ({ ...d, hidden: hidden.has(d.label) }));
    existing.update('none');
    return existing;
  }
  state.charts[key] = new window.Chart(document.getElementById(canvasId), { type, data: { labels, datasets }, options });
  return state.charts[key];
}

export function line(label, data, color, extra = {}) {
  return {
    label, data, borderColor: color, backgroundColor: color, borderWidth: 1.5, pointRadius: 2,
    pointHoverRadius: 4, tension: 0.2, spanGaps: false, ...extra,
  };
}

/** One log event as a list item (the logs panel, a run's error lines). */
export function logItem(event, fresh = false) {
  const level = String(event.level ?? '').toLowerCase();
  return h('li', { class: `log-item${fresh ? ' fresh' : ''}`, 'data-level': level },
    h('div', { class: 'meta' },
      timeNode(event.timestamp, { seconds: true }),
      h('span', { class: 'lvl' }, event.level ?? DASH),
      h('span', { class: 'src' }, event.source ?? DASH)),
    h('p', { class: 'text' }, event.message ?? DASH));
}
