//! HTTP/1.1 by hand on the fake's connections: routing a connection to REST or the event
//! WebSocket, parsing requests (keep-alive, Content-Length, chunked bodies), authentication,
//! recording each request, writing responses and running what comes after them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::model::{Inner, State};
use super::routes::route;
use super::script::{take_action, Action, Recorded};
use super::websocket::handle_websocket;
use super::USERNAME;

pub(super) fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

pub(super) fn handle_connection(inner: Arc<Inner>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // Route by peeking at the request line without consuming it, so that the
    // WebSocket handshake can read the request itself.
    let Some(first_line) = peek_request_line(&stream) else {
        return;
    };
    let target = first_line.split_whitespace().nth(1).unwrap_or("");
    if first_line.starts_with("GET ") && target.starts_with("/ari/events") {
        handle_websocket(inner, stream);
    } else {
        handle_http(inner, stream);
    }
}

fn peek_request_line(stream: &TcpStream) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 4096];
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    loop {
        match stream.peek(&mut buf) {
            Ok(0) => return None,
            Ok(n) => {
                if let Some(pos) = buf[..n].windows(2).position(|w| w == b"\r\n") {
                    let _ = stream.set_read_timeout(None);
                    return Some(String::from_utf8_lossy(&buf[..pos]).into_owned());
                }
                if n == buf.len() {
                    return None;
                }
                thread::sleep(Duration::from_millis(2));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
        if Instant::now() > deadline {
            return None;
        }
    }
}

pub(super) fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    let (p, q) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let query = q
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (form_decode(k), form_decode(v)),
            None => (form_decode(kv), String::new()),
        })
        .collect();
    (percent_decode(p, false), query)
}

fn form_decode(s: &str) -> String {
    percent_decode(s, true)
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks a `Basic` Authorization header value or an `api_key=user:pass`
/// query parameter (both are accepted by Asterisk).
pub(super) fn auth_ok(
    inner: &Inner,
    authorization: Option<&str>,
    query: &[(String, String)],
) -> bool {
    let expected = format!("{USERNAME}:{}", inner.password);
    if let Some(h) = authorization {
        if let Some(b64) = h
            .trim()
            .strip_prefix("Basic ")
            .or_else(|| h.trim().strip_prefix("basic "))
        {
            if base64_decode(b64.trim())
                .map(|d| d == expected.as_bytes())
                .unwrap_or(false)
            {
                return true;
            }
        }
    }
    query.iter().any(|(k, v)| k == "api_key" && *v == expected)
}

pub fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

pub(super) fn record(
    inner: &Inner,
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: &str,
) -> usize {
    let mut st = inner.lock();
    st.requests.push(Recorded {
        method: method.into(),
        path: path.into(),
        query: query.to_vec(),
        body: body.into(),
        status: None,
        at: Instant::now(),
    });
    inner.cond.notify_all();
    st.requests.len() - 1
}

pub(super) fn set_status(inner: &Inner, idx: usize, status: u16) {
    let mut st = inner.lock();
    if let Some(r) = st.requests.get_mut(idx) {
        r.status = Some(status);
    }
    if status == 401 {
        st.auth_failures += 1;
    }
    inner.cond.notify_all();
}

pub(super) struct HttpReq {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: Vec<(String, String)>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: String,
    pub(super) keep_alive: bool,
}

impl HttpReq {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Query parameters, plus top-level scalar fields of a JSON object body
    /// (Asterisk accepts parameters in either place).
    pub(super) fn param(&self, key: &str) -> Option<String> {
        if let Some((_, v)) = self.query.iter().find(|(k, _)| k == key) {
            return Some(v.clone());
        }
        let body: Value = serde_json::from_str(&self.body).ok()?;
        match body.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Array(a) => Some(
                a.iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            _ => None,
        }
    }
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<HttpReq> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let version = parts.next().unwrap_or("HTTP/1.1").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if get("transfer-encoding")
        .map(|v| v.to_ascii_lowercase().contains("chunked"))
        .unwrap_or(false)
    {
        loop {
            let mut sz = String::new();
            r.read_line(&mut sz).ok()?;
            let n = usize::from_str_radix(sz.trim().split(';').next()?.trim(), 16).ok()?;
            if n == 0 {
                // trailers until empty line
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t).ok()? == 0 || t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; n];
            r.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk);
            let mut crlf = String::new();
            r.read_line(&mut crlf).ok()?;
        }
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0; len];
        r.read_exact(&mut body).ok()?;
    }
    let conn = get("connection").unwrap_or_default().to_ascii_lowercase();
    let keep_alive = if version == "HTTP/1.0" {
        conn.contains("keep-alive")
    } else {
        !conn.contains("close")
    };
    let (path, query) = split_target(&target);
    Some(HttpReq {
        method,
        path,
        query,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        keep_alive,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn write_response(
    stream: &mut TcpStream,
    status: u16,
    body: Option<&Value>,
    keep_alive: bool,
) -> bool {
    let body_s = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nServer: Asterisk/22.0.0-fake\r\n",
        reason(status)
    );
    if status == 401 {
        head.push_str("WWW-Authenticate: Basic realm=\"Asterisk REST Interface\"\r\n");
    }
    if body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n", body_s.len()));
    head.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let mut out = head.into_bytes();
    out.extend_from_slice(body_s.as_bytes());
    stream.write_all(&out).is_ok() && stream.flush().is_ok()
}

/// What happens after the response has been written.
pub(super) enum After {
    Push(Value),
    /// Run against the state after a delay, in its own thread.
    Later(Duration, Box<dyn FnOnce(&mut State) + Send>),
}

pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: Option<Value>,
    pub(super) after: Vec<After>,
}

