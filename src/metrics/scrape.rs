//! What a scrape answers: [`Live`], what the running service holds at that moment (read by
//! `Shared::live`, not counted twice), `/health`'s verdict and the `/metrics` text, which renders
//! [`Registry`] and [`Live`] in one fixed order of families.
//!
//! A new family gets its lines in [`render`]; every one of its series is written even at 0.

use std::sync::atomic::{AtomicU64, Ordering};

use super::exposition::{Kind, Writer};
use super::{CallPhase, Class, Dropped, NotTaken, Operation, Outcome, Registry};

/// What the running service holds at the moment of a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Live {
    /// Active calls per phase, in the order of [`CallPhase::ALL`].
    pub active: [u64; CallPhase::ALL.len()],
    pub pool_free: usize,
    pub pool_total: usize,
    /// A stop is under way: no new calls are taken.
    pub stopping: bool,
    /// The ceiling of calls at once admission learned; `None` while it has learned none.
    pub ceiling: Option<usize>,
    /// Asterisk's health as admission reads it: 0 normal, 1 slow (new callers wait), 2
    /// overloaded (the door shut; new callers wait, then are rejected).
    pub admission: u8,
    /// New callers waiting for a briefly slow Asterisk (or for the pace).
    pub waiting: usize,
    /// The admission rate limit learned from Asterisk's overloads, calls a second; `None` while
    /// none is needed.
    pub pace: Option<f64>,
    /// The share of new callers Asterisk's door lets in, percent (100: open).
    pub door_share: u8,
    /// Totals from `shared::Counters`.
    pub started: u64,
    pub adopted: u64,
    pub handed_over: u64,
    pub pool_exhausted: u64,
    pub orphans_hung_up: u64,
    pub events_skipped: u64,
    pub reconnects: u64,
}

/// What `/health` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub ok: bool,
    /// One line, no newline: why.
    pub reason: String,
}

/// Healthy when voicebot1 can take a call with the bot now: the event WebSocket is connected, a
/// media port is free and no stop is under way.
pub fn health(registry: &Registry, live: &Live) -> Health {
    let calls: u64 = live.active.iter().sum();
    let pool = format!("pool {}/{} free", live.pool_free, live.pool_total);
    let (ok, reason) = if live.stopping {
        (
            false,
            format!("unavailable: stopping, taking no new calls ({calls} calls active)"),
        )
    } else if !registry.ari_connected() {
        (false, "unavailable: ARI event WebSocket not connected (Asterisk unreachable, restarting or refusing voicebot1)".to_string())
    } else if live.pool_free == 0 {
        (
            false,
            format!("unavailable: no free media port ({pool}, {calls} calls active)"),
        )
    } else {
        (
            true,
            format!("ok: ARI connected, {calls} calls active, {pool}"),
        )
    };
    Health { ok, reason }
}

