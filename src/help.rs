//! `catalytic --help` and `catalytic --version`: one line per flag of `serve`, with its default.
//! The flags themselves are parsed in `config.rs`; a unit test keeps the two lists in step.

use crate::config::USAGE;

/// `--help`: one line per flag of `serve` — the flag, its default, what it does. Every entry of
/// `SERVE_FLAGS` has one (a unit test checks).
const SERVE_HELP: &[(&str, &str, &str)] = &[
    (
        "listen ADDR",
        "127.0.0.1:8080",
        "address to listen on; port 0 picks a free one",
    ),
    (
        "db PATH",
        "./catalytic.db",
        "SQLite file (created on first start; its directory must exist)",
    ),
    (
        "public-url URL",
        "http://<listen address>",
        "origin of invite links and of the Origin check",
    ),
    (
        "session-minutes N",
        "30",
        "length of an interview session (decimals allowed)",
    ),
    (
        "heartbeat-secs N",
        "30",
        "ping interval; a stream silent for two intervals is closed",
    ),
    (
        "invite-ttl-hours N",
        "168",
        "how long an unused invite link works",
    ),
    (
        "agent-key KEY",
        "none: agent stream off",
        "bearer key of /agent/stream (at least 32 characters; `ps` shows it: prefer the file)",
    ),
    (
        "agent-key-file PATH",
        "none",
        "read the agent key from this file (first line), instead of --agent-key",
    ),
    (
        "log-level LEVEL",
        "info",
        "off, error, warn, info, debug or trace (to stderr)",
    ),
    (
        "echo-path PATH",
        "off",
        "WebSocket echo endpoint, for conformance testing only",
    ),
    (
        "max-connections N",
        "open-file limit - 64",
        "beyond it: 503, streams closed 1013",
    ),
    (
        "max-connections-per-ip N",
        "512 (0 = none)",
        "beyond it: 429, streams closed 1013",
    ),
    (
        "trusted-proxy IP,...",
        "none",
        "proxies whose X-Forwarded-For names the client",
    ),
    (
        "max-outbox-bytes N",
        "1048576",
        "output a stream may queue before it is closed 1013",
    ),
    (
        "login-failures-per-minute N",
        "10",
        "failed sign-ins per address and per account",
    ),
    (
        "oidc-issuer URL",
        "none: no OIDC",
        "OpenID Connect provider for admin sign-in (https)",
    ),
    ("oidc-client-id ID", "none", "this server's client id there"),
    (
        "oidc-client-secret-file PATH",
        "none",
        "its client secret (or env CATALYTIC_OIDC_CLIENT_SECRET)",
    ),
    (
        "oidc-allowed-domains D,...",
        "none",
        "email domains whose first OIDC sign-in creates an admin",
    ),
    (
        "oidc-name LABEL",
        "the issuer's host",
        "the provider's name on the sign-in button",
    ),
    (
        "password-login on|off",
        "on",
        "password sign-in (off only with OIDC)",
    ),
    (
        "database-url URL",
        "none: the SQLite file",
        "postgres://USER[:PASSWORD]@HOST[:PORT]/DB: cluster mode",
    ),
    (
        "node-id ID",
        "host name and process id",
        "this node's name in logs and metrics",
    ),
    (
        "drain-secs N",
        "0",
        "spread the closes of a SIGTERM over N seconds",
    ),
];

/// The text of `catalytic --help`.
pub fn help() -> String {
    let width = SERVE_HELP
        .iter()
        .map(|(f, _, _)| f.len())
        .max()
        .unwrap_or(0)
        + 2;
    let mut out = format!(
        "catalytic {} — self-hosted interview server\n\n{USAGE}\n\nflags of `serve` (default in brackets):\n",
        env!("CARGO_PKG_VERSION")
    );
    for (flag, default, what) in SERVE_HELP {
        out.push_str(&format!("  --{flag:<width$} {what} [{default}]\n"));
    }
    out.push_str(
        "\nEvery flag also reads CATALYTIC_<FLAG_IN_CAPS> from the environment (e.g. CATALYTIC_LISTEN);\nthe command line wins. The OIDC client secret may also come from CATALYTIC_OIDC_CLIENT_SECRET.",
    );
    out
}

/// The text of `catalytic --version`.
pub fn version() -> String {
    format!("catalytic {}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SERVE_FLAGS;

    #[test]
    fn help_has_one_line_per_flag_with_its_default() {
        let text = help();
        for flag in SERVE_FLAGS {
            let lines: Vec<_> = text
                .lines()
                .filter(|l| l.trim_start().starts_with(&format!("--{flag} ")))
                .collect();
            assert_eq!(lines.len(), 1, "--{flag}: {lines:?}");
            assert!(
                lines[0].trim_end().ends_with(']'),
                "no default: {}",
                lines[0]
            );
        }
        assert_eq!(
            SERVE_HELP.len(),
            SERVE_FLAGS.len(),
            "a help line for no flag"
        );
        assert!(version().starts_with("catalytic "));
        assert!(matches!(
            crate::config::parse(
                &["--version".to_string()],
                &std::collections::HashMap::new()
            ),
            Ok(crate::config::Command::Version)
        ));
    }
}
