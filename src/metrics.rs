//! Every metric the server exports, named in one place, rendered as Prometheus text.
//!
//! Plain counters owned by the reactor (single thread: no atomics needed). The names and labels
//! are part of the contract; extra metrics below the contract's are marked as such.

use crate::hub::{Stream, STREAM_LABELS};
use std::fmt::Write as _;

/// Why a stream ended; the label of `catalytic_ws_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed, vanished, or broke the protocol.
    Client,
    /// Silent for two heartbeat intervals.
    Heartbeat,
    /// The socket refused a write.
    WriteError,
    /// Its queued output passed `--max-outbox-bytes`.
    SlowConsumer,
    /// Refused at the handshake, or its admin session ended.
    Unauthorized,
    /// Its session ran out or its invitee was deleted.
    Expired,
    /// The server is stopping.
    Shutdown,
}

impl CloseReason {
    const ALL: [CloseReason; 7] = [
        CloseReason::Client,
        CloseReason::Heartbeat,
        CloseReason::WriteError,
        CloseReason::SlowConsumer,
        CloseReason::Unauthorized,
        CloseReason::Expired,
        CloseReason::Shutdown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Heartbeat => "heartbeat",
            CloseReason::WriteError => "write_error",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Unauthorized => "unauthorized",
            CloseReason::Expired => "expired",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// Connections refused by a limit (not in the contract; helps operators size limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    PerIp,
    LoginRate,
}

impl Refusal {
    const ALL: [Refusal; 3] = [Refusal::MaxConnections, Refusal::PerIp, Refusal::LoginRate];

    fn label(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::PerIp => "per_ip",
            Refusal::LoginRate => "login_rate",
        }
    }
}

/// Upper bounds (seconds) of the histogram buckets.
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

#[derive(Debug, Default, Clone)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in BUCKETS.iter().zip(self.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// How an admin signed in; a label of `catalytic_logins_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginMethod {
    Password,
    Oidc,
}

/// How a sign-in ended; a label of `catalytic_logins_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    Ok,
    Failed,
    Limited,
}

const LOGIN_METHODS: [(LoginMethod, &str); 2] = [
    (LoginMethod::Password, "password"),
    (LoginMethod::Oidc, "oidc"),
];
const LOGIN_RESULTS: [(LoginResult, &str); 3] = [
    (LoginResult::Ok, "ok"),
    (LoginResult::Failed, "failed"),
    (LoginResult::Limited, "limited"),
];

#[derive(Debug, Default)]
pub struct Metrics {
    pub ws_connections: [i64; 3],
    pub ws_accepted: [u64; 3],
    pub ws_reconnects: [u64; 3],
    ws_closed: [u64; CloseReason::ALL.len()],
    pub broadcast_seconds: [Histogram; 3],
    pub ws_messages_sent: u64,
    pub ws_bytes_sent: u64,
    http_requests: Vec<(u16, u64)>,
    refused: [u64; Refusal::ALL.len()],
    logins: [[u64; 3]; 2],
    pub loop_busy_seconds: Histogram,
    pub open_connections: usize,
    /// Handshakes that asked to resume, per stream slot: [resumed, initial].
    resumes: [[u64; 2]; 3],
    /// Invitees with their session page open (set when rendering).
    pub presence_sessions: usize,
    /// Writes answered 503 because storage was busy or unreachable.
    pub storage_busy: u64,
    /// Writes answered 503 because the broadcast backlog was over its bound (admission control).
    pub overload_refusals: u64,
    /// Cluster: from an event's commit (on any node) to its delivery here.
    bus_lag_seconds: Histogram,
    /// Cluster: holes in the log this node noticed and filled from the events table.
    pub bus_gaps: u64,
    /// Cluster: times this node reloaded its view from a snapshot.
    pub bus_resyncs: u64,
    /// `--node-id` (API.md: it names the node in metrics).
    node: String,
}

impl Metrics {
    /// The metrics of node `node` (`--node-id`), all counts zero.
    pub fn for_node(node: &str) -> Metrics {
        Metrics {
            node: node.to_string(),
            ..Metrics::default()
        }
    }

    /// A stream opened (`reconnect`: with a credential whose stream closed less than 60 s ago).
    /// The echo endpoint is not counted.
    pub fn stream_opened(&mut self, stream: Stream, reconnect: bool) {
        let Some(i) = stream.metric_slot() else {
            return;
        };
        self.ws_connections[i] += 1;
        self.ws_accepted[i] += 1;
        if reconnect {
            self.ws_reconnects[i] += 1;
        }
    }

    pub fn stream_closed(&mut self, stream: Stream) {
        if let Some(i) = stream.metric_slot() {
            self.ws_connections[i] -= 1;
        }
    }

    pub fn closed(&mut self, reason: CloseReason) {
        self.ws_closed[reason as usize] += 1;
    }

