//! Micro-benchmarks of the per-message protocol work (harness = false):
//! HTTP request parsing, broadcast frame encoding (done once per event, whatever the number of
//! recipients), client frame decoding, and the encode-once `user_added` event.
//!
//! Run with `cargo bench --bench protocol`; prints the median ns per operation of 11 runs.

use catalytic::http::{parse_request, Parsed};
use catalytic::ws::{self, FrameParse};
use std::hint::black_box;
use std::time::Instant;

const RUNS: usize = 11;

fn median_ns(iters: usize, mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[RUNS / 2]
}

/// A client frame as a browser sends it: masked.
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    f
}

fn main() {
    let body = r#"{"first_name":"Ada","last_name":"Lovelace","email":"ada@example.com"}"#;
    let post = format!(
        "POST /api/users HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bench\r\nAccept: */*\r\n\
Content-Type: application/json\r\nCookie: admin_session=3f9c0d6b1e2a4c5d8e7f60718293a4b5c6d7e8f90123456789abcdef01234567\r\n\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let post = post.as_bytes();
    let upgrade = b"GET /admin/stream HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:8080\r\n\
Cookie: admin_session=3f9c0d6b1e2a4c5d8e7f60718293a4b5c6d7e8f90123456789abcdef01234567\r\n\r\n";
    let user = br#"{"type":"user_added","data":{"id":7,"first_name":"Ada","last_name":"Lovelace","email":"ada@example.com","status":"invited","progress":"0/10","invite_url":"http://127.0.0.1:8080/session?token=b6ebadeedbaeabb5e75c86e11dff232c500945d2f600502641491290b1f18474","token_valid":true,"session_timer":null,"transcript":null,"summary":null}}"#;
    let pong = masked_text(br#"{"type":"pong"}"#);

    let mut rows: Vec<(&str, f64)> = Vec::new();
    rows.push((
        "parse POST /api/users (head + JSON body)",
        median_ns(100_000, || match parse_request(black_box(post)) {
            Parsed::Complete(r, n) => {
                black_box((r, n));
            }
            _ => unreachable!(),
        }),
    ));
    rows.push((
        "parse WebSocket upgrade + accept key",
        median_ns(100_000, || {
            if let Parsed::Complete(r, _) = parse_request(black_box(upgrade)) {
                black_box(ws::accept(&r, &["http://127.0.0.1:8080"]).ok());
            }
        }),
    ));
    rows.push((
        "encode user_added frame (~380 B, once per event)",
        median_ns(1_000_000, || {
            black_box(std::rc::Rc::<[u8]>::from(ws::text_frame(black_box(user))));
        }),
    ));
    let mut buf = pong.clone();
    rows.push((
        "decode + unmask a client pong frame",
        median_ns(1_000_000, || {
            buf.copy_from_slice(&pong);
            match ws::parse_frame(black_box(&mut buf), 65_536) {
                FrameParse::Frame(f, n) => {
                    black_box((f.payload.len(), n));
                }
                _ => unreachable!(),
            }
        }),
    ));

    println!("protocol micro-benchmarks, median of {RUNS} runs");
    println!("{:<50} {:>10}", "operation", "ns/op");
    println!("{:-<50} {:->10}", "", "");
    for (name, ns) in rows {
        println!("{name:<50} {ns:>10.1}");
    }
}
