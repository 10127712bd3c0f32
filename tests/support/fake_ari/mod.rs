//! A scripted fake of the Asterisk 22 ARI (REST + event WebSocket) on loopback.
//!
//! It exists only for what a real Asterisk cannot be made to do on demand:
//! events that arrive before the REST response that created the resource,
//! REST 5xx answers, slow REST answers, a WebSocket that drops mid-frame,
//! a WebSocket that goes silent without closing (a half-open connection),
//! malformed frames and wrong credentials. Default behaviour follows a small
//! in-memory model of Asterisk (channels, bridges, Stasis membership) so a
//! well-behaved client sees realistic answers and events.
//!
//! HTTP/1.1 is parsed by hand (keep-alive, Content-Length, chunked bodies);
//! `GET /ari/events` is upgraded with tungstenite's server handshake on the
//! same TCP stream.
//!
//! The parts: `script` (what a test tells the fake to do, and what it recorded), `model` (the
//! channels, bridges and WebSocket clients, and the events they produce), `http` (connections,
//! requests and responses by hand), `routes` (the REST resources), `websocket` (the event
//! stream and its faults).

mod http;
mod model;
mod routes;
mod script;
mod websocket;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use http::handle_connection;
use model::{Bridge, Channel, Inner, State, WsClient, WsCmd};

// The tests' view of the fake; not every test crate (nor the memory bench) uses all of it.
#[allow(unused_imports)]
pub use http::base64_encode;
#[allow(unused_imports)]
pub use model::{event, timestamp, Model};
#[allow(unused_imports)]
pub use script::{
    internal_error, is_bridge_create_path, is_originate_path, Action, Destination, MediaStart,
    Recorded, Rule,
};

pub const APP: &str = "voicebot1";
pub const USERNAME: &str = "voicebot1";
pub const DEFAULT_PASSWORD: &str = "voicebot1-sandbox";

/// A running fake: a listener on 127.0.0.1 and the model behind it. Dropped, it stops accepting,
/// cuts its WebSocket clients and, in a failing test, prints its state and requests.
pub struct FakeAri {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

impl FakeAri {
    /// Starts a fake accepting the default password.
    pub fn start() -> FakeAri {
        FakeAri::with_password(DEFAULT_PASSWORD)
    }

    /// Starts a fake accepting user `voicebot1` with `password`.
    pub fn with_password(password: &str) -> FakeAri {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake ARI");
        FakeAri::serve(listener, password)
    }