    pub fn http_request(&mut self, status: u16) {
        match self.http_requests.iter_mut().find(|(c, _)| *c == status) {
            Some((_, n)) => *n += 1,
            None => {
                self.http_requests.push((status, 1));
                self.http_requests.sort_unstable();
            }
        }
    }

    pub fn refused(&mut self, why: Refusal) {
        self.refused[why as usize] += 1;
    }

    /// A handshake asked to resume and got a replay (`resumed`) or a fresh `initial`.
    pub fn resume(&mut self, stream: Stream, resumed: bool) {
        if let Some(i) = stream.metric_slot() {
            self.resumes[i][usize::from(!resumed)] += 1;
        }
    }

    /// An event committed `seconds` ago (on any node) reached this node's streams.
    pub fn bus_lag(&mut self, seconds: f64) {
        self.bus_lag_seconds.observe(seconds);
    }

    /// A sign-in ended with `result`.
    pub fn login(&mut self, method: LoginMethod, result: LoginResult) {
        self.logins[method as usize][result as usize] += 1;
    }

    /// One broadcast to `stream` took `seconds` from the event to its last write.
    pub fn broadcast(&mut self, stream: Stream, seconds: f64) {
        if let Some(i) = stream.metric_slot() {
            self.broadcast_seconds[i].observe(seconds);
        }
    }

    pub fn render(&self) -> String {
        let mut o = String::with_capacity(8192);
        header(
            &mut o,
            "catalytic_node_info",
            "gauge",
            "This node, named by --node-id (always 1).",
        );
        let _ = writeln!(
            o,
            "catalytic_node_info{{node=\"{}\"}} 1",
            label_value(&self.node)
        );
        header(
            &mut o,
            "catalytic_ws_connections",
            "gauge",
            "Open WebSocket streams.",
        );
        for (i, label) in STREAM_LABELS.iter().enumerate() {
            let _ = writeln!(
                o,
                "catalytic_ws_connections{{stream=\"{label}\"}} {}",
                self.ws_connections[i]
            );
        }
        header(
            &mut o,
            "catalytic_ws_accepted_total",
            "counter",
            "WebSocket streams accepted.",
        );
        for (i, label) in STREAM_LABELS.iter().enumerate() {
            let _ = writeln!(
                o,
                "catalytic_ws_accepted_total{{stream=\"{label}\"}} {}",
                self.ws_accepted[i]
            );
        }
        header(
            &mut o,
            "catalytic_ws_reconnects_total",
            "counter",
            "Handshakes presenting a credential whose stream closed less than 60 s before.",
        );
        for (i, label) in STREAM_LABELS.iter().enumerate() {
            let _ = writeln!(
                o,
                "catalytic_ws_reconnects_total{{stream=\"{label}\"}} {}",
                self.ws_reconnects[i]
            );
        }
        header(
            &mut o,
            "catalytic_ws_closed_total",
            "counter",
            "WebSocket streams closed, by reason.",
        );
        for r in CloseReason::ALL {
            let _ = writeln!(
                o,
                "catalytic_ws_closed_total{{reason=\"{}\"}} {}",
                r.label(),
                self.ws_closed[r as usize]
            );
        }
        header(
            &mut o,
            "catalytic_broadcast_seconds",
            "histogram",
            "From an event to its last byte handed to the kernel or queued, per stream.",
        );
        for (i, label) in STREAM_LABELS.iter().enumerate() {
            self.broadcast_seconds[i].render(
                &mut o,
                "catalytic_broadcast_seconds",
                &format!("stream=\"{label}\""),
            );
        }
        header(
            &mut o,
            "catalytic_ws_messages_sent_total",
            "counter",
            "WebSocket messages queued to clients.",
        );
        let _ = writeln!(
            o,
            "catalytic_ws_messages_sent_total {}",
            self.ws_messages_sent
        );
        header(
            &mut o,
            "catalytic_ws_bytes_sent_total",
            "counter",
            "WebSocket bytes handed to the kernel.",
        );
        let _ = writeln!(o, "catalytic_ws_bytes_sent_total {}", self.ws_bytes_sent);
        header(
            &mut o,
            "catalytic_http_requests_total",
            "counter",
            "HTTP requests answered, by status code.",
        );
        for (code, n) in &self.http_requests {
            let _ = writeln!(o, "catalytic_http_requests_total{{code=\"{code}\"}} {n}");
        }
        header(
            &mut o,
            "catalytic_resumes_total",
            "counter",
            "Handshakes that asked to resume, by stream and by what they got.",
        );
        for (i, label) in STREAM_LABELS.iter().enumerate() {
            for (j, result) in ["resumed", "initial"].iter().enumerate() {
                let _ = writeln!(
                    o,
                    "catalytic_resumes_total{{stream=\"{label}\",result=\"{result}\"}} {}",
                    self.resumes[i][j]
                );
            }
        }
        header(
            &mut o,
            "catalytic_presence_sessions",
            "gauge",
            "Invitees with their session page open.",
        );
        let _ = writeln!(o, "catalytic_presence_sessions {}", self.presence_sessions);
        header(
            &mut o,
            "catalytic_storage_busy_total",
            "counter",
            "Writes answered 503 because storage was busy or unreachable.",
        );
        let _ = writeln!(o, "catalytic_storage_busy_total {}", self.storage_busy);
        header(
            &mut o,
            "catalytic_overload_refusals_total",
            "counter",
            "Writes answered 503 because the broadcast backlog was over its bound.",
        );
        let _ = writeln!(
            o,
            "catalytic_overload_refusals_total {}",
            self.overload_refusals
        );
        header(
            &mut o,
            "catalytic_bus_lag_seconds",
            "histogram",
            "Cluster: from an event's commit on any node to its delivery here.",
        );
        self.bus_lag_seconds
            .render(&mut o, "catalytic_bus_lag_seconds", "");
        header(
            &mut o,
            "catalytic_bus_gaps_total",
            "counter",
            "Cluster: holes in the event log this node noticed and filled from the table.",
        );
        let _ = writeln!(o, "catalytic_bus_gaps_total {}", self.bus_gaps);
        header(
            &mut o,
            "catalytic_bus_resyncs_total",
            "counter",
            "Cluster: times this node reloaded its view from a snapshot.",
        );
        let _ = writeln!(o, "catalytic_bus_resyncs_total {}", self.bus_resyncs);
        header(
            &mut o,
            "catalytic_refused_total",
            "counter",
            "Connections or logins refused by a limit.",
        );
        for r in Refusal::ALL {
            let _ = writeln!(
                o,
                "catalytic_refused_total{{limit=\"{}\"}} {}",
                r.label(),
                self.refused[r as usize]
            );
        }
        header(
            &mut o,
            "catalytic_logins_total",
            "counter",
            "Admin sign-ins, by method and outcome.",
        );
        for (m, ml) in LOGIN_METHODS {
            for (r, rl) in LOGIN_RESULTS {
                let _ = writeln!(
                    o,
                    "catalytic_logins_total{{method=\"{ml}\",result=\"{rl}\"}} {}",
                    self.logins[m as usize][r as usize]
                );
            }
        }
        header(
            &mut o,
            "catalytic_open_connections",
            "gauge",
            "Open TCP connections of any kind.",
        );
        let _ = writeln!(o, "catalytic_open_connections {}", self.open_connections);
        header(
            &mut o,
            "catalytic_loop_busy_seconds",
            "histogram",
            "Time the reactor spent per wake-up (a slow SQLite call shows up here).",
        );
        self.loop_busy_seconds
            .render(&mut o, "catalytic_loop_busy_seconds", "");
        o
    }
}

