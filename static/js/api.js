// The JSON API client of the dashboard page.
//
// Every call returns {data, warnings, status}; a failed call throws ApiError with the server's
// {error, status} message. When the server answers 401 (it has API_KEY set), the page is asked for
// the key once (concurrent calls share one prompt); the key is kept in sessionStorage and sent as
// `Authorization: Bearer <key>` on POSTs, and on GETs too once a GET has answered 401.

const KEY_ITEM = 'training-dashboard.api-key';
const READS_ITEM = 'training-dashboard.reads-need-key';
const MAX_ATTEMPTS = 4;

export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
  }
}

function storageGet(item) {
  try { return window.sessionStorage.getItem(item) || ''; } catch { return ''; }
}

function storageSet(item, value) {
  try {
    if (value) window.sessionStorage.setItem(item, value);
    else window.sessionStorage.removeItem(item);
  } catch { /* storage disabled: the key lives for this page only */ }
}

let memoryKey = storageGet(KEY_ITEM);
let readsNeedKey = storageGet(READS_ITEM) === '1';
let askForKey = null;     // installed by the page: (message) => Promise<string|null>
let pendingAsk = null;    // one prompt at a time, shared by every call waiting for it
let declined = false;     // the user cancelled: background reads stop asking until a user action does

export function onKeyNeeded(handler) { askForKey = handler; }
export function readsNeedAuth() { return readsNeedKey; }
export function apiKey() { return memoryKey; }

/** Ask for a (new) key now, from a click: resolves with the key or '' when cancelled. */
export function changeKey(message = 'enter the key the server was started with (API_KEY).') {
  declined = false;
  return askOnce(message);
}

function setKey(key) {
  memoryKey = key || '';
  storageSet(KEY_ITEM, memoryKey);
}

function askOnce(message) {
  if (!pendingAsk) {
    pendingAsk = Promise.resolve(askForKey ? askForKey(message) : null)
      .catch(() => null)
      .then((key) => {
        pendingAsk = null;
        key = (key || '').trim();
        if (key) {
          setKey(key);
          declined = false;
        } else {
          declined = true;
        }
        return key;
      });
  }
  return pendingAsk;
}

async function readBody(response) {
  const text = await response.text().catch(() => '');
  if (!text) return null;
  try { return JSON.parse(text); } catch { return null; }
}

function headerWarnings(response) {
  const raw = response.headers.get('X-Data-Warnings');
  if (!raw) return [];
  try {
    const list = JSON.parse(raw);
    return Array.isArray(list) ? list.map(String) : [];
  } catch {
    return [String(raw)];
  }
}

function errorText(body, response) {
  if (body && typeof body === 'object' && !Array.isArray(body) && body.error) return String(body.error);
  return `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''}`;
}

/**
 * Call the API. `userAction`: the call comes from a click (it may ask for the key even after a cancel).
 */
export async function api(path, { method = 'GET', body, userAction = false } = {}) {
  const isRead = method === 'GET' || method === 'HEAD';
  for (let attempt = 1; ; attempt += 1) {
    const key = memoryKey;
    const sendKey = Boolean(key) && (!isRead || readsNeedKey);
    const headers = { Accept: 'application/json' };
    if (sendKey) headers.Authorization = `Bearer ${key}`;
    const init = { method, headers, cache: 'no-store', credentials: 'same-origin' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, 'The server cannot be reached.');
    }
    const payload = await readBody(response);
    if (response.status === 401 && attempt < MAX_ATTEMPTS) {
      if (isRead && !readsNeedKey) {
        readsNeedKey = true;
        storageSet(READS_ITEM, '1');
      }
      if (key && !sendKey) continue;             // we had a key and now know to send it
      if (sendKey && memoryKey !== key) continue; // someone entered a new key meanwhile
      if (sendKey) setKey('');                    // the key we sent is wrong
      if (!declined || userAction) {
        const fresh = await askOnce(errorText(payload, response));
        if (fresh) continue;
      }
    }
    if (!response.ok) throw new ApiError(response.status, errorText(payload, response), payload);
    const warnings = payload && !Array.isArray(payload) && Array.isArray(payload.warnings)
      ? payload.warnings.map(String)
      : headerWarnings(response);
    return { data: payload, warnings, status: response.status };
  }
}
