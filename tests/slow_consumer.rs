//! A client that never reads is dropped (close 1013, counted as slow_consumer) once its queued
//! output passes --max-outbox-bytes, while a live admin keeps receiving every event, in order,
//! exactly once and without lag.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// `PATCH /api/users/{id}` on a kept-alive connection; it must succeed.
fn patch(c: &mut HttpConn, cookie: &str, id: i64, body: &serde_json::Value) {
    let body = body.to_string();
    let r = c
        .send(
            "PATCH",
            &format!("/api/users/{id}"),
            &[("Cookie", cookie), ("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )
        .expect("PATCH");
    assert_eq!(r.status, 200, "PATCH {body:.80}: {}", r.text());
}

#[test]
fn never_reading_client_is_dropped_and_others_keep_pace() {
    const MAX_EVENTS: usize = 5_000;
    let srv = Server::start(&["--max-outbox-bytes", "8192"]);
    let live = LiveAdmin::start(&srv);
    let cookie = srv.admin_cookie();
    let u = srv.create_user("Slow", "Consumer", Some(10));
    let id = id_of(&u);
    live.wait_for("user_added for the target", WAIT, |v| {
        v["type"] == "user_added"
    });
    // The slow one: small receive buffer, handshake, then never read again.
    let mut slow = ws_handshake(
        srv.tiny_buffer_stream(),
        &srv.ws_url("/admin/stream"),
        &[("Cookie", &cookie)],
    )
    .expect("slow client handshake");
    let mut c = srv.http();
    let pad = "p".repeat(190);
    let t = Instant::now();
    let mut answered = Vec::with_capacity(MAX_EVENTS);
    let mut dropped_at = None;
    // Until the slow one is dropped (checked every 100), then 200 more; at most MAX_EVENTS.
    for i in 0..MAX_EVENTS {
        let body = json!({ "last_name": format!("n{i}{pad}"), "first_name": pad });
        patch(&mut c, &cookie, id, &body);
        answered.push(Instant::now());
        if dropped_at.is_none()
            && i % 100 == 99
            && srv.metric("catalytic_ws_closed_total", &[("reason", "slow_consumer")]) >= 1.0
        {
            dropped_at = Some(i + 1);
        }
        if dropped_at.is_some_and(|d| i + 1 >= d + 200) {
            break;
        }
    }
    assert!(
        dropped_at.is_some(),
        "slow client never dropped after {MAX_EVENTS} broadcasts"
    );
    let events = answered.len();
    eprintln!("slow client dropped after {dropped_at:?} broadcasts of ~600 B");
    eprintln!("{events} PATCHes in {:?}", t.elapsed());
    // The live admin got every update, in order, each soon after its PATCH was answered.
    let mut worst = Duration::ZERO;
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while next < events {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "live admin: update {next} of {events} missing after 10 s"
        );
        let (at, ev) = live
            .rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("live admin: update {next} missing ({e:?})"));
        let v = ev.unwrap_or_else(|e| panic!("live admin died at update {next}: {e}"));
        if v["type"] != "user_update" {
            continue;
        }
        assert_eq!(
            v["data"]["last_name"].as_str(),
            Some(format!("n{next}{pad}").as_str()),
            "live admin: updates out of order or lost"
        );
        worst = worst.max(at.saturating_duration_since(answered[next]));
        next += 1;
    }
    eprintln!(
        "live admin: all {events} updates in order; worst lag after the PATCH answer {worst:?}"
    );
    assert!(
        worst < Duration::from_secs(1),
        "live admin lagged {worst:?}"
    );
    let n = srv.wait_metric(
        "catalytic_ws_closed_total",
        &[("reason", "slow_consumer")],
        WAIT,
        |v| v >= 1.0,
    );
    eprintln!("slow_consumer closes: {n}");
    // The slow client, reading at last, finds the stream over (close 1013 when it fitted).
    let end = wait_ended(&mut slow, Duration::from_secs(10));
    eprintln!("slow client's end: {end:?}");
    if let Some((code, _)) = end {
        assert_eq!(code, 1013, "slow consumer close code");
    }
    drop(c);
    // Only the live admin's stream is left.
    srv.wait_metric(
        "catalytic_ws_connections",
        &[("stream", "admin")],
        WAIT,
        |v| v == 1.0,
    );
    assert_serving(&srv, &live, "never-reading client");
}

/// A slow consumer that reads again soon after it was dropped finds whole frames, then close
/// 1013 `Slow consumer` (API.md limits). The socket used to be closed at once, so it found a
/// frame cut in half and no close frame (a browser saw 1006).
#[test]
fn a_dropped_slow_consumer_reading_again_gets_whole_frames_then_1013() {
    let srv = Server::start(&["--max-outbox-bytes", "16384"]);
    let cookie = srv.admin_cookie();
    let u = srv.create_user("Slow", "Reader", Some(10));
    let id = id_of(&u);
    let mut slow = ws_handshake(
        srv.tiny_buffer_stream(),
        &srv.ws_url("/admin/stream"),
        &[("Cookie", &cookie)],
    )
    .expect("slow client handshake");
    // ~4.6 KB per `user_update`: a few fill the small socket buffers, a few more the outbox.
    let long = "x".repeat(2000);
    let mut c = srv.http();
    let mut dropped = false;
    for i in 0..500 {
        let body = json!({
            "transcript_url": format!("https://t.example.com/{i}/{long}"),
            "summary_url": format!("https://s.example.com/{i}/{long}"),
        });
        patch(&mut c, &cookie, id, &body);
        if srv.metric("catalytic_ws_closed_total", &[("reason", "slow_consumer")]) >= 1.0 {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the slow client was never dropped");
    // Reading again at once: every frame whole, then the close.
    let end = wait_ended(&mut slow, Duration::from_secs(5));
    assert_eq!(
        end,
        Some((1013, "Slow consumer".to_string())),
        "a close frame after whole frames"
    );
}
