//! Cluster mode, deployment-wide state (contract "(v2) Cluster mode", issue 10 items 4 and 7
//! (i)): credentials work on every node and logout or `admin revoke` closes streams on every
//! node within 10 s; presence covers every node; sign-in failures count across the deployment
//! (device cookies work on any node); the first-admin setup happens once; the `admin` CLI on
//! `--database-url`; a warning when cluster mode runs without `--public-url`.

mod common;

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use common::cluster_checks::*;
use common::*;
use serde_json::json;

/// (i) An invite link made on node 1 activates on node 3; logout on node 2 closes that
/// session's admin stream on node 1 within 10 s, and only that session's.
#[test]
fn i_credentials_work_on_every_node() {
    let c = Cluster::start(3, &[]);
    let cookie = c.admin_cookie();
    let user = c.nodes[0].create_user("Ada", "Lovelace", Some(5));
    let (sid, token, body) = c.nodes[2].activate_ok(&invite_token(&user));
    assert!(
        body["remaining_seconds"].as_u64().is_some_and(|s| s > 0),
        "{body}"
    );
    let page = open_page(&c.nodes[1], &sid, &token);
    let r = c.nodes[0].request(
        "POST",
        "/api/session/answer",
        &[("Cookie", &format!("session_token={token}"))],
        None,
    );
    assert_eq!(
        r.status,
        200,
        "answer on node 1 with a session made on node 3: {}",
        r.text()
    );
    page.wait("progress 1", BUS, |rec| {
        rec.of_type("progress")
            .iter()
            .any(|f| f.json["questions_answered"] == 1)
    });

    let other = c.second_admin_cookie();
    let doomed = c.nodes[0].admin_recorder(&other);
    let keeper = c.nodes[0].admin_recorder(&cookie);
    let r = c.nodes[1].request("POST", "/api/admin/logout", &[("Cookie", &other)], None);
    assert_eq!(r.status, 204, "logout on node 2: {}", r.text());
    let t = Instant::now();
    let end = doomed.wait_end(Duration::from_secs(11));
    assert_eq!(
        end.close.as_ref().map(|c| c.0),
        Some(1008),
        "{}: {end:?}",
        doomed.what
    );
    assert!(
        t.elapsed() <= Duration::from_secs(10),
        "closed after {:?}",
        t.elapsed()
    );
    eprintln!(
        "logout on node 2 closed the stream on node 1 after {:?}",
        t.elapsed()
    );
    c.nodes[1]
        .get("/api/users", Some(&other))
        .assert_error(401, "logged-out cookie on node 2");
    for node in &c.nodes {
        refused_by(
            node,
            &other,
            t + Duration::from_secs(10),
            "the logged-out cookie",
        );
    }
    keeper.assert_open("after another session's logout");
    let u = post_user(&c.nodes[2], &cookie, "after.logout@example.com");
    keeper.wait("a write after the logout", BUS, |rec| {
        rec.numbered()
            .iter()
            .any(|f| f.json["data"]["id"] == u["id"])
    });
}

