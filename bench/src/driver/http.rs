//! Keep-alive HTTP/1.1 clients for the requests of a scenario (POST /api/users, session
//! activation). Requests are pipelined per connection and answered in order, so each
//! connection keeps a queue of the tags of its outstanding requests; a response is matched to
//! the oldest. A broken connection is marked `dead` (with why) and left to the scenario to
//! reopen: the scenario knows whether the request in flight should be retried.

use super::{Driver, HTTP_BASE};
use mio::net::TcpStream;
use mio::{Interest, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

pub struct HttpResp {
    pub tag: u64,
    pub status: u16,
    pub body: Vec<u8>,
    pub at: Instant,
    /// The `Retry-After` header's value, when the answer had one (503s past overload).
    pub retry_after: Option<String>,
}

pub(super) struct Http {
    sock: TcpStream,
    /// The `Host` of its requests: the server it was opened to.
    host: String,
    out: Vec<u8>,
    inb: Vec<u8>,
    tags: VecDeque<u64>,
    done: VecDeque<HttpResp>,
    dead: Option<String>,
}

impl Driver {
    /// Open a keep-alive HTTP connection; returns its handle.
    pub fn http_open(&mut self) -> io::Result<usize> {
        let std = std::net::TcpStream::connect_timeout(&self.server, Duration::from_secs(5))?;
        std.set_nodelay(true)?;
        std.set_nonblocking(true)?;
        let mut sock = TcpStream::from_std(std);
        let h = self.http.len();
        self.poll.registry().register(
            &mut sock,
            Token(HTTP_BASE + h),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.http.push(Some(Http {
            sock,
            host: self.host.clone(),
            out: Vec::new(),
            inb: Vec::new(),
            tags: VecDeque::new(),
            done: VecDeque::new(),
            dead: None,
        }));
        Ok(h)
    }

    pub fn http_close(&mut self, h: usize) {
        if let Some(slot) = self.http.get_mut(h) {
            if let Some(mut c) = slot.take() {
                let _ = self.poll.registry().deregister(&mut c.sock);
            }
        }
    }

    /// Queue a request and write what the socket takes now. Returns the instant taken just
    /// before the write.
    pub fn http_send(
        &mut self,
        h: usize,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        json: Option<&[u8]>,
        tag: u64,
    ) -> Instant {
        let Some(Some(c)) = self.http.get_mut(h) else {
            return Instant::now();
        };
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", c.host);
        if let Some(ck) = cookie {
            req.push_str("Cookie: ");
            req.push_str(ck);
            req.push_str("\r\n");
        }
        match json {
            Some(b) => req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                b.len()
            )),
            None => req.push_str(if method == "GET" {
                "\r\n"
            } else {
                "Content-Length: 0\r\n\r\n"
            }),
        }
        c.out.extend_from_slice(req.as_bytes());
        if let Some(b) = json {
            c.out.extend_from_slice(b);
        }
        c.tags.push_back(tag);
        let t0 = Instant::now();
        Self::http_flush(c);
        t0
    }

    fn http_flush(c: &mut Http) {
        let mut off = 0;
        let mut guard = 0;
        while off < c.out.len() && guard < 1024 {
            guard += 1;
            match c.sock.write(&c.out[off..]) {
                Ok(0) => {
                    c.dead = Some("write returned 0".into());
                    break;
                }
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    c.dead = Some(format!("write: {e}"));
                    break;
                }
            }
        }
        c.out.drain(..off);
    }

    pub(super) fn http_event(&mut self, h: usize, r: bool, w: bool) {
        let at = self.batch_t;
        let Some(Some(c)) = self.http.get_mut(h) else {
            return;
        };
        if w && !c.out.is_empty() {
            Self::http_flush(c);
        }
        if !r {
            return;
        }
        let mut buf = [0u8; 16 * 1024];
        for _ in 0..4096 {
            match c.sock.read(&mut buf) {
                Ok(0) => {
                    c.dead = Some("server closed the HTTP connection".into());
                    break;
                }
                Ok(n) => c.inb.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    c.dead = Some(format!("read: {e}"));
                    break;
                }
            }
        }
        // Parse every complete response.
        for _ in 0..100_000 {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            let hl = match resp.parse(&c.inb) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => break,
                Err(e) => {
                    c.dead = Some(format!("bad HTTP response: {e}"));
                    break;
                }
            };
            let status = resp.code.unwrap_or(0);
            let mut cl = 0usize;
            let mut close = false;
            let mut retry_after = None;
            for hd in resp.headers.iter() {
                if hd.name.eq_ignore_ascii_case("content-length") {
                    cl = std::str::from_utf8(hd.value)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0);
                } else if hd.name.eq_ignore_ascii_case("connection")
                    && hd.value.eq_ignore_ascii_case(b"close")
                {
                    close = true;
                } else if hd.name.eq_ignore_ascii_case("retry-after") {
                    retry_after = Some(String::from_utf8_lossy(hd.value).trim().to_string());
                }
            }
            if c.inb.len() < hl + cl {
                break;
            }
            let body = c.inb[hl..hl + cl].to_vec();
            c.inb.drain(..hl + cl);
            let tag = c.tags.pop_front().unwrap_or(u64::MAX);
            c.done.push_back(HttpResp {
                tag,
                status,
                body,
                at,
                retry_after,
            });
            if close {
                c.dead = Some("server sent Connection: close".into());
            }
        }
    }

    pub fn http_take(&mut self, h: usize) -> Option<HttpResp> {
        self.http.get_mut(h)?.as_mut()?.done.pop_front()
    }

    /// Status of the oldest unread response, if one has arrived.
    pub fn http_peek_status(&self, h: usize) -> Option<u16> {
        match self.http.get(h) {
            Some(Some(c)) => c.done.front().map(|r| r.status),
            _ => None,
        }
    }

    pub fn http_inflight(&self, h: usize) -> usize {
        match self.http.get(h) {
            Some(Some(c)) => c.tags.len(),
            _ => 0,
        }
    }

    pub fn http_dead(&self, h: usize) -> Option<String> {
        match self.http.get(h) {
            Some(Some(c)) => c.dead.clone(),
            _ => Some("closed".into()),
        }
    }
}
