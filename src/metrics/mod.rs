//! Metrics and health, the Prometheus way: `/metrics` in the text format and `/health` for a
//! probe or a load balancer, served by [`server`]. This module holds what is counted (the label
//! sets, [`Registry`] and its hooks); `scrape` what a scrape reads and writes ([`Live`],
//! [`health`], [`render`]).
//!
//! Where each figure comes from:
//! - What happens in the call flow — a call ended, a set-up completed, a caller not taken, a bot
//!   session ended, a REST request answered, the event WebSocket connected — is added to
//!   [`METRICS`] by a one-line hook where it is logged (`worker`, `intake`, the REST observer in
//!   `shared`, `app`). It is a process-wide static on purpose: every figure is a fixed array of
//!   atomics (no map, no lock), so a hook costs an atomic add or two and needs no handle.
//! - What the service keeps anyway — active calls by phase, the port pool, `shared::Counters` — is
//!   read at scrape time into a [`Live`] by the closure the server is given (`Shared::live`), not
//!   counted twice.
//!
//! Every label is a closed enum ([`Outcome`], [`NotTaken`], [`Operation`], [`Class`], [`Dropped`],
//! [`CallPhase`]), never an id or a path: the number of series is fixed whatever the traffic, and
//! every series exists (at 0) from the start, so `rate()` and `increase()` see the first event.
//!
//! Architecture invariant: `metrics` imports nothing from the rest of the crate. Each caller maps
//! its own type to a label (`End::outcome`, `Overload::reason`, …): a counter module that maps
//! other modules' types would have to import them all.
//!
//! The echo counts its packets in its own thread; they are added here once per bot session, when
//! it ends, so the packet totals lag a running session by up to `[media] phase_ms`.
//!
//! A new family is a label set (`label_set!`), an array of atomics in [`Registry`] indexed by it,
//! a hook like [`call_ended`], and its lines in [`render`].

pub mod exposition;
mod scrape;
pub mod server;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use exposition::HistogramSnapshot;

pub use scrape::{health, render, Health, Live};
pub use server::{Endpoint, MetricsServer};

/// The one registry of the process.
pub static METRICS: Registry = Registry::new();

/// Defines a label's closed set of values: the enum, `ALL` in declaration order (which is also
/// the index into the arrays of counters), and the label text.
macro_rules! label_set {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }
    };
}

mod bots;

pub use bots::{BotDropped, BotFailure, BotOutcome, BotRequest};

label_set! {
    /// How a call ended, as `voicebot1_calls_ended_total{outcome}`: one value per kind of "ended
    /// (…)" line in the log.
    Outcome {
        CallerHungUp => "caller_hangup",
        DestinationHungUp => "destination_hangup",
        /// Cause 17.
        DestinationBusy => "destination_busy",
        /// Cause 18, 19 or 20, a dial timeout (cause 0 from Asterisk before 20.18/22.8), or none.
        DestinationNoAnswer => "destination_no_answer",
        /// Any other cause (unreachable, rejected, congestion…).
        DestinationFailed => "destination_failed",
        MediaLost => "media_lost",
        SetupFailed => "setup_failed",
        SetupTimedOut => "setup_timeout",
        NoPort => "no_port",
        Shutdown => "shutdown",
        InternalError => "internal_error",
        /// The bot asked for the hang-up, or ended with `when_done = "hangup"`.
        BotHangup => "bot_hangup",
        /// The bot failed with `on_failure = "hangup"`.
        BotFailed => "bot_failed",
    }
}

label_set! {
    /// Why admission control did not take a new caller, as `voicebot1_calls_not_taken_total{reason}`.
    NotTaken {
        /// `[admission] max_calls` reached.
        Calls => "max_calls",
        /// The ceiling of calls at once admission learned from Asterisk's overloads reached.
        Ceiling => "learned_ceiling",
        /// `[admission] max_setups` reached.
        Setups => "max_setups",
        /// Asterisk overloaded: slow (its REST answers against their baselines, its events'
        /// lag, `[admission] max_rest_latency_ms`) for `max_wait_ms` and more.
        Slow => "slow_asterisk",
        /// A REST request went unanswered within `[admission] after_timeout_ms`.
        Unanswered => "unanswered_asterisk",
        /// The admission rate learned from Asterisk's overloads reached (with `max_wait_ms = 0`;
        /// else the caller waits).
        Paced => "learned_rate",
        /// Waited `[admission] max_wait_ms` (for a slow Asterisk, the learned rate, set-ups in
        /// flight) and could still not be taken.
        WaitedTooLong => "waited_too_long",
    }
}

