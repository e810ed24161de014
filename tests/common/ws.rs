//! WebSocket clients built on tungstenite: bounded handshakes on the three streams, reading
//! the next message or close, and the checks for refused handshakes.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{ClientRequestBuilder, Message, WebSocket};

use super::{Server, WAIT};

pub type Ws = WebSocket<TcpStream>;

impl Server {
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// WebSocket handshake with extra headers. `Err` carries tungstenite's error (e.g.
    /// `Error::Http(response)` when the server answered something other than 101).
    pub fn ws_with(&self, path: &str, headers: &[(&str, &str)]) -> Result<Ws, tungstenite::Error> {
        let stream = self.connect();
        ws_handshake(stream, &self.ws_url(path), headers)
    }

    pub fn ws_connect(
        &self,
        path: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Ws, tungstenite::Error> {
        let mut h = Vec::new();
        if let Some(c) = cookie {
            h.push(("Cookie", c));
        }
        if let Some(o) = origin {
            h.push(("Origin", o));
        }
        self.ws_with(path, &h)
    }

    /// Admin stream with the given cookie; asserts the handshake succeeds and returns the
    /// socket together with the `initial` payload.
    pub fn admin_ws(&self, cookie: &str) -> (Ws, Vec<Value>) {
        let mut ws = self
            .ws_connect("/admin/stream", Some(cookie), None)
            .expect("admin stream handshake");
        let init = recv_json(&mut ws, WAIT);
        assert_eq!(init["type"], "initial", "first admin message: {init}");
        let data = init["data"].as_array().expect("initial.data array").clone();
        (ws, data)
    }

    pub fn agent_ws(&self, key: &str) -> Result<Ws, tungstenite::Error> {
        let auth = format!("Bearer {key}");
        self.ws_with("/agent/stream", &[("Authorization", &auth)])
    }

    /// Session stream authenticated with `?token=`.
    /// An agent stream that must open: returns it after its first message, the `initial` (the
    /// sessions in progress), which it also returns.
    pub fn agent(&self, key: &str) -> (Ws, Value) {
        let mut ws = self.agent_ws(key).expect("agent stream handshake");
        let init = recv_json(&mut ws, WAIT);
        assert_eq!(init["type"], "initial", "first agent message: {init}");
        (ws, init)
    }

    pub fn session_ws(&self, session_id: &str, token: &str) -> Result<Ws, tungstenite::Error> {
        self.ws_with(&format!("/session/{session_id}/stream?token={token}"), &[])
    }
}

/// Client handshake over an existing stream (which should carry a read timeout).
pub fn ws_handshake(
    stream: TcpStream,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    let uri: tungstenite::http::Uri = url.parse().expect("ws url");
    let mut b = ClientRequestBuilder::new(uri);
    for (k, v) in headers {
        b = b.with_header(*k, *v);
    }
    let req = b.into_client_request()?;
    let cfg = WebSocketConfig::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut res = tungstenite::client::client_with_config(req, stream, Some(cfg));
    loop {
        match res {
            Ok((ws, _resp)) => return Ok(ws),
            Err(HandshakeError::Failure(e)) => return Err(e),
            Err(HandshakeError::Interrupted(mid)) => {
                if Instant::now() >= deadline {
                    return Err(tungstenite::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "handshake timed out",
                    )));
                }
                res = mid.handshake();
            }
        }
    }
}

/// What a WebSocket read produced.
#[derive(Debug)]
pub enum WsEvent {
    Json(Value),
    /// Non-JSON text message.
    Text(String),
    Binary(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame: code and reason (`None` when the frame carried no code).
    Close(Option<(u16, String)>),
    /// The TCP connection ended (EOF/reset) without (further) frames.
    Ended(String),
}

/// Reads the next message within `timeout` (None on timeout). Protocol Pings are answered by
/// tungstenite itself; JSON `{"type":"ping"}` is answered with `{"type":"pong"}` and skipped
/// when `auto_pong` is set.
pub fn next_event(ws: &mut Ws, timeout: Duration, auto_pong: bool) -> Option<WsEvent> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let remaining = (deadline - now).max(Duration::from_millis(1));
        let _ = ws.get_ref().set_read_timeout(Some(remaining));
        match ws.read() {
            Ok(Message::Text(t)) => match serde_json::from_str::<Value>(t.as_str()) {
                Ok(v) => {
                    if auto_pong && v["type"] == "ping" {
                        let _ = ws.send(Message::text(r#"{"type":"pong"}"#));
                        continue;
                    }
                    // Presence comes whenever someone opens or closes a page: it is checked
                    // where it is the subject (`next_presence`), skipped everywhere else.
                    if auto_pong && v["type"] == "presence" {
                        continue;
                    }
                    return Some(WsEvent::Json(v));
                }
                Err(_) => return Some(WsEvent::Text(t.as_str().to_string())),
            },
            Ok(Message::Binary(b)) => return Some(WsEvent::Binary(b.to_vec())),
            Ok(Message::Pong(p)) => return Some(WsEvent::Pong(p.to_vec())),
            Ok(Message::Ping(_)) | Ok(Message::Frame(_)) => continue,
            Ok(Message::Close(f)) => {
                return Some(WsEvent::Close(
                    f.map(|f| (u16::from(f.code), f.reason.as_str().to_string())),
                ))
            }
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Some(WsEvent::Ended(e.to_string())),
        }
    }
}

/// The next JSON message (JSON pings answered and skipped); panics on anything else.
/// The next `presence` message (other messages before it are returned too, oldest first).
pub fn next_presence(ws: &mut Ws, timeout: Duration) -> (Option<Value>, Vec<Value>) {
    let deadline = Instant::now() + timeout;
    let mut others = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (None, others);
        }
        match next_event(ws, left, false) {
            Some(WsEvent::Json(v)) if v["type"] == "presence" => return (Some(v), others),
            Some(WsEvent::Json(v)) if v["type"] == "ping" => {
                let _ = ws.send(Message::text(r#"{"type":"pong"}"#));
            }
            Some(WsEvent::Json(v)) => others.push(v),
            Some(WsEvent::Close(_) | WsEvent::Ended(_)) | None => return (None, others),
            Some(_) => {}
        }
    }
}

pub fn recv_json(ws: &mut Ws, timeout: Duration) -> Value {
    match next_event(ws, timeout, true) {
        Some(WsEvent::Json(v)) => v,
        other => panic!("expected a JSON message within {timeout:?}, got {other:?}"),
    }
}

/// The next JSON message of the given type, skipping others (which are returned too).
pub fn recv_type(ws: &mut Ws, ty: &str, timeout: Duration) -> (Value, Vec<Value>) {
    let deadline = Instant::now() + timeout;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_event(ws, left, true) {
            Some(WsEvent::Json(v)) if v["type"] == ty => return (v, skipped),
            Some(WsEvent::Json(v)) => skipped.push(v),
            other => panic!("waiting for {ty:?}: got {other:?} (skipped {skipped:?})"),
        }
    }
}

