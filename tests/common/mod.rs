//! Black-box test harness: runs the real `catalytic` binary on a loopback port against a
//! temporary SQLite file and talks to it over raw TCP (HTTP/1.1) and tungstenite clients.
//!
//! Rules every helper follows:
//! - loopback only, ports picked by the kernel (`--listen 127.0.0.1:0`);
//! - every wait is bounded: sockets carry read timeouts, child processes are polled with deadlines;
//! - the server's stderr/stdout are drained by background threads into `Server::logs`, so the
//!   pipes never fill and tests can assert on log lines (e.g. the setup URL).
//!
//! One module per concern; test files use everything through `common::*`:
//!
//! | module       | what                                                               |
//! |--------------|--------------------------------------------------------------------|
//! | `process`    | spawning the binary, its logs, CLI runs, `/proc` figures           |
//! | `server`     | [`Server`]: start/stop/restart, admin tokens, TCP connections      |
//! | `http`       | raw HTTP/1.1 requests and responses, refused-and-closed checks     |
//! | `ws`         | tungstenite clients on the three streams, close/refusal checks     |
//! | `frames`     | raw WebSocket frames for protocol violations                       |
//! | `metrics`    | `/metrics` samples and polling                                     |
//! | `fixtures`   | users, invites and sessions made through the API                   |
//! | `assertions` | contract shapes (the user object, `MM:SS`)                         |
//! | `events`     | the numbered log: fresh or resumed streams, bursts of writes       |
//! | `serving`    | [`LiveAdmin`] and [`assert_serving`]: "the server still serves"    |
//! | `rng`        | seeded PRNG                                                        |
//! | `pg`         | [`Pg`]: a real PostgreSQL (initdb, free port, stop/start), test SQL |
//! | `cluster`    | [`Cluster`] of nodes on one database, [`Recorder`] (raw frames)    |
//! | `cluster_checks` | the cluster files' bounds and checks (`use common::cluster_checks::*`) |
#![allow(dead_code, unused_imports)]

mod assertions;
mod cluster;
pub mod cluster_checks;
mod events;
mod fixtures;
mod frames;
mod http;
mod metrics;
mod pg;
mod process;
mod rng;
mod server;
mod serving;
mod ws;

use std::time::Duration;

pub use assertions::*;
pub use cluster::*;
pub use events::*;
pub use fixtures::*;
pub use frames::*;
pub use http::*;
pub use metrics::*;
pub use pg::*;
pub use process::*;
pub use rng::*;
pub use server::*;
pub use serving::*;
pub use ws::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_catalytic");
pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple 42";
/// An agent key of the length the contract requires (at least 32 characters).
pub const AGENT_KEY: &str = "agent-key-0123456789abcdef-0123456789";

/// Default bound for "this should arrive".
pub const WAIT: Duration = Duration::from_secs(5);
/// Bound for "this should NOT arrive" checks.
pub const QUIET: Duration = Duration::from_millis(400);
