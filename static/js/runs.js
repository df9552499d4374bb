// The training history panel, a run's record and an agent's panel (dialogs).

import { api } from './api.js';
import { state } from './state.js';
import {
  PHASES, $, h, DASH, isNum, fmtNum, fmtQuality, fmtSigned, fmtDuration, fmtMs, parseTime, timeNode, fmtDay,
  setField, showEmpty, notes, errorText, loader, chartsReady, baseOptions, drawChart, line, logItem,
} from './view.js';

// ---------- training history ----------

export const RUN_STATES = { completed: 'ok', success: 'ok', failed: 'bad', error: 'bad', stopped: 'warn', stopping: 'warn',
  running: 'run', starting: 'run' };

export function statusPill(status) {
  const kind = RUN_STATES[String(status ?? '').toLowerCase()] || 'none';
  return h('span', { class: `pill run-${kind}`, 'data-status': status ?? '' }, status ?? DASH);
}

export function changeNode(value, digits = 1, unit = '%') {
  const kind = isNum(value) ? (value > 0 ? 'up' : value < 0 ? 'down' : '') : '';
  return h('span', { class: kind }, fmtSigned(value, digits, unit));
}

/** A day as "Dec 6" with its start time when known. */
export function runWhen(run) {
  const date = parseTime(run.started_at);
  if (date) {
    return h('time', { datetime: run.started_at, title: `${date.toLocaleString()} (${run.started_at})` },
      date.toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' }));
  }
  return document.createTextNode(run.date ? fmtDay(run.date) : DASH);
}

export function historyItem(run) {
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

export function renderHistory(runs, warnings) {
  const list = Array.isArray(runs) ? runs.slice() : [];
  // Newest first, as the API answers; runs without a start keep their place after the dated ones.
  list.sort((a, b) => String(b.started_at ?? b.date ?? '').localeCompare(String(a.started_at ?? a.date ?? '')));
  $('#history-list').replaceChildren(...list.map(historyItem));
  showEmpty('history-list', list.length === 0);
  notes('history-list', { warnings });
}

export const loadHistory = loader('/api/training/history?days=30', renderHistory, 'history-list');

// ---------- a run's record ----------

export function openDialog(id) {
  const dialog = document.getElementById(id);
  if (!dialog.open) dialog.showModal();
  return dialog;
}

export function dialogLoading(dialog, body, text) {
  const loading = $('[data-field="loading"]', dialog);
  loading.hidden = !text;
  loading.textContent = text || '';
  loading.dataset.kind = 'info';
  $(body, dialog).hidden = Boolean(text);
}

export function dialogError(dialog, body, err) {
  const loading = $('[data-field="loading"]', dialog);
  loading.hidden = false;
  loading.dataset.kind = 'error';
  loading.textContent = errorText(err);
  $(body, dialog).hidden = true;
}

export function phaseLabel(name) {
  return name ? (PHASES[name] || String(name)) : DASH;
}

/** Seconds with a decimal under 10 s (a phase can take 0.3 s), else as fmtDuration. */
export function fmtSeconds(seconds) {
  return isNum(seconds) && Math.abs(seconds) < 10 ? `${fmtNum(seconds, 1)} s` : fmtDuration(seconds);
}

export function renderTimeline(node, phases) {
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

export function recordAgentRow(agent) {
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
export function recordErrorItem(error) {
  const item = logItem({ source: 'run', ...error });
  const [first, ...rest] = String(error.message ?? DASH).split('\n');
  if (rest.length) {
    $('.text', item).textContent = first;
    item.append(h('details', { class: 'trace' }, h('summary', {}, `${rest.length} more line${rest.length > 1 ? 's' : ''}`),
      h('pre', {}, rest.join('\n'))));
  }
  return item;
}

export function renderPrevious(node, previous, record) {
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

export function renderRecord(record, warnings) {
  const dialog = $('#run-record');
  dialog.dataset.runId = record.run_id ?? '';
  dialog.dataset.status = record.status ?? '';
  setField(dialog, 'run_id', String(record.run_id ?? DASH));
  setField(dialog, 'status', statusPill(record.status));
  setField(dialog, 'origin', record.origin ?? DASH);
  setField(dialog, 'session_id', record.session_id ?? DASH);
  setField(dialog, 'started_at', timeNode(record.started_at, { seconds: true }));
  setField(dialog, 'finished_at', timeNode(record.finished_at, { seconds: true }));
  setField(dialog, 'started_by', record.started_by ?? DASH);  // an API key's name; none when not started here
  setField(dialog, 'stopped_by', record.stopped_by ?? DASH);
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

export async function openRun(runId) {
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

export function yesNo(value) {
  return typeof value === 'boolean' ? (value ? 'yes' : 'no') : DASH;
}

export function renderAgentDetail(agent, warnings) {
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

export async function openAgent(agentId) {
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

