// What the page knows between refreshes, shared by its modules.

export const RECONNECT_MIN_MS = 5000;

export const state = {
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
