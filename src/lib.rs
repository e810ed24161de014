//! catalytic: a self-hosted customer-interview server on one mio reactor.
//!
//! Module map (dependencies point down):
//! * `reactor` — the event loop (`mod.rs`: poll, accept, input, output, reaping), with
//!   `requests` (HTTP), `streams` (WebSocket, fan-out) and `timers` (deadlines, heartbeat,
//!   session clocks, shutdown).
//! * `conn` (one connection and its bounded outbox), `hub` (who listens to what),
//!   `timers` (pending deadlines in order, without a clock; `reactor::timers` acts on them).
//! * `http`, `ws` — protocol parsing and encoding, pure.
//! * `api`, `agent` — requests and agent messages to application calls.
//! * `app` — invitees, admins, sessions; `model` — the user record and its wire form.
//! * `db` — SQLite; `auth` — tokens and passwords; `worker` — the password-hashing thread.
//! * `config`, `metrics`, `assets` — flags, metric names, embedded web pages.

pub mod agent;
pub mod api;
pub mod app;
pub mod assets;
pub mod auth;
pub mod cli;
pub mod config;
pub mod conn;
pub mod db;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod model;
pub mod reactor;
pub mod timers;
pub mod worker;
pub mod ws;
