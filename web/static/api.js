// api.js: the HTTP API of the signaling server (POST /api/rooms, GET /api/rooms/{id}).

/** ApiError is a failed API call: HTTP status and the server's error code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code || '';
  }
}

async function call(method, path, body, headers = {}) {
  const init = { method, headers: { Accept: 'application/json', ...headers }, cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = null;
  try {
    data = await res.json();
  } catch {
    // not JSON: judged by the status alone
  }
  if (!res.ok) throw new ApiError(res.status, data?.error?.code, data?.error?.message);
  return data ?? {};
}

/**
 * createRoom creates a room and returns {id, url, mode}. options may hold
 * mode and password; token is the server's room-creation token, if it has
 * one (an ApiError with code create_token_required or bad_create_token says
 * it is needed or wrong).
 */
export function createRoom(options = {}, token = '') {
  return call('POST', '/api/rooms', options, token ? { Authorization: `Bearer ${token}` } : {});
}

/**
 * getRoom returns {id, mode, password}, password being true when joining
 * needs one; it throws an ApiError with status 404 for an unknown room.
 */
export function getRoom(id) {
  return call('GET', `/api/rooms/${encodeURIComponent(id)}`);
}

const ID = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * roomIdFrom returns the room id in text: a room link (an http or https
 * address whose path is /r/ID) or a bare ID. It returns "" when text is
 * neither.
 */
export function roomIdFrom(text, base = window.location.href) {
  const s = String(text).trim();
  if (ID.test(s)) return s;
  let url;
  try {
    url = new URL(s, base);
  } catch {
    return '';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return '';
  const m = /^\/r\/([^/]+)\/?$/.exec(url.pathname);
  if (!m) return '';
  let id;
  try {
    id = decodeURIComponent(m[1]);
  } catch {
    return '';
  }
  return ID.test(id) ? id : '';
}

/** roomPath is the path of the room page of id on this server. */
export function roomPath(id) {
  return `/r/${encodeURIComponent(id)}`;
}
