//! HTTP/1.1 requests in, responses out. Pure: bytes to values and back, no I/O.
//!
//! Only what the contract needs is supported, and everything else is refused loudly:
//! Content-Length bodies (≤ 64 KiB), no chunked bodies, no Content-Length together with
//! Transfer-Encoding (request smuggling), a request head of at most 16 KiB and 64 headers.

use std::borrow::Cow;
use std::fmt::Write as _;

pub const MAX_HEAD: usize = 16 * 1024;
pub const MAX_BODY: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Patch,
    Delete,
    /// Any other method: answered 405 or 404 by route.
    Other,
}

/// One parsed request: the parts the server looks at, owned so the read buffer can move on.
#[derive(Debug, Default, Clone)]
pub struct Request {
    pub method: Option<Method>,
    pub path: String,
    pub query: String,
    pub keep_alive: bool,
    pub host: Option<String>,
    pub origin: Option<String>,
    pub cookie: Option<String>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub if_none_match: Option<String>,
    /// Every `X-Forwarded-For` header, joined with commas (one list, as RFC 9110 §5.3 reads
    /// repeated list headers).
    pub x_forwarded_for: Option<String>,
    /// `Sec-Fetch-Site` (browsers say where a request comes from: the CSRF rule reads it).
    pub sec_fetch_site: Option<String>,
    /// The authority of an absolute-form target (`GET http://host:port/path`), normalised as an
    /// origin (`http://host:port`); the reactor serves it only when it names this server.
    pub target_origin: Option<String>,
    /// `Upgrade: websocket` and `Connection: upgrade` were both sent.
    pub wants_websocket: bool,
    pub ws_key: Option<String>,
    pub ws_version: Option<String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn method(&self) -> Method {
        self.method.unwrap_or(Method::Other)
    }

    /// The value of cookie `name`, if sent.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies(name).next()
    }

    /// Every value sent for cookie `name`, in order (a name may come more than once).
    pub fn cookies<'r, 'n>(&'r self, name: &'n str) -> impl Iterator<Item = &'r str> + use<'r, 'n> {
        self.cookie
            .as_deref()
            .unwrap_or("")
            .split(';')
            .filter_map(move |kv| {
                let (k, v) = kv.split_once('=')?;
                (k.trim() == name).then(|| v.trim().trim_matches('"'))
            })
    }

    /// The value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k)? == name).then(|| percent_decode(v))?
        })
    }

    /// The bearer token of an `Authorization: Bearer …` header.
    pub fn bearer(&self) -> Option<&str> {
        let a = self.authorization.as_deref()?.trim();
        let (scheme, token) = a.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }

    /// Whether the body is declared JSON (`application/json`, any parameters).
    pub fn is_json(&self) -> bool {
        self.content_type.as_deref().is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        })
    }
}

/// A request that cannot be parsed. It is answered with `status`, and the connection is closed
/// after: where one request's bytes end is no longer known, so no further request can be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub message: &'static str,
}

const fn fatal(status: u16, message: &'static str) -> HttpError {
    HttpError { status, message }
}

#[derive(Debug)]
pub enum Parsed {
    /// Need more bytes.
    Partial,
    /// A request and the number of bytes it took from the buffer.
    Complete(Box<Request>, usize),
    Error(HttpError),
}

