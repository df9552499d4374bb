// The training dashboard page: reads the JSON API, follows /api/stream when it can, polls when it cannot.
//
// Safety: API strings reach the page only through textContent / createElement (never innerHTML).

import { api, ApiError, changeKey, onKeyNeeded, readsNeedAuth } from './api.js';

const FAST_MS = 5000;        // training, health, alerts, logs while polling
const RUNNING_MS = 1000;     // training status while a run is going and the stream is down
const SLOW_MS = 30000;       // everything else, always
const RECONNECT_MIN_MS = 5000;
const RECONNECT_MAX_MS = 60000;
const LOG_LIMIT = 50;
const GAUGE_WARNING = 85;    // the server's default ALERT_*_WARNING / _CRITICAL thresholds
const GAUGE_CRITICAL = 95;
const PHASES = {
  idle: 'Idle', starting: 'Starting', harvesting: 'Harvesting', validation: 'Validation', agent_training: 'Agent training',
  production: 'Production', monitoring: 'Monitoring', cleanup: 'Cleanup',
};
const PALETTE = ['#f2a65a', '#7bd389', '#e86f9c', '#4fc3c8', '#c9a0ff', '#d9d36a', '#ff8a80', '#80b3ff',
  '#a5d6a7', '#ffcc80', '#b0bec5', '#f48fb1'];

const state = {
  live: false,
  es: null,
  streamAvailable: null,     // null: not known yet; from /api/endpoints
  reconnectDelay: RECONNECT_MIN_MS,
  reconnectTimer: null,
  training: null,
  pendingStartUntil: 0,      // a start was accepted; treat as running until the status says so
  busy: false,
  agentNames: new Map(),
  logs: [],
  charts: { quality: null, health: null },
  alertSignature: null,     // the active alerts last shown; a change refreshes the counters
  source: null,             // /api/status's {status, data_source}: the header says "degraded" while it fails
  openRun: null,            // the run_id whose record is open
  openAgent: null,          // the agent whose chart and config are open
};

// ---------- DOM helpers ----------

const $ = (selector, root = document) => root.querySelector(selector);

function h(tag, attrs = {}, ...children) {
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

const DASH = '—';
const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

function fmtNum(value, digits = 2) {
  return isNum(value) ? value.toLocaleString(undefined, { maximumFractionDigits: digits }) : DASH;
}

function fmtQuality(value) {
  return isNum(value) ? value.toLocaleString(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 2 }) : DASH;
}

function fmtSigned(value, digits = 1, unit = '') {
  if (!isNum(value)) return DASH;
  const text = Math.abs(value).toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
  const sign = value > 0 ? '+' : value < 0 ? '−' : '';
  return `${sign}${text}${unit}`;
}

function fmtDuration(seconds) {
  if (!isNum(seconds)) return DASH;
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function fmtMs(ms) {
  if (!isNum(ms)) return DASH;
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toLocaleString(undefined, { maximumFractionDigits: 2 })} s`;
}

function parseTime(iso) {
  if (!iso) return null;
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? null : date;
}

function fmtLocal(date, { seconds = false } = {}) {
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  const time = { hour: '2-digit', minute: '2-digit', ...(seconds ? { second: '2-digit' } : {}) };
  return sameDay
    ? date.toLocaleTimeString(undefined, time)
    : date.toLocaleString(undefined, { month: 'short', day: 'numeric', ...time });
}

/** A <time> node in the browser's local time (title: the UTC value), "—" for null. */
function timeNode(iso, options) {
  const date = parseTime(iso);
  if (!date) return document.createTextNode(iso ? String(iso) : DASH);
  return h('time', { datetime: iso, title: `${date.toLocaleString()} (${iso})` }, fmtLocal(date, options));
}

/** A YYYY-MM-DD day as a short local label (no time-zone shift: it is a calendar day). */
function fmtDay(day) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(day));
  if (!m) return String(day);
  return new Date(+m[1], +m[2] - 1, +m[3]).toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
}

function setContent(node, ...children) {
  if (node) node.replaceChildren(...children.map((c) => (typeof c === 'string' ? document.createTextNode(c) : c)));
}

function setField(root, field, ...children) {
  setContent($(`[data-field="${field}"]`, root), ...children);
}

function showEmpty(forId, empty) {
  const note = $(`[data-empty-for="${forId}"]`);
  if (note) note.hidden = !empty;
}

/** Data warnings (subtle) and an API error (inline) of one section. */
function notes(forId, { warnings = [], error = null } = {}) {
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

function errorText(err) {
  if (err instanceof ApiError) return err.status ? `${err.message} (HTTP ${err.status})` : err.message;
  return String(err && err.message ? err.message : err);
}

function touched() {
  setContent($('#last-refresh'), 'Updated ', timeNode(new Date().toISOString(), { seconds: true }));
}

/** A loader for one panel: GET `path`, then render(data, warnings), or the error in the panel's notes. */
function loader(path, render, panel) {
  return async () => {
    try {
      const { data, warnings } = await api(path);
      render(data, warnings);
    } catch (err) {
      notes(panel, { error: err });
    }
  };
}

// ---------- quick stats ----------

function setStat(name, children, kind = null) {
  const node = $(`#quick-stats [data-stat="${name}"]`);
  if (!node) return;
  setContent(node, ...[].concat(children));
  node.classList.remove('is-bad', 'is-warn', 'is-ok');
  if (kind) node.classList.add(`is-${kind}`);
}

