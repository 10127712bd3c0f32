//! The event WebSocket: the handshake (authentication and `app` checked, as Asterisk does), then
//! events pushed by the model, pings answered, and the faults a test asks for (a drop mid-frame,
//! a connection that freezes).
#![allow(clippy::result_large_err)] // tungstenite's ErrorResponse is what it is

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::Receiver;
use serde_json::json;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::Message;

use super::http::{auth_ok, record, set_status, split_target};
use super::model::{Inner, WsClient, WsCmd};
use super::APP;

pub(super) fn handle_websocket(inner: Arc<Inner>, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let idx_cell: Arc<Mutex<Option<usize>>> = Arc::new(Mutex::new(None));
    let cb_inner = inner.clone();
    let cb_idx = idx_cell.clone();
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let target = req.uri().to_string();
        let (path, query) = split_target(&target);
        let idx = record(&cb_inner, "GET", &path, &query, "");
        *cb_idx.lock().unwrap() = Some(idx);
        let authz = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if !auth_ok(&cb_inner, authz, &query) {
            let body = json!({"message": "Authentication required"}).to_string();
            let r = tungstenite::http::Response::builder()
                .status(401)
                .header(
                    "WWW-Authenticate",
                    "Basic realm=\"Asterisk REST Interface\"",
                )
                .header("Content-Type", "application/json")
                .header("Content-Length", body.len().to_string())
                .header("Connection", "close")
                .body(Some(body))
                .unwrap();
            return Err(r);
        }
        if !query
            .iter()
            .any(|(k, v)| k == "app" && v.split(',').any(|a| a == APP))
        {
            let body =
                json!({"message": "Invalid application provided in query parameters"}).to_string();
            let r = tungstenite::http::Response::builder()
                .status(400)
                .header("Content-Type", "application/json")
                .header("Content-Length", body.len().to_string())
                .body(Some(body))
                .unwrap();
            return Err(r);
        }
        Ok(resp)
    };
    let ws = tungstenite::accept_hdr(stream.try_clone().expect("clone"), callback);
    let idx = *idx_cell.lock().unwrap();
    let mut ws = match ws {
        Ok(ws) => {
            if let Some(i) = idx {
                set_status(&inner, i, 101);
            }
            ws
        }
        Err(e) => {
            if let (Some(i), tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) =
                (idx, &e)
            {
                set_status(&inner, i, resp.status().as_u16());
            }
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    let id = inner.next_ws_id.fetch_add(1, Ordering::SeqCst);
    {
        let mut st = inner.lock();
        st.ws_clients.push(WsClient { id, tx });
        st.ws_connections += 1;
        inner.cond.notify_all();
    }
    let _ = stream.set_read_timeout(Some(Duration::from_millis(5)));
    ws_loop(&inner, &mut ws, &stream, rx);
    let mut st = inner.lock();
    st.ws_clients.retain(|c| c.id != id);
    inner.cond.notify_all();
}

fn ws_loop(
    inner: &Inner,
    ws: &mut tungstenite::WebSocket<TcpStream>,
    stream: &TcpStream,
    rx: Receiver<WsCmd>,
) {
    loop {
        if inner.stop.load(Ordering::SeqCst) {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        let mut cmds = Vec::new();
        match rx.recv_timeout(Duration::from_millis(15)) {
            Ok(c) => cmds.push(c),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
        while let Ok(c) = rx.try_recv() {
            cmds.push(c);
        }
        for c in cmds {
            match c {
                WsCmd::Text(t, ack) => {
                    if ws.send(Message::Text(t)).is_err() {
                        return;
                    }
                    if let Some(a) = ack {
                        let _ = a.send(());
                    }
                }
                WsCmd::Freeze => {
                    let _ = ws.flush();
                    while !inner.stop.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(20));
                    }
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
                WsCmd::DropMidFrame => {
                    let _ = ws.flush();
                    // Text frame header announcing 256 payload bytes, followed
                    // by only a part of them, then an abrupt shutdown.
                    let mut s = ws.get_ref();
                    let _ = s.write_all(&[0x81, 126, 0x01, 0x00]);
                    let _ = s.write_all(br#"{"type":"StasisStart","timestamp":"#);
                    let _ = s.flush();
                    thread::sleep(Duration::from_millis(20));
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        match ws.read() {
            Ok(Message::Close(_)) => {
                let _ = ws.flush();
                // Let tungstenite finish the close handshake, then stop.
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            Ok(message) => {
                if message.is_ping() {
                    inner.lock().ws_pings += 1;
                    inner.cond.notify_all();
                }
                // Sends the pong tungstenite queued for a ping.
                let _ = ws.flush();
            }
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                let _ = ws.flush();
            }
            Err(_) => {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}
