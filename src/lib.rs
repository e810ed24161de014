//! catalytic: a self-hosted customer-interview server on one mio reactor.
//!
//! Module map (dependencies point down; nothing below `reactor` touches a socket or the clock):
//! * `reactor` — the event loop and the only owner of sockets and state: `mod.rs` (poll,
//!   accept, jobs, reaping), `input` (bytes in and out), `requests` (HTTP), `streams`
//!   (WebSocket, fan-out, effects) and `timers` (deadlines, heartbeat, session clock, shutdown).
//! * `conn` — one connection: its phase (changed only by `Conn::enter`) and bounded outbox.
//! * `hub` — `Stream`, the one name for which stream, and who listens to what; encode-once
//!   delivery.
//! * `session_clock` — session expiries and `time_update` ticks, `now` passed in.
//! * `timers` — pending deadlines fired in order (an ordered map), without a clock; armed by
//!   the reactor and `session_clock`.
//! * `http`, `ws` — protocol parsing and encoding, pure; `ws::message` is the WebSocket message
//!   layer (fragments, size across fragments, UTF-8, close rules) the reactor dispatches from.
//! * `api` — `/api/*` routes and access rules (streams included); `agent` — agent messages.
//! * `app` — the application: `command` (write rules → `Event`), `App::apply` (event → view
//!   and `Effect`s); `model` — the user record and its wire form.
//! * `store` — storage behind one transaction interface (`sqlite`); `storage` — the thread
//!   every storage command runs on; `auth` — tokens and passwords; `worker` — the password
//!   pool (a few threads, fair between client addresses); `oidc` — sign-in through the
//!   organisation's identity provider (login attempts, ID tokens, and the OIDC thread that
//!   talks to the provider).
//! * `addr` — client addresses: canonical form, per-IP limit keys, trusted proxies and the
//!   `X-Forwarded-For` walk; `files` — owner-only modes of the database and key files.
//! * `clock` — the only reader of the clocks; `config`, `help`, `cli`, `metrics`, `assets` —
//!   flags, `--help`/`--version`, admin commands, metric names, embedded web pages.

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
