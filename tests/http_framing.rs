//! HTTP/1.1 on the wire, with raw bytes: keep-alive and pipelining, malformed and oversized
//! request heads, body framing (Content-Length only: chunked, CL+TE and conflicting lengths are
//! refused and never executed), the 64 KiB body limit and the 10-second request timeout, and
//! absolute-form targets (served when they name this server). Every refusal is a JSON error
//! followed by the end of the connection, and the server still serves.

mod common;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn keep_alive_and_pipelining_answer_in_order() {
    let srv = Server::start(&[]);
    let host = srv.addr.to_string();
    let mut conn = srv.http();
    // Sequential requests on one connection.
    for _ in 0..3 {
        let r = conn.send("GET", "/healthz", &[], None).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    }
    // Three pipelined requests in one write.
    let mut batch = build_request(&host, "GET", "/healthz", &[], None);
    batch.extend(build_request(&host, "GET", "/api/users", &[], None));
    batch.extend(build_request(&host, "GET", "/metrics", &[], None));
    batch.extend(build_request(&host, "GET", "/healthz", &[], None));
    conn.write_raw(&batch).unwrap();
    let r1 = conn.read_response().unwrap();
    let r2 = conn.read_response().unwrap();
    let r3 = conn.read_response().unwrap();
    let r4 = conn.read_response().unwrap();
    assert_eq!((r1.status, r1.text().as_str()), (200, "ok"));
    r2.assert_error(401, "pipelined GET /api/users");
    assert_eq!(r3.status, 200);
    assert!(r3.text().contains("catalytic_"), "third answer is /metrics");
    assert_eq!((r4.status, r4.text().as_str()), (200, "ok"));
}

/// Issue 12, item 15: `GET http://<this host>/healthz HTTP/1.1` (absolute form, which RFC 9112
/// says a server MUST accept) got 400. One naming another server still does (above).
#[test]
fn an_absolute_form_target_naming_this_server_is_served() {
    let srv = Server::start(&[]);
    let host = srv.addr.to_string();
    let mut conn = srv.http();
    for target in [
        format!("http://{host}/healthz"),
        format!("HTTP://{host}/healthz"),
        format!("http://{host}/healthz?x=1"),
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        conn.write_raw(req.as_bytes()).unwrap();
        let r = conn.read_response().unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "GET {target}");
    }
    let c = srv.admin_cookie();
    let req =
        format!("GET http://{host}/api/users HTTP/1.1\r\nHost: {host}\r\nCookie: {c}\r\n\r\n");
    conn.write_raw(req.as_bytes()).unwrap();
    assert_eq!(
        conn.read_response().unwrap().status,
        200,
        "an API route in absolute form"
    );
    let srv = Server::start(&["--public-url", "https://interviews.example.com"]);
    let req = format!(
        "GET https://interviews.example.com/healthz HTTP/1.1\r\nHost: {}\r\n\r\n",
        srv.addr
    );
    let (_, r) = raw_exchange(&srv, req.as_bytes());
    assert_eq!(r.status, 200, "the public URL's origin names this server");
    // RFC 9112 §3.2.2: the target's authority overrides `Host`, so a target naming the address
    // the client connected to is ours whatever `Host` says (it was refused 400).
    for host_header in ["interviews.example.com", "localhost"] {
        let req = format!(
            "GET http://{}/healthz HTTP/1.1\r\nHost: {host_header}\r\n\r\n",
            srv.addr
        );
        let (_, r) = raw_exchange(&srv, req.as_bytes());
        assert_eq!(
            r.status,
            200,
            "our own address, Host {host_header}: {}",
            r.text()
        );
    }
    // An empty path with a query is `/` with that query (it was refused 400).
    let req = format!(
        "GET http://{}?x=1 HTTP/1.1\r\nHost: {}\r\n\r\n",
        srv.addr, srv.addr
    );
    let (_, r) = raw_exchange(&srv, req.as_bytes());
    assert_eq!(r.status, 200, "GET http://host?x=1: {}", r.text());
}

/// API.md: every `/api/*` answer carries `Cache-Control: no-store` and `X-Content-Type-Options:
/// nosniff` — also the answers to requests refused before they could be read (too large,
/// malformed framing, too slow), which carried neither.
#[test]
fn refusals_of_unreadable_requests_are_not_to_be_stored() {
    let srv = Server::start(&[]);
    let host = srv.addr.to_string();
    let heads = [
        (413, format!("POST /api/users HTTP/1.1\r\nHost: {host}\r\nContent-Length: 70000\r\n\r\n")),
        (411, format!("POST /api/users HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n")),
        (400, format!("POST /api/users HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n")),
        (431, format!("GET /api/admin/auth HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n", "a".repeat(17_000))),
    ];
    for (status, head) in heads {
        let (_, r) = raw_exchange(&srv, head.as_bytes());
        assert_eq!(r.status, status, "{}", preview(head.as_bytes()));
        assert_eq!(r.header("Cache-Control"), Some("no-store"), "{status}");
        assert_eq!(
            r.header("X-Content-Type-Options"),
            Some("nosniff"),
            "{status}"
        );
    }
}