/// Asserts that no message (other than JSON pings) arrives within `dur`.
pub fn assert_silent(ws: &mut Ws, dur: Duration, what: &str) {
    if let Some(ev) = next_event(ws, dur, true) {
        panic!("{what}: expected nothing, got {ev:?}");
    }
}

/// The next event must be a close frame; returns (code, reason). Panics when a JSON message
/// arrives first, when the connection just ends, or on timeout.
pub fn expect_close(ws: &mut Ws, timeout: Duration) -> (u16, String) {
    match next_event(ws, timeout, true) {
        Some(WsEvent::Close(Some(cr))) => cr,
        other => panic!("expected a close frame within {timeout:?}, got {other:?}"),
    }
}

/// Skips messages until a close frame; returns (code, reason) and the skipped JSON messages.
pub fn close_after(ws: &mut Ws, timeout: Duration) -> ((u16, String), Vec<Value>) {
    let deadline = Instant::now() + timeout;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_event(ws, left, true) {
            Some(WsEvent::Json(v)) => skipped.push(v),
            Some(WsEvent::Close(Some(cr))) => return (cr, skipped),
            other => panic!(
                "expected a close frame within {timeout:?}, got {other:?} (skipped {skipped:?})"
            ),
        }
    }
}

/// Reads until the connection is over (close frame or EOF/reset); returns the close frame if
/// one came. Panics if it is still open after `timeout`.
pub fn wait_ended(ws: &mut Ws, timeout: Duration) -> Option<(u16, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_event(ws, left, true) {
            Some(WsEvent::Close(c)) => return c,
            Some(WsEvent::Ended(_)) => return None,
            Some(_) => continue,
            None => panic!("connection still open after {timeout:?}"),
        }
    }
}

/// A handshake outcome counts as "refused" when it is an HTTP error status before the upgrade
/// or a 101 followed at once by close 1008 (no message before it). Returns a description.
pub fn assert_refused(res: Result<Ws, tungstenite::Error>, what: &str) -> String {
    match res {
        Err(tungstenite::Error::Http(resp)) => {
            let st = resp.status().as_u16();
            assert!(
                (400..500).contains(&st),
                "{what}: refused with unexpected status {st}"
            );
            format!("http {st}")
        }
        Err(e) => panic!("{what}: handshake failed oddly: {e}"),
        Ok(mut ws) => {
            let (code, reason) = expect_close(&mut ws, WAIT);
            assert_eq!(code, 1008, "{what}: close code (reason {reason:?})");
            format!("close 1008 {reason}")
        }
    }
}

/// Handshake must complete (101) and the server must close at once with 1008 + `reason`.
pub fn assert_closed_1008(res: Result<Ws, tungstenite::Error>, reason: &str, what: &str) {
    let mut ws = match res {
        Ok(ws) => ws,
        Err(e) => panic!("{what}: expected a 101 then close 1008, handshake gave {e}"),
    };
    let (code, r) = expect_close(&mut ws, WAIT);
    assert_eq!(
        (code, r.as_str()),
        (1008, reason),
        "{what}: close code/reason"
    );
}

pub fn send_json(ws: &mut Ws, v: &Value) {
    ws.send(Message::text(v.to_string())).expect("ws send");
}

pub fn close_normal(ws: &mut Ws) {
    let _ = ws.close(Some(tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }));
    let _ = ws.flush();
}

/// The first two messages of a session stream (API.md v2): `time_update`, then the current
/// `progress`. Returns both.
pub fn session_opening(ws: &mut Ws) -> (Value, Value) {
    let t = recv_json(ws, WAIT);
    assert_eq!(t["type"], "time_update", "first session message: {t}");
    let p = recv_json(ws, WAIT);
    assert_eq!(p["type"], "progress", "second session message: {p}");
    assert!(
        p["questions_answered"].is_u64() && p["questions_total"].is_u64(),
        "progress on open: {p}"
    );
    (t, p)
}
