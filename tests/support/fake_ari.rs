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
#![allow(clippy::result_large_err)] // tungstenite's ErrorResponse is what it is

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use serde_json::{json, Value};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::Message;

pub const APP: &str = "voicebot1";
pub const USERNAME: &str = "voicebot1";
pub const DEFAULT_PASSWORD: &str = "voicebot1-sandbox";

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// One HTTP request as the fake received it (recorded on arrival, before any
/// rule delay). WebSocket upgrade attempts are recorded too (method `GET`,
/// path `/ari/events`).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: String,
    /// HTTP status the fake answered with (None while pending, or when the
    /// connection was dropped by a rule).
    pub status: Option<u16>,
    pub at: Instant,
}

impl Recorded {
    /// First value of a query parameter.
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }
}

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if !self.query.is_empty() {
            let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, "?{}", q.join("&"))?;
        }
        match self.status {
            Some(s) => write!(f, " -> {s}"),
            None => write!(f, " -> (no answer)"),
        }
    }
}

/// What a originated destination does after `POST /ari/channels/{id}`.
#[derive(Clone, Debug)]
pub enum Destination {
    /// After `after`: `ChannelStateChange` (Up) then `StasisStart` with the
    /// originate's appArgs.
    Answer { after: Duration },
    /// After `after`: `ChannelDestroyed` cause 17 "User busy" (no StasisStart).
    Busy { after: Duration },
    /// After `after` (or, if None, the originate's `timeout` seconds):
    /// `ChannelDestroyed` cause 19 "No user responding".
    NoAnswer { after: Option<Duration> },
    /// Answers at once: `ChannelStateChange` (Up) and `StasisStart` are on the
    /// wire before the originate's REST response is written.
    AnswerBeforeResponse,
    /// Nothing happens: the channel rings forever.
    Never,
}

/// When the `StasisStart` of an externalMedia channel is pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaStart {
    /// Right after the REST response has been written (the usual case).
    AfterResponse,
    /// Before the REST response is written: the event frame is on the wire
    /// (plus a short pause) before the client sees the 200.
    BeforeResponse,
    /// Never.
    Never,
}

/// What an override rule does to a matching request.
#[derive(Clone, Debug)]
pub enum Action {
    /// Answer with this status and body; the model is not touched.
    Respond { status: u16, body: Value },
    /// Sleep, then handle the request normally (the model is updated after
    /// the delay, as a slow Asterisk would).
    Delay(Duration),
    /// Sleep, then answer with this status and body (model not touched).
    DelayThenRespond { delay: Duration, status: u16, body: Value },
    /// Read the request, then close the TCP connection without answering.
    Drop,
}

type PathPred = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Override rule: a method plus a path predicate, an action and an optional
/// number of times it applies.
#[derive(Clone)]
pub struct Rule {
    method: String,
    desc: String,
    pred: PathPred,
    action: Action,
    remaining: Option<usize>,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rule({} {} => {:?}, remaining {:?})", self.method, self.desc, self.action, self.remaining)
    }
}

impl Rule {
    /// Matches `method` and any path starting with `prefix`.
    pub fn prefix(method: &str, prefix: &str, action: Action) -> Rule {
        let p = prefix.to_string();
        Rule {
            method: method.to_string(),
            desc: format!("{prefix}*"),
            pred: Arc::new(move |path| path.starts_with(&p)),
            action,
            remaining: None,
        }
    }
    /// Matches `method` and paths accepted by `pred`.
    pub fn when(method: &str, desc: &str, pred: impl Fn(&str) -> bool + Send + Sync + 'static, action: Action) -> Rule {
        Rule { method: method.to_string(), desc: desc.to_string(), pred: Arc::new(pred), action, remaining: None }
    }
    /// Bridge creation: `POST /ari/bridges` or `POST /ari/bridges/{id}`.
    pub fn create_bridge(action: Action) -> Rule {
        Rule::when("POST", "create bridge", is_bridge_create_path, action)
    }
    /// `POST /ari/channels/externalMedia`.
    pub fn external_media(action: Action) -> Rule {
        Rule::prefix("POST", "/ari/channels/externalMedia", action)
    }
    /// Originate: `POST /ari/channels` or `POST /ari/channels/{id}`.
    pub fn originate(action: Action) -> Rule {
        Rule::when("POST", "originate", is_originate_path, action)
    }
    /// Applies to the next `n` matching requests only.
    pub fn times(mut self, n: usize) -> Rule {
        self.remaining = Some(n);
        self
    }
}