/// Parse one request from the front of `buf`.
pub fn parse_request(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut raw = httparse::Request::new(&mut headers);
    let head_len = match raw.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) => {
            return Parsed::Error(fatal(431, "request head too large"))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Parsed::Error(fatal(431, "request head too large"))
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Error(fatal(431, "too many request headers"))
        }
        Err(_) => return Parsed::Error(fatal(400, "malformed request")),
    };
    let (Some(method), Some(target), Some(version)) = (raw.method, raw.path, raw.version) else {
        return Parsed::Error(fatal(400, "malformed request"));
    };
    // RFC 9112 §3.2.2: a server MUST accept the absolute form. Its authority replaces `Host`;
    // whether it names this server is the reactor's call (it knows the public URL).
    let (target, target_origin) = match absolute_form(target) {
        Some((origin, path)) => (path, Some(origin)),
        None => (Cow::Borrowed(target), None),
    };
    let Some(after_slash) = target.strip_prefix('/') else {
        return Parsed::Error(fatal(400, "request target must be a path"));
    };
    let (path, query) = match after_slash.split_once('?') {
        Some((p, q)) => (p, q),
        None => (after_slash, ""),
    };
    let mut req = Request {
        method: Some(match method {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }),
        path: format!("/{path}"),
        query: query.to_string(),
        keep_alive: version == 1,
        target_origin,
        ..Request::default()
    };
    let mut content_length: Option<usize> = None;
    let mut transfer_encoding = false;
    let (mut upgrade_ws, mut connection_upgrade) = (false, false);
    for h in raw.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            // Only header values we ignore may be non-UTF-8 (e.g. legacy User-Agent bytes).
            if is_interesting(h.name) {
                return Parsed::Error(fatal(400, "header value is not valid UTF-8"));
            }
            continue;
        };
        let value = value.trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = parse_content_length(value) else {
                return Parsed::Error(fatal(400, "invalid Content-Length"));
            };
            if content_length.is_some_and(|old| old != n) {
                return Parsed::Error(fatal(400, "conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    req.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    req.keep_alive = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    connection_upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_ws = value
                .split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"));
        } else {
            let slot = match name.to_ascii_lowercase().as_str() {
                "host" => &mut req.host,
                "origin" => &mut req.origin,
                "authorization" => &mut req.authorization,
                "content-type" => &mut req.content_type,
                "if-none-match" => &mut req.if_none_match,
                "sec-websocket-key" => &mut req.ws_key,
                "sec-websocket-version" => &mut req.ws_version,
                "sec-fetch-site" => &mut req.sec_fetch_site,
                "x-forwarded-for" => {
                    join_into(&mut req.x_forwarded_for, value, ", ");
                    continue;
                }
                "cookie" => {
                    // Several Cookie headers are joined as one list (RFC 6265 §5.4).
                    join_into(&mut req.cookie, value, "; ");
                    continue;
                }
                _ => continue,
            };
            // One of each of these, or the request is refused: a second `Origin` or
            // `Sec-Fetch-Site` could hide a foreign one behind ours (RFC 6454 §7.3: a user
            // agent sends one), and two `Host`s leave the target unknown.
            if slot.is_some() {
                for (one, refusal) in [
                    ("host", "more than one Host header"),
                    ("origin", "more than one Origin header"),
                    ("sec-fetch-site", "more than one Sec-Fetch-Site header"),
                ] {
                    if name.eq_ignore_ascii_case(one) {
                        return Parsed::Error(fatal(400, refusal));
                    }
                }
            }
            *slot = Some(value.to_string());
        }
    }
    if transfer_encoding {
        return Parsed::Error(if content_length.is_some() {
            fatal(
                400,
                "Content-Length together with Transfer-Encoding is refused",
            )
        } else {
            fatal(
                411,
                "chunked request bodies are not supported; send Content-Length",
            )
        });
    }
    if version == 1 && req.host.is_none() {
        return Parsed::Error(fatal(400, "Host header required"));
    }
    // RFC 6455 §4.1: the opening handshake is HTTP/1.1 or later.
    req.wants_websocket = upgrade_ws && connection_upgrade && version == 1;
    let body_len = content_length.unwrap_or(0);
    if body_len > MAX_BODY {
        return Parsed::Error(fatal(413, "request body larger than 64 KiB"));
    }
    if buf.len() < head_len + body_len {
        return Parsed::Partial;
    }
    req.body = buf[head_len..head_len + body_len].to_vec();
    Parsed::Complete(Box::new(req), head_len + body_len)
}

/// Append `value` to a joined header list.
fn join_into(slot: &mut Option<String>, value: &str, sep: &str) {
    match slot {
        Some(list) => {
            list.push_str(sep);
            list.push_str(value);
        }
        None => *slot = Some(value.to_string()),
    }
}

/// `http://authority/path?query` → (the authority as a normalised origin, `/path?query`).
/// `None` when the target is not in absolute form, or its authority is not a valid host.
fn absolute_form(target: &str) -> Option<(String, Cow<'_, str>)> {
    if target.starts_with('/') {
        return None;
    }
    let scheme_end = target.find("://")?;
    let rest = &target[scheme_end + 3..];
    let path_at = rest.find(['/', '?']).unwrap_or(rest.len());
    let origin = normalize_origin(&target[..scheme_end + 3 + path_at])?;
    let path = &rest[path_at..];
    // `http://host` and `http://host?q` mean `/` and `/?q` (RFC 9112 §3.2.2: an empty path is
    // `/`).
    let path = match path {
        "" => Cow::Borrowed("/"),
        p if p.starts_with('?') => Cow::Owned(format!("/{p}")),
        p => Cow::Borrowed(p),
    };
    Some((origin, path))
}

