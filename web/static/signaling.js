// signaling.js: the WebSocket to Parley's signaling server (docs/protocol.md).
//
// JSON text frames in and out, an event per message type, and reconnection
// with exponential backoff when the socket drops without us asking for it.
// It knows nothing of rooms: whoever uses it decides what to send on "open".

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;
const CONNECT_TIMEOUT_MS = 10_000;

/** The signaling URL of this page: /ws on the same host, wss: under https:. */
export function signalingURL(loc = window.location) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/ws`;
}

/**
 * Signaling keeps one WebSocket open until close() is called.
 *
 * Events (listen with on(type, fn)):
 *   "open"        the socket is open; detail {reconnect: bool}
 *   "close"       the socket closed; detail {code, reason, retryInMs}
 *                 (retryInMs is null when no retry is coming)
 *   "message"     any message; detail is the parsed object
 *   <msg.type>    the same message, by its type: "joined", "offer", "error", ...
 */
export class Signaling {
  constructor(url = signalingURL()) {
    this.url = url;
    this.ws = null;
    this.wanted = false;   // true between connect() and close()
    this.attempt = 0;      // failed connections since the last resetBackoff()
    this.opened = false;   // whether any socket of this session has opened
    this.retryTimer = null;
    this.listeners = new Map();
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type).delete(fn);
  }

  emit(type, detail) {
    for (const fn of this.listeners.get(type) ?? []) {
      try {
        fn(detail);
      } catch (err) {
        console.error(`parley: ${type} handler failed`, err);
      }
    }
  }

  /** connect opens the socket (if it is not open or opening already). */
  connect() {
    this.wanted = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) return;
    this.open();
  }

  /** close closes the socket for good: no reconnection until connect(). */
  close() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      ws.close(1000, 'bye');
    }
  }

  /** send sends msg as JSON; it returns false when the socket is not open. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  get isOpen() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /**
   * resetBackoff starts the next reconnection from the shortest delay again.
   * Call it when the connection proved useful (joined a room), not on a bare
   * open: a server that accepts and drops at once must not be hammered.
   */
  resetBackoff() {
    this.attempt = 0;
  }

  /** open starts one WebSocket; its events drive reconnection. */
  open() {
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      console.error('parley: cannot open the signaling socket', err);
      this.scheduleRetry(0, 'cannot open');
      return;
    }
    this.ws = ws;
    const reconnect = this.opened;
    // A connection attempt that hangs (a dead network) must end, so that
    // the close handler can schedule the next try.
    const timeout = setTimeout(() => {
      if (ws.readyState === WebSocket.CONNECTING) ws.close();
    }, CONNECT_TIMEOUT_MS);

    ws.onopen = () => {
      clearTimeout(timeout);
      this.opened = true;
      this.emit('open', { reconnect });
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        console.warn('parley: ignoring a frame that is not JSON');
        return;
      }
      if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') {
        console.warn('parley: ignoring a message without a type', msg);
        return;
      }
      this.emit('message', msg);
      this.emit(msg.type, msg);
    };
    ws.onerror = () => {
      // The close event that always follows carries what we need.
    };
    ws.onclose = (ev) => {
      clearTimeout(timeout);
      if (this.ws !== ws) return;
      this.ws = null;
      this.scheduleRetry(ev.code, ev.reason);
    };
  }

  scheduleRetry(code, reason) {
    if (!this.wanted) {
      this.emit('close', { code, reason, retryInMs: null });
      return;
    }
    // 0.5 s, 1 s, 2 s, ... up to 10 s, each give or take 20 % so that
    // everyone dropped by one server restart does not return at once.
    const base = MIN_DELAY_MS * 2 ** Math.min(this.attempt, 10);
    const delay = Math.round(Math.min(MAX_DELAY_MS, base * (0.8 + 0.4 * Math.random())));
    this.attempt++;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.wanted) this.open();
    }, delay);
    this.emit('close', { code, reason, retryInMs: delay });
  }
}
