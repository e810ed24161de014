//! Command-line and environment parsing: every flag, its errors and their wording.

use super::*;

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn serve(s: &str, env: &[(&str, &str)]) -> Result<ServeConfig, ConfigError> {
    let env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match parse(&args(s), &env)? {
        Command::Serve(c) => Ok(c),
        other => panic!("expected serve, got {other:?}"),
    }
}

#[test]
fn defaults() {
    let c = serve("", &[]).unwrap();
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.db, PathBuf::from("./catalytic.db"));
    assert_eq!(c.session_length, Duration::from_secs(1800));
    assert_eq!(c.heartbeat, Duration::from_secs(30));
    assert_eq!(c.invite_ttl, Duration::from_secs(168 * 3600));
    assert_eq!(c.max_connections_per_ip, 512);
    assert_eq!(c.max_outbox_bytes, 1 << 20);
    assert_eq!(c.login_failures_per_minute, 10);
    assert!(c.agent_key.is_none() && c.echo_path.is_none() && c.public_url.is_none());
}

#[test]
fn flags_beat_env_and_env_fills_in() {
    let c = serve(
        "serve --listen 127.0.0.1:0 --session-minutes=0.05",
        &[
            ("CATALYTIC_LISTEN", "0.0.0.0:1"),
            ("CATALYTIC_AGENT_KEY", KEY),
            ("CATALYTIC_TRUSTED_PROXY", "127.0.0.1, ::1, 10.0.0.0/8"),
        ],
    )
    .unwrap();
    assert_eq!(c.listen.port(), 0);
    assert_eq!(c.session_length, Duration::from_secs(3));
    assert_eq!(c.agent_key.as_deref(), Some(KEY));
    assert_eq!(c.trusted_proxies.len(), 3);
    assert!(c.trusted_proxies.trusts("::ffff:10.2.3.4".parse().unwrap()));
}

#[test]
fn bad_input_is_a_clear_error() {
    for (line, needle) in [
        ("--nope 1", "unknown flag `--nope`"),
        ("--listen", "--listen needs a value"),
        ("--listen banana", "--listen"),
        ("--session-minutes x", "not a number"),
        ("--session-minutes 0", "above 0"),
        ("--public-url ftp://x", "http://"),
        ("--public-url https://x/path", "origin"),
        ("--log-level loud", "--log-level"),
        ("--max-connections-per-ip -1", "whole number"),
        ("--echo-path echo", "start with `/`"),
        ("frobnicate", "unknown command"),
        ("--agent-key short", "at least 32"),
        ("--trusted-proxy 10.0.0.0/40", "CIDR"),
        ("--agent-key x --agent-key-file f", "not both"),
    ] {
        let e = serve(line, &[]).unwrap_err();
        assert!(e.0.contains(needle), "{line}: {e}");
    }
}

#[test]
fn admin_commands() {
    let env = HashMap::new();
    match parse(
        &args("admin token --email a@b.c --db x.db --ttl-hours 2"),
        &env,
    )
    .unwrap()
    {
        Command::AdminToken { email, db, ttl } => {
            assert_eq!(email, "a@b.c");
            assert_eq!(db, Database::Sqlite(PathBuf::from("x.db")));
            assert_eq!(ttl, Duration::from_secs(7200));
        }
        other => panic!("{other:?}"),
    }
    match parse(
        &args("admin create --email a@b.c --database-url postgres://u@h/d"),
        &env,
    )
    .unwrap()
    {
        Command::AdminCreate { db, .. } => {
            assert_eq!(db, Database::Postgres("postgres://u@h/d".into()))
        }
        other => panic!("{other:?}"),
    }
    assert!(parse(
        &args("admin create --email a@b.c --database-url mysql://x"),
        &env
    )
    .is_err());
    assert!(parse(&args("admin create"), &env).is_err());
    assert!(parse(&args("admin create --email a@b.c --listen x"), &env).is_err());
}