/// `500 {"message":"Internal Server Error"}`.
pub fn internal_error() -> Action {
    Action::Respond { status: 500, body: json!({"message": "Internal Server Error"}) }
}

/// True for `/ari/bridges` and `/ari/bridges/{id}` (bridge creation paths).
pub fn is_bridge_create_path(path: &str) -> bool {
    let segs = segments(path);
    segs.len() >= 2 && segs.len() <= 3 && segs[0] == "ari" && segs[1] == "bridges"
}

/// True for `/ari/channels` and `/ari/channels/{id}` except the fixed
/// sub-resources `externalMedia` and `create`.
pub fn is_originate_path(path: &str) -> bool {
    let segs = segments(path);
    match segs.as_slice() {
        ["ari", "channels"] => true,
        ["ari", "channels", id] => *id != "externalMedia" && *id != "create",
        _ => false,
    }
}

/// Read-only view of the model handed to `FakeAri::wait_until`.
pub struct Model<'a> {
    st: &'a State,
}

impl Model<'_> {
    pub fn channel_ids(&self) -> Vec<String> {
        self.st.channels.keys().cloned().collect()
    }
    pub fn bridge_ids(&self) -> Vec<String> {
        self.st.bridges.keys().cloned().collect()
    }
    pub fn has_channel(&self, id: &str) -> bool {
        self.st.channels.contains_key(id)
    }
    pub fn has_bridge(&self, id: &str) -> bool {
        self.st.bridges.contains_key(id)
    }
    pub fn bridge_members(&self, id: &str) -> Option<Vec<String>> {
        self.st.bridges.get(id).map(|b| b.channels.clone())
    }
    pub fn requests(&self) -> &[Recorded] {
        &self.st.requests
    }
    pub fn ws_connections(&self) -> usize {
        self.st.ws_connections
    }
    pub fn ws_connected_now(&self) -> usize {
        self.st.ws_clients.len()
    }
    pub fn ws_pings(&self) -> usize {
        self.st.ws_pings
    }
}

// ---------------------------------------------------------------------------
// Internal model
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Channel {
    id: String,
    name: String,
    state: String,
    caller_number: String,
    context: String,
    exten: String,
    app_data: String,
    in_stasis: bool,
    created: String,
    vars: Option<Value>,
}

impl Channel {
    /// A channel in the Stasis application with no dialplan position of its own, as Asterisk
    /// shows its externalMedia channels; other kinds override fields.
    fn in_stasis(id: &str, name: String, state: &str) -> Channel {
        Channel {
            id: id.into(),
            name,
            state: state.into(),
            caller_number: String::new(),
            context: "default".into(),
            exten: "s".into(),
            app_data: String::new(),
            in_stasis: true,
            created: timestamp(),
            vars: None,
        }
    }

    /// The `n`th caller from the `callers` endpoint, answered, in `Stasis(voicebot1,inbound)`.
    fn caller(id: &str, n: u64) -> Channel {
        Channel {
            caller_number: "sipp".into(),
            context: "from-callers".into(),
            exten: "3308487".into(),
            app_data: format!("{APP},inbound"),
            ..Channel::in_stasis(id, format!("PJSIP/callers-{n:08x}"), "Up")
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "protocol_id": "",
            "caller": {"name": "", "number": self.caller_number},
            "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {
                "context": self.context,
                "exten": self.exten,
                "priority": if self.app_data.is_empty() { 1 } else { 2 },
                "app_name": if self.app_data.is_empty() { "" } else { "Stasis" },
                "app_data": self.app_data,
            },
            "creationtime": self.created,
            "language": "en",
        });
        if let Some(vars) = &self.vars {
            v["channelvars"] = vars.clone();
        }
        v
    }
}

#[derive(Clone, Debug)]
struct Bridge {
    id: String,
    bridge_type: String,
    name: String,
    channels: Vec<String>,
    created: String,
}

impl Bridge {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "technology": "simple_bridge",
            "bridge_type": self.bridge_type,
            "bridge_class": "stasis",
            "creator": "Stasis",
            "name": self.name,
            "channels": self.channels,
            "creationtime": self.created,
            "video_mode": "none",
        })
    }
}

enum WsCmd {
    Text(String, Option<Sender<()>>),
    DropMidFrame,
    /// Keep the TCP connection open but never write or read on it again.
    Freeze,
}

struct WsClient {
    id: usize,
    tx: Sender<WsCmd>,
}

