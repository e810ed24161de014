//! The two output forms every scenario shares, both on stdout: a human table (Markdown, so
//! it pastes into docs as is) and one JSON line per scenario and server, stamped with the
//! machine and its load so a line stands on its own in a results file.

use super::Ctx;
use crate::sys;
use serde_json::{json, Value};
use std::io::Write;

/// Print a right-aligned Markdown table under `title` (a blank line before it).
pub(super) fn table(title: &str, head: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:>width$}", width = w[i]))
            .collect();
        format!("| {} |", s.join(" | "))
    };
    let mut out = format!("\n{title}\n");
    out += &line(head.iter().map(|s| s.to_string()).collect());
    out += "\n";
    out += &format!(
        "|{}|",
        w.iter()
            .map(|n| "-".repeat(n + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    out += "\n";
    for r in rows {
        out += &line(r.clone());
        out += "\n";
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
}

impl Ctx<'_> {
    /// Print one JSON line (plus `machine` and `unix_time`), append it to `--json-out` if
    /// given, and remember a failure if it carries `"error"`.
    pub(super) fn emit(&mut self, mut v: Value) {
        if let Value::Object(m) = &mut v {
            m.insert(
                "machine".into(),
                json!({"cpu": sys::cpu_model(), "cpus": sys::online_cpus(), "nofile": self.nofile,
                       "generator_cpu": self.o.cpu, "server_cpu": self.o.server_cpu, "nice": self.o.nice,
                       "loadavg": sys::loadavg()}),
            );
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            m.insert("unix_time".into(), json!(ts));
            if m.contains_key("error") {
                self.failed = true;
            }
        }
        let line = v.to_string();
        println!("{line}");
        let _ = std::io::stdout().flush();
        if let Some(p) = &self.o.json_out {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                let _ = writeln!(f, "{line}");
            }
        }
    }
}
