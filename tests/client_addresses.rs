//! Which client a request counts as, for every per-IP rule (failed sign-ins, connections):
//! the peer in canonical form (an IPv4 client of a dual-stack `[::]` listener is IPv4);
//! behind a `--trusted-proxy` (addresses and CIDR ranges) the first untrusted
//! `X-Forwarded-For` hop from the right, in any of the forms proxies write; the proxy itself
//! when a hop does not parse; IPv6 clients by /64. The failed-login limit is the probe: two
//! requests count as the same client exactly when they share one budget.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use serde_json::json;

/// A failed login on connection `c` with `X-Forwarded-For: xff`, for made-up account `n`.
fn fail_on(c: &mut HttpConn, xff: Option<&str>, n: usize) -> u16 {
    let body = json!({"email": format!("nobody{n}@example.com"), "password": "wrong password"})
        .to_string();
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(x) = xff {
        h.push(("X-Forwarded-For", x));
    }
    let r = c
        .send("POST", "/api/admin/login", &h, Some(body.as_bytes()))
        .expect("login request");
    r.status
}

/// The login budget is per account too: a fresh made-up account per request keeps the
/// account budget out of the way, so only the address counts.
fn fail_as(srv: &Server, ip: &str, xff: &str, n: usize) -> u16 {
    fail_on(&mut srv.http_from(ip), Some(xff), n)
}

/// `(X-Forwarded-For, expected status)` in order, each a fresh account, from 127.0.0.1.
fn probe(srv: &Server, steps: &[(&str, u16)]) {
    for (n, (xff, want)) in steps.iter().enumerate() {
        assert_eq!(
            fail_as(srv, "127.0.0.1", xff, n),
            *want,
            "step {n}: X-Forwarded-For {xff:?}"
        );
    }
}

#[test]
fn x_forwarded_for_ignored_without_trusted_proxy() {
    let srv = Server::start(&["--login-failures-per-minute", "2"]);
    probe(
        &srv,
        &[("10.0.0.1", 401), ("10.0.0.2", 401), ("10.0.0.3", 429)],
    );
}

#[test]
fn x_forwarded_for_last_hop_behind_trusted_proxy() {
    let srv = Server::start(&[
        "--login-failures-per-minute",
        "2",
        "--trusted-proxy",
        "127.0.0.1",
    ]);
    probe(
        &srv,
        &[
            ("10.1.1.1", 401),
            ("9.9.9.9, 10.1.1.1", 401),
            ("10.1.1.1", 429),
            // A different client behind the same proxy.
            ("10.1.1.1, 10.1.1.2", 401),
        ],
    );
    // An untrusted peer's header is ignored: 127.0.0.2 is counted as itself.
    assert_eq!(fail_as(&srv, "127.0.0.2", "10.7.7.7", 10), 401);
    assert_eq!(fail_as(&srv, "127.0.0.2", "10.7.7.8", 11), 401);
    assert_eq!(fail_as(&srv, "127.0.0.2", "10.7.7.9", 12), 429);
}

/// Issue 12, item 5: behind `--listen [::]:PORT` an IPv4 proxy appeared as `::ffff:127.0.0.1`,
/// never equal to `--trusted-proxy 127.0.0.1`, so every client shared the proxy's budget.
#[test]
fn an_ipv4_client_of_a_dual_stack_listener_is_ipv4() {
    let srv = Server::start(&[
        "--listen",
        "[::]:0",
        "--login-failures-per-minute",
        "2",
        "--trusted-proxy",
        "127.0.0.1",
    ]);
    assert!(
        srv.addr.ip().is_unspecified() && srv.addr.is_ipv6(),
        "{}",
        srv.addr
    );
    let v4: SocketAddr = (IpAddr::from([127, 0, 0, 1]), srv.port()).into();
    let conn = || HttpConn::new(connect_from_ip("127.0.0.1", v4, None).unwrap(), v4);
    assert_eq!(fail_on(&mut conn(), Some("10.0.0.1"), 0), 401);
    assert_eq!(fail_on(&mut conn(), Some("10.0.0.1"), 1), 401);
    assert_eq!(
        fail_on(&mut conn(), Some("10.0.0.2"), 2),
        401,
        "a second client behind the proxy has its own budget"
    );
    assert_eq!(
        fail_on(&mut conn(), Some("10.0.0.1"), 3),
        429,
        "the first is limited"
    );
}