struct State {
    channels: BTreeMap<String, Channel>,
    bridges: BTreeMap<String, Bridge>,
    /// Playbacks started and not stopped (ids only: the fake plays nothing).
    playbacks: std::collections::BTreeSet<String>,
    requests: Vec<Recorded>,
    rules: Vec<Rule>,
    ws_clients: Vec<WsClient>,
    ws_connections: usize,
    /// WebSocket pings received from clients (each answered with a pong, unless frozen).
    ws_pings: usize,
    auth_failures: usize,
    destination: Destination,
    media_start: MediaStart,
    seq: u64,
    dropped_events: usize,
    /// What `GET /ari/asterisk/info` reports as `system.version`.
    asterisk_version: String,
}

struct Inner {
    state: Mutex<State>,
    cond: Condvar,
    password: String,
    stop: AtomicBool,
    next_ws_id: AtomicUsize,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
    /// Queues an event on every connected WebSocket (in call order: callers
    /// hold the state lock, so events keep a global order).
    fn push(&mut self, ev: Value) {
        self.push_acked(ev, None);
    }
    fn push_acked(&mut self, ev: Value, ack: Option<Sender<()>>) {
        let text = ev.to_string();
        if self.ws_clients.is_empty() {
            self.dropped_events += 1;
        }
        self.ws_clients.retain(|c| c.tx.send(WsCmd::Text(text.clone(), ack.clone())).is_ok());
    }
    /// Removes a channel from whatever bridge holds it, pushing ChannelLeftBridge.
    fn leave_bridges(&mut self, chan_id: &str) {
        let Some(ch) = self.channels.get(chan_id).cloned() else { return };
        let ids: Vec<String> =
            self.bridges.values().filter(|b| b.channels.iter().any(|c| c == chan_id)).map(|b| b.id.clone()).collect();
        for bid in ids {
            let b = self.bridges.get_mut(&bid).unwrap();
            b.channels.retain(|c| c != chan_id);
            let bj = b.to_json();
            self.push(event("ChannelLeftBridge", json!({"bridge": bj, "channel": ch.to_json()})));
        }
    }
    /// Channel goes away with `cause`: (ChannelLeftBridge), StasisEnd if it
    /// was in Stasis, ChannelDestroyed.
    fn destroy_channel(&mut self, id: &str, cause: u16, cause_txt: &str) -> bool {
        if !self.channels.contains_key(id) {
            return false;
        }
        self.leave_bridges(id);
        let ch = self.channels.remove(id).unwrap();
        if ch.in_stasis {
            self.push(event("StasisEnd", json!({"channel": ch.to_json()})));
        }
        self.push(event(
            "ChannelDestroyed",
            json!({"cause": cause, "cause_txt": cause_txt, "channel": ch.to_json()}),
        ));
        true
    }
}