    /// A fresh fake (empty model, default password) on `addr`: where a dropped fake listened, as
    /// an Asterisk that comes back after a stop. Waits up to 5 s for the old listener to close.
    pub fn start_at(addr: SocketAddr) -> FakeAri {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(addr) {
                Ok(listener) => return FakeAri::serve(listener, DEFAULT_PASSWORD),
                Err(e) if Instant::now() > deadline => {
                    panic!("cannot bind the fake ARI again on {addr}: {e}")
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn serve(listener: TcpListener, password: &str) -> FakeAri {
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                channels: BTreeMap::new(),
                bridges: BTreeMap::new(),
                playbacks: Default::default(),
                requests: Vec::new(),
                rules: Vec::new(),
                ws_clients: Vec::new(),
                ws_connections: 0,
                ws_pings: 0,
                auth_failures: 0,
                destination: Destination::Answer {
                    after: Duration::from_millis(300),
                },
                media_start: MediaStart::AfterResponse,
                seq: 0,
                dropped_events: 0,
                asterisk_version: "22.0.0-fake".into(),
                globals: BTreeMap::new(),
            }),
            cond: Condvar::new(),
            password: password.to_string(),
            stop: AtomicBool::new(false),
            next_ws_id: AtomicUsize::new(1),
        });
        let acc = inner.clone();
        thread::Builder::new()
            .name("fake-ari-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if acc.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = conn else { continue };
                    let inner = acc.clone();
                    let _ = thread::Builder::new()
                        .name("fake-ari-conn".into())
                        .spawn(move || {
                            handle_connection(inner, stream);
                        });
                }
            })
            .unwrap();
        FakeAri { inner, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    /// `http://127.0.0.1:PORT` (what goes into `[ari] url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn password(&self) -> &str {
        &self.inner.password
    }

    // ---- configuration ----------------------------------------------------

    pub fn set_destination(&self, d: Destination) {
        self.inner.lock().destination = d;
    }
    pub fn set_media_start(&self, m: MediaStart) {
        self.inner.lock().media_start = m;
    }
    /// The version `GET /ari/asterisk/info` reports from now on.
    pub fn set_asterisk_version(&self, version: &str) {
        self.inner.lock().asterisk_version = version.to_string();
    }
    /// A global variable as voicebot1 last set it (`POST /ari/asterisk/variable`).
    pub fn global(&self, name: &str) -> Option<String> {
        self.inner.lock().globals.get(name).cloned()
    }
    pub fn set_rule(&self, rule: Rule) {
        self.inner.lock().rules.push(rule);
    }
    pub fn clear_rules(&self) {
        self.inner.lock().rules.clear();
    }

    /// Pre-populates a bridge (e.g. a leftover from an earlier run).
    pub fn add_bridge(&self, id: &str) {
        let mut st = self.inner.lock();
        let b = Bridge {
            id: id.into(),
            bridge_type: "mixing".into(),
            name: String::new(),
            channels: vec![],
            created: timestamp(),
        };
        st.bridges.insert(id.into(), b);
        self.inner.cond.notify_all();
    }

    /// Pre-populates a channel that is in the voicebot1 Stasis application.
    pub fn add_channel(&self, id: &str, name: &str) {
        let mut st = self.inner.lock();
        let ch = Channel::in_stasis(id, name.into(), "Up");
        st.channels.insert(id.into(), ch);
        self.inner.cond.notify_all();
    }

    // ---- scripted Asterisk-side happenings ---------------------------------

    /// A call from the `callers` endpoint enters Stasis: adds channel `id`
    /// (`PJSIP/callers-0000000N`, Up) and pushes its StasisStart with
    /// `args: ["inbound"]`. Returns the channel JSON.
    pub fn new_inbound_call(&self, id: &str) -> Value {
        let mut st = self.inner.lock();
        let ch = Channel::caller(id, st.next_seq());
        let j = ch.to_json();
        st.channels.insert(id.into(), ch);
        st.push(event(
            "StasisStart",
            json!({"args": ["inbound"], "channel": j.clone()}),
        ));
        self.inner.cond.notify_all();
        j
    }

    /// A caller in `Stasis(voicebot1,inbound)` whose StasisStart never reached voicebot1 (lost
    /// by Asterisk, or by a connection): the channel exists, no event is sent.
    pub fn add_waiting_caller(&self, id: &str) {
        let mut st = self.inner.lock();
        let ch = Channel::caller(id, st.next_seq());
        st.channels.insert(id.into(), ch);
        self.inner.cond.notify_all();
    }

    /// The far end hangs up channel `id`: ChannelHangupRequest, (ChannelLeftBridge),
    /// StasisEnd, ChannelDestroyed (cause 16). Returns false if it did not exist.
    pub fn remote_hangup(&self, id: &str) -> bool {
        let mut st = self.inner.lock();
        let Some(ch) = st.channels.get(id).cloned() else {
            return false;
        };
        st.push(event(
            "ChannelHangupRequest",
            json!({"cause": 16, "channel": ch.to_json()}),
        ));
        let ok = st.destroy_channel(id, 16, "Normal Clearing");
        self.inner.cond.notify_all();
        ok
    }

    /// The caller hangs up (see `remote_hangup`).
    pub fn caller_hangs_up(&self, id: &str) -> bool {
        self.remote_hangup(id)
    }

    // ---- raw WebSocket control ---------------------------------------------

    /// Sends an event to every connected WebSocket client. Adds `timestamp`,
    /// `asterisk_id` and `application` when missing. Returns the number of
    /// clients it was queued for.
    pub fn send_event(&self, mut ev: Value) -> usize {
        if let Some(o) = ev.as_object_mut() {
            o.entry("timestamp")
                .or_insert_with(|| Value::String(timestamp()));
            o.entry("asterisk_id")
                .or_insert_with(|| Value::String("00:00:00:00:00:00".into()));
            o.entry("application")
                .or_insert_with(|| Value::String(APP.into()));
        }
        self.send_raw_text(&ev.to_string())
    }

    /// Sends an arbitrary text frame (e.g. garbage) to every connected client.
    pub fn send_raw_text(&self, text: &str) -> usize {
        let mut st = self.inner.lock();
        let before = st.ws_clients.len();
        st.ws_clients
            .retain(|c| c.tx.send(WsCmd::Text(text.to_string(), None)).is_ok());
        let _ = before;
        st.ws_clients.len()
    }

    /// Drops every connected WebSocket abruptly: writes the header and part of
    /// a text frame, then shuts the TCP connection down. Returns how many
    /// connections were dropped.
    pub fn drop_websocket(&self) -> usize {
        let clients: Vec<WsClient> = std::mem::take(&mut self.inner.lock().ws_clients);
        let n = clients.len();
        for c in clients {
            let _ = c.tx.send(WsCmd::DropMidFrame);
        }
        self.inner.cond.notify_all();
        n
    }

    /// Freezes every connected WebSocket, as a connection whose far end vanished without a FIN
    /// or RST looks to voicebot1: the TCP connection stays open, but from now on the fake sends
    /// nothing on it (no events, no pongs) and reads nothing from it. The frozen connections no
    /// longer count as connected; new ones behave normally. Returns how many were frozen.
    pub fn freeze_websocket(&self) -> usize {
        let clients: Vec<WsClient> = std::mem::take(&mut self.inner.lock().ws_clients);
        let n = clients.len();
        for c in clients {
            let _ = c.tx.send(WsCmd::Freeze);
        }
        self.inner.cond.notify_all();
        n
    }

    /// WebSocket pings received so far, over all connections.
    pub fn ws_pings(&self) -> usize {
        self.inner.lock().ws_pings
    }

    /// Number of WebSocket clients currently connected.
    pub fn ws_connected(&self) -> usize {
        self.inner.lock().ws_clients.len()
    }

    /// Total successful WebSocket upgrades so far.
    pub fn ws_connections(&self) -> usize {
        self.inner.lock().ws_connections
    }

    /// Total requests (REST or WebSocket) refused with 401 so far.
    pub fn auth_failures(&self) -> usize {
        self.inner.lock().auth_failures
    }

    /// Waits until at least `n` WebSocket upgrades have succeeded.
    pub fn wait_ws_connections(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |m| {
            m.st.ws_connections >= n && !m.st.ws_clients.is_empty()
        })
    }

    /// Waits until at least `n` requests were refused with 401.
    pub fn wait_auth_failures(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |m| m.st.auth_failures >= n)
    }

    // ---- observation --------------------------------------------------------

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().requests.clone()
    }

    pub fn channel_ids(&self) -> Vec<String> {
        self.inner.lock().channels.keys().cloned().collect()
    }

    pub fn bridge_ids(&self) -> Vec<String> {
        self.inner.lock().bridges.keys().cloned().collect()
    }

    pub fn has_channel(&self, id: &str) -> bool {
        self.inner.lock().channels.contains_key(id)
    }

    pub fn has_bridge(&self, id: &str) -> bool {
        self.inner.lock().bridges.contains_key(id)
    }

    pub fn bridge_members(&self, id: &str) -> Option<Vec<String>> {
        self.inner
            .lock()
            .bridges
            .get(id)
            .map(|b| b.channels.clone())
    }

    /// Waits until `cond` holds for the model; re-checked on every change.
    pub fn wait_until(&self, timeout: Duration, mut cond: impl FnMut(&Model) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.inner.lock();
        loop {
            if cond(&Model { st: &st }) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            st = self
                .inner
                .cond
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for a request matching `pred` (including ones already received).
    pub fn wait_for_request(
        &self,
        timeout: Duration,
        pred: impl Fn(&Recorded) -> bool,
    ) -> Option<Recorded> {
        let mut found = None;
        self.wait_until(timeout, |m| {
            found = m.st.requests.iter().find(|r| pred(r)).cloned();
            found.is_some()
        });
        found
    }

    /// Waits for a request matching `pred` that has been answered (status set).
    pub fn wait_for_answered(
        &self,
        timeout: Duration,
        pred: impl Fn(&Recorded) -> bool,
    ) -> Option<Recorded> {
        self.wait_for_request(timeout, |r| r.status.is_some() && pred(r))
    }

    /// All recorded requests matching `pred`.
    pub fn requests_matching(&self, pred: impl Fn(&Recorded) -> bool) -> Vec<Recorded> {
        self.inner
            .lock()
            .requests
            .iter()
            .filter(|r| pred(r))
            .cloned()
            .collect()
    }

    /// Human-readable dump of everything recorded (for failure messages).
    pub fn dump(&self) -> String {
        let st = self.inner.lock();
        let mut s = String::new();
        s.push_str(&format!(
            "fake ARI {}: ws_connections={} connected_now={} auth_failures={} events_dropped_without_client={}\n",
            self.addr,
            st.ws_connections,
            st.ws_clients.len(),
            st.auth_failures,
            st.dropped_events
        ));
        s.push_str(&format!(
            "channels: {:?}\n",
            st.channels.keys().collect::<Vec<_>>()
        ));
        let bridges: Vec<String> = st
            .bridges
            .values()
            .map(|b| format!("{} {:?}", b.id, b.channels))
            .collect();
        s.push_str(&format!("bridges: {bridges:?}\nrequests:\n"));
        let t0 = st.requests.first().map(|r| r.at);
        for r in &st.requests {
            let dt = t0.map(|t| r.at.duration_since(t).as_millis()).unwrap_or(0);
            s.push_str(&format!("  +{dt:>6}ms {r}\n"));
        }
        s
    }
}

impl Drop for FakeAri {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("----- fake ARI state at failure -----\n{}", self.dump());
        }
        self.inner.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        for c in std::mem::take(&mut self.inner.lock().ws_clients) {
            let _ = c.tx.send(WsCmd::DropMidFrame);
        }
    }
}