label_set! {
    /// A call's phase, as `voicebot1_calls_active{phase}`.
    CallPhase {
        Setup => "setup",
        Media => "media",
        Transfer => "transfer",
        Connected => "connected",
    }
}

label_set! {
    /// An ARI REST request, by what it does (from its method and path template; never the path
    /// itself, which holds ids).
    Operation {
        CreateBridge => "create_bridge",
        AddChannel => "add_channel",
        ExternalMedia => "external_media",
        Originate => "originate",
        Hangup => "hangup",
        DestroyBridge => "destroy_bridge",
        Play => "play",
        StopPlayback => "stop_playback",
        /// Whether the ringback plays yet (see `CallHandler::ring`).
        GetPlayback => "get_playback",
        SetVariable => "set_variable",
        /// The caller's RTP address, on Asterisk before 18.21/20.6 only.
        GetVariable => "get_variable",
        GetChannels => "get_channels",
        GetBridges => "get_bridges",
        Info => "info",
        /// The preflight's look-ups (modules, applications, endpoints) and anything new.
        Other => "other",
    }
}

impl Operation {
    /// The operation of `method` on `path` (relative to the ARI base, e.g.
    /// `/bridges/voicebot1-1764…-bridge/addChannel`).
    pub fn of(method: &str, path: &str) -> Operation {
        let path = path.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match (method, segments.as_slice()) {
            ("POST", ["bridges", _]) => Operation::CreateBridge,
            ("POST", ["bridges", _, "addChannel"]) => Operation::AddChannel,
            ("DELETE", ["bridges", _]) => Operation::DestroyBridge,
            ("GET", ["bridges"] | ["bridges", _]) => Operation::GetBridges,
            ("POST", ["channels", "externalMedia"]) => Operation::ExternalMedia,
            ("POST", ["channels"] | ["channels", _]) => Operation::Originate,
            ("DELETE", ["channels", _]) => Operation::Hangup,
            ("POST", ["channels", _, "play"] | ["channels", _, "play", _]) => Operation::Play,
            ("POST", ["channels", _, "variable"]) => Operation::SetVariable,
            ("GET", ["channels", _, "variable"]) => Operation::GetVariable,
            ("GET", ["channels"]) => Operation::GetChannels,
            ("DELETE", ["playbacks", _]) => Operation::StopPlayback,
            ("GET", ["playbacks", _]) => Operation::GetPlayback,
            ("GET", ["asterisk", "info"]) => Operation::Info,
            _ => Operation::Other,
        }
    }
}

label_set! {
    /// How a REST request came out: the HTTP status class, or why there was no status.
    Class {
        Success => "2xx",
        ClientError => "4xx",
        ServerError => "5xx",
        /// Asked, but no (complete) answer within `[ari] request_timeout_ms`.
        Timeout => "timeout",
        /// No connection: refused, unreachable, DNS, connect timeout.
        Connect => "connect",
        /// Anything else: a reset mid-answer, TLS, a 1xx/3xx status.
        Other => "other",
    }
}

impl Class {
    pub fn of_status(status: u16) -> Class {
        match status {
            200..=299 => Class::Success,
            400..=499 => Class::ClientError,
            500..=599 => Class::ServerError,
            _ => Class::Other,
        }
    }
}

label_set! {
    /// Why the echo dropped a packet.
    Dropped {
        /// From an address other than the call's Asterisk media address.
        ForeignSource => "foreign_source",
        /// From the right address, but not RTP.
        NotRtp => "not_rtp",
    }
}

