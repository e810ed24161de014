//! Byte-level helpers of the client side of RFC 6455, free of sockets so they are unit-tested:
//! base64 for `Sec-WebSocket-Key`, substring search, the `"type"` of a message, frame headers.

pub(super) fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Byte-substring search (first-byte scan, then compare): payloads are a few hundred bytes.
pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    if hay.len() < needle.len() {
        return None;
    }
    let last = hay.len() - needle.len();
    let mut i = 0;
    while i <= last {
        match hay[i..=last].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i + 1..i + needle.len()] == rest {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// The value of the top-level `"type"` key, looked for near the start of the payload.
pub(super) fn msg_type(p: &[u8]) -> &[u8] {
    let head = &p[..p.len().min(256)];
    let Some(k) = find(head, b"\"type\"") else {
        return b"";
    };
    let mut i = k + 6;
    while i < head.len()
        && (head[i] == b' ' || head[i] == b':' || head[i] == b'\t' || head[i] == b'\n')
    {
        i += 1;
    }
    if i >= head.len() || head[i] != b'"' {
        return b"";
    }
    let s = i + 1;
    match head[s..].iter().position(|&b| b == b'"') {
        Some(e) => &head[s..s + e],
        None => b"",
    }
}

/// The unsigned integer after `key` (e.g. `"seq":`) near the start of the payload.
pub(super) fn head_u64(p: &[u8], key: &[u8]) -> Option<u64> {
    let head = &p[..p.len().min(256)];
    let at = find(head, key)? + key.len();
    let digits = head[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .take(19);
    let mut n: u64 = 0;
    let mut nd = 0;
    for &b in digits {
        n = n * 10 + (b - b'0') as u64;
        nd += 1;
    }
    (nd > 0).then_some(n)
}

/// The string value after `key` (e.g. `"epoch":"`) near the start of the payload, up to the
/// next `"` (epochs are plain tokens: no escapes).
pub(super) fn head_str<'a>(p: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let head = &p[..p.len().min(256)];
    let at = find(head, key)? + key.len();
    let len = head[at..].iter().position(|&b| b == b'"')?;
    Some(&head[at..at + len])
}

/// Frame header: (opcode, fin, payload length, header length); None = need more bytes.
pub(super) fn parse_header(b: &[u8]) -> Result<Option<(u8, bool, u64, usize)>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[0] & 0x70 != 0 {
        return Err("frame with RSV bits".into());
    }
    if b[1] & 0x80 != 0 {
        return Err("masked server frame".into());
    }
    let (len, hl) = match b[1] & 0x7f {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([b[2], b[3]]) as u64, 4)
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            (u64::from_be_bytes(b[2..10].try_into().unwrap()), 10)
        }
        n => (n as u64, 2),
    };
    if len > 1 << 31 {
        return Err(format!("frame of {len} bytes"));
    }
    Ok(Some((b[0] & 0x0f, b[0] & 0x80 != 0, len, hl)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_and_find() {
        assert_eq!(msg_type(br#"{"type":"ping"}"#), b"ping");
        assert_eq!(
            msg_type(br#"{ "type" : "user_added", "data":{}}"#),
            b"user_added"
        );
        assert_eq!(msg_type(br#"{"data":1}"#), b"");
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abd"), None);
        assert_eq!(find(b"xxbench.k.12@", b"bench.k."), Some(2));
        assert_eq!(b64(b"hello world!!"), "aGVsbG8gd29ybGQhIQ==");
    }

    #[test]
    fn numbers_and_epochs() {
        let init = br#"{"type":"initial","epoch":"e1x","seq":1010,"data":[]}"#;
        assert_eq!(head_u64(init, b"\"seq\":"), Some(1010));
        assert_eq!(head_str(init, b"\"epoch\":\""), Some(&b"e1x"[..]));
        assert_eq!(
            head_u64(br#"{"type":"user_added","data":{}}"#, b"\"seq\":"),
            None
        );
        assert_eq!(head_u64(br#"{"seq":x}"#, b"\"seq\":"), None);
        assert_eq!(
            head_str(br#"{"epoch":"unterminated"#, b"\"epoch\":\""),
            None
        );
    }

    #[test]
    fn headers() {
        assert_eq!(parse_header(&[0x81, 5]).unwrap(), Some((1, true, 5, 2)));
        assert_eq!(parse_header(&[0x81, 126, 1]).unwrap(), None);
        assert_eq!(
            parse_header(&[0x01, 126, 1, 0]).unwrap(),
            Some((1, false, 256, 4))
        );
        assert!(parse_header(&[0x81, 0x85]).is_err());
    }
}