/// A label value in the text format's escaping: backslash, double quote and newline.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_contract_names() {
        let mut m = Metrics::for_node("node \"a\"");
        m.stream_opened(Stream::Admin, false);
        m.stream_opened(Stream::Admin, true);
        m.stream_opened(Stream::Echo, true);
        m.stream_closed(Stream::Admin);
        m.closed(CloseReason::SlowConsumer);
        m.http_request(200);
        m.http_request(404);
        m.http_request(200);
        m.broadcast(Stream::Admin, 0.003);
        m.resume(Stream::Agent, false);
        m.storage_busy += 2;
        m.overload_refusals += 3;
        m.login(LoginMethod::Oidc, LoginResult::Failed);
        let t = m.render();
        for line in [
            "catalytic_ws_connections{stream=\"admin\"} 1",
            "catalytic_ws_accepted_total{stream=\"admin\"} 2",
            "catalytic_ws_reconnects_total{stream=\"admin\"} 1",
            "catalytic_ws_closed_total{reason=\"slow_consumer\"} 1",
            "catalytic_ws_closed_total{reason=\"shutdown\"} 0",
            "catalytic_http_requests_total{code=\"200\"} 2",
            "catalytic_http_requests_total{code=\"404\"} 1",
            "catalytic_broadcast_seconds_bucket{stream=\"admin\",le=\"0.005\"} 1",
            "catalytic_broadcast_seconds_bucket{stream=\"admin\",le=\"0.0025\"} 0",
            "catalytic_broadcast_seconds_count{stream=\"admin\"} 1",
            "catalytic_ws_messages_sent_total 0",
            "catalytic_ws_bytes_sent_total 0",
            "catalytic_resumes_total{stream=\"agent\",result=\"initial\"} 1",
            "catalytic_resumes_total{stream=\"admin\",result=\"resumed\"} 0",
            "catalytic_storage_busy_total 2",
            "catalytic_overload_refusals_total 3",
            "catalytic_presence_sessions 0",
            "catalytic_logins_total{method=\"oidc\",result=\"failed\"} 1",
            "catalytic_logins_total{method=\"password\",result=\"ok\"} 0",
            "catalytic_node_info{node=\"node \\\"a\\\"\"} 1",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line}\n{t}");
        }
    }
}