/// Upper bounds (seconds) of the latency histograms' buckets: set-up is a few ms on Asterisk 22
/// and ~230 ms on 16; a REST request ~1 ms, up to the 5 s request timeout.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram over [`LATENCY_BUCKETS`].
#[derive(Debug)]
pub struct Histogram {
    /// Per bucket, not cumulative; the last for observations above every bound.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            counts: [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len() + 1],
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn snapshot(&self) -> HistogramSnapshot<'static> {
        HistogramSnapshot {
            bounds: &LATENCY_BUCKETS,
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

/// REST figures of one operation.
#[derive(Debug)]
struct AriStats {
    duration: Histogram,
    by_class: [AtomicU64; Class::ALL.len()],
}

impl AriStats {
    const fn new() -> AriStats {
        AriStats {
            duration: Histogram::new(),
            by_class: [const { AtomicU64::new(0) }; Class::ALL.len()],
        }
    }
}

/// What the hooks count. [`METRICS`] is the process's; tests make their own.
#[derive(Debug)]
pub struct Registry {
    ended: [AtomicU64; Outcome::ALL.len()],
    not_taken: [AtomicU64; NotTaken::ALL.len()],
    setup: Histogram,
    ari: [AriStats; Operation::ALL.len()],
    ari_connected: AtomicBool,
    bot_sessions: AtomicU64,
    echo_received: AtomicU64,
    echo_sent: AtomicU64,
    echo_dropped: [AtomicU64; Dropped::ALL.len()],
    /// The WebSocket bots, registered once at start-up.
    bots: OnceLock<bots::Bots>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry::new()
    }
}

impl Registry {
    pub const fn new() -> Registry {
        Registry {
            ended: [const { AtomicU64::new(0) }; Outcome::ALL.len()],
            not_taken: [const { AtomicU64::new(0) }; NotTaken::ALL.len()],
            setup: Histogram::new(),
            ari: [const { AriStats::new() }; Operation::ALL.len()],
            ari_connected: AtomicBool::new(false),
            bot_sessions: AtomicU64::new(0),
            echo_received: AtomicU64::new(0),
            echo_sent: AtomicU64::new(0),
            echo_dropped: [const { AtomicU64::new(0) }; Dropped::ALL.len()],
            bots: OnceLock::new(),
        }
    }

    /// Names the WebSocket bots (their index is their position) and the bad-message kinds
    /// their codecs report; once, at start-up (a second call changes nothing).
    pub fn register_bots(&self, names: Vec<String>, bad_kinds: &'static [&'static str]) {
        let _ = self.bots.set(bots::Bots::new(names, bad_kinds));
    }

    fn bot(&self, bot: usize) -> Option<&bots::BotStats> {
        self.bots.get()?.get(bot)
    }