function renderQuickStats(stats, warnings) {
  setStat('agents_online', fmtNum(stats.agents_online, 0));
  setStat('agents_total', fmtNum(stats.agents_total, 0));
  setStat('overall_quality', fmtQuality(stats.overall_quality));
  setStat('last_training', timeNode(stats.last_training));
  renderRunningStat(stats.training_running);
  setStat('active_alerts', fmtNum(stats.active_alerts, 0), stats.active_alerts > 0 ? 'warn' : null);
  setStat('errors_24h', fmtNum(stats.errors_24h, 0), stats.errors_24h > 0 ? 'bad' : null);
  notes('quick-stats', { warnings });
}

function renderRunningStat(running) {
  if (typeof running !== 'boolean') setStat('training_running', DASH);
  else setStat('training_running', running ? 'Running' : 'Idle', running ? 'ok' : null);
}

/** Counters follow alert changes and error events: ask again soon, once for a burst of changes. */
let quickStatsTimer = null;
function refreshQuickStatsSoon() {
  if (quickStatsTimer === null) {
    quickStatsTimer = setTimeout(() => { quickStatsTimer = null; loadQuickStats(); }, 1000);
  }
}

const loadQuickStats = loader('/api/dashboard/quick-stats', renderQuickStats, 'quick-stats');

// ---------- agents ----------

function agentLabel(id) {
  if (!id) return DASH;
  const name = state.agentNames.get(id);
  return name && name !== id ? `${name} (${id})` : String(id);
}

function renderAgents(agents, warnings) {
  const rows = (Array.isArray(agents) ? agents : []).map((agent) => {
    state.agentNames.set(agent.id, agent.name);
    const improvement = agent.improvement;
    return h('tr', { 'data-agent-id': agent.id, 'data-status': agent.status },
      h('td', { 'data-field': 'agent' }, h('button', { type: 'button', class: 'linkish', 'data-open-agent': agent.id,
        title: 'Quality history and config' },
        h('span', { class: 'agent-name', 'data-field': 'name' }, agent.name ?? DASH),
        h('span', { class: 'agent-id', 'data-field': 'id' }, agent.id))),
      h('td', { 'data-field': 'status' }, h('span', { class: `pill ${agent.status}` }, agent.status ?? DASH)),
      h('td', { class: 'num', 'data-field': 'quality_score' }, fmtQuality(agent.quality_score)),
      h('td', { class: `num ${isNum(improvement) ? (improvement > 0 ? 'up' : improvement < 0 ? 'down' : '') : ''}`,
        'data-field': 'improvement' }, fmtSigned(improvement, 1, '%')),
      h('td', { class: 'num', 'data-field': 'processing_time_ms' }, fmtMs(agent.processing_time_ms)),
      h('td', { class: `num ${agent.errors > 0 ? 'down' : ''}`, 'data-field': 'errors' }, fmtNum(agent.errors, 0)),
      h('td', { 'data-field': 'last_updated' }, timeNode(agent.last_updated)));
  });
  $('#agents-table tbody').replaceChildren(...rows);
  showEmpty('agents-table', rows.length === 0);
  notes('agents-table', { warnings });
  if (state.training) renderTraining(state.training);
}

const loadAgents = loader('/api/agents/status', renderAgents, 'agents-table');

// ---------- charts ----------