/// Issue 12, item 6: `10.9.0.1:5000`, `[2001:db8::1]` and `[2001:db8::1]:443` (IIS, Azure and
/// some load balancers write these) were all counted as the proxy: three clients got 401 401
/// 429. Each form names its client.
#[test]
fn forwarded_hops_with_ports_and_brackets_name_their_clients() {
    let srv = Server::start(&[
        "--login-failures-per-minute",
        "2",
        "--trusted-proxy",
        "127.0.0.1",
    ]);
    probe(
        &srv,
        &[
            ("10.9.0.1:5000", 401),
            ("[2001:db8::1]", 401),
            ("[2001:db8::1]:443", 401),
            ("2001:db8::1", 429),
            ("10.9.0.1", 401),
            ("10.9.0.1:6000", 429),
            ("203.0.113.7", 401),
        ],
    );
}

#[test]
fn trusted_proxies_are_ranges_and_the_walk_passes_them() {
    let srv = Server::start(&[
        "--login-failures-per-minute",
        "2",
        "--trusted-proxy",
        "127.0.0.0/8, 10.0.0.0/8",
    ]);
    probe(
        &srv,
        &[
            // The client, then our own load balancer (10.x, trusted): the client counts.
            ("203.0.113.5, 10.1.1.1", 401),
            ("6.6.6.6, 203.0.113.5, 10.2.2.2, 10.3.3.3", 401),
            ("203.0.113.5", 429),
            ("198.51.100.7, 10.2.2.2", 401),
        ],
    );
    // Any peer in 127.0.0.0/8 is trusted.
    assert_eq!(fail_as(&srv, "127.0.0.9", "198.51.100.7", 20), 401);
    assert_eq!(fail_as(&srv, "127.0.0.9", "198.51.100.7", 21), 429);
}

#[test]
fn an_unparseable_hop_counts_as_the_proxy_that_wrote_it() {
    let srv = Server::start(&[
        "--login-failures-per-minute",
        "2",
        "--trusted-proxy",
        "127.0.0.1",
    ]);
    probe(
        &srv,
        &[
            ("garbage", 401),
            ("1.2.3.4, unknown", 401),
            // Both counted as the proxy (127.0.0.1): a client cannot pick a fresh budget by
            // sending junk, nor hide behind the hop it wrote itself.
            ("[::1", 429),
            ("10.5.5.5", 401),
        ],
    );
}

#[test]
fn ipv6_clients_are_counted_by_their_64() {
    let srv = Server::start(&[
        "--login-failures-per-minute",
        "2",
        "--trusted-proxy",
        "127.0.0.1",
    ]);
    probe(
        &srv,
        &[
            ("2001:db8:1:2::1", 401),
            ("2001:db8:1:2:ffff:ffff:ffff:ffff", 401),
            ("2001:db8:1:2:aaaa::1", 429),
            ("2001:db8:1:3::1", 401),
        ],
    );
    // The connection cap counts by /64 too: two open connections of one /64 are two.
    let srv = Server::start(&[
        "--trusted-proxy",
        "127.0.0.1",
        "--max-connections-per-ip",
        "1",
    ]);
    let get = |c: &mut HttpConn, xff: &str| {
        c.send("GET", "/healthz", &[("X-Forwarded-For", xff)], None)
            .unwrap()
            .status
    };
    let mut a = srv.http_from("127.0.0.1");
    assert_eq!(get(&mut a, "2001:db8:9::1"), 200);
    let mut b = srv.http_from("127.0.0.1");
    assert_eq!(
        get(&mut b, "2001:db8:9::2"),
        429,
        "a second connection of the same /64"
    );
    let mut c = srv.http_from("127.0.0.1");
    assert_eq!(get(&mut c, "2001:db8:a::1"), 200, "another /64");
}
