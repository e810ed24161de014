//! The Prometheus text of `/metrics`: sample parsing and polling one sample until it holds.

use std::thread;
use std::time::{Duration, Instant};

use super::Server;

impl Server {
    pub fn metrics(&self) -> String {
        let r = self.get("/metrics", None);
        assert_eq!(r.status, 200, "GET /metrics");
        r.text()
    }

    /// Value of one metric sample (exact name and exact label set), 0 when absent.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics(), name, labels).unwrap_or(0.0)
    }

    /// Polls /metrics until `pred(value)` holds; returns the last value (panics on timeout).
    pub fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        timeout: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.metric(name, labels);
            if pred(v) {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "metric {name}{labels:?} = {v} did not reach the expected value; /metrics:\n{}",
                    self.metrics()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A Prometheus sample: name, labels, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// Parses a Prometheus sample line.
pub fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = if let Some(open) = line.find('{') {
        let close = line.rfind('}')?;
        let name = line[..open].to_string();
        let mut labels = Vec::new();
        let inner = &line[open + 1..close];
        for part in inner.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (k, v) = part.split_once('=')?;
            labels.push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
        }
        (name, labels, &line[close + 1..])
    } else {
        let sp = line.find(char::is_whitespace)?;
        (line[..sp].to_string(), Vec::new(), &line[sp..])
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter_map(parse_sample).find_map(|(n, l, v)| {
        let same = n == name
            && l.len() == labels.len()
            && labels
                .iter()
                .all(|(k, want)| l.iter().any(|(lk, lv)| lk == k && lv == want));
        same.then_some(v)
    })
}

/// Reactor turns that took longer than `le` seconds (from catalytic_loop_busy_seconds).
pub fn loop_turns_over(srv: &Server, le: &str) -> f64 {
    let m = srv.metrics();
    let count = metric_value(&m, "catalytic_loop_busy_seconds_count", &[]).unwrap_or(0.0);
    let under =
        metric_value(&m, "catalytic_loop_busy_seconds_bucket", &[("le", le)]).unwrap_or(0.0);
    count - under
}
