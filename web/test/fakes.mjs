// Test doubles for the stream client: a fake WebSocket class and a fake clock with timers.
// (Imported by the *.test.mjs files; holds no tests itself.)

export function fakeClock(start = 1_000_000) {
  let now = start;
  let seq = 0;
  const timers = new Map(); // id -> {at, fn}
  return {
    now: () => now,
    setTimeout: (fn, ms) => {
      const id = ++seq;
      timers.set(id, { at: now + Math.max(0, ms), fn });
      return id;
    },
    clearTimeout: (id) => {
      timers.delete(id);
    },
    /** Move time forward by ms, firing due timers in deadline order. */
    advance(ms) {
      const end = now + ms;
      for (;;) {
        let next = null;
        for (const [id, t] of timers) if (t.at <= end && (next == null || t.at < next[1].at)) next = [id, t];
        if (!next) break;
        timers.delete(next[0]);
        now = next[1].at;
        next[1].fn();
      }
      now = end;
    },
    pending: () => [...timers.values()].map((t) => t.at - now),
    get timerCount() {
      return timers.size;
    },
  };
}

/** Returns a FakeWebSocket class whose instances are recorded in `sockets`. */
export function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedByClient = null;
      this.onopen = this.onmessage = this.onerror = this.onclose = null;
      sockets.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error('not open');
      this.sent.push(data);
    }
    close(code) {
      this.closedByClient = code ?? 1005;
      this.readyState = 3;
    }
    // --- driven by the test (the "server side")
    serverOpen() {
      this.readyState = 1;
      this.onopen && this.onopen({});
    }
    serverSend(obj) {
      const data = typeof obj === 'string' ? obj : JSON.stringify(obj);
      this.onmessage && this.onmessage({ data });
    }
    serverClose(code = 1006, reason = '') {
      this.readyState = 3;
      this.onclose && this.onclose({ code, reason, wasClean: code !== 1006 });
    }
  }
  FakeWebSocket.sockets = sockets;
  return FakeWebSocket;
}