#[test]
fn an_error_from_the_environment_names_the_variable() {
    let e = serve("", &[("CATALYTIC_LISTEN", "banana")]).unwrap_err();
    assert!(e.0.starts_with("CATALYTIC_LISTEN:"), "{e}");
    let e = serve("", &[("CATALYTIC_SESSION_MINUTES", "0")]).unwrap_err();
    assert!(e.0.contains("CATALYTIC_SESSION_MINUTES"), "{e}");
    let e = serve(
        "--max-connections-per-ip x",
        &[("CATALYTIC_MAX_CONNECTIONS", "5")],
    )
    .unwrap_err();
    assert!(e.0.contains("--max-connections-per-ip"), "{e}");
    // The same value on the command line is blamed on the flag.
    let e = serve("--listen banana", &[("CATALYTIC_LISTEN", "banana")]).unwrap_err();
    assert!(e.0.starts_with("--listen:"), "{e}");
}

#[test]
fn oidc_flags() {
    let c = serve(
        "--oidc-issuer https://id.example.com/realms/x --oidc-client-id cat \
         --oidc-allowed-domains Example.com,@corp.example --password-login off",
        &[("CATALYTIC_OIDC_CLIENT_SECRET", "s3cret")],
    )
    .unwrap();
    let o = c.oidc.unwrap();
    assert_eq!(o.issuer, "https://id.example.com/realms/x");
    assert_eq!(o.allowed_domains, ["example.com", "corp.example"]);
    assert_eq!(o.name, "id.example.com");
    assert!(!c.password_login);
    assert!(!format!("{:?}", o.client_secret).contains("s3cret"));
    let c = serve(
        "--oidc-issuer http://127.0.0.2:9/ --oidc-client-id c --oidc-client-secret-file f \
         --oidc-name Okta",
        &[],
    )
    .unwrap();
    assert_eq!(c.oidc.unwrap().name, "Okta");
    assert!(c.password_login && serve("", &[]).unwrap().oidc.is_none());
    for (line, needle) in [
        (
            "--oidc-issuer https://x.io",
            "needs --oidc-issuer, --oidc-client-id",
        ),
        (
            "--oidc-issuer https://x.io --oidc-client-id c",
            "client secret",
        ),
        (
            "--oidc-issuer http://x.io --oidc-client-id c --oidc-client-secret-file f",
            "https",
        ),
        ("--oidc-name X", "needs --oidc-issuer"),
        ("--password-login off", "needs OpenID Connect"),
        ("--password-login maybe", "on or off"),
        (
            "--oidc-issuer https://x.io --oidc-client-id c --oidc-client-secret-file f \
             --oidc-allowed-domains a_b",
            "not a domain",
        ),
    ] {
        let e = serve(line, &[]).unwrap_err();
        assert!(e.0.contains(needle), "{line}: {e}");
    }
}

#[test]
fn cluster_flags() {
    let c = serve(
        "--database-url postgres://u:p@127.0.0.1:5432/d --node-id n1 --drain-secs 2.5",
        &[],
    )
    .unwrap();
    assert_eq!(
        c.database_url.as_deref(),
        Some("postgres://u:p@127.0.0.1:5432/d")
    );
    assert_eq!(c.node_id, "n1");
    assert_eq!(c.drain, Duration::from_millis(2500));
    let d = serve("", &[]).unwrap();
    assert!(d.database_url.is_none() && d.drain.is_zero());
    assert!(d.node_id.ends_with(&format!("-{}", std::process::id())));
    for (line, needle) in [
        ("--database-url sqlite://x", "postgres://"),
        ("--node-id nœud", "--node-id"),
        ("--drain-secs -1", "--drain-secs"),
    ] {
        let e = serve(line, &[]).unwrap_err();
        assert!(e.0.contains(needle), "{line}: {e}");
    }
}

#[test]
fn public_url_is_normalised() {
    let c = serve("--public-url https://example.com/", &[]).unwrap();
    assert_eq!(c.public_url.as_deref(), Some("https://example.com"));
    let c = serve("--public-url HTTPS://Interviews.Example.COM:443", &[]).unwrap();
    assert_eq!(
        c.public_url.as_deref(),
        Some("https://interviews.example.com")
    );
}

#[test]
fn admin_token_lasts_a_web_session_by_default_and_revoke_parses() {
    let env = HashMap::new();
    match parse(&args("admin token --email a@b.c"), &env).unwrap() {
        Command::AdminToken { ttl, .. } => assert_eq!(ttl, Duration::from_secs(7 * 86_400)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse(&args("admin revoke --email a@b.c --db x.db"), &env).unwrap(),
        Command::AdminRevoke { .. }
    ));
}
