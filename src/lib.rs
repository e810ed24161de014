//! catalytic: a self-hosted customer-interview server on one mio reactor.
//!
//! Module map. Dependencies point down. Only the shell owns sockets and threads and reads the
//! clock; the pure parts never do (the reactor reads `clock` once per use and passes `now`
//! down), so they are tested with made-up input and made-up time. `docs/LIFECYCLE.md`
//! follows a request and a broadcast through these modules and lists where each limit is
//! enforced.
//!
//! **The shell** — the only owner of sockets, threads and state:
//! * `reactor` — the event loop, one thread: `mod.rs` (`Server`, the turn, accept, the write
//!   list — every connection that got output this turn is written once, at its end — and
//!   reaping), `input` (reading under budgets, cutting requests and frames, flushing, the
//!   lingering close), `requests` (the rules every HTTP request meets, routing, limits),
//!   `streams` (upgrade, frames in, the close verbs, fan-out, effects), `jobs` (work handed to
//!   the other threads and their answers), `timers` (deadlines, heartbeat, housekeeping, the
//!   session clock's firings, drain and shutdown), `presence` (the `presence` frame), `cluster`
//!   (the event intake, and a cluster node's bus, resync, janitor and shared presence), `open`
//!   (before the loop: limits, storage, the view, the agent key, OIDC).
//! * `storage` — the storage threads: every storage command runs there, one transaction each,
//!   with a deadline; `worker` — the password pool (Argon2, fair between client addresses);
//!   `bus` — cluster mode: the thread that follows PostgreSQL's event log. All answer through
//!   the reactor's one `mio::Waker`.
//!
//! **Per connection, pure:**
//! * `conn` — one connection: its phase (changed only by `Conn::enter`), partial input and
//!   bounded outbox (queued during the turn, written once at its end).
//! * `hub` — `Stream`, the one name for which stream, and who listens to what; encode-once
//!   delivery (`deliver`).
//! * `http`, `ws` — protocol parsing and encoding; `ws::message` is the WebSocket message layer
//!   (fragments, size across fragments, UTF-8, close rules) the reactor dispatches from.
//! * `addr` — client addresses: canonical form, per-IP limit keys, trusted proxies and the
//!   `X-Forwarded-For` walk.
//!
//! **The application, pure (`now` passed in):**
//! * `api` — `/api/*` routes: `access` (every credential, streams included), `input` (body and
//!   field rules), `users`, `admin` (sign-in, setup, sign-out), `admins` (admin accounts),
//!   `limiter` (failed sign-ins, counted on arrival), `device` (the signed device cookie),
//!   `oidc`; `agent` — agent-stream messages.
//! * `app` — `command` (write rules → `Event`), `App::apply` (event → view and `Effect`s),
//!   `event_log` (the in-memory tail for resumes), `messages` (the JSON of the streams),
//!   `cluster` (what cluster nodes do together: snapshot, janitor, presence); `model` — the
//!   user record and its wire form.
//! * `session_clock` — session expiries, invite expiries and `time_update` ticks; `timers` — the
//!   clock-free ordered timer set both the reactor and the session clock use.
//!
//! **Storage and the rest:**
//! * `store` — storage behind one transaction interface (`sqlite`, `postgres`, `row`); `auth` —
//!   tokens, digests and passwords; `oidc` — sign-in through the organisation's identity
//!   provider (`flow` and `token` are pure; `provider` is the OIDC thread, the only code that
//!   talks to the provider).
//! * `files` — owner-only modes of the database and key files; `clock` — the only reader of the
//!   clocks; `config` — flags and their rules; `help` — `--help`/`--version`; `cli` — the admin
//!   commands; `metrics` — metric names and rendering; `assets` — the embedded web pages.

pub mod addr;
pub mod agent;
pub mod api;
pub mod app;
pub mod assets;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod files;
pub mod help;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod model;
pub mod oidc;
pub mod reactor;
pub mod session_clock;
pub mod storage;
pub mod store;
pub mod timers;
pub mod worker;
pub mod ws;
