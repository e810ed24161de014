//! The pages and scripts of `web/`, embedded at build time by `build.rs` and served from memory.
//!
//! Caching: the files are not fingerprinted, so browsers are told `no-cache` (always revalidate)
//! and get a strong ETag; an unchanged file costs a 304 with no body (`If-None-Match` is
//! compared weakly, so a proxy's `W/"…"` matches too).

use crate::http::{Request, Response};

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// Sent with every page: only our own scripts, styles and connections (no inline code).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Page routes of the contract and the file each serves.
fn file_for(path: &str) -> &str {
    match path {
        "/" => "/index.html",
        "/session" | "/session/" => "/session.html",
        "/session/expired" => "/expired.html",
        "/setup" => "/setup.html",
        other => other,
    }
}

pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "webmanifest") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The response for a GET/HEAD of an embedded file, or `None` if there is no such file.
pub fn serve(req: &Request) -> Option<Response> {
    let wanted = file_for(&req.path);
    let (path, bytes, etag) = FILES.iter().find(|(p, _, _)| *p == wanted)?;
    // The weak comparison (RFC 9110 §13.1.2): `W/"x"` matches `"x"`. Proxies that compress
    // (nginx with gzip) weaken the ETags they pass on, and their revalidations say `W/`.
    let fresh = req.if_none_match.as_deref().is_some_and(|v| {
        v.split(',').map(str::trim).any(|t| {
            let t = t.strip_prefix("W/").unwrap_or(t);
            t == *etag || t == "*"
        })
    });
    let r = if fresh {
        Response::new(304)
    } else {
        Response::new(200).body(content_type(path), bytes.to_vec())
    };
    let r = r
        .header("ETag", etag)
        .header("Cache-Control", "no-cache")
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "no-referrer");
    let r = if path.ends_with(".html") {
        r.header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            .header("X-Frame-Options", "DENY")
    } else {
        r
    };
    Some(r)
}
