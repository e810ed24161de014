//! Command line: flags, env vars, admin subcommands, startup failures.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn unknown_flag_fails_with_a_clear_message() {
    let out = run_cli(&["serve", "--no-such-flag"], &[], None);
    assert!(!out.status.success(), "exit status {}", out.status);
    assert!(
        out.stderr.contains("--no-such-flag"),
        "stderr should name the bad flag: {:?}",
        out.stderr
    );
    let out = run_cli(&["--no-such-flag"], &[], None);
    assert!(!out.status.success());
    assert!(out.stderr.contains("--no-such-flag"), "{:?}", out.stderr);
}

#[test]
fn bad_flag_values_fail() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let db = db.to_str().unwrap();
    for args in [
        vec![
            "serve",
            "--db",
            db,
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-secs",
            "abc",
        ],
        vec![
            "serve",
            "--db",
            db,
            "--listen",
            "127.0.0.1:0",
            "--session-minutes",
            "soon",
        ],
        vec!["serve", "--db", db, "--listen", "not-an-address"],
        vec![
            "serve",
            "--db",
            db,
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-secs",
        ],
    ] {
        let out = run_cli(&args, &[], None);
        assert!(
            !out.status.success(),
            "{args:?} should fail, got {}",
            out.status
        );
        assert!(
            !out.stderr.trim().is_empty(),
            "{args:?}: no message on stderr"
        );
    }
}

#[test]
fn unusable_db_path_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let db = unusable_db_path(dir.path());
    let db = db.to_str().unwrap();
    let out = run_cli(&["serve", "--listen", "127.0.0.1:0", "--db", db], &[], None);
    assert!(!out.status.success(), "exit status {}", out.status);
    assert!(!out.stderr.trim().is_empty(), "no message on stderr");
    let out = run_cli(
        &["admin", "create", "--email", "a@example.com", "--db", db],
        &[("CATALYTIC_ADMIN_PASSWORD", ADMIN_PASSWORD)],
        None,
    );
    assert!(
        !out.status.success(),
        "admin create on an unusable db: {}",
        out.status
    );
}

#[test]
fn admin_token_prints_only_a_working_token() {
    let srv = Server::start(&[]);
    srv.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD);
    let db = srv.db_arg();
    let out = run_cli(
        &["admin", "token", "--email", ADMIN_EMAIL, "--db", &db],
        &[],
        None,
    );
    assert!(out.status.success(), "{}", out.stderr);
    let tok = out.stdout.trim_end_matches('\n');
    assert!(!tok.is_empty());
    assert!(
        !tok.contains(char::is_whitespace),
        "stdout must be the token only, got {:?}",
        out.stdout
    );
    assert!(tok.len() >= 16, "token too short: {tok:?}");
    let c = format!("admin_session={tok}");
    assert_eq!(srv.get("/api/users", Some(&c)).status, 200);

    // Each call makes a new session.
    let tok2 = srv.admin_token(ADMIN_EMAIL);
    assert_ne!(tok, tok2);
    assert_eq!(
        srv.get("/api/users", Some(&format!("admin_session={tok2}")))
            .status,
        200
    );

    // Unknown admin: failure, nothing on stdout.
    let out = run_cli(
        &[
            "admin",
            "token",
            "--email",
            "nobody@example.com",
            "--db",
            &db,
        ],
        &[],
        None,
    );
    assert!(!out.status.success());
    assert!(
        out.stdout.trim().is_empty(),
        "stdout on failure: {:?}",
        out.stdout
    );
}

#[test]
fn admin_token_ttl_hours() {
    let srv = Server::start(&[]);
    srv.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD);
    let c = format!(
        "admin_session={}",
        srv.admin_token_with_ttl(ADMIN_EMAIL, "1")
    );
    assert_eq!(srv.get("/api/users", Some(&c)).status, 200);
}

#[test]
fn admin_create_reads_password_from_stdin() {
    let srv = Server::start(&[]);
    let db = srv.db_arg();
    let out = run_cli(
        &[
            "admin",
            "create",
            "--email",
            "stdin@example.com",
            "--db",
            &db,
        ],
        &[],
        Some("from stdin password 99\n"),
    );
    assert!(
        out.status.success(),
        "admin create via stdin: {}",
        out.stderr
    );
    let r = srv.json(
        "POST",
        "/api/admin/login",
        None,
        Some(&json!({"email":"stdin@example.com","password":"from stdin password 99"})),
    );
    assert_eq!(r.status, 204, "login with the stdin password");
}

#[test]
fn default_command_is_serve_and_env_vars_configure_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("env.sqlite");
    let mut cmd = command();
    cmd.env("CATALYTIC_LISTEN", "127.0.0.1:0")
        .env("CATALYTIC_DB", &db)
        .env("CATALYTIC_PUBLIC_URL", "https://env.example.com");
    let (mut child, logs, addr) = spawn_listening(cmd);
    assert!(db.exists(), "CATALYTIC_DB honoured (db file created)");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    let setup = logs
        .wait_line(Duration::from_secs(3), |l| l.contains("/setup?code="))
        .expect("setup line");
    assert!(
        setup.contains("https://env.example.com/setup?code="),
        "CATALYTIC_PUBLIC_URL honoured: {setup}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn listen_on_a_busy_port_fails() {
    let srv = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let listen = srv.addr.to_string();
    let out = run_cli(
        &["serve", "--listen", &listen, "--db", db.to_str().unwrap()],
        &[],
        None,
    );
    assert!(
        !out.status.success(),
        "second server on a busy port: {}",
        out.status
    );
    assert!(!out.stderr.trim().is_empty());
}

#[test]
fn version_and_help() {
    let out = run_cli(&["--version"], &[], None);
    assert!(out.status.success());
    assert_eq!(
        out.stdout.trim(),
        format!("catalytic {}", env!("CARGO_PKG_VERSION"))
    );
    let out = run_cli(&["--help"], &[], None);
    assert!(out.status.success());
    for (flag, default) in [
        ("--listen", "[127.0.0.1:8080]"),
        ("--db", "[./catalytic.db]"),
        ("--session-minutes", "[30]"),
        ("--invite-ttl-hours", "[168]"),
        ("--login-failures-per-minute", "[10]"),
    ] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{flag} ")))
            .unwrap_or_else(|| panic!("no help line for {flag}:\n{}", out.stdout));
        assert!(line.trim_end().ends_with(default), "{line}");
    }
}

#[test]
fn an_error_from_an_environment_variable_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let out = run_cli(
        &["serve", "--db", db.to_str().unwrap()],
        &[("CATALYTIC_HEARTBEAT_SECS", "often")],
        None,
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("CATALYTIC_HEARTBEAT_SECS"),
        "{:?}",
        out.stderr
    );
}

#[test]
fn a_db_in_a_missing_directory_is_an_error_and_a_new_db_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("db.sqlite");
    let out = run_cli(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            missing.to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("does not exist") && out.stderr.contains("no-such-dir"),
        "{:?}",
        out.stderr
    );
    assert!(!missing.parent().unwrap().exists(), "nothing was created");

    let db = dir.path().join("fresh.sqlite");
    let start = |db: &std::path::Path| {
        let mut cmd = command();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db);
        spawn_listening(cmd)
    };
    let (mut child, logs, _) = start(&db);
    assert!(
        logs.joined().contains("created new database"),
        "{}",
        logs.joined()
    );
    let _ = child.kill();
    let _ = child.wait();
    let (mut child, logs, _) = start(&db);
    assert!(!logs.joined().contains("created new database"));
    let _ = child.kill();
    let _ = child.wait();
}
