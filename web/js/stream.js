// Reconnecting WebSocket client used by the admin dashboard and the invitee session page.
//
// Rules (API.md "WebSocket streams", STYLE.md anti-patterns 7 and 8):
// - backoff with FULL jitter: before reconnect number `attempt` (0-based) wait a uniform random
//   time in [0, min(capMs, baseMs * 2^attempt)] — jitter is applied after the cap, so clients
//   that lost the same server never fall into lockstep at the 30 s cap;
// - the attempt counter resets only when a connection that had stayed open for >= stableMs
//   closes, never merely on `open` (a server that accepts and drops at once must not be hammered);
// - close 1008 (unauthorized / invalid session): stop for good, tell the page;
//   `{"type":"session_expired"}`: stop for good, never reconnect;
//   every other close (1001 going away, 1012 restart, 1013 try later, 1006 network...): back off;
// - `{"type":"ping"}` is answered with `{"type":"pong"}`;
// - while waiting, the browser coming back `online` or the tab becoming visible reconnects at once;
// - an `initial` message rebuilds the state from scratch (reduce(initialState, msg)), so a
//   reconnect can never leave stale rows behind; unknown message types leave the state alone.
//
// Resume (contract v2, `resume: true`; the admin stream): the client remembers the `epoch` and
// `seq` of the last `initial` and of every numbered event it applied, and reconnects with
// `?epoch=E&since=N`. The server then answers `{"type":"resumed","epoch":E,"seq":N}` followed by
// exactly the missed events (the state is kept and they are applied in order), or a fresh
// `initial` (the state is replaced). An event whose `seq` is not above the last one applied is a
// duplicate and is dropped; one that skips a number means something was lost, so the client
// forgets its position and reconnects for a fresh `initial` (after the usual backoff, so a
// confused server cannot make it spin). A `resumed` that names another position is treated the
// same way. Frames without `seq` (presence, ping) are never numbered and always pass.
//
// Everything that touches the outside world is injectable for tests: the WebSocket constructor,
// setTimeout/clearTimeout, Math.random, now(), and the event targets for `online`/`visibilitychange`.

export const CLOSE_UNAUTHORIZED = 1008;

/**
 * Delay (ms) before reconnect number `attempt` (0-based): uniform in [0, min(capMs, baseMs*2^attempt)].
 * `random` returns a float in [0, 1) like Math.random.
 */
export function backoffDelay(attempt, random = Math.random, baseMs = 1000, capMs = 30000) {
  const n = Math.max(0, Math.floor(attempt) || 0);
  const ceiling = Math.min(capMs, baseMs * 2 ** n);
  return random() * ceiling;
}

/**
 * Create a stream client. Nothing happens until start().
 *
 * @param {object} o
 * @param {string|(() => string)} o.url        full ws:/wss: URL (or a function building it)
 * @param {(state, msg, now) => any} [o.reduce] state reducer; default keeps the state
 * @param {any}      [o.initialState]          state before any message, and the base for `initial`
 * @param {(msg, state) => void} [o.onMessage]  after each (non-ping) message has been reduced
 * @param {(status) => void}     [o.onStatus]   {state:'connecting'|'open'|'waiting'|'stopped', ...}
 * @param {(event) => void}      [o.onUnauthorized] close 1008 received
 * @param {(msg) => void}        [o.onExpired]  session_expired received
 * @param {boolean}              [o.resume]     remember epoch/seq and resume (contract v2)
 */
