//! catalytic: a self-hosted customer-interview server on one mio reactor.
//!
//! Module map (dependencies point down):
//! * `reactor` — the event loop (`mod.rs`: poll, accept, input, output, reaping), with
//!   `requests` (HTTP), `streams` (WebSocket, fan-out) and `timers` (deadlines, heartbeat,
//!   session clocks, shutdown).
//! * `conn` (one connection and its bounded outbox), `hub` (who listens to what),
//!   `timer_wheel` (deadlines without a clock).
//! * `http`, `ws` — protocol parsing and encoding, pure; `ws::message` is the WebSocket message
//!   layer (fragments, size across fragments, UTF-8, close rules) the reactor dispatches from.
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
pub mod timer_wheel;
pub mod worker;
pub mod ws;