#[test]
fn malformed_requests_and_garbage_get_400() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let host = srv.addr.to_string();
    let mut rng = Rng(0x00C0_FFEE);
    let mut garbage = vec![0x80u8];
    garbage.extend(rng.bytes(1024));
    let tls_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0xaa, 0xbb, 0xcc, 0xdd,
    ];
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("garbage word", b"GARBAGE\r\n\r\n".to_vec(), &[400]),
        (
            "request line of words",
            b"THIS IS NOT HTTP\r\n\r\n".to_vec(),
            &[400],
        ),
        ("NUL bytes then a word", b"\x00\x01\x02garbage\r\n\r\n".to_vec(), &[400]),
        ("NUL bytes", b"\x00\x01\x02\x03\r\n\r\n".to_vec(), &[400]),
        ("TLS ClientHello", tls_hello.to_vec(), &[400]),
        ("1 KiB random bytes", garbage, &[400]),
        (
            "junk after the version",
            format!("GET / HTTP/1.1 extra\r\nHost: {host}\r\n\r\n").into_bytes(),
            &[400],
        ),
        (
            "HTTP/2.0 request line",
            format!("GET / HTTP/2.0\r\nHost: {host}\r\n\r\n").into_bytes(),
            &[400, 505],
        ),
        (
            "absolute-form target",
            format!("GET http://evil.example/ HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
            &[400],
        ),
        (
            "asterisk target",
            format!("GET * HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
            &[400],
        ),
        (
            "header without a colon",
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nNoColonHere\r\n\r\n").into_bytes(),
            &[400],
        ),
        (
            "space in a header name",
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nBad Name: v\r\n\r\n").into_bytes(),
            &[400],
        ),
        (
            "bare CR in a header value",
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nX: a\rb\r\n\r\n").into_bytes(),
            &[400],
        ),
        (
            "control byte in the target",
            format!("GET /\x7f HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
            &[400],
        ),
        (
            "no Host on HTTP/1.1",
            b"GET /healthz HTTP/1.1\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "two Host headers",
            format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nHost: evil.example\r\n\r\n")
                .into_bytes(),
            &[400],
        ),
        (
            "Content-Length: abc",
            format!("POST /api/users HTTP/1.1\r\nHost: {host}\r\nContent-Length: abc\r\n\r\n")
                .into_bytes(),
            &[400],
        ),
        (
            "Content-Length: -1",
            format!("POST /api/users HTTP/1.1\r\nHost: {host}\r\nContent-Length: -1\r\n\r\n")
                .into_bytes(),
            &[400],
        ),
        (
            "Content-Length overflowing u64",
            format!(
                "POST /api/users HTTP/1.1\r\nHost: {host}\r\nContent-Length: 184467440737095516160\r\n\r\n"
            )
            .into_bytes(),
            &[400, 413],
        ),
        (
            "non-UTF-8 Cookie value",
            [
                format!("GET /api/users HTTP/1.1\r\nHost: {host}\r\nCookie: admin_session=").as_bytes(),
                b"\xff\xfe\r\n\r\n",
            ]
            .concat(),
            &[400, 401],
        ),
    ];
    for (what, bytes, allowed) in &cases {
        let (mut c, r) = raw_exchange(&srv, bytes);
        assert!(
            allowed.contains(&r.status),
            "{what}: status {} (want {allowed:?}), body {:?}",
            r.status,
            r.text()
        );
        if r.status == 400 {
            r.assert_error(400, what);
            assert!(
                rest_until_close(&mut c, Duration::from_secs(3)).is_some(),
                "{what}: connection still open after 400"
            );
        }
        eprintln!("{what}: {}", r.status);
    }
    assert_serving(&srv, &live, "malformed requests");
}

#[test]
fn oversized_request_heads_get_431() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let host = srv.addr.to_string();
    // One 20 KiB header value.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    assert_refused_and_closed(&srv, big.as_bytes(), &[431], "20 KiB header");
    // Just over the 16 KiB head limit.
    let filler = format!(
        "GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    assert_refused_and_closed(&srv, filler.as_bytes(), &[431], "17 KiB header");
    // 17 KiB made of many small headers (under the header-count limit).
    let mut many = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n");
    for i in 0..60 {
        many.push_str(&format!("X-H{i}: {}\r\n", "b".repeat(290)));
    }
    many.push_str("\r\n");
    assert!(many.len() > 16 * 1024);
    assert_refused_and_closed(&srv, many.as_bytes(), &[431], "17 KiB of headers");
    // Too many headers.
    let mut count = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n");
    for i in 0..200 {
        count.push_str(&format!("X-{i}: v\r\n"));
    }
    count.push_str("\r\n");
    assert_refused_and_closed(&srv, count.as_bytes(), &[431], "200 headers");
    // A huge request line with no end at all (16 KiB + 1 and never a CRLF).
    let line = format!("GET /{} HTTP/1.1", "p".repeat(20 * 1024));
    assert_refused_and_closed(&srv, line.as_bytes(), &[431, 414], "20 KiB request line");
    // A huge cookie on an admin route.
    let cookie = format!("Cookie: admin_session={}\r\n", "c".repeat(17 * 1024));
    let req = format!("GET /api/users HTTP/1.1\r\nHost: {host}\r\n{cookie}\r\n");
    assert_refused_and_closed(&srv, req.as_bytes(), &[431], "17 KiB cookie");
    assert_serving(&srv, &live, "oversized heads");
}

#[test]
fn request_smuggling_is_refused_and_not_executed() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let cookie = srv.admin_cookie();
    let host = srv.addr.to_string();
    let smuggled = |tag: &str| {
        let body = json!({"first_name":"Smuggled","last_name":tag,"email":format!("smuggled.{tag}@example.com")})
            .to_string();
        format!(
            "POST /api/users HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let chunk_end = "0\r\n\r\n";
    let mut tags = Vec::new();
    // (Content-Length covers: just the chunk terminator | everything) × (header order).
    for (i, (cl_all, te_first)) in [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .enumerate()
    {
        let tag = format!("clte{i}");
        let inner = smuggled(&tag);
        let body = format!("{chunk_end}{inner}");
        let cl = if cl_all { body.len() } else { chunk_end.len() };
        let (h1, h2) = (
            format!("Content-Length: {cl}\r\n"),
            "Transfer-Encoding: chunked\r\n".to_string(),
        );
        let hs = if te_first {
            format!("{h2}{h1}")
        } else {
            format!("{h1}{h2}")
        };
        let req = format!(
            "POST /api/users HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/json\r\n{hs}\r\n{body}"
        );
        assert_refused_and_closed(&srv, req.as_bytes(), &[400], &format!("CL+TE case {i}"));
        tags.push(tag);
    }
    // Obfuscated Transfer-Encoding variants, each with a Content-Length too.
    for (i, te) in [
        "Transfer-Encoding: Chunked",
        "Transfer-Encoding:  chunked ",
        "Transfer-Encoding: gzip, chunked",
        "transfer-encoding: identity",
        "Transfer-Encoding: xchunked",
    ]
    .into_iter()
    .enumerate()
    {
        let tag = format!("te{i}");
        let body = format!("{chunk_end}{}", smuggled(&tag));
        let req = format!(
            "POST /api/users HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{te}\r\n\r\n{body}",
            chunk_end.len()
        );
        assert_refused_and_closed(&srv, req.as_bytes(), &[400], te);
        tags.push(tag);
    }
    // Chunked alone: refused (400/411) and closed; the chunk's content is not a request.
    let tag = "chunked-only".to_string();
    let inner = smuggled(&tag);
    let req = format!(
        "POST /api/users HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n{inner}",
        inner.len()
    );
    assert_refused_and_closed(&srv, req.as_bytes(), &[400, 411], "chunked body");
    tags.push(tag);
    // Two different Content-Lengths.
    let tag = "dup-cl".to_string();
    let inner = smuggled(&tag);
    let req = format!(
        "POST /healthz HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{inner}",
        inner.len()
    );
    assert_refused_and_closed(&srv, req.as_bytes(), &[400], "conflicting Content-Lengths");
    tags.push(tag);
    // Content-Length with a list value.
    let tag = "list-cl".to_string();
    let inner = smuggled(&tag);
    let req =
        format!("POST /healthz HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0, 0\r\n\r\n{inner}");
    assert_refused_and_closed(&srv, req.as_bytes(), &[400], "Content-Length: 0, 0");
    tags.push(tag);
    // A JSON body declared both ways, and a chunked fragment of JSON.
    let body = r#"{"first_name":"A","last_name":"B","email":"smuggle@example.com"}"#;
    let req = format!(
        "POST /api/users HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    assert_refused_and_closed(&srv, req.as_bytes(), &[400, 411], "CL+TE with a JSON body");
    let req = format!(
        "POST /api/users HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{{\"a\":\r\n0\r\n\r\n"
    );
    assert_refused_and_closed(&srv, req.as_bytes(), &[400, 411], "chunked JSON fragment");

    // None of the smuggled requests ran.
    live.assert_none("a smuggled user_added", Duration::from_millis(500), |v| {
        v["type"] == "user_added" && v["data"]["first_name"] == "Smuggled"
    });
    let users = srv.users();
    assert!(users.is_empty(), "smuggled request not executed");
    for tag in &tags {
        assert!(
            !users.iter().any(|u| u["last_name"] == tag.as_str()),
            "smuggled request {tag} was executed"
        );
    }
    assert!(!users.iter().any(|u| u["first_name"] == "Smuggled"));
    assert_serving(&srv, &live, "request smuggling");
}

#[test]
fn incomplete_request_times_out_with_408() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    // One connection stalls in the head, another in the body; both run at once.
    let mut head = srv.http();
    let mut body = srv.http();
    let start = Instant::now();
    head.write_raw(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", srv.addr).as_bytes())
        .unwrap();
    body.write_raw(
        format!(
            "POST /api/users HTTP/1.1\r\nHost: {}\r\nCookie: {c}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"first_na",
            srv.addr
        )
        .as_bytes(),
    )
    .unwrap();
    for (what, conn) in [("stalled head", &mut head), ("stalled body", &mut body)] {
        conn.stream()
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let r = conn
            .read_response()
            .unwrap_or_else(|e| panic!("{what}: 408 expected after 10 s, got {e}"));
        let took = start.elapsed();
        assert_eq!(r.status, 408, "{what}");
        assert_eq!(r.header("Cache-Control"), Some("no-store"), "{what}");
        assert!(
            took >= Duration::from_secs(8) && took <= Duration::from_secs(14),
            "{what}: 408 after {took:?}, expected ~10 s"
        );
        assert!(
            conn.closed_within(Duration::from_secs(3)),
            "{what}: closed after 408"
        );
    }
}

#[test]
fn body_limit_is_64_kib_and_huge_bodies_get_413() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let cookie = srv.admin_cookie();
    let host = srv.addr.to_string();
    const TEN_MIB: usize = 10 * 1024 * 1024;
    // Announced and sent.
    let mut c = srv.http();
    let head = format!(
        "POST /api/users HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: {TEN_MIB}\r\n\r\n"
    );
    c.write_raw(head.as_bytes()).unwrap();
    let mut w = c.stream().try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let writer = thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < TEN_MIB {
            match w.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    });
    let t = Instant::now();
    let r = c.read_response().expect("answer to a 10 MiB body");
    r.assert_error(413, "10 MiB body");
    eprintln!("10 MiB body: 413 after {:?}", t.elapsed());
    let sent = writer.join().unwrap();
    eprintln!("10 MiB body: writer got {sent} bytes out");
    drop(c);
    // Announced only: the answer must not wait for the body.
    let mut c = srv.http();
    c.write_raw(head.as_bytes()).unwrap();
    let t = Instant::now();
    let r = c
        .read_response()
        .expect("answer to an announced 10 MiB body");
    r.assert_error(413, "announced 10 MiB body");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "413 took {:?}",
        t.elapsed()
    );
    // Just over the limit.
    let body = vec![b' '; 64 * 1024 + 1];
    let r = srv.request(
        "POST",
        "/api/users",
        &[("Cookie", &cookie), ("Content-Type", "application/json")],
        Some(&body),
    );
    r.assert_error(413, "64 KiB + 1 body");
    // 70 KiB of valid JSON; the server may answer before reading it all.
    let big = format!(
        "{{\"first_name\":\"A\",\"last_name\":\"B\",\"email\":\"big@example.com\",\"pad\":\"{}\"}}",
        "x".repeat(70 * 1024)
    );
    let r = srv
        .post_user_bytes(&cookie, big.as_bytes())
        .expect("a response to an oversized body");
    r.assert_error(413, "70 KiB body");
    assert!(srv.users().is_empty());
    // The boundary: exactly 64 KiB is accepted, one byte more is not.
    let json_body = |email: &str, total: usize| {
        let core = format!(r#"{{"first_name":"A","last_name":"B","email":"{email}"}}"#);
        let mut b = core.into_bytes();
        // JSON allows trailing whitespace: pad to the exact size.
        b.resize(total, b' ');
        b
    };
    let post = |b: &[u8]| srv.post_user_bytes(&cookie, b).expect("response");
    post(&json_body("over@example.com", 65537)).assert_error(413, "65537-byte body");
    let r = post(&json_body("exact@example.com", 65536));
    assert_eq!(
        r.status,
        201,
        "a 65536-byte body is within the limit: {}",
        r.text()
    );
    let rss = vm_rss_kib(srv.pid());
    eprintln!("10 MiB body: server RSS {rss} KiB");
    assert!(rss < 200 * 1024, "server RSS {rss} KiB after a 10 MiB body");
    assert_serving(&srv, &live, "10 MiB body");
}