export function createStream(o) {
  const opts = {
    reduce: (state) => state,
    initialState: null,
    onMessage: () => {},
    onStatus: () => {},
    onUnauthorized: () => {},
    onExpired: () => {},
    WebSocket: globalThis.WebSocket,
    setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
    clearTimeout: (id) => globalThis.clearTimeout(id),
    random: Math.random,
    now: () => Date.now(),
    baseMs: 1000,
    capMs: 30000,
    stableMs: 30000,
    resume: false,
    eventTarget: typeof window !== 'undefined' ? window : null,
    document: typeof document !== 'undefined' ? document : null,
    ...o,
  };

  let ws = null; // the current socket, or null
  let timer = null; // pending reconnect timer id, or null
  let attempt = 0; // number of reconnects since the last stable connection
  let openedAt = null; // now() when the current socket opened
  let everOpened = false;
  let started = false;
  let stopped = false;
  let expired = false;
  let data = opts.initialState;
  let status = { state: 'idle' };
  // Resume position: the epoch of the history we follow and the last event number applied.
  let epoch = null;
  let seq = null;

  function setStatus(s) {
    status = s;
    safe(() => opts.onStatus(s));
  }

  function url() {
    const base = typeof opts.url === 'function' ? opts.url() : opts.url;
    if (!opts.resume || epoch == null || seq == null) return base;
    const sep = base.includes('?') ? '&' : '?';
    return `${base}${sep}epoch=${encodeURIComponent(epoch)}&since=${seq}`;
  }

  function connect() {
    timer = null;
    if (stopped) return;
    setStatus({ state: 'connecting', attempt, reconnecting: everOpened || attempt > 0 });
    let sock;
    try {
      sock = new opts.WebSocket(url());
    } catch (err) {
      // A bad URL or a browser refusing the socket: treat like a failed connection.
      ws = null;
      onClose({ code: 1006, reason: String(err && err.message) });
      return;
    }
    ws = sock;
    sock.onopen = () => {
      if (sock !== ws) return;
      openedAt = opts.now();
      everOpened = true;
      setStatus({ state: 'open', attempt });
    };
    sock.onmessage = (ev) => {
      if (sock !== ws) return;
      onMessage(sock, ev);
    };
    sock.onerror = () => {
      // Always followed by a close event; the close decides what to do.
    };
    sock.onclose = (ev) => {
      if (sock !== ws) return;
      ws = null;
      onClose(ev || {});
    };
  }

  function onMessage(sock, ev) {
    let msg;
    try {
      msg = JSON.parse(typeof ev.data === 'string' ? ev.data : '');
    } catch {
      return; // not JSON: ignore, keep the connection
    }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
    if (msg.type === 'ping') {
      try {
        sock.send(JSON.stringify({ type: 'pong' }));
      } catch {
        /* the close event will follow */
      }
      return;
    }
    if (opts.resume && !follow(sock, msg)) return;
    const now = opts.now();
    const base = msg.type === 'initial' ? opts.initialState : data;
    try {
      data = opts.reduce(base, msg, now);
    } catch {
      // A reducer choking on an odd message must not kill the stream.
    }
    safe(() => opts.onMessage(msg, data));
    if (msg.type === 'session_expired') {
      expired = true;
      finish('expired');
      safe(() => opts.onExpired(msg));
    }
  }

  // Keep the resume position in step with a message; false when it must not be applied.
  function follow(sock, msg) {
    if (msg.type === 'initial') {
      epoch = typeof msg.epoch === 'string' ? msg.epoch : null;
      seq = Number.isSafeInteger(msg.seq) ? msg.seq : null;
      return true;
    }
    if (msg.type === 'resumed') {
      if (msg.epoch === epoch && msg.seq === seq) return true;
      resync(sock);
      return false;
    }
    if (!Number.isSafeInteger(msg.seq)) return true;
    if (seq != null && msg.seq <= seq) return false; // already applied
    if (seq != null && msg.seq !== seq + 1) {
      resync(sock);
      return false;
    }
    seq = msg.seq;
    return true;
  }

  // Our position cannot be trusted any more: drop it and reconnect for a fresh `initial`.
  function resync(sock) {
    epoch = null;
    seq = null;
    if (sock !== ws) return;
    ws = null;
    detach(sock);
    try {
      sock.close(4000, 'resync');
    } catch {
      /* already closing */
    }
    onClose({ code: 4000, reason: 'resync' });
  }

  function onClose(ev) {
    const lastOpenedAt = openedAt;
    openedAt = null;
    if (stopped) return;
    if (expired) {
      finish('expired', ev);
      return;
    }
    if (ev.code === CLOSE_UNAUTHORIZED) {
      finish('unauthorized', ev);
      safe(() => opts.onUnauthorized(ev));
      return;
    }
    // Reset only after a connection that was stable for stableMs.
    if (lastOpenedAt != null && opts.now() - lastOpenedAt >= opts.stableMs) attempt = 0;
    const delay = backoffDelay(attempt, opts.random, opts.baseMs, opts.capMs);
    attempt += 1;
    const retryAt = opts.now() + delay;
    timer = opts.setTimeout(connect, delay);
    setStatus({ state: 'waiting', delay, retryAt, attempt, code: ev.code });
  }

  // Stop for good: no timer, no listeners, no socket.
  function finish(reason, ev) {
    if (stopped) return;
    stopped = true;
    if (timer != null) opts.clearTimeout(timer);
    timer = null;
    unlisten();
    if (ws) {
      const sock = ws;
      ws = null;
      detach(sock);
      try {
        sock.close(1000);
      } catch {
        /* already closing */
      }
    }
    setStatus({ state: 'stopped', reason, code: ev && ev.code, closeReason: ev && ev.reason });
  }

  function detach(sock) {
    sock.onopen = sock.onmessage = sock.onerror = sock.onclose = null;
  }

  function reconnectNow() {
    if (stopped || !started || timer == null) return false;
    opts.clearTimeout(timer);
    timer = null;
    connect();
    return true;
  }

  const onOnline = () => reconnectNow();
  const onVisibility = () => {
    if (opts.document && opts.document.visibilityState === 'visible') reconnectNow();
  };

  function listen() {
    if (opts.eventTarget) opts.eventTarget.addEventListener('online', onOnline);
    if (opts.document) opts.document.addEventListener('visibilitychange', onVisibility);
  }
  function unlisten() {
    if (opts.eventTarget) opts.eventTarget.removeEventListener('online', onOnline);
    if (opts.document) opts.document.removeEventListener('visibilitychange', onVisibility);
  }

  return {
    start() {
      if (started) return;
      started = true;
      listen();
      connect();
    },
    /** Close and never reconnect. */
    stop() {
      finish('stopped');
    },
    /** While waiting for a reconnect: try now. Returns whether a connect was started. */
    reconnectNow,
    /** Send a JSON value if the socket is open. */
    send(value) {
      if (!ws || ws.readyState !== 1) return false;
      ws.send(JSON.stringify(value));
      return true;
    },
    get state() {
      return data;
    },
    get status() {
      return status;
    },
    get attempt() {
      return attempt;
    },
    /** The resume position {epoch, seq} (both null until an `initial` carried them). */
    get position() {
      return { epoch, seq };
    },
  };
}

function safe(fn) {
  try {
    fn();
  } catch (err) {
    // A page callback failing must not break the stream; report it without throwing.
    if (typeof console !== 'undefined') console.warn('stream callback failed:', err);
  }
}
