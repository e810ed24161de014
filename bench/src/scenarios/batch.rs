//! Bulk HTTP requests for setup steps (users to create, sessions to activate, writes made
//! while clients are away): a fixed number of requests over keep-alive connections, one
//! outstanding per connection, with bounded retries when a connection dies.

use crate::driver::{Driver, HttpResp};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

pub(super) type ReqFn<'a> =
    dyn FnMut(usize) -> (&'static str, String, Vec<u8>, Option<String>) + 'a;

/// Issue `total` requests over keep-alive connections (one outstanding per connection),
/// retrying a request whose connection died at most twice. Returns responses by index.
pub(super) fn http_batch(
    d: &mut Driver,
    conns: &mut [usize],
    total: usize,
    deadline: Instant,
    req: &mut ReqFn,
) -> Vec<Option<HttpResp>> {
    let mut out: Vec<Option<HttpResp>> = (0..total).map(|_| None).collect();
    let mut attempts = vec![0u8; total];
    let mut queue: VecDeque<usize> = (0..total).collect();
    let mut done = 0usize;
    let mut inflight_tag: Vec<Option<usize>> = vec![None; conns.len()];
    while done < total && Instant::now() < deadline {
        for (ci, c) in conns.iter_mut().enumerate() {
            // Answers first: a connection may have answered and then been closed.
            while let Some(x) = d.http_take(*c) {
                let k = x.tag as usize;
                if inflight_tag[ci] == Some(k) {
                    inflight_tag[ci] = None;
                }
                if k < total && out[k].is_none() {
                    out[k] = Some(x);
                    done += 1;
                }
            }
            if d.http_dead(*c).is_some() {
                if let Some(t) = inflight_tag[ci].take() {
                    if attempts[t] < 3 {
                        queue.push_front(t);
                    } else {
                        done += 1;
                    }
                }
                d.http_close(*c);
                match d.http_open() {
                    Ok(n) => *c = n,
                    Err(_) => continue,
                }
            }
            if inflight_tag[ci].is_none() {
                if let Some(k) = queue.pop_front() {
                    attempts[k] += 1;
                    let (method, path, body, cookie) = req(k);
                    d.http_send(*c, method, &path, cookie.as_deref(), Some(&body), k as u64);
                    inflight_tag[ci] = Some(k);
                }
            }
        }
        d.poll_once(Duration::from_millis(5));
    }
    out
}

/// Create `total` users (`first_name` Bench, e-mail `<prefix>.<k>@example.com`) and wait
/// for every answer (bounded by `deadline`). Returns how many got 201, and the others by
/// status ("no answer" when none came).
pub(super) fn post_users(
    d: &mut Driver,
    conns: &mut [usize],
    cookie: &str,
    prefix: &str,
    total: usize,
    deadline: Instant,
) -> (usize, BTreeMap<String, usize>) {
    let out = http_batch(d, conns, total, deadline, &mut |k| {
        let body = format!(
            r#"{{"first_name":"Bench","last_name":"User {k}","email":"{prefix}.{k}@example.com"}}"#
        );
        (
            "POST",
            "/api/users".to_string(),
            body.into_bytes(),
            Some(cookie.to_string()),
        )
    });
    let mut ok = 0;
    let mut other = BTreeMap::new();
    for r in &out {
        match r {
            Some(x) if x.status == 201 => ok += 1,
            Some(x) => *other.entry(format!("http {}", x.status)).or_insert(0) += 1,
            None => *other.entry("no answer".to_string()).or_insert(0) += 1,
        }
    }
    (ok, other)
}