// ---------------------------------------------------------------------------
// FakeAri
// ---------------------------------------------------------------------------

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
                Err(e) if Instant::now() > deadline => panic!("cannot bind the fake ARI again on {addr}: {e}"),
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
                destination: Destination::Answer { after: Duration::from_millis(300) },
                media_start: MediaStart::AfterResponse,
                seq: 0,
                dropped_events: 0,
                asterisk_version: "22.0.0-fake".into(),
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
                    let _ = thread::Builder::new().name("fake-ari-conn".into()).spawn(move || {
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
        st.push(event("StasisStart", json!({"args": ["inbound"], "channel": j.clone()})));
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
        let Some(ch) = st.channels.get(id).cloned() else { return false };
        st.push(event("ChannelHangupRequest", json!({"cause": 16, "channel": ch.to_json()})));
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
            o.entry("timestamp").or_insert_with(|| Value::String(timestamp()));
            o.entry("asterisk_id").or_insert_with(|| Value::String("00:00:00:00:00:00".into()));
            o.entry("application").or_insert_with(|| Value::String(APP.into()));
        }
        self.send_raw_text(&ev.to_string())
    }

    /// Sends an arbitrary text frame (e.g. garbage) to every connected client.
    pub fn send_raw_text(&self, text: &str) -> usize {
        let mut st = self.inner.lock();
        let before = st.ws_clients.len();
        st.ws_clients.retain(|c| c.tx.send(WsCmd::Text(text.to_string(), None)).is_ok());
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
        self.wait_until(timeout, |m| m.st.ws_connections >= n && !m.st.ws_clients.is_empty())
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
        self.inner.lock().bridges.get(id).map(|b| b.channels.clone())
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
            st = self.inner.cond.wait_timeout(st, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Waits for a request matching `pred` (including ones already received).
    pub fn wait_for_request(&self, timeout: Duration, pred: impl Fn(&Recorded) -> bool) -> Option<Recorded> {
        let mut found = None;
        self.wait_until(timeout, |m| {
            found = m.st.requests.iter().find(|r| pred(r)).cloned();
            found.is_some()
        });
        found
    }

    /// Waits for a request matching `pred` that has been answered (status set).
    pub fn wait_for_answered(&self, timeout: Duration, pred: impl Fn(&Recorded) -> bool) -> Option<Recorded> {
        self.wait_for_request(timeout, |r| r.status.is_some() && pred(r))
    }

    /// All recorded requests matching `pred`.
    pub fn requests_matching(&self, pred: impl Fn(&Recorded) -> bool) -> Vec<Recorded> {
        self.inner.lock().requests.iter().filter(|r| pred(r)).cloned().collect()
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
        s.push_str(&format!("channels: {:?}\n", st.channels.keys().collect::<Vec<_>>()));
        let bridges: Vec<String> =
            st.bridges.values().map(|b| format!("{} {:?}", b.id, b.channels)).collect();
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

// ---------------------------------------------------------------------------
// Event helpers
// ---------------------------------------------------------------------------

/// Builds an ARI event: `{"type":ty, ...fields, timestamp, asterisk_id, application}`.
pub fn event(ty: &str, fields: Value) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("type".into(), Value::String(ty.into()));
    o.insert("timestamp".into(), Value::String(timestamp()));
    if let Value::Object(f) = fields {
        for (k, v) in f {
            o.insert(k, v);
        }
    }
    o.insert("asterisk_id".into(), Value::String("00:00:00:00:00:00".into()));
    o.insert("application".into(), Value::String(APP.into()));
    Value::Object(o)
}

/// Asterisk-style timestamp, e.g. `2026-11-24T04:10:00.000+0000` (UTC).
pub fn timestamp() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let ms = d.subsec_millis();
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}+0000",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

// ---------------------------------------------------------------------------
// Connection handling
// ---------------------------------------------------------------------------

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

fn handle_connection(inner: Arc<Inner>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // Route by peeking at the request line without consuming it, so that the
    // WebSocket handshake can read the request itself.
    let Some(first_line) = peek_request_line(&stream) else { return };
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
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
        if Instant::now() > deadline {
            return None;
        }
    }
}