    pub fn call_ended(&self, outcome: Outcome) {
        self.ended[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn call_set_up(&self, took: Duration) {
        self.setup.observe(took);
    }

    pub fn call_not_taken(&self, reason: NotTaken) {
        self.not_taken[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn echo_session_ended(&self, echo: &EchoSession) {
        self.bot_sessions.fetch_add(1, Ordering::Relaxed);
        self.echo_received
            .fetch_add(echo.received, Ordering::Relaxed);
        self.echo_sent.fetch_add(echo.sent, Ordering::Relaxed);
        for (reason, n) in Dropped::ALL.iter().zip(echo.dropped) {
            self.echo_dropped[*reason as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn ari_request(&self, operation: Operation, class: Class, took: Duration) {
        let stats = &self.ari[operation as usize];
        stats.duration.observe(took);
        stats.by_class[class as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_ari_connected(&self, connected: bool) {
        self.ari_connected.store(connected, Ordering::Relaxed);
    }

    pub fn ari_connected(&self) -> bool {
        self.ari_connected.load(Ordering::Relaxed)
    }
}

// --- the hooks: one line at the place that logs the same event --------------------------------

/// A call ended (its "ended (…)" line).
pub fn call_ended(outcome: Outcome) {
    METRICS.call_ended(outcome);
}

/// Caller and bot media are bridged (the "caller and media bridged in N ms" line): `took` since
/// the caller entered Stasis (Asterisk's timestamp when it gave one).
pub fn call_set_up(took: Duration) {
    METRICS.call_set_up(took);
}

/// Admission control did not take a new caller (its "not taken" line).
pub fn call_not_taken(reason: NotTaken) {
    METRICS.call_not_taken(reason);
}

/// What one echo session counted, for [`echo_session_ended`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EchoSession {
    /// RTP packets received from Asterisk.
    pub received: u64,
    /// RTP packets sent back.
    pub sent: u64,
    /// Packets dropped, in the order of [`Dropped::ALL`].
    pub dropped: [u64; Dropped::ALL.len()],
}

/// An echo session ended (the "bot media ended on port N" line) with these counts.
pub fn echo_session_ended(echo: &EchoSession) {
    METRICS.echo_session_ended(echo);
}

/// A WebSocket bot (`bot`: its registered index) connected after `took`.
pub fn bot_connected(bot: usize, took: Duration) {
    if let Some(b) = METRICS.bot(bot) {
        b.connected(took);
    }
}

/// A WebSocket bot's session failed.
pub fn bot_failed(bot: usize, why: BotFailure) {
    if let Some(b) = METRICS.bot(bot) {
        b.failed(why);
    }
}

/// A WebSocket bot's session ended, with the frames it carried and dropped.
pub fn bot_session_ended(
    bot: usize,
    outcome: BotOutcome,
    to_bot: u64,
    from_bot: u64,
    dropped: &[u64; BotDropped::ALL.len()],
) {
    METRICS.bot_sessions.fetch_add(1, Ordering::Relaxed);
    if let Some(b) = METRICS.bot(bot) {
        b.ended(outcome, to_bot, from_bot, dropped);
    }
}

/// A WebSocket bot session's playout queue grew or shrank by `delta` frames.
pub fn bot_queue_changed(bot: usize, delta: i64) {
    if let Some(b) = METRICS.bot(bot) {
        b.queue_changed(delta);
    }
}

/// A WebSocket bot asked its call for something.
pub fn bot_request(bot: usize, request: BotRequest) {
    if let Some(b) = METRICS.bot(bot) {
        b.request(request);
    }
}

/// A WebSocket bot's message was skipped; `kind`: its index in the registered kinds.
pub fn bot_bad_message(bot: usize, kind: usize) {
    if let Some(b) = METRICS.bot(bot) {
        b.bad_message(kind);
    }
}

/// One ARI REST request (each try of a retried one) came out as `class` after `took`.
pub fn ari_request(method: &str, path: &str, class: Class, took: Duration) {
    METRICS.ari_request(Operation::of(method, path), class, took);
}

/// The event WebSocket is up and read from until this guard drops.
#[must_use = "the WebSocket counts as connected only while the guard lives"]
pub struct AriConnected(());

impl AriConnected {
    pub fn mark() -> AriConnected {
        METRICS.set_ari_connected(true);
        AriConnected(())
    }
}

impl Drop for AriConnected {
    fn drop(&mut self) {
        METRICS.set_ari_connected(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line starting with `series ` (name and labels as written).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn live() -> Live {
        Live {
            active: [1, 2, 0, 3],
            pool_free: 7,
            pool_total: 10,
            started: 9,
            adopted: 1,
            ..Live::default()
        }
    }

    #[test]
    fn callers_not_taken_are_counted_by_reason() {
        let r = Registry::new();
        r.call_not_taken(NotTaken::Setups);
        r.call_not_taken(NotTaken::Setups);
        r.call_not_taken(NotTaken::Unanswered);
        let text = render(&r, &live());
        assert_eq!(
            value(
                &text,
                "voicebot1_calls_not_taken_total{reason=\"max_setups\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "voicebot1_calls_not_taken_total{reason=\"unanswered_asterisk\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "voicebot1_calls_not_taken_total{reason=\"max_calls\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            value(&text, "voicebot1_admission_ceiling_calls"),
            Some(f64::INFINITY),
            "none learned yet"
        );
        r.call_not_taken(NotTaken::Ceiling);
        let text = render(
            &r,
            &Live {
                ceiling: Some(80),
                ..live()
            },
        );
        assert_eq!(
            value(
                &text,
                "voicebot1_calls_not_taken_total{reason=\"learned_ceiling\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "voicebot1_admission_ceiling_calls"),
            Some(80.0)
        );
    }

    #[test]
    fn ends_are_counted_by_outcome() {
        let r = Registry::new();
        // What `End::outcome` gives for caller hung up (twice), cause 17, cause 0, no cause,
        // cause 3 and a failed bridge creation.
        for outcome in [
            Outcome::CallerHungUp,
            Outcome::CallerHungUp,
            Outcome::DestinationBusy,
            Outcome::DestinationNoAnswer,
            Outcome::DestinationNoAnswer,
            Outcome::DestinationFailed,
            Outcome::SetupFailed,
        ] {
            r.call_ended(outcome);
        }
        let text = render(&r, &live());
        assert_eq!(
            value(
                &text,
                "voicebot1_calls_ended_total{outcome=\"caller_hangup\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "voicebot1_calls_ended_total{outcome=\"destination_busy\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "voicebot1_calls_ended_total{outcome=\"destination_no_answer\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "voicebot1_calls_ended_total{outcome=\"destination_failed\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "voicebot1_calls_ended_total{outcome=\"setup_failed\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "voicebot1_calls_ended_total{outcome=\"internal_error\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            value(&text, "voicebot1_calls_started_total{origin=\"inbound\"}"),
            Some(9.0)
        );
        assert_eq!(
            value(&text, "voicebot1_calls_active{phase=\"media\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "voicebot1_calls_active{phase=\"connected\"}"),
            Some(3.0)
        );
        assert_eq!(value(&text, "voicebot1_pool_ports_free"), Some(7.0));
        assert_eq!(value(&text, "voicebot1_pool_ports"), Some(10.0));
    }

    #[test]
    fn rest_requests_are_labelled_by_operation_and_class_never_by_path() {
        let r = Registry::new();
        r.ari_request(
            Operation::of("POST", "/bridges/voicebot1-1764.1-bridge"),
            Class::Success,
            Duration::from_millis(2),
        );
        r.ari_request(
            Operation::of("POST", "/bridges/voicebot1-1764.1-bridge"),
            Class::of_status(500),
            Duration::from_millis(30),
        );
        r.ari_request(
            Operation::of("DELETE", "/channels/1764.1"),
            Class::Timeout,
            Duration::from_secs(5),
        );
        let text = render(&r, &live());
        assert!(!text.contains("1764"), "an id leaked into a label:\n{text}");
        let series = "voicebot1_ari_request_duration_seconds";
        assert_eq!(
            value(
                &text,
                &format!("{series}_count{{operation=\"create_bridge\"}}")
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                &format!("{series}_bucket{{operation=\"create_bridge\",le=\"0.0025\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                &format!("{series}_bucket{{operation=\"create_bridge\",le=\"0.05\"}}")
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                &format!("{series}_sum{{operation=\"create_bridge\"}}")
            ),
            Some(0.032)
        );
        assert_eq!(
            value(
                &text,
                &format!("{series}_bucket{{operation=\"hangup\",le=\"2.5\"}}")
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &text,
                &format!("{series}_bucket{{operation=\"hangup\",le=\"5\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "voicebot1_ari_requests_total{operation=\"create_bridge\",class=\"5xx\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "voicebot1_ari_requests_total{operation=\"hangup\",class=\"timeout\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "voicebot1_ari_requests_total{operation=\"originate\",class=\"2xx\"}"
            ),
            Some(0.0)
        );
    }

    #[test]
    fn operations_come_from_method_and_path_template() {
        for (method, path, op) in [
            ("POST", "/bridges/b1", Operation::CreateBridge),
            ("POST", "/bridges/b1/addChannel", Operation::AddChannel),
            ("DELETE", "/bridges/b1", Operation::DestroyBridge),
            ("GET", "/bridges", Operation::GetBridges),
            ("GET", "/bridges/b1", Operation::GetBridges),
            ("POST", "/channels/externalMedia", Operation::ExternalMedia),
            ("POST", "/channels/voicebot1-1.2-dest", Operation::Originate),
            ("DELETE", "/channels/1.2", Operation::Hangup),
            (
                "POST",
                "/channels/1.2/play/voicebot1-1.2-ring",
                Operation::Play,
            ),
            ("POST", "/channels/1.2/variable", Operation::SetVariable),
            ("GET", "/channels", Operation::GetChannels),
            (
                "DELETE",
                "/playbacks/voicebot1-1.2-ring",
                Operation::StopPlayback,
            ),
            (
                "GET",
                "/playbacks/voicebot1-1.2-ring",
                Operation::GetPlayback,
            ),
            ("GET", "/asterisk/info", Operation::Info),
            ("GET", "/asterisk/modules/res_ari.so", Operation::Other),
            ("GET", "/endpoints/PJSIP/AVAYA-endpoint", Operation::Other),
            ("PUT", "/bridges/b1", Operation::Other),
        ] {
            assert_eq!(Operation::of(method, path), op, "{method} {path}");
        }
    }

    #[test]
    fn echo_counts_add_up_over_sessions() {
        let r = Registry::new();
        let echo = EchoSession {
            received: 350,
            sent: 349,
            dropped: [2, 1],
        };
        r.echo_session_ended(&echo);
        r.echo_session_ended(&echo);
        let text = render(&r, &live());
        assert_eq!(value(&text, "voicebot1_bot_sessions_total"), Some(2.0));
        assert_eq!(
            value(&text, "voicebot1_echo_packets_received_total"),
            Some(700.0)
        );
        assert_eq!(
            value(&text, "voicebot1_echo_packets_sent_total"),
            Some(698.0)
        );
        assert_eq!(
            value(
                &text,
                "voicebot1_echo_packets_dropped_total{reason=\"foreign_source\"}"
            ),
            Some(4.0)
        );
        assert_eq!(
            value(
                &text,
                "voicebot1_echo_packets_dropped_total{reason=\"not_rtp\"}"
            ),
            Some(2.0)
        );
    }

    #[test]
    fn every_family_has_help_and_type_and_every_sample_belongs_to_one() {
        let r = Registry::new();
        r.call_set_up(Duration::from_millis(3));
        let text = render(&r, &live());
        let mut family = "";
        let mut families = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                family = rest.split(' ').next().unwrap();
                assert!(family.starts_with("voicebot1_"), "{line}");
                assert!(!families.contains(&family), "{family} twice");
                families.push(family);
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(
                    rest.starts_with(&format!("{family} ")),
                    "TYPE of another family than HELP: {line}"
                );
                // Prometheus: `_total` is for counters only.
                assert_eq!(
                    rest.ends_with(" counter"),
                    family.ends_with("_total"),
                    "{line}"
                );
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|b| *b == family);
                assert!(
                    name == family || base.is_some(),
                    "sample {name} outside its family {family}"
                );
                let v = line.rsplit(' ').next().unwrap();
                assert!(v.parse::<f64>().is_ok(), "value of {line:?}");
            }
        }
        assert_eq!(
            value(&text, "voicebot1_call_setup_seconds_bucket{le=\"0.0025\"}"),
            Some(0.0)
        );
        assert_eq!(
            value(&text, "voicebot1_call_setup_seconds_bucket{le=\"0.005\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "voicebot1_call_setup_seconds_bucket{le=\"+Inf\"}"),
            Some(1.0)
        );
        assert!(text.lines().count() < 450, "{} lines", text.lines().count());
    }

    #[test]
    fn health_needs_the_websocket_a_free_port_and_no_stop() {
        let r = Registry::new();
        let h = health(&r, &live());
        assert!(
            !h.ok && h.reason.contains("WebSocket not connected"),
            "{h:?}"
        );
        r.set_ari_connected(true);
        let h = health(&r, &live());
        assert!(h.ok, "{h:?}");
        assert_eq!(
            h.reason,
            "ok: ARI connected, 6 calls active, pool 7/10 free"
        );
        let h = health(
            &r,
            &Live {
                pool_free: 0,
                ..live()
            },
        );
        assert!(
            !h.ok && h.reason.contains("no free media port (pool 0/10 free"),
            "{h:?}"
        );
        let h = health(
            &r,
            &Live {
                stopping: true,
                ..live()
            },
        );
        assert!(!h.ok && h.reason.contains("stopping"), "{h:?}");
        for h in [health(&r, &live()), health(&Registry::new(), &live())] {
            assert!(!h.reason.contains('\n'));
        }
    }
}
