// The training dashboard page: reads the JSON API, follows /api/stream when it can, polls when it cannot.
//
// Safety: API strings reach the page only through textContent / createElement (never innerHTML).
// Beside it: api.js (the API client), state.js (what the page knows), view.js (DOM helpers, formats, charts),
// runs.js (the training history, a run's record, an agent's panel).

import { api, ApiError, changeKey, onKeyNeeded, readsNeedAuth } from './api.js';
import { RECONNECT_MIN_MS, state } from './state.js';
import {
  PHASES, PALETTE, $, h, DASH, isNum, fmtNum, fmtQuality, fmtSigned, fmtDuration, fmtMs, parseTime, timeNode,
  fmtDay, setContent, setField, showEmpty, notes, errorText, touched, loader, chartsReady, baseOptions, drawChart,
  line, logItem,
} from './view.js';
import { loadHistory, openRun, openAgent } from './runs.js';

const FAST_MS = 5000;        // training, health, alerts, logs while polling
const RUNNING_MS = 1000;     // training status while a run is going and the stream is down
const SLOW_MS = 30000;       // everything else, always
const RECONNECT_MAX_MS = 60000;
const LOG_LIMIT = 50;
const GAUGE_WARNING = 85;    // the server's default ALERT_*_WARNING / _CRITICAL thresholds
const GAUGE_CRITICAL = 95;


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
  const items = list.map((alert) => h('li', { class: 'alert-item', 'data-severity': alert.severity, 'data-alert-id': alert.id,
    'data-acknowledged': alert.acknowledged ? 'true' : 'false' },
    h('div', { class: 'meta' },
      h('span', { class: 'sev' }, alert.severity ?? DASH),
      h('span', { class: 'src' }, alert.source ?? DASH),
      h('span', {}, 'since ', timeNode(alert.since)),
      alert.acknowledged
        ? h('span', { class: 'acked' }, 'acknowledged ', timeNode(alert.acknowledged_at))
        : h('button', { type: 'button', class: 'btn small ack', 'data-action': 'ack', 'data-alert-id': alert.id,
          title: 'Acknowledge: no more notifications for this alert until it clears' }, 'Ack')),
    h('p', { class: 'text' }, alert.message ?? DASH),
    alert.acknowledged && alert.note ? h('p', { class: 'ack-note' }, alert.note) : null));
  $('#alerts-list').replaceChildren(...items);
  showEmpty('alerts-list', items.length === 0);
  notes('alerts-list', { warnings });
  const signature = list.map((a) => `${a.id}:${a.severity}`).sort().join('|');
  if (state.alertSignature !== null && signature !== state.alertSignature) refreshQuickStatsSoon();
  state.alertSignature = signature;
}

const loadAlerts = loader('/api/system/alerts', renderAlerts, 'alerts-list');

/** The Ack button of an alert: acknowledge it, then show the alerts afresh. */
async function acknowledge(button) {
  button.disabled = true;
  try {
    await api(`/api/system/alerts/${encodeURIComponent(button.dataset.alertId)}/ack`,
      { method: 'POST', body: {}, userAction: true });
    await loadAlerts();
  } catch (err) {
    button.disabled = false;
    notes('alerts-list', { error: err });
  }
}

// ---------- logs ----------

const logKey = (e) => `${e.timestamp}|${e.level}|${e.source}|${e.message}`;

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
    const ack = event.target.closest('button[data-action="ack"]');
    if (ack) { acknowledge(ack); return; }
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