/// The `/metrics` text.
pub fn render(r: &Registry, live: &Live) -> String {
    let mut w = Writer::new();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

    w.family(
        "voicebot1_build_info",
        Kind::Gauge,
        "Always 1; the version of this voicebot1.",
    );
    w.sample(
        "voicebot1_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );

    w.family("voicebot1_calls_started_total", Kind::Counter, "Calls taken: inbound callers started, and calls adopted from an earlier voicebot1 at start-up.");
    w.sample(
        "voicebot1_calls_started_total",
        &[("origin", "inbound")],
        live.started,
    );
    w.sample(
        "voicebot1_calls_started_total",
        &[("origin", "adopted")],
        live.adopted,
    );

    w.family(
        "voicebot1_calls_ended_total",
        Kind::Counter,
        "Calls ended, by outcome (one per 'ended (...)' log line).",
    );
    for o in Outcome::ALL {
        w.sample(
            "voicebot1_calls_ended_total",
            &[("outcome", o.label())],
            load(&r.ended[*o as usize]),
        );
    }

    w.family("voicebot1_calls_not_taken_total", Kind::Counter, "New callers admission control did not take (rejected with congestion, or transferred without the bot: [admission] on_overload), by reason.");
    for n in NotTaken::ALL {
        w.sample(
            "voicebot1_calls_not_taken_total",
            &[("reason", n.label())],
            load(&r.not_taken[*n as usize]),
        );
    }

    w.family(
        "voicebot1_calls_handed_over_total",
        Kind::Counter,
        "Calls left in Asterisk for the next voicebot1 at a handover stop.",
    );
    w.sample("voicebot1_calls_handed_over_total", &[], live.handed_over);

    w.family(
        "voicebot1_calls_active",
        Kind::Gauge,
        "Calls held now, by phase.",
    );
    for (phase, n) in CallPhase::ALL.iter().zip(live.active) {
        w.sample("voicebot1_calls_active", &[("phase", phase.label())], n);
    }

    w.family(
        "voicebot1_call_setup_seconds",
        Kind::Histogram,
        "From the caller's StasisStart to caller and bot media bridged.",
    );
    w.histogram("voicebot1_call_setup_seconds", &[], &r.setup.snapshot());

    w.family(
        "voicebot1_admission_state",
        Kind::Gauge,
        "Asterisk's health as admission reads it: 0 normal, 1 slow (new callers wait up to [admission] max_wait_ms), 2 overloaded (new callers refused at Asterisk's door; those that reach voicebot1 wait up to [admission] max_wait_ms, then are rejected).",
    );
    w.sample("voicebot1_admission_state", &[], live.admission);
    w.family(
        "voicebot1_admission_waiting_calls",
        Kind::Gauge,
        "New callers waiting in the application for a briefly slow Asterisk.",
    );
    w.sample("voicebot1_admission_waiting_calls", &[], live.waiting);
    w.family("voicebot1_admission_ceiling_calls", Kind::Gauge, "The calls at once admission takes, learned from Asterisk's overloads (+Inf while none is needed).");
    match live.ceiling {
        Some(n) => w.sample("voicebot1_admission_ceiling_calls", &[], n),
        None => w.sample("voicebot1_admission_ceiling_calls", &[], "+Inf"),
    }
    w.family(
        "voicebot1_admission_rate_limit_calls_per_second",
        Kind::Gauge,
        "The new calls a second admission takes, learned from Asterisk's overloads (+Inf while none is needed).",
    );
    match live.pace {
        Some(r) => w.sample(
            "voicebot1_admission_rate_limit_calls_per_second",
            &[],
            format!("{r:.2}"),
        ),
        None => w.sample(
            "voicebot1_admission_rate_limit_calls_per_second",
            &[],
            "+Inf",
        ),
    }
    w.family(
        "voicebot1_admission_door_share_percent",
        Kind::Gauge,
        "The share of new callers Asterisk's dialplan lets in before Answer() ([admission] full_variable, share_variable): 100 open, 0 refusing every caller.",
    );
    w.sample(
        "voicebot1_admission_door_share_percent",
        &[],
        live.door_share,
    );
    w.family(
        "voicebot1_pool_ports",
        Kind::Gauge,
        "UDP media ports in the pool (bound at start-up).",
    );
    w.sample("voicebot1_pool_ports", &[], live.pool_total);
    w.family(
        "voicebot1_pool_ports_free",
        Kind::Gauge,
        "UDP media ports not held by a call.",
    );
    w.sample("voicebot1_pool_ports_free", &[], live.pool_free);
    w.family(
        "voicebot1_pool_exhausted_total",
        Kind::Counter,
        "Calls that found no free media port ([media] on_pool_exhausted says what they got).",
    );
    w.sample("voicebot1_pool_exhausted_total", &[], live.pool_exhausted);

    w.family(
        "voicebot1_ari_request_duration_seconds",
        Kind::Histogram,
        "ARI REST requests (each try), by operation.",
    );
    for op in Operation::ALL {
        w.histogram(
            "voicebot1_ari_request_duration_seconds",
            &[("operation", op.label())],
            &r.ari[*op as usize].duration.snapshot(),
        );
    }
    w.family("voicebot1_ari_requests_total", Kind::Counter, "ARI REST requests (each try), by operation and outcome: HTTP status class, timeout, connect (no connection) or other.");
    for op in Operation::ALL {
        for class in Class::ALL {
            let n = load(&r.ari[*op as usize].by_class[*class as usize]);
            w.sample(
                "voicebot1_ari_requests_total",
                &[("operation", op.label()), ("class", class.label())],
                n,
            );
        }
    }

    w.family(
        "voicebot1_ari_websocket_connected",
        Kind::Gauge,
        "1 while the ARI event WebSocket is connected and read.",
    );
    w.sample(
        "voicebot1_ari_websocket_connected",
        &[],
        u8::from(r.ari_connected()),
    );
    w.family(
        "voicebot1_ari_websocket_reconnects_total",
        Kind::Counter,
        "Event WebSocket connections made again after one was lost.",
    );
    w.sample(
        "voicebot1_ari_websocket_reconnects_total",
        &[],
        live.reconnects,
    );
    w.family(
        "voicebot1_ari_events_skipped_total",
        Kind::Counter,
        "Event frames that could not be decoded and were skipped.",
    );
    w.sample(
        "voicebot1_ari_events_skipped_total",
        &[],
        live.events_skipped,
    );
    w.family("voicebot1_orphan_channels_hung_up_total", Kind::Counter, "Channels with voicebot1's ids that entered the application after their call was over, hung up.");
    w.sample(
        "voicebot1_orphan_channels_hung_up_total",
        &[],
        live.orphans_hung_up,
    );

    w.family(
        "voicebot1_bot_sessions_total",
        Kind::Counter,
        "Sessions with a bot ended (the echo or a WebSocket bot); the echo packet counters grow when an echo session ends.",
    );
    w.sample("voicebot1_bot_sessions_total", &[], load(&r.bot_sessions));
    w.family(
        "voicebot1_echo_packets_received_total",
        Kind::Counter,
        "RTP packets the echo received from Asterisk (counted when each bot session ends).",
    );
    w.sample(
        "voicebot1_echo_packets_received_total",
        &[],
        load(&r.echo_received),
    );
    w.family(
        "voicebot1_echo_packets_sent_total",
        Kind::Counter,
        "RTP packets the echo sent back to Asterisk (counted when each bot session ends).",
    );
    w.sample("voicebot1_echo_packets_sent_total", &[], load(&r.echo_sent));
    w.family(
        "voicebot1_echo_packets_dropped_total",
        Kind::Counter,
        "Packets the echo dropped, by reason (counted when each bot session ends).",
    );
    for d in Dropped::ALL {
        w.sample(
            "voicebot1_echo_packets_dropped_total",
            &[("reason", d.label())],
            load(&r.echo_dropped[*d as usize]),
        );
    }

    if let Some(bots) = r.bots.get() {
        bots.render(&mut w);
    }

    w.family(
        "voicebot1_stopping",
        Kind::Gauge,
        "1 while a stop is under way (no new calls are taken).",
    );
    w.sample("voicebot1_stopping", &[], u8::from(live.stopping));
    w.finish()
}