impl Reply {
    pub(super) fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Some(body),
            after: vec![],
        }
    }
    pub(super) fn no_content() -> Reply {
        Reply {
            status: 204,
            body: None,
            after: vec![],
        }
    }
    pub(super) fn msg(status: u16, m: &str) -> Reply {
        Reply::json(status, json!({ "message": m }))
    }
}

fn handle_http(inner: Arc<Inner>, stream: TcpStream) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut stream = stream;
    let _ = reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(60)));
    while !inner.stop.load(Ordering::SeqCst) {
        let Some(req) = read_request(&mut reader) else {
            break;
        };
        let idx = record(&inner, &req.method, &req.path, &req.query, &req.body);

        if !auth_ok(&inner, req.header("authorization"), &req.query) {
            let ok = write_response(
                &mut stream,
                401,
                Some(&json!({"message": "Authentication required"})),
                req.keep_alive,
            );
            set_status(&inner, idx, 401);
            if !ok || !req.keep_alive {
                break;
            }
            continue;
        }

        // Override rules.
        let action = take_action(&mut inner.lock().rules, &req.method, &req.path);
        let reply = match action {
            Some(Action::Respond { status, body }) => Reply::json(status, body),
            Some(Action::DelayThenRespond {
                delay,
                status,
                body,
            }) => {
                thread::sleep(delay);
                Reply::json(status, body)
            }
            Some(Action::Drop) => {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            Some(Action::Delay(d)) => {
                thread::sleep(d);
                route(&inner, &req)
            }
            None => route(&inner, &req),
        };

        let ok = write_response(
            &mut stream,
            reply.status,
            reply.body.as_ref(),
            req.keep_alive,
        );
        set_status(&inner, idx, reply.status);
        run_after(&inner, reply.after);
        if !ok || !req.keep_alive {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn run_after(inner: &Arc<Inner>, after: Vec<After>) {
    for a in after {
        match a {
            After::Push(ev) => {
                let mut st = inner.lock();
                st.push(ev);
                inner.cond.notify_all();
            }
            After::Later(d, f) => {
                let inner = inner.clone();
                thread::spawn(move || {
                    thread::sleep(d);
                    if inner.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let mut st = inner.lock();
                    f(&mut st);
                    inner.cond.notify_all();
                });
            }
        }
    }
}