/// An origin in the one form the server compares (API.md "The server's own origin"): scheme
/// and host in lower case, the default port dropped, no path (one trailing `/` is allowed and
/// dropped). `None` for anything else: another scheme, user info, a path, a bad port or host.
pub fn normalize_origin(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (inside, after) = v6.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", inside.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return None;
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?).filter(|p| *p != default_port)
        }
        Some(_) => return None,
    };
    Some(match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

fn is_interesting(name: &str) -> bool {
    [
        "host",
        "origin",
        "cookie",
        "authorization",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-fetch-site",
        "x-forwarded-for",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
}

/// Digits only (no sign, no spaces inside), and small enough to fit.
fn parse_content_length(v: &str) -> Option<usize> {
    if v.is_empty() || v.len() > 18 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// `%XX` and `+` decoding; `None` if the result is not UTF-8 or an escape is broken.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A response under construction. Headers are written as they are added.
pub struct Response {
    pub status: u16,
    headers: String,
    body: Vec<u8>,
    /// Close the connection after this response.
    pub close: bool,
    /// A HEAD request: send the headers of the body but not the body.
    head_only: bool,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: String::new(),
            body: Vec::new(),
            close: false,
            head_only: false,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        let _ = write!(self.headers, "{name}: {value}\r\n");
        self
    }

    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self.header("Content-Type", content_type)
    }

    /// `value` as the JSON body.
    pub fn json(self, value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(b) => self.body("application/json", b),
            Err(_) => Response::error(500, "response could not be encoded"),
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Self {
        Response::new(status).json(&serde_json::json!({ "error": message }))
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`: API.md puts them on
    /// every `/api/*` answer; the reactor also puts them on answers to requests it could not
    /// read (malformed, too large, too slow), whose path may be an `/api/*` one.
    pub fn not_to_be_stored(self) -> Self {
        self.header("Cache-Control", "no-store")
            .header("X-Content-Type-Options", "nosniff")
    }

    pub fn head_only(mut self) -> Self {
        self.head_only = true;
        self
    }

    /// The bytes on the wire. `keep_alive` is the client's wish; `self.close` overrides it.
    pub fn encode(self, keep_alive: bool) -> Vec<u8> {
        let close = self.close || !keep_alive;
        let mut out = String::with_capacity(128 + self.headers.len());
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\n{}",
            self.status,
            reason(self.status),
            self.headers
        );
        if self.status != 204 && self.status != 304 && self.status != 101 {
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        if close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

impl From<HttpError> for Response {
    fn from(e: HttpError) -> Self {
        Response::error(e.status, e.message).closing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &str) -> (Request, usize) {
        match parse_request(raw.as_bytes()) {
            Parsed::Complete(r, n) => (*r, n),
            other => panic!("{other:?}"),
        }
    }

    fn error(raw: &[u8]) -> HttpError {
        match parse_request(raw) {
            Parsed::Error(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_a_post_with_body_and_leaves_the_next_request() {
        let raw = "POST /api/users?x=1 HTTP/1.1\r\nHost: h\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 2\r\nCookie: a=1; admin_session=abc\r\n\r\n{}GET / HTTP/1.1\r\n";
        let (r, n) = complete(raw);
        assert_eq!(r.method(), Method::Post);
        assert_eq!(r.path, "/api/users");
        assert_eq!(r.query, "x=1");
        assert_eq!(r.body, b"{}");
        assert!(r.is_json() && r.keep_alive);
        assert_eq!(r.cookie("admin_session"), Some("abc"));
        assert_eq!(&raw[n..], "GET / HTTP/1.1\r\n");
    }

    #[test]
    fn waits_for_head_and_body() {
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nHo"),
            Parsed::Partial
        ));
        assert!(matches!(
            parse_request(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab"),
            Parsed::Partial
        ));
    }

    #[test]
    fn refuses_what_the_contract_refuses() {
        assert_eq!(error(b"GARBAGE\r\n\r\n").status, 400);
        assert_eq!(
            error(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").status,
            400
        );
        let big = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert_eq!(error(big.as_bytes()).status, 431);
        let e = error(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(e.status, 411);
        assert!(Response::from(e).close);
        let e = error(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(e.status, 400);
        let e = error(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(e.status, 400);
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999\r\n\r\n").status,
            413
        );
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n").status,
            400
        );
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .status,
            400
        );
        assert_eq!(error(b"GET / HTTP/1.1\r\n\r\n").status, 400, "no Host");
        assert_eq!(
            error(b"GET ftp://x/ HTTP/1.1\r\nHost: h\r\n\r\n").status,
            400
        );
        assert_eq!(
            error(b"GET http://u@x/ HTTP/1.1\r\nHost: h\r\n\r\n").status,
            400
        );
    }

    #[test]
    fn a_second_origin_or_sec_fetch_site_is_refused() {
        for h in ["Origin: http://a", "Sec-Fetch-Site: same-origin"] {
            let raw = format!("GET / HTTP/1.1\r\nHost: h\r\n{h}\r\n{h}x\r\n\r\n");
            assert_eq!(error(raw.as_bytes()).status, 400, "{h}");
        }
    }

    #[test]
    fn an_http_1_0_upgrade_is_not_a_websocket_handshake() {
        let head = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
        let (r, _) = complete(&format!("GET /x HTTP/1.0\r\nHost: h\r\n{head}\r\n"));
        assert!(!r.wants_websocket);
        let (r, _) = complete(&format!("GET /x HTTP/1.1\r\nHost: h\r\n{head}\r\n"));
        assert!(r.wants_websocket);
    }

    #[test]
    fn absolute_form_targets_carry_their_origin() {
        let (r, _) = complete("GET http://Example.COM:80/healthz?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.path, "/healthz");
        assert_eq!(r.query, "x=1");
        assert_eq!(r.target_origin.as_deref(), Some("http://example.com"));
        let (r, _) = complete("GET https://[::1]:8443 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.path, "/");
        assert_eq!(r.target_origin.as_deref(), Some("https://[::1]:8443"));
        let (r, _) = complete("GET http://h:81?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((r.path.as_str(), r.query.as_str()), ("/", "x=1"));
        assert_eq!(
            complete("GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
                .0
                .target_origin,
            None
        );
    }

    #[test]
    fn origins_are_normalised() {
        for (given, want) in [
            ("https://Example.COM:443/", Some("https://example.com")),
            (
                "https://interviews.example.com:443",
                Some("https://interviews.example.com"),
            ),
            ("http://example.com:80", Some("http://example.com")),
            ("http://example.com:443", Some("http://example.com:443")),
            ("HTTPS://example.com:8443", Some("https://example.com:8443")),
            ("http://127.0.0.1:8080", Some("http://127.0.0.1:8080")),
            ("http://[::1]:80", Some("http://[::1]")),
            ("http://[::1]", Some("http://[::1]")),
            ("ftp://example.com", None),
            ("null", None),
            ("https://example.com/path", None),
            ("https://user@example.com", None),
            ("https://example.com:", None),
            ("https://example.com:99999", None),
            ("https://exa mple.com", None),
            ("https://[nope]", None),
            ("https://", None),
        ] {
            assert_eq!(normalize_origin(given).as_deref(), want, "{given}");
        }
    }

    #[test]
    fn repeated_list_headers_are_joined() {
        let (r, _) = complete(
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\nCookie: a=1\r\nCookie: a=2\r\nSec-Fetch-Site: same-site\r\n\r\n",
        );
        assert_eq!(r.x_forwarded_for.as_deref(), Some("1.1.1.1, 2.2.2.2"));
        assert_eq!(r.cookies("a").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(r.sec_fetch_site.as_deref(), Some("same-site"));
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!complete("GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        assert!(
            complete("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(
            !complete("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                .0
                .keep_alive
        );
    }

    #[test]
    fn websocket_upgrade_is_recognised() {
        let (r, _) = complete(
            "GET /admin/stream HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        assert!(r.wants_websocket);
        assert_eq!(r.ws_key.as_deref(), Some("k"));
    }

    #[test]
    fn query_and_bearer() {
        let (r, _) = complete(
            "GET /s?token=a%20b&x&token2=+ HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer  k1 \r\n\r\n",
        );
        assert_eq!(r.query_param("token").as_deref(), Some("a b"));
        assert_eq!(r.query_param("x").as_deref(), Some(""));
        assert_eq!(r.query_param("missing"), None);
        assert_eq!(r.bearer(), Some("k1"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn responses_encode() {
        let r = Response::error(404, "not found").encode(true);
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.contains("Content-Type: application/json\r\n"));
        assert!(s.ends_with("\r\n\r\n{\"error\":\"not found\"}"));
        let s = String::from_utf8(Response::new(204).encode(false)).unwrap();
        assert_eq!(s, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    }
}