function chartsReady() {
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

function baseOptions(extra = {}) {
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
function drawChart(key, canvasId, type, labels, datasets, options) {
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

function line(label, data, color, extra = {}) {
  return {
    label, data, borderColor: color, backgroundColor: color, borderWidth: 1.5, pointRadius: 2,
    pointHoverRadius: 4, tension: 0.2, spanGaps: false, ...extra,
  };
}

// ---------- quality chart ----------

function renderQuality(quality, trends) {
  const warnings = [...(quality?.warnings || []), ...(trends?.warnings || [])];
  const days = [...new Set([...(quality?.timestamps || []), ...(trends?.timestamps || [])])].sort();
  const series = (source, name) => {
    const values = new Map();
    (source?.timestamps || []).forEach((day, i) => values.set(day, source[name]?.[i] ?? null));
    return days.map((day) => (values.has(day) ? (isNum(values.get(day)) ? values.get(day) : null) : null));
  };
  const agentIds = quality
    ? Object.keys(quality).filter((k) => !['timestamps', 'system', 'warnings'].includes(k) && Array.isArray(quality[k]))
    : [];
  const system = quality ? series(quality, 'system') : series(trends, 'system');
  const average = trends ? series(trends, 'moving_average_7d') : days.map(() => null);
  const agents = agentIds.map((id) => ({ id, values: series(quality, id) }));
  // Leave out leading days where nothing has a value.
  const all = [system, average, ...agents.map((a) => a.values)];
  let first = days.findIndex((_, i) => all.some((s) => s[i] !== null));
  if (first < 0) first = days.length;
  const cut = (values) => values.slice(first);
  const labels = days.slice(first).map(fmtDay);
  const hasData = labels.length > 0;

  const datasets = [
    line('System', cut(system), '#5aa9ff', { borderWidth: 3, pointRadius: 3, order: 0 }),
    line('System 7-day average', cut(average), '#e3e9ef', { borderDash: [6, 4], borderWidth: 2, pointRadius: 0, order: 1 }),
    ...agents.map((agent, i) => line(state.agentNames.get(agent.id) || agent.id, cut(agent.values),
      PALETTE[i % PALETTE.length], { order: 2 + i, agentId: agent.id })),
  ];
  const box = document.getElementById('quality-chart').parentElement;
  box.hidden = !hasData;
  showEmpty('quality-chart', !hasData);
  if (hasData && chartsReady()) {
    const options = baseOptions();
    options.scales.y = { title: { display: true, text: 'quality (0–10)' } };
    options.plugins.tooltip.callbacks.label = (ctx) => `${ctx.dataset.label}: ${fmtNum(ctx.parsed.y)}`;
    drawChart('quality', 'quality-chart', 'line', labels, datasets, options);
  }
  if (trends) {
    const parts = [`System trend: ${trends.direction ?? DASH}`];
    if (isNum(trends.change)) parts.push(`change ${fmtSigned(trends.change, 2)} over the period`);
    const ma = (trends.moving_average_7d || []).filter(isNum);
    if (ma.length) parts.push(`7-day average ${fmtNum(ma[ma.length - 1])}`);
    setContent($('#quality-trend'), parts.join(' · '));
  }
  return warnings;
}

async function loadQuality() {
  const [quality, trends] = await Promise.allSettled([
    api('/api/metrics/quality?days=30'), api('/api/metrics/trends?days=30')]);
  const q = quality.status === 'fulfilled' ? quality.value.data : null;
  const t = trends.status === 'fulfilled' ? trends.value.data : null;
  const failed = [quality, trends].find((r) => r.status === 'rejected');
  if (!chartsReady()) {
    notes('quality-chart', { error: new Error('The chart library did not load.') });
    return;
  }
  const warnings = q || t ? renderQuality(q, t) : [];
  notes('quality-chart', { warnings, error: failed ? failed.reason : null });
}


// ---------- training history ----------

const RUN_STATES = { completed: 'ok', success: 'ok', failed: 'bad', error: 'bad', stopped: 'warn', stopping: 'warn',
  running: 'run', starting: 'run' };

function statusPill(status) {
  const kind = RUN_STATES[String(status ?? '').toLowerCase()] || 'none';
  return h('span', { class: `pill run-${kind}`, 'data-status': status ?? '' }, status ?? DASH);
}

function changeNode(value, digits = 1, unit = '%') {
  const kind = isNum(value) ? (value > 0 ? 'up' : value < 0 ? 'down' : '') : '';
  return h('span', { class: kind }, fmtSigned(value, digits, unit));
}

/** A day as "Dec 6" with its start time when known. */
function runWhen(run) {
  const date = parseTime(run.started_at);
  if (date) {
    return h('time', { datetime: run.started_at, title: `${date.toLocaleString()} (${run.started_at})` },
      date.toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' }));
  }
  return document.createTextNode(run.date ? fmtDay(run.date) : DASH);
}

function historyItem(run) {
  const hasRecord = run.run_id !== null && run.run_id !== undefined && run.run_id !== '';
  const summary = [
    h('span', { class: 'run-when', 'data-field': 'date' }, runWhen(run)),
    h('span', { 'data-field': 'status' }, statusPill(run.status)),
    h('span', { 'data-field': 'duration' }, fmtSeconds(run.duration_seconds)),
    h('span', { 'data-field': 'quality' }, h('span', { class: 'label' }, 'quality '), fmtQuality(run.overall_quality)),
    h('span', { 'data-field': 'quality_change' }, h('span', { class: 'label' }, 'change '),
      changeNode(run.quality_change_percent)),
    h('span', { class: 'src', 'data-field': 'origin' }, run.origin ?? DASH),
  ];
  const head = hasRecord
    ? h('button', { type: 'button', class: 'run-open', 'data-open-run': run.run_id, title: 'Open this run\'s record' },
      summary)
    : h('div', { class: 'run-open' }, summary);
  return h('li', { class: 'run-item', 'data-status': run.status ?? '', 'data-run-id': hasRecord ? run.run_id : null,
    'data-date': run.date ?? null, 'data-started-at': run.started_at ?? null },
  head,
  run.error ? h('p', { class: 'text run-error', 'data-field': 'error' }, run.error) : null);
}

function renderHistory(runs, warnings) {
  const list = Array.isArray(runs) ? runs.slice() : [];
  // Newest first, as the API answers; runs without a start keep their place after the dated ones.
  list.sort((a, b) => String(b.started_at ?? b.date ?? '').localeCompare(String(a.started_at ?? a.date ?? '')));
  $('#history-list').replaceChildren(...list.map(historyItem));
  showEmpty('history-list', list.length === 0);
  notes('history-list', { warnings });
}

const loadHistory = loader('/api/training/history?days=30', renderHistory, 'history-list');

// ---------- a run's record ----------

function openDialog(id) {
  const dialog = document.getElementById(id);
  if (!dialog.open) dialog.showModal();
  return dialog;
}

function dialogLoading(dialog, body, text) {
  const loading = $('[data-field="loading"]', dialog);
  loading.hidden = !text;
  loading.textContent = text || '';
  loading.dataset.kind = 'info';
  $(body, dialog).hidden = Boolean(text);
}

function dialogError(dialog, body, err) {
  const loading = $('[data-field="loading"]', dialog);
  loading.hidden = false;
  loading.dataset.kind = 'error';
  loading.textContent = errorText(err);
  $(body, dialog).hidden = true;
}

function phaseLabel(name) {
  return name ? (PHASES[name] || String(name)) : DASH;
}

/** Seconds with a decimal under 10 s (a phase can take 0.3 s), else as fmtDuration. */
function fmtSeconds(seconds) {
  return isNum(seconds) && Math.abs(seconds) < 10 ? `${fmtNum(seconds, 1)} s` : fmtDuration(seconds);
}

function renderTimeline(node, phases) {
  const timed = phases.filter((p) => isNum(p.duration_seconds) && p.duration_seconds > 0);
  const total = timed.reduce((sum, p) => sum + p.duration_seconds, 0);
  if (!timed.length) {
    node.replaceChildren(h('span', { class: 'timeline-empty' }, 'No phase durations recorded.'));
    return;
  }
  node.replaceChildren(...timed.map((phase, i) => {
    const label = `${phaseLabel(phase.name)}: ${fmtSeconds(phase.duration_seconds)}`;
    const segment = h('span', { class: `segment seg-${i % 6}`, 'data-phase': phase.name ?? '',
      'data-status': phase.status ?? '', title: `${label}${phase.status ? ` (${phase.status})` : ''}` },
    h('span', { class: 'segment-label' }, phaseLabel(phase.name)));
    // Shares of 100, so the bar is full even when all phases together take under a second.
    segment.style.flexGrow = String((phase.duration_seconds / total) * 100); // CSSOM: allowed by style-src 'self'
    return segment;
  }));
}

function recordAgentRow(agent) {
  const name = agent.name ?? state.agentNames.get(agent.id) ?? agent.id ?? DASH;
  const label = agent.id
    ? h('button', { type: 'button', class: 'linkish', 'data-open-agent': agent.id, title: 'Quality history and config' },
      h('span', { class: 'agent-name' }, name), h('span', { class: 'agent-id' }, agent.id))
    : h('span', { class: 'agent-name' }, name);
  return h('tr', { 'data-agent-id': agent.id ?? null, 'data-status': agent.status ?? '' },
    h('td', {}, label),
    h('td', {}, statusPill(agent.status)),
    h('td', { class: 'num', 'data-field': 'quality_before' }, fmtQuality(agent.quality_before)),
    h('td', { class: 'num', 'data-field': 'quality_after' }, fmtQuality(agent.quality_after)),
    h('td', { class: 'num', 'data-field': 'change' }, changeNode(agent.change, 2, '')),
    h('td', { class: 'num' }, fmtMs(agent.processing_time_ms)),
    h('td', { class: `wrap ${agent.error ? 'down' : ''}`, 'data-field': 'error' }, agent.error ?? DASH));
}

/** One error line of a record; a traceback joined to it folds away under the line. */
function recordErrorItem(error) {
  const item = logItem({ source: 'run', ...error });
  const [first, ...rest] = String(error.message ?? DASH).split('\n');
  if (rest.length) {
    $('.text', item).textContent = first;
    item.append(h('details', { class: 'trace' }, h('summary', {}, `${rest.length} more line${rest.length > 1 ? 's' : ''}`),
      h('pre', {}, rest.join('\n'))));
  }
  return item;
}

function renderPrevious(node, previous, record) {
  if (!previous) {
    node.replaceChildren(h('p', { class: 'subtle' }, 'No earlier run to compare with.'));
    return;
  }
  const change = previous.phase_duration_change && typeof previous.phase_duration_change === 'object'
    ? previous.phase_duration_change : {};
  // In the run's phase order (the JSON's keys come sorted), then any phase this run did not have.
  const order = (Array.isArray(record.phases) ? record.phases : []).map((p) => p.name).filter((n) => n in change);
  const changes = [...new Set([...order, ...Object.keys(change)])].map((phase) => [phase, change[phase]]);
  node.replaceChildren(
    h('p', { class: 'previous-line' },
      'Previous run ', h('span', { 'data-field': 'previous_run_id' }, previous.run_id ?? DASH), ' ',
      statusPill(previous.status), ' · quality ', h('span', { 'data-field': 'previous_quality' },
        fmtQuality(previous.overall_quality)), ' → ', fmtQuality(record.overall_quality)),
    changes.length
      ? h('dl', { class: 'facts phase-changes' }, changes.map(([phase, seconds]) => h('div', { 'data-phase': phase },
        h('dt', {}, phaseLabel(phase)),
        h('dd', { class: isNum(seconds) ? (seconds > 0 ? 'down' : seconds < 0 ? 'up' : '') : '' },
          isNum(seconds) ? `${fmtSigned(seconds, 1, ' s')} vs previous` : DASH))))
      : h('p', { class: 'subtle' }, 'No phase durations to compare.'));
}

function renderRecord(record, warnings) {
  const dialog = $('#run-record');
  dialog.dataset.runId = record.run_id ?? '';
  dialog.dataset.status = record.status ?? '';
  setField(dialog, 'run_id', String(record.run_id ?? DASH));
  setField(dialog, 'status', statusPill(record.status));
  setField(dialog, 'origin', record.origin ?? DASH);
  setField(dialog, 'session_id', record.session_id ?? DASH);
  setField(dialog, 'started_at', timeNode(record.started_at, { seconds: true }));
  setField(dialog, 'finished_at', timeNode(record.finished_at, { seconds: true }));
  setField(dialog, 'duration_seconds', fmtSeconds(record.duration_seconds));
  setField(dialog, 'overall_quality', fmtQuality(record.overall_quality));
  setField(dialog, 'quality_change_percent', changeNode(record.quality_change_percent));

  const phases = Array.isArray(record.phases) ? record.phases : [];
  renderTimeline($('[data-field="timeline"]', dialog), phases);
  setField(dialog, 'phases', ...(phases.length
    ? phases.map((phase) => h('li', { 'data-phase': phase.name ?? '', 'data-status': phase.status ?? '' },
      h('span', { class: 'phase-name' }, phaseLabel(phase.name)), ' ', statusPill(phase.status), ' ',
      h('span', { 'data-field': 'duration' }, fmtSeconds(phase.duration_seconds)), ' ',
      h('span', { class: 'subtle-inline' }, 'from ', timeNode(phase.started_at, { seconds: true }))))
    : [h('li', { class: 'subtle' }, Array.isArray(record.phases) ? 'No phases recorded.' : DASH)]));

  const agents = Array.isArray(record.agents) ? record.agents : [];
  setField(dialog, 'agents', ...(agents.length ? agents.map(recordAgentRow)
    : [h('tr', {}, h('td', { colspan: 7, class: 'subtle' }, Array.isArray(record.agents) ? 'No agents recorded.' : DASH))]));

  const errors = Array.isArray(record.errors) ? record.errors : null;
  setField(dialog, 'errors', ...(errors && errors.length
    ? errors.map(recordErrorItem)
    : [h('li', { class: 'none' }, errors ? 'No errors recorded.' : DASH)]));

  renderPrevious($('[data-field="previous"]', dialog), record.previous ?? null, record);
  const tail = Array.isArray(record.output_tail) ? record.output_tail : null;
  setField(dialog, 'output_tail', tail === null ? DASH : tail.length ? tail.join('\n') : '(no output)');
  dialogLoading(dialog, '.record', null);
  notes('run-record', { warnings: [...(record.warnings || []), ...(warnings || [])] });
}

async function openRun(runId) {
  state.openRun = runId;
  const dialog = openDialog('run-record');
  setField(dialog, 'run_id', String(runId));
  notes('run-record', {});
  dialogLoading(dialog, '.record', 'Loading the run\'s record…');
  try {
    const { data, warnings } = await api(`/api/training/runs/${encodeURIComponent(runId)}`);
    if (state.openRun === runId) renderRecord(data, warnings);
  } catch (err) {
    if (state.openRun === runId) dialogError(dialog, '.record', err);
  }
}

// ---------- one agent: quality history and config ----------

function yesNo(value) {
  return typeof value === 'boolean' ? (value ? 'yes' : 'no') : DASH;
}

function renderAgentDetail(agent, warnings) {
  const dialog = $('#agent-detail');
  dialog.dataset.agentId = agent.id ?? '';
  setField(dialog, 'name', agent.name ?? DASH);
  setField(dialog, 'id', agent.id ?? '');
  setField(dialog, 'status', h('span', { class: `pill ${agent.status ?? ''}` }, agent.status ?? DASH));
  setField(dialog, 'quality_score', fmtQuality(agent.quality_score));
  setField(dialog, 'improvement', changeNode(agent.improvement));
  setField(dialog, 'last_updated', timeNode(agent.last_updated));
  const config = agent.config && typeof agent.config === 'object' ? agent.config : {};
  setField(dialog, 'config.enabled', yesNo(config.enabled));
  setField(dialog, 'config.priority', config.priority ?? DASH);
  setField(dialog, 'config.description', config.description ?? DASH);
  setField(dialog, 'module', agent.module ?? DASH);
  dialogLoading(dialog, '.agent-body', null);

  const points = (Array.isArray(agent.quality_history) ? agent.quality_history : []).filter((p) => parseTime(p.timestamp));
  const box = document.getElementById('agent-chart').parentElement;
  box.hidden = points.length === 0;
  showEmpty('agent-chart', points.length === 0);
  if (points.length && chartsReady()) {
    const labels = points.map((p) => parseTime(p.timestamp).toLocaleDateString(undefined, { month: 'short', day: 'numeric' }));
    const options = baseOptions();
    options.plugins.legend.display = false;
    options.scales.y = { title: { display: true, text: 'quality (0–10)' } };
    options.plugins.tooltip.callbacks.title = (items) => (items.length
      ? parseTime(points[items[0].dataIndex].timestamp).toLocaleString() : '');
    options.plugins.tooltip.callbacks.label = (ctx) => `quality: ${fmtNum(ctx.parsed.y)}`;
    drawChart('agent', 'agent-chart', 'line', labels,
      [line(agent.name ?? agent.id, points.map((p) => (isNum(p.score) ? p.score : null)), '#5aa9ff',
        { agentId: agent.id, pointRadius: 3 })], options);
  }
  notes('agent-detail', { warnings });
}

async function openAgent(agentId) {
  state.openAgent = agentId;
  const dialog = openDialog('agent-detail');
  setField(dialog, 'name', state.agentNames.get(agentId) ?? agentId);
  setField(dialog, 'id', agentId);
  notes('agent-detail', {});
  dialogLoading(dialog, '.agent-body', 'Loading the agent…');
  try {
    const { data, warnings } = await api(`/api/agents/${encodeURIComponent(agentId)}`);
    if (state.openAgent === agentId) renderAgentDetail(data, warnings);
  } catch (err) {
    if (state.openAgent === agentId) dialogError(dialog, '.agent-body', err);
  }
}

// ---------- service status (the header's "degraded") ----------

function sourceFailing() {
  const s = state.source;
  return Boolean(s) && (s.data_source !== 'ok' || s.status === 'degraded' || s.status === 'error');
}

async function loadStatus() {
  try {
    const { data } = await api('/api/status');
    state.source = data && typeof data === 'object' ? { status: data.status, data_source: data.data_source } : null;
  } catch {
    state.source = null; // the server itself is unreachable: the panels say so
  }
  renderConnection();
}

// ---------- training ----------

function isRunning() {
  return Boolean(state.training?.is_running) || Date.now() < state.pendingStartUntil;
}

function renderButtons() {
  const running = isRunning();
  $('#start-training').disabled = state.busy || running;
  $('#stop-training').disabled = state.busy || !running;
}

function renderTraining(status, warnings = status?.warnings) {
  const previous = state.training;
  state.training = status;
  if (status.is_running) state.pendingStartUntil = 0;
  const root = $('#training-status');
  const running = Boolean(status.is_running);
  root.dataset.running = String(running);
  root.dataset.phase = status.current_phase ?? '';
  setField(root, 'state', running ? 'Running' : 'Not running');

  const bar = $('#progress-bar');
  const fill = $('.progress-fill', bar);
  const pct = isNum(status.progress_percent) ? Math.max(0, Math.min(100, status.progress_percent)) : null;
  if (running && pct === null) {
    bar.removeAttribute('aria-valuenow');
    bar.setAttribute('aria-valuetext', 'in progress');
    bar.dataset.indeterminate = '';
    fill.style.width = '0';
    setField(bar, 'progress', 'in progress');
  } else {
    const value = running ? pct : 0;
    bar.setAttribute('aria-valuenow', String(Math.round(value * 10) / 10));
    bar.setAttribute('aria-valuetext', running ? `${fmtNum(value, 1)} percent` : 'not running');
    delete bar.dataset.indeterminate;
    fill.style.width = `${value}%`;
    setField(bar, 'progress', running ? `${fmtNum(value, 1)} %` : DASH);
  }
  setField(root, 'current_phase', status.current_phase ? (PHASES[status.current_phase] || status.current_phase) : DASH);
  setField(root, 'current_agent', agentLabel(status.current_agent));
  setField(root, 'started_at', timeNode(status.started_at));
  setField(root, 'estimated_time_remaining_sec', fmtDuration(status.estimated_time_remaining_sec));
  const durations = status.phase_durations && typeof status.phase_durations === 'object' ? status.phase_durations : {};
  setField(root, 'phase_durations', ...Object.entries(durations).map(([phase, seconds]) =>
    h('div', {}, h('dt', {}, PHASES[phase] || phase), h('dd', {}, isNum(seconds) ? `${fmtNum(seconds)} s` : DASH))));
  renderRunningStat(running);
  renderButtons();
  notes('training-status', { warnings });

  // A run started or ended: agent statuses, counters, history and charts change with it.
  if (previous && previous.is_running !== status.is_running) {
    loadQuickStats();
    loadAgents();
    loadHistory();
    if (!status.is_running) loadQuality();
  }
}

const loadTraining = loader('/api/training/status', renderTraining, 'training-status');

function message(text, kind = 'info') {
  const node = $('#training-message');
  node.hidden = !text;
  node.dataset.kind = kind;
  node.textContent = text || '';
}

async function trainingAction(action) {
  if (state.busy) return;
  state.busy = true;
  renderButtons();
  message(action === 'start' ? 'Starting training…' : 'Stopping training…');
  try {
    const { data, status } = await api(`/api/training/${action}`, { method: 'POST', body: {}, userAction: true });
    const session = data && data.session_id !== undefined && data.session_id !== null ? ` (session ${data.session_id})` : '';
    if (action === 'start') {
      state.pendingStartUntil = Date.now() + 15000;
      message(`Training started${session}.`, 'ok');
    } else {
      state.pendingStartUntil = 0;
      const stopping = status === 202 || data?.status === 'stopping';
      message(stopping ? `Stopping training${session}…` : `Training ${data?.status || 'stopped'}${session}.`, 'ok');
    }
  } catch (err) {
    let text = errorText(err);
    const session = err instanceof ApiError ? err.body?.session_id : null;
    if (session !== null && session !== undefined) text += ` — session ${session}`;
    message(text, 'error');
  } finally {
    state.busy = false;
    renderButtons();
    loadTraining();
    loadQuickStats();
  }
}

// ---------- host health ----------

function renderHealth(health, warnings = health?.warnings) {
  const root = $('#health-gauges');
  for (const gauge of root.querySelectorAll('[data-gauge]')) {
    const value = health[gauge.dataset.gauge];
    const ring = $('.ring', gauge);
    if (isNum(value)) {
      const pct = Math.max(0, Math.min(100, value));
      ring.style.setProperty('--value', String(pct));
      gauge.setAttribute('aria-valuenow', String(value));
      gauge.dataset.level = value >= GAUGE_CRITICAL ? 'critical' : value >= GAUGE_WARNING ? 'warning' : 'ok';
      setContent($('.gauge-value', gauge), `${fmtNum(value, 0)}%`);
    } else {
      ring.style.setProperty('--value', '0');
      gauge.removeAttribute('aria-valuenow');
      gauge.dataset.level = 'none';
      setContent($('.gauge-value', gauge), DASH);
    }
  }
  setField(root, 'uptime_hours', isNum(health.uptime_hours) ? fmtDuration(health.uptime_hours * 3600) : DASH);
  setField(root, 'active_connections', fmtNum(health.active_connections, 0));
  setField(root, 'timestamp', timeNode(health.timestamp, { seconds: true }));
  notes('health-gauges', { warnings });
}

const loadHealth = loader('/api/system/health', renderHealth, 'health-gauges');

function renderHealthHistory(history) {
  const samples = Array.isArray(history?.samples) ? history.samples : [];
  const box = document.getElementById('health-chart').parentElement;
  const empty = $('[data-empty-for="health-chart"]');
  box.hidden = samples.length === 0;
  empty.hidden = samples.length > 0;
  if (!samples.length) {
    empty.textContent = history?.sample_seconds
      ? `No health samples in the last ${history.hours ?? 24} hours yet (one is stored every ${history.sample_seconds} s).`
      : 'No health samples: the server stores none (HEALTH_SAMPLE_SECONDS=0).';
    return;
  }
  if (!chartsReady()) return;
  const labels = samples.map((s) => {
    const date = parseTime(s.timestamp);
    return date ? date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' }) : String(s.timestamp);
  });
  const value = (name) => samples.map((s) => (isNum(s[name]) ? s[name] : null));
  const dense = samples.length > 60;
  const datasets = [
    line('CPU %', value('cpu_percent'), '#5aa9ff', { pointRadius: dense ? 0 : 2, fill: false }),
    line('Memory %', value('memory_percent'), '#b48cff', { pointRadius: dense ? 0 : 2 }),
    line('Disk %', value('disk_percent'), '#e8b33c', { pointRadius: dense ? 0 : 2 }),
  ];
  const options = baseOptions();
  options.scales.y = { min: 0, max: 100, ticks: { stepSize: 25 } };
  options.plugins.tooltip.callbacks.title = (items) => {
    const date = items.length ? parseTime(samples[items[0].dataIndex]?.timestamp) : null;
    return date ? date.toLocaleString() : '';
  };
  options.plugins.tooltip.callbacks.label = (ctx) => `${ctx.dataset.label.replace(' %', '')}: ${fmtNum(ctx.parsed.y, 1)}%`;
  drawChart('health', 'health-chart', 'line', labels, datasets, options);
}

async function loadHealthHistory() {
  try {
    const { data, warnings } = await api('/api/system/health/history?hours=24');
    renderHealthHistory(data);
    notes('health-chart', { warnings });
  } catch (err) {
    notes('health-chart', { error: err });
  }
}

// ---------- alerts ----------

function renderAlerts(alerts, warnings = []) {
  const list = (Array.isArray(alerts) ? alerts : []).slice().sort((a, b) =>
    (a.severity === 'critical' ? 0 : 1) - (b.severity === 'critical' ? 0 : 1)
    || String(b.since ?? '').localeCompare(String(a.since ?? '')));
  const items = list.map((alert) => h('li', { class: 'alert-item', 'data-severity': alert.severity, 'data-alert-id': alert.id },
    h('div', { class: 'meta' },
      h('span', { class: 'sev' }, alert.severity ?? DASH),
      h('span', { class: 'src' }, alert.source ?? DASH),
      h('span', {}, 'since ', timeNode(alert.since))),
    h('p', { class: 'text' }, alert.message ?? DASH)));
  $('#alerts-list').replaceChildren(...items);
  showEmpty('alerts-list', items.length === 0);
  notes('alerts-list', { warnings });
  const signature = list.map((a) => `${a.id}:${a.severity}`).sort().join('|');
  if (state.alertSignature !== null && signature !== state.alertSignature) refreshQuickStatsSoon();
  state.alertSignature = signature;
}

const loadAlerts = loader('/api/system/alerts', renderAlerts, 'alerts-list');

// ---------- logs ----------

const logKey = (e) => `${e.timestamp}|${e.level}|${e.source}|${e.message}`;

function logItem(event, fresh = false) {
  const level = String(event.level ?? '').toLowerCase();
  return h('li', { class: `log-item${fresh ? ' fresh' : ''}`, 'data-level': level },
    h('div', { class: 'meta' },
      timeNode(event.timestamp, { seconds: true }),
      h('span', { class: 'lvl' }, event.level ?? DASH),
      h('span', { class: 'src' }, event.source ?? DASH)),
    h('p', { class: 'text' }, event.message ?? DASH));
}

function renderLogs(events, warnings, freshKeys = new Set()) {
  state.logs = (Array.isArray(events) ? events : []).slice(0, LOG_LIMIT);
  $('#log-list').replaceChildren(...state.logs.map((e) => logItem(e, freshKeys.has(logKey(e)))));
  showEmpty('log-list', state.logs.length === 0);
  if (warnings) notes('log-list', { warnings });
}

function addLogEvent(event) {
  if (['error', 'critical'].includes(String(event.level ?? '').toLowerCase())) refreshQuickStatsSoon();
  const level = $('#log-level').value;
  if (level && String(event.level ?? '').toLowerCase() !== level) return;
  const key = logKey(event);
  if (state.logs.some((e) => logKey(e) === key)) return;
  const events = [event, ...state.logs].sort((a, b) => String(b.timestamp ?? '').localeCompare(String(a.timestamp ?? '')));
  renderLogs(events, null, new Set([key]));
}

let logRequest = 0;
async function loadLogs() {
  const level = $('#log-level').value;
  const mine = ++logRequest;
  try {
    const query = new URLSearchParams({ limit: String(LOG_LIMIT) });
    if (level) query.set('level', level);
    const { data, warnings } = await api(`/api/system/logs/recent?${query}`);
    if (mine === logRequest) renderLogs(data, warnings);
  } catch (err) {
    if (mine === logRequest) notes('log-list', { error: err });
  }
}

// ---------- live stream and polling ----------

function renderConnection() {
  const node = $('#connection-state');
  if (sourceFailing()) {
    const s = state.source;
    node.textContent = 'degraded';
    node.dataset.state = 'degraded';
    node.title = `The data source is failing (status ${s.status ?? DASH}, data source ${s.data_source ?? DASH}); `
      + `what the page shows may be stale or missing. Updates: ${state.live ? 'live' : 'polling'}.`;
    return;
  }
  node.textContent = state.live ? 'live' : 'polling';
  node.dataset.state = state.live ? 'live' : 'polling';
  node.title = state.live ? 'Updates arrive from the server as they happen' : 'Updates are fetched every few seconds';
}

function setLive(live) {
  const was = state.live;
  state.live = live;
  renderConnection();
  if (was && !live) pollFast(); // the stream went away: catch up at once
}

function streamEvent(handler) {
  return (event) => {
    let data;
    try { data = JSON.parse(event.data); } catch { return; }
    handler(data);
    touched();
  };
}

function connectStream() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  if (state.es || !state.streamAvailable || readsNeedAuth() || typeof window.EventSource !== 'function') return;
  const es = new EventSource('/api/stream');
  state.es = es;
  es.addEventListener('open', () => {
    state.reconnectDelay = RECONNECT_MIN_MS;
    setLive(true);
    loadLogs(); // the stream sends only log events newer than its start
  });
  es.addEventListener('error', () => {
    setLive(false);
    if (es.readyState === EventSource.CLOSED) {
      es.close();
      if (state.es === es) state.es = null;
      scheduleReconnect();
    } // CONNECTING: the browser reconnects by itself (the server's `retry:`); polling covers the gap
  });
  es.addEventListener('training', streamEvent((data) => renderTraining(data)));
  es.addEventListener('health', streamEvent((data) => renderHealth(data)));
  es.addEventListener('alert', streamEvent((data) => renderAlerts(data)));
  es.addEventListener('log', streamEvent((data) => addLogEvent(data)));
}

function scheduleReconnect() {
  clearTimeout(state.reconnectTimer);
  const delay = state.reconnectDelay;
  state.reconnectDelay = Math.min(RECONNECT_MAX_MS, delay * 2);
  state.reconnectTimer = setTimeout(connectStream, delay);
}

async function checkStream() {
  if (state.streamAvailable) return;
  try {
    const { data } = await api('/api/endpoints');
    state.streamAvailable = Array.isArray(data) && data.some((route) => route.path === '/api/stream');
  } catch {
    state.streamAvailable = null;
  }
  connectStream();
}

function pollFast() {
  if (state.live) return Promise.resolve();
  return Promise.all([loadTraining(), loadHealth(), loadAlerts(), loadLogs()]).then(touched);
}

function pollSlow() {
  // Agents first, so the quality chart and the training card can show agent names.
  return Promise.all([loadQuickStats(), loadAgents().then(loadQuality), loadHistory(), loadHealthHistory(),
    checkStream()])
    .then(touched);
}

function loop(interval, work) {
  const tick = async () => {
    if (!document.hidden) {
      try { await work(); } catch (err) { console.warn('dashboard refresh failed', err); }
    }
    setTimeout(tick, interval());
  };
  return tick;
}

// ---------- API key form ----------

function askForKey(messageText) {
  const form = $('#auth-form');
  const input = $('#auth-key');
  setContent($('#auth-message'), `This server needs an API key: ${messageText}`);
  $('#auth-open').hidden = false;
  form.hidden = false;
  input.value = '';
  input.focus();
  return new Promise((resolve) => {
    const done = (key) => {
      form.hidden = true;
      form.removeEventListener('submit', onSubmit);
      $('#auth-cancel').removeEventListener('click', onCancel);
      resolve(key);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      done(input.value.trim() || null);
      input.value = '';
    };
    const onCancel = () => done(null);
    form.addEventListener('submit', onSubmit);
    $('#auth-cancel').addEventListener('click', onCancel);
  });
}

// ---------- start ----------

function start() {
  onKeyNeeded(askForKey);
  $('#start-training').addEventListener('click', () => trainingAction('start'));
  $('#stop-training').addEventListener('click', () => trainingAction('stop'));
  $('#log-level').addEventListener('change', loadLogs);
  document.addEventListener('click', (event) => {
    const run = event.target.closest('[data-open-run]');
    if (run) { openRun(run.dataset.openRun); return; }
    const agent = event.target.closest('[data-open-agent]');
    if (agent) { openAgent(agent.dataset.openAgent); return; }
    const close = event.target.closest('dialog [data-close]');
    if (close) close.closest('dialog').close();
  });
  for (const dialog of document.querySelectorAll('dialog')) {
    // A click on the backdrop (the dialog box itself, outside its content) closes it.
    dialog.addEventListener('click', (event) => { if (event.target === dialog) dialog.close(); });
  }
  $('#run-record').addEventListener('close', () => { state.openRun = null; });
  $('#agent-detail').addEventListener('close', () => { state.openAgent = null; });
  $('#auth-open').addEventListener('click', async () => {
    if (await changeKey()) { pollSlow(); pollFast(); }
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) { pollFast(); pollSlow(); }
  });
  setLive(false);
  loop(() => SLOW_MS, pollSlow)();
  loop(() => FAST_MS, () => (state.live ? null : Promise.all([loadHealth(), loadAlerts(), loadLogs()]).then(touched)))();
  loop(() => FAST_MS, loadStatus)(); // live or not: the stream does not carry the data source's health
  loop(() => (isRunning() && !state.live ? RUNNING_MS : FAST_MS), () => (state.live ? null : loadTraining()))();
}

start();