fn split_target(target: &str) -> (String, Vec<(String, String)>) {
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
                let h = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
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
fn auth_ok(inner: &Inner, authorization: Option<&str>, query: &[(String, String)]) -> bool {
    let expected = format!("{USERNAME}:{}", inner.password);
    if let Some(h) = authorization {
        if let Some(b64) = h.trim().strip_prefix("Basic ").or_else(|| h.trim().strip_prefix("basic ")) {
            if base64_decode(b64.trim()).map(|d| d == expected.as_bytes()).unwrap_or(false) {
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
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if chunk.len() > 2 { T[n as usize & 63] as char } else { '=' });
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

fn record(inner: &Inner, method: &str, path: &str, query: &[(String, String)], body: &str) -> usize {
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

fn set_status(inner: &Inner, idx: usize, status: u16) {
    let mut st = inner.lock();
    if let Some(r) = st.requests.get_mut(idx) {
        r.status = Some(status);
    }
    if status == 401 {
        st.auth_failures += 1;
    }
    inner.cond.notify_all();
}

// ---- WebSocket --------------------------------------------------------------

fn handle_websocket(inner: Arc<Inner>, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let idx_cell: Arc<Mutex<Option<usize>>> = Arc::new(Mutex::new(None));
    let cb_inner = inner.clone();
    let cb_idx = idx_cell.clone();
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let target = req.uri().to_string();
        let (path, query) = split_target(&target);
        let idx = record(&cb_inner, "GET", &path, &query, "");
        *cb_idx.lock().unwrap() = Some(idx);
        let authz = req.headers().get("authorization").and_then(|v| v.to_str().ok());
        if !auth_ok(&cb_inner, authz, &query) {
            let body = json!({"message": "Authentication required"}).to_string();
            let r = tungstenite::http::Response::builder()
                .status(401)
                .header("WWW-Authenticate", "Basic realm=\"Asterisk REST Interface\"")
                .header("Content-Type", "application/json")
                .header("Content-Length", body.len().to_string())
                .header("Connection", "close")
                .body(Some(body))
                .unwrap();
            return Err(r);
        }
        if !query.iter().any(|(k, v)| k == "app" && v.split(',').any(|a| a == APP)) {
            let body = json!({"message": "Invalid application provided in query parameters"}).to_string();
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
            if let (Some(i), tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) = (idx, &e) {
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

fn ws_loop(inner: &Inner, ws: &mut tungstenite::WebSocket<TcpStream>, stream: &TcpStream, rx: Receiver<WsCmd>) {
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
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
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

// ---- HTTP -------------------------------------------------------------------

struct HttpReq {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: String,
    keep_alive: bool,
}

impl HttpReq {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// Query parameters, plus top-level scalar fields of a JSON object body
    /// (Asterisk accepts parameters in either place).
    fn param(&self, key: &str) -> Option<String> {
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
                    .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
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
    let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if get("transfer-encoding").map(|v| v.to_ascii_lowercase().contains("chunked")).unwrap_or(false) {
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
    let keep_alive = if version == "HTTP/1.0" { conn.contains("keep-alive") } else { !conn.contains("close") };
    let (path, query) = split_target(&target);
    Some(HttpReq { method, path, query, headers, body: String::from_utf8_lossy(&body).into_owned(), keep_alive })
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

fn write_response(stream: &mut TcpStream, status: u16, body: Option<&Value>, keep_alive: bool) -> bool {
    let body_s = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!("HTTP/1.1 {status} {}\r\nServer: Asterisk/22.0.0-fake\r\n", reason(status));
    if status == 401 {
        head.push_str("WWW-Authenticate: Basic realm=\"Asterisk REST Interface\"\r\n");
    }
    if body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n", body_s.len()));
    head.push_str(if keep_alive { "Connection: keep-alive\r\n\r\n" } else { "Connection: close\r\n\r\n" });
    let mut out = head.into_bytes();
    out.extend_from_slice(body_s.as_bytes());
    stream.write_all(&out).is_ok() && stream.flush().is_ok()
}

/// What happens after the response has been written.
enum After {
    Push(Value),
    /// Run against the state after a delay, in its own thread.
    Later(Duration, Box<dyn FnOnce(&mut State) + Send>),
}

struct Reply {
    status: u16,
    body: Option<Value>,
    after: Vec<After>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply { status, body: Some(body), after: vec![] }
    }
    fn no_content() -> Reply {
        Reply { status: 204, body: None, after: vec![] }
    }
    fn msg(status: u16, m: &str) -> Reply {
        Reply::json(status, json!({ "message": m }))
    }
}

fn handle_http(inner: Arc<Inner>, stream: TcpStream) {
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut stream = stream;
    let _ = reader.get_ref().set_read_timeout(Some(Duration::from_secs(60)));
    while !inner.stop.load(Ordering::SeqCst) {
        let Some(req) = read_request(&mut reader) else { break };
        let idx = record(&inner, &req.method, &req.path, &req.query, &req.body);

        if !auth_ok(&inner, req.header("authorization"), &req.query) {
            let ok = write_response(&mut stream, 401, Some(&json!({"message": "Authentication required"})), req.keep_alive);
            set_status(&inner, idx, 401);
            if !ok || !req.keep_alive {
                break;
            }
            continue;
        }

        // Override rules.
        let action = {
            let mut st = inner.lock();
            let pos = st.rules.iter().position(|r| {
                r.method.eq_ignore_ascii_case(&req.method) && (r.pred)(&req.path) && r.remaining != Some(0)
            });
            pos.map(|i| {
                let r = &mut st.rules[i];
                if let Some(n) = r.remaining.as_mut() {
                    *n -= 1;
                }
                r.action.clone()
            })
        };
        let reply = match action {
            Some(Action::Respond { status, body }) => Reply::json(status, body),
            Some(Action::DelayThenRespond { delay, status, body }) => {
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

        let ok = write_response(&mut stream, reply.status, reply.body.as_ref(), req.keep_alive);
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

// ---- routes -----------------------------------------------------------------

fn route(inner: &Arc<Inner>, req: &HttpReq) -> Reply {
    let segs = segments(&req.path);
    let m = req.method.as_str();
    match (m, segs.as_slice()) {
        ("GET", ["ari", "asterisk", "info"]) => {
            let version = inner.lock().asterisk_version.clone();
            Reply::json(200, json!({"system": {"version": version, "entity_id": "fake"}}))
        }
        // What the preflight (`voicebot1 --check --online`) asks: every module is loaded, the
        // one transfer endpoint the tests use exists, the application is registered while a
        // WebSocket client is connected.
        ("GET", ["ari", "asterisk", "modules", name]) => Reply::json(
            200,
            json!({"name": name, "description": "fake", "use_count": 0, "status": "Running", "support_level": "core"}),
        ),
        ("GET", ["ari", "endpoints", "PJSIP", "AVAYA-endpoint"]) => {
            Reply::json(200, json!({"technology": "PJSIP", "resource": "AVAYA-endpoint", "state": "online", "channel_ids": []}))
        }
        ("GET", ["ari", "endpoints", _, _]) => Reply::msg(404, "Endpoint not found"),
        ("GET", ["ari", "applications", name]) => {
            if *name == APP && !inner.lock().ws_clients.is_empty() {
                Reply::json(200, json!({"name": name, "channel_ids": [], "bridge_ids": [], "endpoint_ids": [], "device_names": []}))
            } else {
                Reply::msg(404, "Application not found")
            }
        }
        ("GET", ["ari", "channels"]) => {
            let st = inner.lock();
            Reply::json(200, Value::Array(st.channels.values().map(Channel::to_json).collect()))
        }
        ("GET", ["ari", "bridges"]) => {
            let st = inner.lock();
            Reply::json(200, Value::Array(st.bridges.values().map(Bridge::to_json).collect()))
        }
        ("GET", ["ari", "channels", id]) => match inner.lock().channels.get(*id) {
            Some(c) => Reply::json(200, c.to_json()),
            None => Reply::msg(404, "Channel not found"),
        },
        ("GET", ["ari", "bridges", id]) => match inner.lock().bridges.get(*id) {
            Some(b) => Reply::json(200, b.to_json()),
            None => Reply::msg(404, "Bridge not found"),
        },
        ("POST", ["ari", "bridges"]) => create_bridge(inner, req, req.param("bridgeId")),
        ("POST", ["ari", "bridges", id]) => create_bridge(inner, req, Some(id.to_string())),
        ("DELETE", ["ari", "bridges", id]) => {
            let mut st = inner.lock();
            let Some(b) = st.bridges.remove(*id) else { return Reply::msg(404, "Bridge not found") };
            let mut r = Reply::no_content();
            let mut bj = b.to_json();
            for c in &b.channels {
                if let Some(ch) = st.channels.get(c) {
                    r.after.push(After::Push(event("ChannelLeftBridge", json!({"bridge": bj.clone(), "channel": ch.to_json()}))));
                }
            }
            bj["channels"] = json!([]);
            r.after.push(After::Push(event("BridgeDestroyed", json!({ "bridge": bj }))));
            inner.cond.notify_all();
            r
        }
        ("POST", ["ari", "bridges", id, "addChannel"]) => add_channel(inner, req, id),
        ("POST", ["ari", "bridges", id, "removeChannel"]) => {
            let mut st = inner.lock();
            if !st.bridges.contains_key(*id) {
                return Reply::msg(404, "Bridge not found");
            }
            let chans = list_param(req, "channel");
            if chans.is_empty() {
                return Reply::msg(400, "channel: Missing required field");
            }
            for c in &chans {
                if !st.channels.contains_key(c) {
                    return Reply::msg(422, "Channel not found");
                }
            }
            let mut r = Reply::no_content();
            for c in &chans {
                let b = st.bridges.get_mut(*id).unwrap();
                if b.channels.iter().any(|x| x == c) {
                    b.channels.retain(|x| x != c);
                    let bj = b.to_json();
                    let cj = st.channels[c].to_json();
                    r.after.push(After::Push(event("ChannelLeftBridge", json!({"bridge": bj, "channel": cj}))));
                }
            }
            inner.cond.notify_all();
            r
        }
        ("POST", ["ari", "channels", "externalMedia"]) => external_media(inner, req),
        ("POST", ["ari", "channels"]) => originate(inner, req, req.param("channelId")),
        ("POST", ["ari", "channels", id]) if *id != "create" => originate(inner, req, Some(id.to_string())),
        ("POST", ["ari", "channels", id, "play", playback]) => {
            let mut st = inner.lock();
            if !st.channels.contains_key(*id) {
                return Reply::msg(404, "Channel not found");
            }
            st.playbacks.insert(playback.to_string());
            let body = json!({"id": playback, "media_uri": req.param("media"), "target_uri": format!("channel:{id}"), "state": "queued"});
            Reply::json(201, body)
        }
        ("DELETE", ["ari", "playbacks", playback]) => {
            if inner.lock().playbacks.remove(*playback) {
                Reply::no_content()
            } else {
                Reply::msg(404, "Playback not found")
            }
        }
        ("POST", ["ari", "channels", id, "variable"]) => {
            if req.param("variable").is_none() {
                return Reply::msg(400, "variable: Missing required field");
            }
            if inner.lock().channels.contains_key(*id) {
                Reply::no_content()
            } else {
                Reply::msg(404, "Channel not found")
            }
        }
        ("POST", ["ari", "channels", id, "ring"])
        | ("DELETE", ["ari", "channels", id, "ring"])
        | ("POST", ["ari", "channels", id, "answer"]) => {
            if inner.lock().channels.contains_key(*id) {
                Reply::no_content()
            } else {
                Reply::msg(404, "Channel not found")
            }
        }
        ("DELETE", ["ari", "channels", id]) => {
            let mut st = inner.lock();
            let Some(ch) = st.channels.get(*id).cloned() else { return Reply::msg(404, "Channel not found") };
            // Hang up: the model changes now, the events follow the response.
            let mut r = Reply::no_content();
            let ids: Vec<String> = st
                .bridges
                .values()
                .filter(|b| b.channels.iter().any(|c| c == *id))
                .map(|b| b.id.clone())
                .collect();
            for bid in ids {
                let b = st.bridges.get_mut(&bid).unwrap();
                b.channels.retain(|c| c != *id);
                r.after.push(After::Push(event("ChannelLeftBridge", json!({"bridge": b.to_json(), "channel": ch.to_json()}))));
            }
            st.channels.remove(*id);
            if ch.in_stasis {
                r.after.push(After::Push(event("StasisEnd", json!({"channel": ch.to_json()}))));
            }
            r.after.push(After::Push(event(
                "ChannelDestroyed",
                json!({"cause": 16, "cause_txt": "Normal Clearing", "channel": ch.to_json()}),
            )));
            inner.cond.notify_all();
            r
        }
        _ => Reply::msg(404, "Resource not found"),
    }
}

fn list_param(req: &HttpReq, key: &str) -> Vec<String> {
    req.param(key)
        .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default()
}

fn create_bridge(inner: &Arc<Inner>, req: &HttpReq, id: Option<String>) -> Reply {
    let mut st = inner.lock();
    let id = id.unwrap_or_else(|| format!("{:08x}-fake-bridge-{}", 0x5eed, st.next_seq()));
    let bridge_type = req.param("type").unwrap_or_else(|| "mixing".into());
    let name = req.param("name").unwrap_or_default();
    let b = st.bridges.entry(id.clone()).or_insert_with(|| Bridge {
        id: id.clone(),
        bridge_type: bridge_type.clone(),
        name: name.clone(),
        channels: vec![],
        created: timestamp(),
    });
    let j = b.to_json();
    inner.cond.notify_all();
    let mut r = Reply::json(200, j.clone());
    r.after.push(After::Push(event("BridgeCreated", json!({ "bridge": j }))));
    r
}

fn add_channel(inner: &Arc<Inner>, req: &HttpReq, bid: &str) -> Reply {
    let mut st = inner.lock();
    if !st.bridges.contains_key(bid) {
        return Reply::msg(404, "Bridge not found");
    }
    let chans = list_param(req, "channel");
    if chans.is_empty() {
        return Reply::msg(400, "channel: Missing required field");
    }
    for c in &chans {
        match st.channels.get(c) {
            Some(ch) if ch.in_stasis => {}
            _ => return Reply::msg(422, "Channel not in Stasis application"),
        }
    }
    let mut r = Reply::no_content();
    for c in &chans {
        // A channel is in at most one bridge: leaving the old one first.
        let others: Vec<String> = st
            .bridges
            .values()
            .filter(|b| b.id != bid && b.channels.iter().any(|x| x == c))
            .map(|b| b.id.clone())
            .collect();
        for o in others {
            let b = st.bridges.get_mut(&o).unwrap();
            b.channels.retain(|x| x != c);
            let bj = b.to_json();
            r.after.push(After::Push(event("ChannelLeftBridge", json!({"bridge": bj, "channel": st.channels[c].to_json()}))));
        }
        let b = st.bridges.get_mut(bid).unwrap();
        if !b.channels.iter().any(|x| x == c) {
            b.channels.push(c.clone());
        }
        let bj = b.to_json();
        r.after.push(After::Push(event("ChannelEnteredBridge", json!({"bridge": bj, "channel": st.channels[c].to_json()}))));
    }
    inner.cond.notify_all();
    r
}

fn external_media(inner: &Arc<Inner>, req: &HttpReq) -> Reply {
    let Some(host) = req.param("external_host") else {
        return Reply::msg(400, "external_host: Missing required field");
    };
    if req.param("format").is_none() {
        return Reply::msg(400, "format: Missing required field");
    }
    if req.param("app").is_none() {
        return Reply::msg(400, "app: Missing required field");
    }
    let mut st = inner.lock();
    let n = st.next_seq();
    let id = req.param("channelId").unwrap_or_else(|| format!("1764000000.{}", 1000 + n));
    if st.channels.contains_key(&id) {
        return Reply::msg(409, "Channel with given unique ID already exists");
    }
    let ch = Channel {
        vars: Some(json!({"UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1", "UNICASTRTP_LOCAL_PORT": (10000 + 2 * n).to_string()})),
        ..Channel::in_stasis(&id, format!("UnicastRTP/{host}-0x7f00{n:08x}"), "Down")
    };
    let j = ch.to_json();
    st.channels.insert(id, ch);
    inner.cond.notify_all();
    let start = event("StasisStart", json!({"args": [], "channel": j.clone()}));
    let mut r = Reply::json(200, j);
    match st.media_start {
        MediaStart::AfterResponse => r.after.push(After::Push(start)),
        MediaStart::BeforeResponse => push_before_response(st, vec![start]),
        MediaStart::Never => {}
    }
    r
}

/// Pushes `events` and waits until they are written to every client, then
/// gives the client's reader a moment to dispatch them before the caller goes
/// on to write the REST response. Releases the state lock.
fn push_before_response(mut st: MutexGuard<'_, State>, events: Vec<Value>) {
    let (ack_tx, ack_rx) = crossbeam_channel::unbounded();
    let n_clients = st.ws_clients.len();
    let n_events = events.len();
    for ev in events {
        st.push_acked(ev, Some(ack_tx.clone()));
    }
    drop(st);
    for _ in 0..n_clients * n_events {
        let _ = ack_rx.recv_timeout(Duration::from_secs(2));
    }
    thread::sleep(Duration::from_millis(200));
}

fn originate(inner: &Arc<Inner>, req: &HttpReq, id: Option<String>) -> Reply {
    let Some(endpoint) = req.param("endpoint") else {
        return Reply::msg(400, "Endpoint must be specified");
    };
    if req.param("app").is_none() && req.param("extension").is_none() {
        return Reply::msg(400, "Application or extension must be specified");
    }
    let mut st = inner.lock();
    let n = st.next_seq();
    let id = id.unwrap_or_else(|| format!("1764000000.{}", 2000 + n));
    if st.channels.contains_key(&id) {
        return Reply::msg(409, "Channel with given unique ID already exists");
    }
    let tech_dest = endpoint.split_once('@').map(|(_, h)| h).unwrap_or(&endpoint);
    let tech = endpoint.split('/').next().unwrap_or("PJSIP");
    let tail = tech_dest.rsplit('/').next().unwrap_or(tech_dest);
    let args: Vec<String> = req
        .param("appArgs")
        .map(|a| a.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let app_data = if args.is_empty() { APP.to_string() } else { format!("{APP},{}", args.join(",")) };
    // Not in Stasis until it answers.
    let ch = Channel {
        caller_number: req.param("callerId").unwrap_or_default(),
        app_data,
        in_stasis: false,
        ..Channel::in_stasis(&id, format!("{tech}/{tail}-{n:08x}"), "Down")
    };
    let j = ch.to_json();
    st.channels.insert(id.clone(), ch);
    inner.cond.notify_all();
    let timeout_s: u64 = req.param("timeout").and_then(|t| t.parse().ok()).unwrap_or(30);
    let mut r = Reply::json(200, j);
    let cid = id.clone();
    match st.destination.clone() {
        Destination::Answer { after } => r.after.push(After::Later(
            after,
            Box::new(move |st: &mut State| {
                let Some(ch) = st.channels.get_mut(&cid) else { return };
                ch.state = "Up".into();
                ch.in_stasis = true;
                let j = ch.to_json();
                st.push(event("ChannelStateChange", json!({ "channel": j.clone() })));
                st.push(event("StasisStart", json!({"args": args, "channel": j})));
            }),
        )),
        Destination::Busy { after } => r.after.push(After::Later(
            after,
            Box::new(move |st: &mut State| {
                st.destroy_channel(&cid, 17, "User busy");
            }),
        )),
        Destination::NoAnswer { after } => r.after.push(After::Later(
            after.unwrap_or(Duration::from_secs(timeout_s)),
            Box::new(move |st: &mut State| {
                st.destroy_channel(&cid, 19, "No user responding");
            }),
        )),
        Destination::AnswerBeforeResponse => {
            let ch = st.channels.get_mut(&cid).unwrap();
            ch.state = "Up".into();
            ch.in_stasis = true;
            let up = ch.to_json();
            let evs = vec![
                event("ChannelStateChange", json!({ "channel": up.clone() })),
                event("StasisStart", json!({"args": args, "channel": up})),
            ];
            push_before_response(st, evs);
        }
        Destination::Never => {}
    }
    r
}
