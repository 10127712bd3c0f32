//! The WebSocket bots' figures: one set of counters per bot configured, labelled by its name.
//!
//! Bot names come from the configuration, not from traffic: they are registered once at start-up
//! ([`Registry::register_bots`]), so the series are as fixed as the closed enums' and all exist,
//! at 0, from the start. A hook for a bot index that was never registered does nothing.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use super::exposition::{Kind, Writer};
use super::Histogram;

label_set! {
    /// How a bot session ended, as `voicebot1_bot_sessions_ended_total{bot,outcome}`.
    BotOutcome {
        /// The bot ended it: closed the socket normally, or chan_websocket's `HANGUP`.
        BotEnded => "bot_ended",
        /// Unreachable, refused, lost, silent, or a message too big (see [`BotFailure`]).
        Failed => "failed",
        /// voicebot1 ended it: the caller hung up, was transferred (by the bot's request, at
        /// `max_s`, at a stop) or the call failed.
        CallLeft => "call_left",
    }
}

label_set! {
    /// Why a bot session failed, as `voicebot1_bot_failures_total{bot,reason}`.
    BotFailure {
        /// DNS, TCP or TLS failed, or the URL cannot be used.
        Unreachable => "unreachable",
        /// The upgrade was answered with an HTTP status (401, 404, 5xx …).
        Refused => "refused",
        ConnectTimeout => "connect_timeout",
        /// Closed with a code other than 1000/1001.
        ClosedAbnormally => "closed_abnormally",
        /// Reset, closed without a close frame, a protocol error.
        Lost => "lost",
        /// Pings unanswered.
        Silent => "silent",
        /// One message over 1 MiB.
        TooBig => "too_big",
    }
}

label_set! {
    /// Why audio frames were dropped, as `voicebot1_bot_frames_dropped_total{bot,reason}`.
    BotDropped {
        /// The bot's audio beyond the playout queue's cap (`max_queue_ms`).
        QueueFull => "queue_full",
        /// Caller audio the bot did not read fast enough.
        BotNotReading => "bot_not_reading",
        /// Caller audio held while connecting, beyond `connect_timeout_ms` of it.
        HeldTooLong => "held_too_long",
        /// The bytes after the last whole frame of a chan_websocket message (without buffering).
        PartialFrame => "partial_frame",
    }
}

label_set! {
    /// What a bot asked of its call, as `voicebot1_bot_requests_total{bot,request}`.
    BotRequest {
        Transfer => "transfer",
        Hangup => "hangup",
        /// A transfer to a name `[transfer.to]` does not list: refused, the call stays.
        RefusedTransfer => "refused_transfer",
    }
}

/// One bot's counters.
#[derive(Debug)]
pub(super) struct BotStats {
    sessions: [AtomicU64; BotOutcome::ALL.len()],
    failures: [AtomicU64; BotFailure::ALL.len()],
    connect: Histogram,
    to_bot: AtomicU64,
    from_bot: AtomicU64,
    dropped: [AtomicU64; BotDropped::ALL.len()],
    queued: AtomicI64,
    requests: [AtomicU64; BotRequest::ALL.len()],
    bad: Vec<AtomicU64>,
}

/// Every bot's counters, with the names and the bad-message kinds they are labelled by.
#[derive(Debug)]
pub(super) struct Bots {
    names: Vec<String>,
    bad_kinds: &'static [&'static str],
    stats: Vec<BotStats>,
}

