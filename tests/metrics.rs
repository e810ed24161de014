//! /metrics: names, labels and that the counters move with what happens.

mod common;

use common::*;

#[test]
fn stream_gauges_and_counters_move() {
    let srv = Server::start(&["--agent-key", AGENT_KEY]);
    let c = srv.admin_cookie();
    let (mut a1, _) = srv.admin_ws(&c);
    let (mut a2, _) = srv.admin_ws(&c);
    let s = srv.started_session(3);
    let mut sess = srv.session_ws(&s.session_id, &s.token).unwrap();
    recv_json(&mut sess, WAIT);
    let mut agent = srv.agent(AGENT_KEY).0;
    agent
        .send(tungstenite::Message::Ping(b"x".to_vec().into()))
        .unwrap();
    next_event(&mut agent, WAIT, true);

    let g = |stream: &str| srv.metric("catalytic_ws_connections", &[("stream", stream)]);
    let acc = |stream: &str| srv.metric("catalytic_ws_accepted_total", &[("stream", stream)]);
    assert_eq!(g("admin"), 2.0);
    assert_eq!(g("session"), 1.0);
    assert_eq!(g("agent"), 1.0);
    assert_eq!(acc("admin"), 2.0);
    assert_eq!(acc("session"), 1.0);
    assert_eq!(acc("agent"), 1.0);

    // A broadcast: both admins get it; counters and the histogram move.
    let sent_before = srv.metric("catalytic_ws_messages_sent_total", &[]);
    let bytes_before = srv.metric("catalytic_ws_bytes_sent_total", &[]);
    srv.create_user("Ada", "Lovelace", None);
    recv_type(&mut a1, "user_added", WAIT);
    recv_type(&mut a2, "user_added", WAIT);
    let text = srv.metrics();
    let sent = metric_value(&text, "catalytic_ws_messages_sent_total", &[]).expect("messages_sent");
    let bytes = metric_value(&text, "catalytic_ws_bytes_sent_total", &[]).expect("bytes_sent");
    assert!(
        sent >= sent_before + 2.0,
        "messages_sent {sent_before} -> {sent}"
    );
    assert!(
        bytes > bytes_before + 200.0,
        "bytes_sent {bytes_before} -> {bytes}"
    );
    let count = metric_value(
        &text,
        "catalytic_broadcast_seconds_count",
        &[("stream", "admin")],
    )
    .expect("catalytic_broadcast_seconds_count{stream=\"admin\"}");
    assert!(count >= 1.0, "broadcast histogram count {count}");
    assert!(
        text.contains("catalytic_broadcast_seconds_bucket{"),
        "histogram buckets:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("catalytic_broadcast_seconds_bucket{")
                && l.contains("le=\"+Inf\"")),
        "+Inf bucket:\n{text}"
    );
    assert!(
        text.contains("# TYPE catalytic_ws_connections gauge"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE catalytic_ws_accepted_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE catalytic_broadcast_seconds histogram"),
        "{text}"
    );

    // Closing by the client brings the gauges down and counts reason="client".
    close_normal(&mut a1);
    wait_ended(&mut a1, WAIT);
    close_normal(&mut sess);
    wait_ended(&mut sess, WAIT);
    srv.wait_metric(
        "catalytic_ws_connections",
        &[("stream", "admin")],
        WAIT,
        |v| v == 1.0,
    );
    srv.wait_metric(
        "catalytic_ws_connections",
        &[("stream", "session")],
        WAIT,
        |v| v == 0.0,
    );
    srv.wait_metric(
        "catalytic_ws_closed_total",
        &[("reason", "client")],
        WAIT,
        |v| v >= 2.0,
    );
}

#[test]
fn reconnect_within_60s_is_counted() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let (mut ws, _) = srv.admin_ws(&c);
    assert_eq!(
        srv.metric("catalytic_ws_reconnects_total", &[("stream", "admin")]),
        0.0
    );
    close_normal(&mut ws);
    wait_ended(&mut ws, WAIT);
    srv.wait_metric(
        "catalytic_ws_connections",
        &[("stream", "admin")],
        WAIT,
        |v| v == 0.0,
    );
    let (_ws, _) = srv.admin_ws(&c);
    srv.wait_metric(
        "catalytic_ws_reconnects_total",
        &[("stream", "admin")],
        WAIT,
        |v| v == 1.0,
    );
    // A different credential is not a reconnect.
    let (_ws2, _) = srv.admin_ws(&srv.second_admin_cookie());
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        srv.metric("catalytic_ws_reconnects_total", &[("stream", "admin")]),
        1.0
    );
}

#[test]
fn http_requests_counted_by_code() {
    let srv = Server::start(&[]);
    let before = srv.metric("catalytic_http_requests_total", &[("code", "401")]);
    for _ in 0..3 {
        assert_eq!(srv.get("/api/users", None).status, 401);
    }
    srv.wait_metric(
        "catalytic_http_requests_total",
        &[("code", "401")],
        WAIT,
        |v| v == before + 3.0,
    );
}

/// API.md: `--node-id ID` names the node in metrics (it was only in the log).
#[test]
fn the_node_id_names_the_node_in_metrics() {
    let srv = Server::start(&["--node-id", "probe-7"]);
    let text = srv.get("/metrics", None).text();
    assert!(
        text.lines()
            .any(|l| l == "catalytic_node_info{node=\"probe-7\"} 1"),
        "{text}"
    );
}
