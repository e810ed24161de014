//! A client that never reads is dropped (close 1013, counted as slow_consumer) once its queued
//! output passes --max-outbox-bytes, while a live admin keeps receiving every event in order.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn slow_admin_is_dropped_and_live_admin_keeps_order() {
    let srv = Server::start(&["--max-outbox-bytes", "4096"]);
    let c = srv.admin_cookie();
    let u = srv.create_user("Slow", "Consumer", Some(10));
    let id = id_of(&u);

    // The slow one: handshake, then never read again.
    let mut slow = ws_handshake(
        srv.tiny_buffer_stream(),
        &srv.ws_url("/admin/stream"),
        &[("Cookie", &c)],
    )
    .expect("slow client handshake");

    // The live one reads on its own thread and reports every user_update's last_name.
    let (live, _) = srv.admin_ws(&srv.second_admin_cookie());
    let (tx, rx) = mpsc::channel::<Result<String, String>>();
    let reader = thread::spawn(move || {
        let mut live = live;
        loop {
            match next_event(&mut live, Duration::from_secs(20), true) {
                Some(WsEvent::Json(v)) if v["type"] == "user_update" => {
                    let name = v["data"]["last_name"].as_str().unwrap_or("").to_string();
                    let done = name == "final";
                    let _ = tx.send(Ok(name));
                    if done {
                        return live;
                    }
                }
                other => {
                    let _ = tx.send(Err(format!("live admin got {other:?}")));
                    return live;
                }
            }
        }
    });

    let first = "F".repeat(200);
    let mut sent = Vec::new();
    let mut http = srv.http();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut dropped = false;
    for i in 0..20_000 {
        let last = format!("{i:06}{}", "L".repeat(194));
        let body = serde_json::to_vec(&json!({"first_name": first, "last_name": last})).unwrap();
        let r = http
            .send(
                "PATCH",
                &format!("/api/users/{id}"),
                &[("Cookie", &c), ("Content-Type", "application/json")],
                Some(&body),
            )
            .expect("PATCH on keep-alive connection");
        assert_eq!(r.status, 200, "PATCH #{i}");
        sent.push(last);
        if i % 50 == 49 {
            let m = srv.metric("catalytic_ws_closed_total", &[("reason", "slow_consumer")]);
            if m >= 1.0 {
                dropped = true;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no slow-consumer close after {i} PATCHes"
            );
        }
    }
    assert!(
        dropped,
        "slow client never dropped after {} broadcasts (~{} KiB)",
        sent.len(),
        sent.len() * 600 / 1024
    );
    let r = srv.patch_user(id, &json!({"last_name": "final"}));
    assert_eq!(r.status, 200);
    sent.push("final".into());

    // Live admin: every update, in order, exactly once.
    for (i, want) in sent.iter().enumerate() {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(got)) => assert_eq!(&got, want, "live admin event #{i}"),
            Ok(Err(e)) => panic!("event #{i}: {e}"),
            Err(_) => panic!("live admin: event #{i} never arrived"),
        }
    }
    let _live = reader.join().unwrap();

    // The slow client's connection is over: reading drains what was buffered and then ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut close = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_event(&mut slow, left, true) {
            Some(WsEvent::Json(_)) => continue,
            Some(WsEvent::Close(c)) => {
                close = c;
                break;
            }
            Some(WsEvent::Ended(_)) => break,
            None => panic!("slow client's connection still open"),
            Some(other) => panic!("slow client got {other:?}"),
        }
    }
    eprintln!(
        "slow consumer dropped after {} broadcasts; it saw {close:?}",
        sent.len()
    );
    if let Some((code, _)) = close {
        assert_eq!(code, 1013, "close code for a slow consumer");
    }
    srv.wait_metric(
        "catalytic_ws_connections",
        &[("stream", "admin")],
        WAIT,
        |v| v == 1.0,
    );
}