impl Bots {
    pub(super) fn new(names: Vec<String>, bad_kinds: &'static [&'static str]) -> Bots {
        let stats = names
            .iter()
            .map(|_| BotStats {
                sessions: Default::default(),
                failures: Default::default(),
                connect: Histogram::new(),
                to_bot: AtomicU64::new(0),
                from_bot: AtomicU64::new(0),
                dropped: Default::default(),
                queued: AtomicI64::new(0),
                requests: Default::default(),
                bad: bad_kinds.iter().map(|_| AtomicU64::new(0)).collect(),
            })
            .collect();
        Bots {
            names,
            bad_kinds,
            stats,
        }
    }

    pub(super) fn get(&self, bot: usize) -> Option<&BotStats> {
        self.stats.get(bot)
    }

    pub(super) fn render(&self, w: &mut Writer) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let each = |w: &mut Writer, name: &str, value: &dyn Fn(&BotStats) -> u64| {
            for (bot, s) in self.names.iter().zip(&self.stats) {
                w.sample(name, &[("bot", bot)], value(s));
            }
        };
        let family = "voicebot1_bot_sessions_ended_total";
        w.family(
            family,
            Kind::Counter,
            "WebSocket bot sessions ended, by bot and outcome.",
        );
        for (bot, s) in self.names.iter().zip(&self.stats) {
            for o in BotOutcome::ALL {
                w.sample(
                    family,
                    &[("bot", bot), ("outcome", o.label())],
                    load(&s.sessions[*o as usize]),
                );
            }
        }
        let family = "voicebot1_bot_failures_total";
        w.family(
            family,
            Kind::Counter,
            "WebSocket bot sessions that failed, by bot and reason.",
        );
        for (bot, s) in self.names.iter().zip(&self.stats) {
            for f in BotFailure::ALL {
                w.sample(
                    family,
                    &[("bot", bot), ("reason", f.label())],
                    load(&s.failures[*f as usize]),
                );
            }
        }
        let family = "voicebot1_bot_connect_seconds";
        w.family(
            family,
            Kind::Histogram,
            "From the bot session's start (a port leased for the caller) to the bot's WebSocket connected.",
        );
        for (bot, s) in self.names.iter().zip(&self.stats) {
            w.histogram(family, &[("bot", bot)], &s.connect.snapshot());
        }
        let family = "voicebot1_bot_frames_total";
        w.family(family, Kind::Counter, "20 ms audio frames between callers and bots, by direction (counted when each session ends).");
        for (bot, s) in self.names.iter().zip(&self.stats) {
            w.sample(
                family,
                &[("bot", bot), ("direction", "to_bot")],
                load(&s.to_bot),
            );
            w.sample(
                family,
                &[("bot", bot), ("direction", "from_bot")],
                load(&s.from_bot),
            );
        }
        let family = "voicebot1_bot_frames_dropped_total";
        w.family(
            family,
            Kind::Counter,
            "Audio frames dropped, by bot and reason (counted when each session ends).",
        );
        for (bot, s) in self.names.iter().zip(&self.stats) {
            for d in BotDropped::ALL {
                w.sample(
                    family,
                    &[("bot", bot), ("reason", d.label())],
                    load(&s.dropped[*d as usize]),
                );
            }
        }
        let family = "voicebot1_bot_queued_frames";
        w.family(
            family,
            Kind::Gauge,
            "The bots' audio waiting to be played to callers, in 20 ms frames.",
        );
        each(w, family, &|s| {
            s.queued.load(Ordering::Relaxed).max(0) as u64
        });
        let family = "voicebot1_bot_requests_total";
        w.family(family, Kind::Counter, "What bots asked of their calls, by bot and request (refused_transfer: a name [transfer.to] does not list).");
        for (bot, s) in self.names.iter().zip(&self.stats) {
            for r in BotRequest::ALL {
                w.sample(
                    family,
                    &[("bot", bot), ("request", r.label())],
                    load(&s.requests[*r as usize]),
                );
            }
        }
        let family = "voicebot1_bot_bad_messages_total";
        w.family(
            family,
            Kind::Counter,
            "Bot messages skipped as unusable, by bot and kind.",
        );
        for (bot, s) in self.names.iter().zip(&self.stats) {
            for (kind, n) in self.bad_kinds.iter().zip(&s.bad) {
                w.sample(family, &[("bot", bot), ("kind", kind)], load(n));
            }
        }
    }
}

impl BotStats {
    pub(super) fn connected(&self, took: Duration) {
        self.connect.observe(took);
    }

    pub(super) fn failed(&self, why: BotFailure) {
        self.failures[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn ended(
        &self,
        outcome: BotOutcome,
        to_bot: u64,
        from_bot: u64,
        dropped: &[u64; BotDropped::ALL.len()],
    ) {
        self.sessions[outcome as usize].fetch_add(1, Ordering::Relaxed);
        self.to_bot.fetch_add(to_bot, Ordering::Relaxed);
        self.from_bot.fetch_add(from_bot, Ordering::Relaxed);
        for (counter, n) in self.dropped.iter().zip(dropped) {
            counter.fetch_add(*n, Ordering::Relaxed);
        }
    }

    pub(super) fn queue_changed(&self, delta: i64) {
        self.queued.fetch_add(delta, Ordering::Relaxed);
    }

    pub(super) fn request(&self, r: BotRequest) {
        self.requests[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn bad_message(&self, kind: usize) {
        if let Some(n) = self.bad.get(kind) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }
}
