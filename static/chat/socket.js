// The chat WebSocket: one connection that heals itself.
//
// Why this exists: phones sleep, proxies drop idle sockets and servers restart. The page must
// notice (app-level ping, because browsers cannot see protocol pings), reconnect with backoff
// and jitter (so a restarted server is not hammered by every client at once) and tell the
// application when it is connected again so it can resume unfinished answers.

import { DISPLACED_CLOSES, FRAME, SIGNED_OUT_CLOSES, STREAM_TYPES } from "./protocol.js";

export { STREAM_TYPES };

export const BACKOFF = { baseMs: 500, factor: 2, maxMs: 10000, jitter: 0.3 };
export const PING_INTERVAL_MS = 15000; // idle: one ping per 15 s keeps proxies from dropping the socket
export const STALL_MS = 1200; // an answer is expected but nothing came for this long: ping at once
export const DEAD_AFTER_MS = 1500; // no frame at all this long after a ping: the connection is dead
const WATCH_MS = 250; // how often the stall watchdog looks
// A network lost without a close (Wi-Fi gone, a proxy that drops packets) is noticed within STALL_MS +
// DEAD_AFTER_MS + WATCH_MS (< 3 s) while an answer streams, at once when the browser reports "offline".

/** True for a frame of an answer's stream: it is ordered and de-duplicated by (message, seq). */
export function isStreamFrame(frame) {
  return STREAM_TYPES.has(frame.type) && Boolean(frame.message) && Boolean(frame.seq);
}

/** A client id for an ask or an agent message: re-sent unchanged after a reconnect, never applied twice. */
export function newId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  // crypto.randomUUID needs a secure context; getRandomValues does not.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Delay before reconnect attempt `attempt` (0-based): exponential, capped, +-30 % jitter. */
export function backoffDelay(attempt, random = Math.random) {
  const raw = Math.min(BACKOFF.maxMs, BACKOFF.baseMs * BACKOFF.factor ** attempt);
  const spread = raw * BACKOFF.jitter;
  return Math.max(0, Math.round(raw - spread + random() * 2 * spread));
}

export class ChatSocket {
  /**
   * @param {string} url  ws(s)://host/ws/chat/
   * @param {{onOpen: Function, onFrame: Function, onState: Function, expecting?: Function, protocols?: string[]}} handlers
   *   protocols: WebSocket subprotocols to offer (a widget's visitor token, docs/widget.md).
   *   onState(state, info) with state in "connecting" | "open" | "reconnecting" | "closed" | "signed_out" |
   *   "displaced" ("signed_out": the server closed with 4001/4401/4403, info.code; no reconnect, a new sign-in is
   *   needed. "displaced": closed with 4429, the user's oldest socket past the bound; no reconnect by itself).
   *   expecting() is true while the page waits for frames (an answer streaming, a question not yet acked).
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.signedOut = false; // closed with a signed-out code: never reconnects by itself
    this.reconnectTimer = null;
    this.pingTimer = null;
    this.deadTimer = null;
    this.watchTimer = null;
    this.pingSentAt = 0;
    this.lastFrameAt = 0;
    window.addEventListener("offline", () => {
      if (this.ws && !this.stopped) this._lost();
    });
  }

  /** The raw WebSocket, exposed for debugging and for tests that cut the connection. */
  get socket() {
    return this.ws;
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    this.stopped = false;
    clearTimeout(this.reconnectTimer);
    this.handlers.onState(this.attempt === 0 ? "connecting" : "reconnecting", { attempt: this.attempt });
    let ws;
    try {
      ws = new WebSocket(this.url, this.handlers.protocols || []);
    } catch (err) {
      this._scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (ws !== this.ws) return;
      this.attempt = 0;
      this.lastFrameAt = Date.now();
      this._startPing();
      this.handlers.onState("open", {});
      this.handlers.onOpen();
    });
    ws.addEventListener("message", (event) => {
      if (ws !== this.ws) return;
      this.lastFrameAt = Date.now();
      clearTimeout(this.deadTimer);
      this.deadTimer = null;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (err) {
        console.warn("chat: ignoring a frame that is not JSON", event.data);
        return;
      }
      this.handlers.onFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      if (ws !== this.ws) return; // an old socket we already gave up on
      this._stopPing();
      this.ws = null;
      if (SIGNED_OUT_CLOSES.has(event.code)) {
        // Access revoked or refused: reconnecting would only be refused again, in a loop.
        this.stopped = true;
        this.signedOut = true;
        this.handlers.onState("signed_out", { code: event.code });
        return;
      }
      if (DISPLACED_CLOSES.has(event.code)) {
        // Reconnecting would close another of the person's sockets, which would reconnect in turn: a loop.
        this.stopped = true;
        this.handlers.onState("displaced", { code: event.code });
        return;
      }
      if (this.stopped) {
        this.handlers.onState("closed", { code: event.code });
        return;
      }
      this._scheduleReconnect(event.code);
    });
    // "error" is always followed by "close"; nothing to do here.
  }

  /** Send one frame; returns false when the socket is not open (the caller keeps it for later). */
  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Stop for good (page unload): no reconnect. */
  close() {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this._stopPing();
    if (this.ws) this.ws.close(1000);
  }

  /** Drop the current connection and reconnect at once (e.g. the browser came back online). */
  reconnectNow() {
    if (this.signedOut) return;
    this.attempt = 0;
    if (this.ws) {
      this._abandon();
    }
    this.connect();
  }

  _abandon() {
    const ws = this.ws;
    this.ws = null;
    this._stopPing();
    try {
      ws.close(4000);
    } catch (err) {
      /* already closed */
    }
  }

  _scheduleReconnect(code) {
    clearTimeout(this.reconnectTimer);
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.handlers.onState("reconnecting", { attempt: this.attempt, delay, code });
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /** The connection is gone though the browser may not have closed it: show it and reconnect. */
  _lost() {
    const ws = this.ws;
    this._abandon();
    this._scheduleReconnect(ws ? 4000 : undefined); // the code _abandon closed it with (4001 is the server's "revoked")
  }

  _ping() {
    if (!this.isOpen || this.deadTimer) return; // a ping is already out: its deadline stands
    const sentAt = Date.now();
    this.pingSentAt = sentAt;
    this.send({ type: FRAME.PING, t: sentAt });
    this.deadTimer = setTimeout(() => {
      this.deadTimer = null;
      // Nothing came back, not even a pong: the connection is dead even if the browser has not noticed.
      if (this.lastFrameAt < sentAt && this.ws) this._lost();
    }, DEAD_AFTER_MS);
  }

  _startPing() {
    this._stopPing();
    this.pingTimer = setInterval(() => this._ping(), PING_INTERVAL_MS);
    this.watchTimer = setInterval(() => {
      const expecting = this.handlers.expecting ? this.handlers.expecting() : false;
      const quiet = Date.now() - Math.max(this.lastFrameAt, this.pingSentAt);
      if (expecting && quiet > STALL_MS) this._ping();
    }, WATCH_MS);
  }

  _stopPing() {
    clearInterval(this.pingTimer);
    clearInterval(this.watchTimer);
    clearTimeout(this.deadTimer);
    this.pingTimer = null;
    this.watchTimer = null;
    this.deadTimer = null;
  }
}
