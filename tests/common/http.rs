//! Raw HTTP/1.1 over a plain socket: requests built byte for byte, responses parsed by hand
//! (Content-Length, chunked or to EOF), and the checks for refused requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Server;

impl Server {
    pub fn http(&self) -> HttpConn {
        HttpConn::new(self.connect(), self.addr)
    }

    /// One request on a fresh connection.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        self.http()
            .send(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&self, path: &str, cookie: Option<&str>) -> Resp {
        let h: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
        self.request("GET", path, &h, None)
    }

    /// A JSON request (`Content-Type: application/json` when there is a body).
    pub fn json(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut h: Vec<(&str, &str)> = Vec::new();
        if let Some(c) = cookie {
            h.push(("Cookie", c));
        }
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        if bytes.is_some() {
            h.push(("Content-Type", "application/json"));
        }
        self.request(method, path, &h, bytes.as_deref())
    }

    pub fn http_from(&self, ip: &str) -> HttpConn {
        HttpConn::new(self.connect_from(ip), self.addr)
    }
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// The whole `Set-Cookie` value for cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        self.headers_named("Set-Cookie")
            .into_iter()
            .find(|v| v.trim_start().starts_with(&prefix))
            .map(str::to_string)
    }

    pub fn cookie_value(&self, name: &str) -> Option<String> {
        let sc = self.set_cookie(name)?;
        let first = sc.split(';').next().unwrap().trim();
        Some(first[name.len() + 1..].to_string())
    }

    /// Asserts the status and the `{"error": "..."}` JSON body shape.
    pub fn assert_error(&self, status: u16, what: &str) {
        assert_eq!(self.status, status, "{what}: body {:?}", self.text());
        let ct = self.header("Content-Type").unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "{what}: error Content-Type {ct:?}"
        );
        let v = self.json();
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("{what}: error body not an object: {v}"));
        assert!(
            obj.get("error")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty()),
            "{what}: error body lacks a non-empty \"error\" string: {v}"
        );
    }
}

/// Cookie attribute check: `attr` present (case-insensitive) among `;`-separated parts.
pub fn cookie_has_attr(set_cookie: &str, attr: &str) -> bool {
    set_cookie
        .split(';')
        .skip(1)
        .any(|p| p.trim().eq_ignore_ascii_case(attr))
}

pub struct HttpConn {
    pub reader: BufReader<TcpStream>,
    pub(super) host: String,
}

impl HttpConn {
    pub fn new(stream: TcpStream, addr: SocketAddr) -> HttpConn {
        HttpConn {
            reader: BufReader::new(stream),
            host: addr.to_string(),
        }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    pub fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let s = self.reader.get_mut();
        s.write_all(bytes)?;
        s.flush()
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> std::io::Result<Resp> {
        let req = build_request(&self.host, method, path, headers, body);
        self.write_raw(&req)?;
        self.read_response()
    }

    pub fn read_response(&mut self) -> std::io::Result<Resp> {
        read_response(&mut self.reader)
    }

    /// True when the server closed the connection (EOF or reset) within `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(deadline - now))
                .unwrap();
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => return true,
            }
        }
    }
}

pub fn build_request(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    bytes
}

fn io_err(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

pub(super) fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    Ok(String::from_utf8_lossy(&buf)
        .trim_end_matches(['\r', '\n'])
        .to_string())
}

/// Reads one HTTP/1.1 response (body by Content-Length, chunked, or to EOF).
pub fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<Resp> {
    let status_line = read_line(r)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(io_err(format!("bad status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io_err(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| io_err(format!("bad header line {line:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    if status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(resp);
    }
    if let Some(cl) = resp.header("Content-Length") {
        let n: usize = cl
            .parse()
            .map_err(|_| io_err(format!("bad Content-Length {cl:?}")))?;
        let mut body = vec![0u8; n];
        r.read_exact(&mut body)?;
        resp.body = body;
    } else if resp
        .header("Transfer-Encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        loop {
            let size_line = read_line(r)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                .map_err(|_| io_err(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // trailers
                while !read_line(r)?.is_empty() {}
                break;
            }
            let mut chunk = vec![0u8; size];
            r.read_exact(&mut chunk)?;
            resp.body.extend_from_slice(&chunk);
            read_line(r)?;
        }
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// Sends raw bytes on a fresh connection and reads one response. Write errors are ignored
/// (the server may close while we are still writing); the response must still arrive.
pub fn raw_exchange(srv: &Server, bytes: &[u8]) -> (HttpConn, Resp) {
    let mut c = srv.http();
    let _ = c.write_raw(bytes);
    let r = c
        .read_response()
        .unwrap_or_else(|e| panic!("no response to {:?}: {e}", preview(bytes)));
    (c, r)
}

/// The first 120 bytes, lossily, for failure messages.
pub fn preview(bytes: &[u8]) -> String {
    let n = bytes.len().min(120);
    format!(
        "{}{}",
        String::from_utf8_lossy(&bytes[..n]),
        if bytes.len() > n { "…" } else { "" }
    )
}

/// Reads whatever else comes until EOF/reset; returns the extra bytes, or `None` when the
/// connection is still open after `timeout`.
pub fn rest_until_close(c: &mut HttpConn, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut extra = Vec::new();
    // Bytes BufReader already holds.
    let buffered = c.reader.buffer().to_vec();
    c.reader.consume(buffered.len());
    extra.extend_from_slice(&buffered);
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let s = c.stream();
        s.set_read_timeout(Some(deadline - now)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(extra),
            Ok(n) => extra.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(extra),
        }
    }
}

/// The request must be answered with one of `allowed` (a JSON error) and the connection closed,
/// with nothing after that answer.
pub fn assert_refused_and_closed(srv: &Server, bytes: &[u8], allowed: &[u16], what: &str) -> u16 {
    let (mut c, r) = raw_exchange(srv, bytes);
    assert!(
        allowed.contains(&r.status),
        "{what}: status {} (want one of {allowed:?}), body {:?}",
        r.status,
        r.text()
    );
    r.assert_error(r.status, what);
    let extra = rest_until_close(&mut c, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("{what}: connection still open 3 s after the {}", r.status));
    assert!(
        extra.is_empty(),
        "{what}: bytes after the {} answer: {:?}",
        r.status,
        preview(&extra)
    );
    r.status
}