/// Presence covers every node: a change shows everywhere within 3 s; a node that disappears
/// drops out within 15 s.
#[test]
fn presence_merges_across_nodes() {
    let mut c = Cluster::start(3, &[]);
    let cookie = c.admin_cookie();
    let user = c.nodes[0].create_user("Ada", "Lovelace", Some(5));
    let id = id_of(&user);
    let (sid, token, _) = c.nodes[0].activate_ok(&invite_token(&user));
    let watcher = c.nodes[0].admin_recorder(&cookie);
    let on2 = c.nodes[1].admin_recorder(&cookie);
    let page2 = open_page(&c.nodes[1], &sid, &token);
    let page3 = open_page(&c.nodes[2], &sid, &token);
    let t = Instant::now();
    let within = |what: &str, bound: Duration, want: (u64, u64)| {
        let seen = watcher.try_wait(bound, |rec| {
            rec.presence()
                .is_some_and(|p| presence_counts(p, id) == want)
        });
        let last = watcher.rec().presence().cloned();
        assert!(
            seen.is_some(),
            "{what}: presence (page streams of user {id}, admin streams) not {want:?} within \
             {bound:?}; last presence frame on node 1: {last:?}"
        );
        eprintln!("presence {want:?} ({what}) after {:?}", t.elapsed());
    };
    within(
        "pages on nodes 2 and 3, admins on nodes 1 and 2",
        PRESENCE,
        (2, 2),
    );
    // The gauge is this node's view of the deployment: node 1 holds no page itself (it read 0).
    c.nodes[0].wait_metric("catalytic_presence_sessions", &[], PRESENCE, |v| v == 1.0);
    // A stream opening on node 3 is told a state that counts itself and the other nodes'
    // streams (it was told the last shared state, which left itself out). First node 3 must
    // know the others' part (it reads their shares every second).
    let bound = Instant::now() + PRESENCE;
    while presence_counts(&c.nodes[2].get("/api/presence", Some(&cookie)).json(), id) != (2, 2) {
        assert!(
            Instant::now() < bound,
            "node 3 never saw the others' presence"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let fresh = c.nodes[2].admin_recorder(&cookie);
    let told = fresh
        .try_wait(PRESENCE, |rec| rec.presence().is_some())
        .expect("a presence frame after initial");
    let first = &told.of_type("presence")[0].json;
    assert_eq!(
        presence_counts(first, id),
        (2, 3),
        "the first presence on node 3: {first}"
    );
    drop(fresh);
    within("the stream on node 3 closed", PRESENCE, (2, 2));
    drop(page3);
    within("page on node 3 closed", PRESENCE, (1, 2));
    c.nodes[1].kill();
    let t_kill = Instant::now();
    drop((page2, on2));
    within("node 2 gone", Duration::from_secs(16), (0, 1));
    eprintln!(
        "node 2 dropped out of presence {:?} after SIGKILL",
        t_kill.elapsed()
    );
    // The same through the API on node 3, which holds none of these streams itself.
    let bound = Instant::now() + PRESENCE;
    loop {
        let r = c.nodes[2].get("/api/presence", Some(&cookie));
        assert_eq!(r.status, 200, "GET /api/presence: {}", r.text());
        if presence_counts(&r.json(), id) == (0, 1) {
            break;
        }
        assert!(
            Instant::now() < bound,
            "GET /api/presence on node 3 (want no page of user {id}, 1 admin stream): {}",
            r.text()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// POST /api/admin/login on `node` from address `ip`, with a `device` cookie if given.
fn login_from(node: &Server, ip: &str, email: &str, password: &str, device: Option<&str>) -> Resp {
    let body = json!({"email": email, "password": password}).to_string();
    let cookie = device.map(|d| format!("device={d}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(c) = &cookie {
        headers.push(("Cookie", c));
    }
    node.http_from(ip)
        .send("POST", "/api/admin/login", &headers, Some(body.as_bytes()))
        .expect("login request")
}

/// Login-failure limits count across the deployment, in the database: failures spread over the
/// nodes add up; a burst sent to every node at once gets exactly the limit checked; a device
/// cookie one node issued is honoured by another (it draws on its own failures, so the account
/// locked by strangers still lets its browser in).
#[test]
fn login_failures_count_across_the_deployment() {
    const WRONG: &str = "wrong password 123";
    let c = Cluster::start(3, &["--login-failures-per-minute", "3"]);
    c.admin_cookie();
    let r = login_from(&c.nodes[0], "127.0.0.5", ADMIN_EMAIL, ADMIN_PASSWORD, None);
    assert_eq!(r.status, 204, "sign-in on node 1: {}", r.text());
    let device = r
        .cookie_value("device")
        .expect("a device cookie on sign-in");

    for (i, node) in c.nodes.iter().enumerate() {
        login_from(node, "127.0.0.2", ADMIN_EMAIL, WRONG, None)
            .assert_error(401, &format!("failure {} (on node {})", i + 1, i + 1));
    }
    let r = login_from(&c.nodes[0], "127.0.0.2", ADMIN_EMAIL, WRONG, None);
    r.assert_error(429, "the 4th failure, back on node 1");
    assert!(
        r.header("Retry-After")
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "429 without a Retry-After in seconds"
    );
    // Another client and account are not limited by them.
    login_from(&c.nodes[1], "127.0.0.3", "nobody@example.com", WRONG, None)
        .assert_error(401, "another address and account");

    // The account is locked for browsers without its device cookie, on every node…
    login_from(&c.nodes[2], "127.0.0.6", ADMIN_EMAIL, ADMIN_PASSWORD, None)
        .assert_error(429, "the right password, no device cookie, locked account");
    // …but the cookie node 1 issued lets its browser in on node 2 and node 3.
    for node in &c.nodes[1..] {
        let r = login_from(
            node,
            "127.0.0.7",
            ADMIN_EMAIL,
            ADMIN_PASSWORD,
            Some(&device),
        );
        assert_eq!(
            r.status,
            204,
            "sign-in with node 1's device cookie on {}: {}",
            node.addr,
            r.text()
        );
    }

    // A burst at once on every node, each attempt from its own address, one account: exactly
    // the limit is checked (401), the rest are refused before any check (429).
    const BURST: usize = 12;
    let barrier = Barrier::new(BURST);
    let statuses: Vec<u16> = thread::scope(|s| {
        let hs: Vec<_> = (0..BURST)
            .map(|k| {
                let (node, barrier) = (&c.nodes[k % 3], &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let ip = format!("127.0.1.{}", k + 1);
                    login_from(node, &ip, "burst@example.com", WRONG, None).status
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let checked = statuses.iter().filter(|&&st| st == 401).count();
    let limited = statuses.iter().filter(|&&st| st == 429).count();
    assert_eq!(
        (checked, limited),
        (3, BURST - 3),
        "a burst of {BURST} over 3 nodes with a limit of 3: {statuses:?}"
    );
}

/// A node started in cluster mode without `--public-url` warns at start: its invite links and
/// accepted origin would name the node, not the load balancer in front of the nodes.
#[test]
fn cluster_mode_without_public_url_warns() {
    let c = Cluster::start(1, &[]);
    assert!(
        !c.nodes[0].logs.joined().contains("without --public-url"),
        "a node with --public-url warned"
    );
    let mut bare = Server::cluster_node(
        &c.url,
        &format!("{}-bare", c.node_id(0)),
        &[],
        Default::default(),
    );
    bare.spawn();
    let line = bare
        .logs
        .wait_line(WAIT, |l| l.contains("without --public-url"))
        .unwrap_or_else(|| panic!("no warning; log:\n{}", bare.logs.joined()));
    assert!(line.contains("WARN"), "not a warning: {line}");
}

/// The first-admin setup is one guarded insert for the deployment: a node's setup code works
/// on another node, two racing setups make one admin, and setup is closed on every node.
#[test]
fn first_admin_setup_works_once_for_the_cluster() {
    let c = Cluster::start(3, &[]);
    let code = setup_code(&c.nodes[0]);
    let codes: Vec<String> = c.nodes.iter().map(setup_code).collect();
    let body =
        |email: &str, code: &str| json!({"code": code, "email": email, "password": ADMIN_PASSWORD});
    let barrier = Barrier::new(2);
    let answers: Vec<Resp> = thread::scope(|s| {
        let hs: Vec<_> = [1usize, 2]
            .into_iter()
            .map(|i| {
                let (node, barrier, b) = (
                    &c.nodes[i],
                    &barrier,
                    body(&format!("first{i}@example.com"), &code),
                );
                s.spawn(move || {
                    barrier.wait();
                    node.json("POST", "/api/admin/setup", None, Some(&b))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    let won: Vec<usize> = (0..2).filter(|&k| answers[k].status == 204).collect();
    assert_eq!(
        won.len(),
        1,
        "two racing setups with node 1's code: {statuses:?}"
    );
    let loser = 1 - won[0];
    answers[loser].assert_error(403, "the setup that lost the race");
    let winner_email = format!("first{}@example.com", won[0] + 1);
    let admin = format!(
        "admin_session={}",
        answers[won[0]].cookie_value("admin_session").unwrap()
    );

    for (i, node) in c.nodes.iter().enumerate() {
        assert_eq!(
            node.get("/api/users", Some(&admin)).status,
            200,
            "setup cookie on node {}",
            i + 1
        );
        node.json(
            "POST",
            "/api/admin/setup",
            None,
            Some(&body("late@example.com", &codes[i])),
        )
        .assert_error(403, &format!("node {}'s own code after setup", i + 1));
        let login = |email: &str| {
            node.json(
                "POST",
                "/api/admin/login",
                None,
                Some(&json!({"email": email, "password": ADMIN_PASSWORD})),
            )
            .status
        };
        assert_eq!(
            login(&winner_email),
            204,
            "the admin signs in on node {}",
            i + 1
        );
        let loser_email = format!("first{}@example.com", loser + 1);
        assert_eq!(
            login(&loser_email),
            401,
            "the losing setup made no admin (node {})",
            i + 1
        );
    }
}

/// `catalytic admin create/token/revoke --database-url`: the CLI works on an empty cluster
/// database, its token works on every node, and revoke closes the streams on every node.
#[test]
fn admin_cli_works_with_database_url() {
    let mut c = Cluster::new(3, &[]);
    let email = "ops@example.com";
    let url = c.url.clone();
    let out = run_cli(
        &["admin", "create", "--email", email, "--database-url", &url],
        &[("CATALYTIC_ADMIN_PASSWORD", ADMIN_PASSWORD)],
        None,
    );
    assert!(
        out.status.success(),
        "admin create on an empty database: {}\n{}",
        out.status,
        out.stderr
    );
    let out = run_cli(
        &["admin", "token", "--email", email, "--database-url", &url],
        &[],
        None,
    );
    assert!(
        out.status.success(),
        "admin token: {}\n{}",
        out.status,
        out.stderr
    );
    let token = out.stdout.trim().to_string();
    assert!(
        !token.is_empty() && !token.contains('\n'),
        "token output {:?}",
        out.stdout
    );
    let cookie = format!("admin_session={token}");

    c.spawn_all();
    for (i, node) in c.nodes.iter().enumerate() {
        assert_eq!(
            node.get("/api/users", Some(&cookie)).status,
            200,
            "CLI token on node {}",
            i + 1
        );
        assert!(
            !node.logs.joined().contains("setup?code="),
            "node {} offers setup although an admin exists",
            i + 1
        );
    }
    let streams: Vec<Recorder> = [0, 2]
        .iter()
        .map(|&i| c.nodes[i].admin_recorder(&cookie))
        .collect();
    let t = Instant::now();
    let out = run_cli(
        &["admin", "revoke", "--email", email, "--database-url", &url],
        &[],
        None,
    );
    assert!(
        out.status.success(),
        "admin revoke: {}\n{}",
        out.status,
        out.stderr
    );
    for r in &streams {
        let end = r.wait_end(Duration::from_secs(11));
        assert_eq!(
            end.close.as_ref().map(|c| c.0),
            Some(1008),
            "{}: {end:?}",
            r.what
        );
    }
    assert!(
        t.elapsed() <= Duration::from_secs(10),
        "revoke closed the streams after {:?}",
        t.elapsed()
    );
    for node in &c.nodes {
        refused_by(
            node,
            &cookie,
            t + Duration::from_secs(10),
            "the revoked token",
        );
    }
}
