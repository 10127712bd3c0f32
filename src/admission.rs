//! Admission control, the policy: whether a new caller is taken now, waits a moment, or is not
//! taken — decided on the event reader before the call costs Asterisk anything more.
//!
//! Overload on these boxes is Asterisk's: its CPU saturates first, its answers slow down, then
//! stall, and every call taken meanwhile joins the queue. A 500 ms answer comes too late (at 30
//! calls/s a second of delay is 30 more calls in the box), so Asterisk's health is read from
//! signals that move early, each against Asterisk's own recent baseline rather than a fixed
//! number (the idea of Netflix's Gradient2 and Envoy's adaptive concurrency: compare the latency
//! now to the latency with no queue):
//! - **REST answers**, per operation (an `addChannel` is not a `DELETE`): a request is slow when
//!   it takes over [`SLOW_FACTOR`] times its operation's baseline plus [`SLOW_MARGIN`]; a
//!   request still unanswered that long counts as slow too (a frozen Asterisk answers nothing).
//!   Asterisk is slow when at least half of the operations seen in the last [`WINDOW`], and two
//!   at least, are mostly slow — so held requests of one kind (a proxy that delays hang-ups) do
//!   not read as a sick Asterisk.
//! - **Event lag**: how late ARI events arrive after their own timestamp, over its baseline.
//!   Events come straight over the WebSocket: a loaded Asterisk delivers them late.
//! - A request that went unanswered (timeout, refused) in the last `after_timeout`.
//!
//! Baselines are decaying minima: they follow a box that gets slower for good in about a minute,
//! not an episode of seconds.
//!
//! What the health means for a new caller ([`Health`]):
//! - **Normal**: taken, within the hard caps (`max_calls`, `max_setups`) and the learned ceiling.
//! - **Slow** (a hiccup: a frozen process, a neighbour's burst): the caller is already answered
//!   and in the application, where waiting costs nothing — it waits up to `max_wait` and is
//!   started as soon as Asterisk answers normally again, else rejected. A stall not caused by
//!   load leaves no cut behind.
//! - **Overloaded** (slow for `max_wait` and a second more, for half of the last five
//!   seconds, or on the third slow spell begun within five — the knee, where slow spells come
//!   and go): Asterisk is told to refuse new callers at its door, before `Answer()` (`intake`),
//!   which costs it a fraction of taking them; a caller that reaches voicebot1 anyway waits out
//!   `max_wait` as in a slow spell (a hang-up sent now would reach Asterisk in the stall itself)
//!   and is rejected if the overload lasts. The ceiling of calls at once is cut to 4/5 of the
//!   calls active — again every second while Asterisk stays slow (in a stall calls do not end,
//!   so one cut is not enough).
//!
//! Recovery follows the evidence: once Asterisk has answered normally for [`RECOVER_AFTER`], an
//! overload that came at a load the box had proven to carry (calls at once that stayed normal
//! for [`PROVEN_AFTER`]) was not the load's doing (a neighbour, a freeze): the ceiling goes back
//! up at once to that load; else the cut stays. The ceiling then grows by a twentieth a second
//! while Asterisk stays normal, and is forgotten once well above what the box carries. A slow
//! spell alone cuts nothing: its callers waited, and arrivals pause while it lasts. A box overloaded for [`UNPROVEN_AFTER`] at a load it had proven has
//! got slower for good: what it proved is lowered.
//!
//! Pure: no I/O, no threads; time is passed in. Its effects (offering a caller, the waiting
//! list, the shedders, the door) are `intake`'s.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::AdmissionConfig;
use crate::ids::CallId;
use crate::metrics::{NotTaken, Operation};

/// A request is slow when it takes over this many times its operation's baseline…
pub const SLOW_FACTOR: f64 = 4.0;
/// …plus this (a 1 ms baseline does not make 5 ms slow).
pub const SLOW_MARGIN: Duration = Duration::from_millis(20);
/// What counts as recent, for REST answers.
pub const WINDOW: Duration = Duration::from_secs(1);
/// A request of two operations or more unanswered this long means a stalled Asterisk (requests
/// of one operation alone may be held elsewhere, e.g. by a proxy).
const STUCK: Duration = Duration::from_millis(250);
/// Events later than their baseline by this much mean a slow Asterisk…
const LAG_SLOW: Duration = Duration::from_millis(100);
/// …judged on the events of this last stretch.
const LAG_WINDOW: Duration = Duration::from_millis(500);
/// Baselines rise by this share per second while every sample is above them.
const DRIFT_PER_S: f64 = 0.02;
/// No baseline is below this (latencies under it are noise).
const BASELINE_FLOOR: Duration = Duration::from_micros(300);
/// Recent REST samples kept at most (a bound on memory whatever the request rate).
const MAX_SAMPLES: usize = 4096;
/// The ceiling is cut to this share of the calls active…
const CUT: (usize, usize) = (4, 5);
/// …at most this often while Asterisk stays overloaded…
const CUT_EVERY: Duration = Duration::from_secs(1);
/// …never below this many calls.
const FLOOR: usize = 10;
/// Normal for this long: the ceiling goes back up to what the box has proven.
pub const RECOVER_AFTER: Duration = Duration::from_millis(500);
/// Calls at once held this long with Asterisk normal all along are proven (longer than the bot
/// phase: a call's transfer comes 7 s after its start, and at the knee the box held 409 calls
/// at once for 5 s, then stalled at 348 — a stall then read as a neighbour's, not the load's).
const PROVEN_AFTER: Duration = Duration::from_secs(10);
/// Slow for half of this stretch (and slow now) is overloaded too, even in bursts shorter than
/// `max_wait`: an Asterisk at its knee slows down, recovers a moment, slows down again.
const HISTORY: Duration = Duration::from_secs(5);
/// Calls at once that moved less than a tenth over this stretch have settled.
const SETTLED: Duration = Duration::from_secs(10);
/// Admission rates are counted over this stretch.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// The pace never goes below this many calls a second…
const PACE_FLOOR: f64 = 1.0;
/// …lets at most this much of its rate through at once…
const PACE_BURST: Duration = Duration::from_millis(250);
/// …returns to this share of the rate that overloaded Asterisk once it recovers…
const PACE_RESTORE: f64 = 0.9;
/// …then rises by this share a second (at least `PACE_RISE_MIN` calls a second)…
const PACE_RISE: f64 = 0.02;
const PACE_RISE_MIN: f64 = 0.5;
/// Past the rate that last overloaded Asterisk, while the calls the pace let in still grow, it
/// rises only this often.
const UNSETTLED_RISE_EVERY: Duration = Duration::from_secs(4);
/// …is lowered by this share when Asterisk slows down while it holds callers back (a delay
/// signal, as Vegas backs off before a loss: the probe went past what the box takes)…
const PACE_BACKOFF: f64 = 0.9;
/// …and is forgotten after this long without holding anyone back while Asterisk is normal (a
/// rate learned in one wave of callers is the best guess for the next: kept while unused, it
/// costs nothing).
const PACE_FORGET: Duration = Duration::from_secs(120);
/// Callers waiting for the pace alone are kept to what it starts within this share of
/// `max_wait`.
const PACE_QUEUE: f64 = 0.5;
/// Callers reaching voicebot1 are counted over this stretch, for the door's share…
const OFFERED_WINDOW: Duration = Duration::from_secs(2);
/// …which lets in this much more than the pace (the waiting list takes the bursts)…
const SHARE_MARGIN: f64 = 1.25;
/// …opens by at most this factor a second (closes at once)…
const SHARE_RISE: f64 = 1.25;
/// …moves at most this often, and never goes under this percent while pacing.
const SHARE_EVERY: Duration = Duration::from_secs(1);
const SHARE_FLOOR: f64 = 5.0;
/// Readings closer together than this count once in the history…
const HISTORY_STEP: Duration = Duration::from_millis(50);
/// …and one stands for the time until the next at most this long.
const HISTORY_GAP: Duration = Duration::from_millis(200);
/// Overloaded this long at a load it had proven: the box got slower for good.
const UNPROVEN_AFTER: Duration = Duration::from_secs(30);
/// While normal, the ceiling grows by a twentieth (at least one call) this often.
const RISE_EVERY: Duration = Duration::from_secs(1);
const RISE_SHARE: usize = 20;
/// This many slow spells begun within `HISTORY` are overloaded too: at the knee, Asterisk
/// answers normally for half a second between spells, and its readings flip within each, so
/// the time slow alone can stay under half of `HISTORY` while the box is past what it takes.
const KNEE_SPELLS: usize = 3;
/// Slow this long past `max_wait` is overloaded: a freeze of a second or two, whose callers
/// waited, is not.
const OVERLOAD_MARGIN: Duration = Duration::from_secs(1);
/// Overloads begun within this of the first of an episode are that episode: the rate that
/// overloaded Asterisk is learned once, as TCP cuts its window once a round trip however many
/// of its packets were lost. A stall's aftermath (late events, a queue draining) reads as two or
/// three overloads in as many seconds; each lowering what overloaded the box took the pace from
/// 44 to 23 calls a second in 2.7 s on a box that had just carried 50.
const EPISODE: Duration = Duration::from_secs(5);

/// Why a new caller is not taken now.
#[derive(Debug, Clone, PartialEq)]
pub enum Overload {
    Calls {
        active: usize,
        max: usize,
    },
    /// The ceiling learned from Asterisk's overloads.
    Ceiling {
        active: usize,
        ceiling: usize,
    },
    Setups {
        setting_up: usize,
        max: usize,
    },
    /// Asterisk is slow (a caller waits for it): why.
    Slow {
        why: String,
    },
    /// Asterisk has been slow for `max_wait` and more: why.
    Overloaded {
        why: String,
    },
    /// A request went unanswered lately.
    Unanswered {
        ago: Duration,
    },
    /// The admission rate learned from Asterisk's overloads reached.
    Paced {
        per_s: f64,
    },
    /// Held back by the pace, with enough callers waiting for it already.
    PaceQueue {
        per_s: f64,
        waiting: usize,
    },
    /// The caller waited `max_wait` and could still not be taken: why it waited.
    WaitedTooLong {
        waited: Duration,
        why: String,
    },
}

impl Overload {
    /// The reason's label in `voicebot1_calls_not_taken_total`.
    pub fn reason(&self) -> NotTaken {
        match self {
            Overload::Calls { .. } => NotTaken::Calls,
            Overload::Ceiling { .. } => NotTaken::Ceiling,
            Overload::Setups { .. } => NotTaken::Setups,
            Overload::Slow { .. } | Overload::Overloaded { .. } => NotTaken::Slow,
            Overload::Unanswered { .. } => NotTaken::Unanswered,
            Overload::Paced { .. } | Overload::PaceQueue { .. } => NotTaken::Paced,
            Overload::WaitedTooLong { .. } => NotTaken::WaitedTooLong,
        }
    }
}

impl fmt::Display for Overload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Overload::Calls { active, max } => {
                write!(f, "{active} calls active, admission.max_calls is {max}")
            }
            Overload::Ceiling { active, ceiling } => {
                write!(f, "{active} calls active, the ceiling learned from Asterisk's overloads is {ceiling}")
            }
            Overload::Setups { setting_up, max } => write!(
                f,
                "{setting_up} calls being set up, admission.max_setups is {max}"
            ),
            Overload::Slow { why } => write!(f, "Asterisk is slow: {why}"),
            Overload::Overloaded { why } => write!(f, "Asterisk is overloaded: {why}"),
            Overload::Unanswered { ago } => write!(
                f,
                "a REST request went unanswered {:.1} s ago",
                ago.as_secs_f64()
            ),
            Overload::Paced { per_s } => write!(
                f,
                "taking at most {per_s:.1} calls a second, the rate learned from Asterisk's overloads"
            ),
            Overload::PaceQueue { per_s, waiting } => write!(
                f,
                "taking at most {per_s:.1} calls a second, the rate learned from Asterisk's overloads, and {waiting} callers wait for it already"
            ),
            Overload::WaitedTooLong { waited, why } => {
                write!(f, "waited {:.1} s: {why}", waited.as_secs_f64())
            }
        }
    }
}

/// What happens to a new caller now.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Take,
    /// Not now, but soon (Asterisk briefly slow, the pace, set-ups in flight): the caller waits
    /// (at most `max_wait`) and is offered again.
    Wait(Overload),
    Reject(Overload),
}

/// What Asterisk's door should do with new callers (see `intake`'s door thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorState {
    Open,
    /// Let this share of callers in, in percent (0: refuse every one).
    Share(u8),
}

/// Asterisk's health, as admission reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Normal,
    /// Slow since then: new callers wait.
    Slow(Instant),
    /// Slow for `max_wait` and more, since then: new callers wait (and are rejected when their
    /// wait runs out), Asterisk's door is shut, the limits are cut.
    Overloaded(Instant),
}

impl Health {
    /// 0 normal, 1 slow, 2 overloaded (the `voicebot1_admission_state` gauge).
    pub fn level(self) -> u8 {
        match self {
            Health::Normal => 0,
            Health::Slow(_) => 1,
            Health::Overloaded(_) => 2,
        }
    }
}

/// A change of health worth a line in the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Normal → slow: new callers wait.
    Slowed { why: String },
    /// Slow for `max_wait`: the door shut, new callers wait out `max_wait` (taken if Asterisk
    /// recovers by then); the ceiling and the pace (calls a second) are now these.
    Overloaded {
        why: String,
        active: usize,
        ceiling: usize,
        pace: f64,
    },
    /// Still overloaded: the ceiling and the pace were cut again.
    CutAgain {
        why: String,
        active: usize,
        ceiling: usize,
        pace: f64,
    },
    /// Back to normal after this long.
    Recovered {
        after: Duration,
        ceiling: Option<usize>,
        pace: Option<f64>,
    },
}

/// A decaying minimum: follows the fastest answers at once, and a box that got slower for good
/// at [`DRIFT_PER_S`].
#[derive(Debug, Clone, Copy)]
struct Baseline {
    us: f64,
    at: Instant,
}

impl Baseline {
    fn seen(slot: &mut Option<Baseline>, sample: Duration, now: Instant) -> Duration {
        let floor = BASELINE_FLOOR.as_secs_f64() * 1e6;
        let sample_us = (sample.as_secs_f64() * 1e6).max(floor);
        let b = slot.get_or_insert(Baseline {
            us: sample_us,
            at: now,
        });
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        b.us = (b.us * (1.0 + DRIFT_PER_S * dt)).min(sample_us).max(floor);
        b.at = now;
        Duration::from_secs_f64(b.us / 1e6)
    }

    fn get(slot: &Option<Baseline>) -> Duration {
        slot.map_or(BASELINE_FLOOR, |b| Duration::from_secs_f64(b.us / 1e6))
    }
}

/// One REST answer, as judged when it came.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    op: Operation,
    slow: bool,
}

/// What the signals say, for the log and the decision.
#[derive(Debug, Clone, Default)]
struct Reading {
    slow: bool,
    why: String,
    unanswered: Option<Duration>,
}

/// The early signals: REST answers against their baselines, event lag, unanswered requests.
#[derive(Debug)]
struct Signals {
    baselines: [Option<Baseline>; Operation::ALL.len()],
    recent: VecDeque<Sample>,
    in_flight: BTreeMap<u64, (Instant, Operation)>,
    next_token: u64,
    lag_baseline: Option<Baseline>,
    lags: VecDeque<(Instant, Duration)>,
    unanswered_at: Option<Instant>,
}

/// The decision state.
#[derive(Debug)]
struct Control {
    health: Health,
    ceiling: Option<usize>,
    last_cut: Option<Instant>,
    last_rise: Instant,
    normal_since: Instant,
    /// Calls at once the box carried normally for `PROVEN_AFTER`.
    proven: usize,
    /// The most calls at once seen while normal: above 1.5 times it, a ceiling is forgotten.
    peak: usize,
    why: String,
    /// The readings of the last `HISTORY`: when, and whether slow.
    history: VecDeque<(Instant, bool)>,
    /// Calls at once when Asterisk last turned overloaded.
    overload_at: usize,
    /// When calls were admitted (set-ups started), the last [`RATE_WINDOW`].
    starts: VecDeque<Instant>,
    /// When new callers reached voicebot1 (through the door), the last [`OFFERED_WINDOW`].
    /// With the door's share (percent) that let each in.
    offered: VecDeque<(Instant, f64)>,
    /// The admission rate limit learned from overloads; `None` while none is needed.
    pace: Option<Pace>,
    /// The highest admission rate (calls a second over [`RATE_WINDOW`]) the box carried normally.
    proven_rate: f64,
    /// The admission rate (over [`RATE_WINDOW`]) when Asterisk last slowed down.
    overload_rate: f64,
    /// The share of callers the door lets in while pacing, in percent; when it was last moved.
    share: f64,
    share_moved: Instant,
    /// The share before its last move (callers let in by it may still be on their way).
    share_before: f64,
    /// New callers a second at Asterisk's door (estimated from those let in and the share).
    arrivals: f64,
    /// Since when the door has not been shut for every caller.
    open_since: Option<Instant>,
    /// Calls at once over the last [`SETTLED`].
    actives: VecDeque<(Instant, usize)>,
    /// When the slow spells of the last [`HISTORY`] began.
    spells: VecDeque<Instant>,
    /// When the last overload episode began (see [`EPISODE`]).
    episode: Option<Instant>,
}

/// A rate limit on admissions, as TCP's congestion window in rate form: cut by 4/5 every second
/// while Asterisk is overloaded, back at once to 9/10 of the rate that overloaded it (`w_max`, as
/// CUBIC returns to its last window) when it recovers, then probing up by a fiftieth a second
/// while callers are held back by it; a tenth down when Asterisk slows down while it holds
/// callers back.
#[derive(Debug, Clone, Copy)]
struct Pace {
    per_s: f64,
    /// The rate at the start of the last overload.
    w_max: f64,
    /// The token bucket: admissions allowed now, refilled at `per_s`.
    tokens: f64,
    at: Instant,
    /// When the pace last held a caller back.
    bound_at: Option<Instant>,
    /// When it last rose past `w_max` before the calls it let in had settled.
    unsettled_rise: Option<Instant>,
}

impl Pace {
    /// Whether the pace held a caller back within the last `within`.
    fn held_back_within(&self, within: Duration, now: Instant) -> bool {
        self.bound_at
            .is_some_and(|t| now.saturating_duration_since(t) <= within)
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        let burst = (self.per_s * PACE_BURST.as_secs_f64()).max(1.0);
        self.tokens = (self.tokens + dt * self.per_s).min(burst);
    }
}

/// The admission state: the limits, the signals, the decision, and the calls admitted whose first
/// turn has not come yet (the registry holds a call only from then on).
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionConfig,
    signals: Mutex<Signals>,
    control: Mutex<Control>,
    pending: Mutex<HashSet<CallId>>,
}

impl Admission {
    pub fn new(limits: AdmissionConfig) -> Admission {
        let now = Instant::now();
        Admission {
            limits,
            signals: Mutex::new(Signals {
                baselines: [None; Operation::ALL.len()],
                recent: VecDeque::new(),
                in_flight: BTreeMap::new(),
                next_token: 1,
                lag_baseline: None,
                lags: VecDeque::new(),
                unanswered_at: None,
            }),
            control: Mutex::new(Control {
                health: Health::Normal,
                ceiling: None,
                last_cut: None,
                last_rise: now,
                normal_since: now,
                proven: 0,
                peak: 0,
                why: String::new(),
                history: VecDeque::new(),
                overload_at: 0,
                starts: VecDeque::new(),
                offered: VecDeque::new(),
                pace: None,
                proven_rate: 0.0,
                overload_rate: 0.0,
                share: 100.0,
                share_moved: now,
                share_before: 100.0,
                arrivals: 0.0,
                open_since: None,
                actives: VecDeque::new(),
                spells: VecDeque::new(),
                episode: None,
            }),
            pending: Mutex::new(HashSet::new()),
        }
    }

    pub fn limits(&self) -> &AdmissionConfig {
        &self.limits
    }

    // --- the signals -------------------------------------------------------------------------

    /// A REST request of `op` is being sent at `now`: the token its answer comes back with.
    pub fn rest_sent(&self, op: Operation, now: Instant) -> u64 {
        let mut s = self.signals.lock();
        let token = s.next_token;
        s.next_token += 1;
        s.in_flight.insert(token, (now, op));
        token
    }

    /// The answer to the request of `token` (or none: `answered` false) after `took`.
    pub fn rest_answered(
        &self,
        token: u64,
        op: Operation,
        took: Duration,
        answered: bool,
        now: Instant,
    ) {
        let mut s = self.signals.lock();
        s.in_flight.remove(&token);
        if !answered {
            s.unanswered_at = Some(now);
        }
        let baseline = Baseline::seen(&mut s.baselines[op as usize], took, now);
        let slow = took > self.slow_after(baseline);
        s.recent.push_back(Sample { at: now, op, slow });
        if s.recent.len() > MAX_SAMPLES {
            s.recent.pop_front();
        }
    }

    /// An ARI event arrived `lag` after its own timestamp.
    pub fn event_lag(&self, lag: Duration, now: Instant) {
        let mut s = self.signals.lock();
        Baseline::seen(&mut s.lag_baseline, lag, now);
        s.lags.push_back((now, lag));
        if s.lags.len() > MAX_SAMPLES {
            s.lags.pop_front();
        }
    }

    /// A (re)connect: what went unanswered before says nothing about the Asterisk that answers
    /// now, and the requests in flight were the lost connection's.
    pub fn reset_unanswered(&self) {
        let mut s = self.signals.lock();
        s.unanswered_at = None;
    }

    /// What the signals say now.
    fn read(&self, now: Instant) -> Reading {
        let mut s = self.signals.lock();
        while s
            .recent
            .front()
            .is_some_and(|x| now.saturating_duration_since(x.at) > WINDOW)
        {
            s.recent.pop_front();
        }
        while s
            .lags
            .front()
            .is_some_and(|x| now.saturating_duration_since(x.0) > LAG_WINDOW)
        {
            s.lags.pop_front();
        }
        let mut reading = Reading::default();
        let mut parts = Vec::new();

        // Per operation: the answers of the window, slow or not; plus the requests unanswered
        // longer than slow, which count as slow answers.
        let mut count = [(0usize, 0usize); Operation::ALL.len()];
        for x in &s.recent {
            let c = &mut count[x.op as usize];
            c.0 += 1;
            c.1 += usize::from(x.slow);
        }
        let mut stuck = [false; Operation::ALL.len()];
        let mut oldest = Duration::ZERO;
        for (sent, op) in s.in_flight.values() {
            let baseline = Baseline::get(&s.baselines[*op as usize]);
            let waited = now.saturating_duration_since(*sent);
            if waited > self.slow_after(baseline) {
                let c = &mut count[*op as usize];
                c.0 += 1;
                c.1 += 1;
            }
            if waited > STUCK {
                stuck[*op as usize] = true;
                oldest = oldest.max(waited);
            }
        }
        let ops = count.iter().filter(|c| c.0 > 0).count();
        let slow_ops = count.iter().filter(|c| c.0 > 0 && 2 * c.1 > c.0).count();
        // Two kinds at least: one kind alone may be held elsewhere (a proxy holding hang-ups), and
        // a quiet second may have seen only that kind and one other.
        if slow_ops >= 2 && 2 * slow_ops >= ops {
            let (n, slow): (usize, usize) =
                count.iter().fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
            reading.slow = true;
            parts.push(format!(
                "{slow} of {n} REST requests of the last {} ms slow",
                WINDOW.as_millis()
            ));
        }
        let stuck_ops = stuck.iter().filter(|x| **x).count();
        if stuck_ops >= 2 {
            reading.slow = true;
            parts.push(format!(
                "REST requests of {stuck_ops} kinds unanswered for up to {} ms",
                oldest.as_millis()
            ));
        }
        // Event lag over its baseline (median of the stretch).
        if s.lags.len() >= 3 {
            let mut lags: Vec<Duration> = s.lags.iter().map(|x| x.1).collect();
            lags.sort();
            let median = lags[lags.len() / 2];
            let baseline = Baseline::get(&s.lag_baseline);
            if median > baseline + LAG_SLOW {
                reading.slow = true;
                parts.push(format!(
                    "ARI events {} ms late (normally {} ms)",
                    median.as_millis(),
                    baseline.as_millis()
                ));
            }
        }
        if let Some(ago) = s
            .unanswered_at
            .map(|t| now.saturating_duration_since(t))
            .filter(|ago| *ago < self.limits.after_timeout)
        {
            reading.slow = true;
            reading.unanswered = Some(ago);
            parts.push(format!(
                "a REST request went unanswered {:.1} s ago",
                ago.as_secs_f64()
            ));
        }
        reading.why = parts.join("; ");
        reading
    }

    /// A request is slow past this: over [`SLOW_FACTOR`] times its operation's baseline plus
    /// [`SLOW_MARGIN`], or over `max_rest_latency` whatever the baseline (a backstop for a
    /// baseline that drifted up with a box slower for good).
    fn slow_after(&self, baseline: Duration) -> Duration {
        let relative = baseline.mul_f64(SLOW_FACTOR) + SLOW_MARGIN;
        match self.limits.max_rest_latency {
            max if max.is_zero() => relative,
            max => relative.min(max),
        }
    }

    // --- the decision ------------------------------------------------------------------------

    /// Moves the health, the ceiling and the pace by what the signals say with `active` calls
    /// at once; called every tick (`intake`'s admission thread) and before each verdict. A change
    /// worth a log line is returned.
    pub fn tick(&self, active: usize, now: Instant) -> Option<Change> {
        let reading = self.read(now);
        let mut c = self.control.lock();
        let max_wait = self.limits.max_wait;
        // One reading per tick's worth of time: the calls that tick between ticks do not
        // weigh more in the history.
        if c.history
            .back()
            .is_none_or(|x| now.saturating_duration_since(x.0) >= HISTORY_STEP)
        {
            c.history.push_back((now, reading.slow));
        }
        prune(&mut c.history, now, HISTORY, |x| x.0);
        if c.actives
            .back()
            .is_none_or(|x| now.saturating_duration_since(x.0) >= HISTORY_STEP)
        {
            c.actives.push_back((now, active));
        }
        prune(&mut c.actives, now, SETTLED, |x| x.0);
        prune(&mut c.starts, now, RATE_WINDOW, |t| *t);
        prune(&mut c.offered, now, OFFERED_WINDOW, |x| x.0);
        prune(&mut c.spells, now, HISTORY, |t| *t);
        // Slow for half of the last HISTORY: the knee, where slow spells come and go. Time, not
        // readings: each reading stands for the time until the next one (a gap counts a tick
        // at most).
        let mut slow_for = Duration::ZERO;
        let mut readings = c.history.iter().peekable();
        while let Some((at, slow)) = readings.next() {
            let until = readings.peek().map_or(now, |x| x.0);
            if *slow {
                slow_for += until.saturating_duration_since(*at).min(HISTORY_GAP);
            }
        }
        let spells = slow_for * 2 >= HISTORY || c.spells.len() >= KNEE_SPELLS;
        // Admissions a second over the window: what Asterisk carried.
        let rate = c.starts.len() as f64 / RATE_WINDOW.as_secs_f64();
        let change = match (c.health, reading.slow) {
            (Health::Normal, true) => {
                c.health = Health::Slow(now);
                // What Asterisk was taking when it slowed down (callers wait from now on, so
                // the rate admitted later says nothing about its load) — when it first slowed
                // down, at the knee: between its spells callers waited, and a box that took 60
                // a second read as taking 25 at its third spell, and was paced at 20.
                c.overload_rate = if c.spells.is_empty() {
                    rate
                } else {
                    c.overload_rate.max(rate)
                };
                c.spells.push_back(now);
                // A pace holding callers back went past what the box takes: a step back, before
                // the slowness turns into an overload.
                if let Some(p) = c
                    .pace
                    .as_mut()
                    .filter(|p| p.held_back_within(RISE_EVERY, now))
                {
                    p.per_s = (p.per_s * PACE_BACKOFF).max(PACE_FLOOR);
                }
                Some(Change::Slowed {
                    why: reading.why.clone(),
                })
            }
            (Health::Slow(since), true)
                if now.saturating_duration_since(since) >= max_wait + OVERLOAD_MARGIN || spells =>
            {
                c.health = Health::Overloaded(now);
                c.overload_at = active;
                let episode = c
                    .episode
                    .filter(|t| now.saturating_duration_since(*t) < EPISODE);
                c.episode = episode.or(Some(now));
                let ceiling = cut(&mut c, active, now);
                let pace = cut_pace(&mut c, now, episode.is_none());
                Some(Change::Overloaded {
                    why: reading.why.clone(),
                    active,
                    ceiling,
                    pace,
                })
            }
            (Health::Overloaded(since), true)
                if c.last_cut
                    .is_none_or(|t| now.saturating_duration_since(t) >= CUT_EVERY) =>
            {
                // Overloaded for long at a load the box carried before: it got slower for good;
                // what it proved is no longer proof (a neighbour's burst of seconds is not that).
                if now.saturating_duration_since(since) >= UNPROVEN_AFTER && active <= c.proven {
                    c.proven = active * CUT.0 / CUT.1;
                    c.proven_rate *= 0.8;
                }
                let before = c.ceiling;
                let ceiling = cut(&mut c, active, now);
                let pace = cut_pace(&mut c, now, false);
                (before != Some(ceiling)).then(|| Change::CutAgain {
                    why: reading.why.clone(),
                    active,
                    ceiling,
                    pace,
                })
            }
            (Health::Slow(since) | Health::Overloaded(since), false) => {
                // Recovered once normal for RECOVER_AFTER: `normal_since` counts from the first
                // normal reading.
                if c.normal_since <= since {
                    c.normal_since = now;
                }
                if now.saturating_duration_since(c.normal_since) >= RECOVER_AFTER {
                    let after = now.saturating_duration_since(since);
                    let proven_margin = c.proven + c.proven / 5;
                    if let Health::Overloaded(_) = c.health {
                        // Overloaded at a load (calls at once and arrivals) the box had carried:
                        // not the load's doing (a neighbour, a freeze): back at once to what it
                        // proved.
                        if c.overload_at <= proven_margin && c.overload_rate <= c.proven_rate * 1.2
                        {
                            let (proven, proven_rate) = (c.proven, c.proven_rate);
                            c.ceiling = c.ceiling.map(|n| n.max(proven));
                            if let Some(p) = c.pace.as_mut() {
                                p.per_s = p.per_s.max(proven_rate);
                            }
                        }
                        // As CUBIC returns to its last window: most of the rate that overloaded
                        // Asterisk at once, the rest probed for.
                        if let Some(p) = c.pace.as_mut() {
                            p.per_s = p.per_s.max(p.w_max * PACE_RESTORE);
                            p.bound_at = Some(now);
                        }
                    }
                    c.health = Health::Normal;
                    c.normal_since = now;
                    c.last_rise = now;
                    // The door's share for the new pace at once, not a second later.
                    c.share_moved = now.checked_sub(SHARE_EVERY).unwrap_or(c.share_moved);
                    Some(Change::Recovered {
                        after,
                        ceiling: c.ceiling,
                        pace: c.pace.map(|p| p.per_s),
                    })
                } else {
                    None
                }
            }
            (Health::Normal, false) => {
                // After a step up, calls at once grow for as long as calls last, and Asterisk's
                // load with them: the step's cost has shown only once they have settled.
                let settled = c.actives.front().is_some_and(|(t, n)| {
                    now.saturating_duration_since(*t) >= SETTLED - HISTORY_GAP
                        && active.abs_diff(*n) <= (*n / 10).max(3)
                });
                if now.saturating_duration_since(c.normal_since) >= PROVEN_AFTER {
                    // The fewest calls at once of the stretch: those were held all of it.
                    let held = c
                        .actives
                        .iter()
                        .filter(|(t, _)| now.saturating_duration_since(*t) <= PROVEN_AFTER)
                        .map(|(_, n)| *n)
                        .min()
                        .unwrap_or(active);
                    c.proven = c.proven.max(held);
                    // A rate is proven only once the calls it brings have settled (over
                    // `SETTLED`, as long as `PROVEN_AFTER`: all of it normal).
                    if settled {
                        c.proven_rate = c.proven_rate.max(rate);
                    }
                }
                c.peak = c.peak.max(active);
                if now.saturating_duration_since(c.last_rise) >= RISE_EVERY {
                    c.last_rise = now;
                    if let Some(n) = c.ceiling {
                        let risen = n + (n / RISE_SHARE).max(1);
                        // Well above what the box carries: no ceiling at all.
                        c.ceiling = (risen <= c.peak.max(FLOOR) * 3 / 2).then_some(risen);
                    }
                    c.pace = c.pace.and_then(|mut p| {
                        if !p.held_back_within(PACE_FORGET, now) {
                            return None;
                        }
                        // Probing only while it holds callers back: a rate nobody uses proves
                        // nothing and would let a burst through. Up to the rate that last
                        // overloaded Asterisk (`w_max`) every second, as CUBIC climbs back to its
                        // last window; past it every second only once the calls the pace let in
                        // have settled — as TCP grows its window on the acknowledgements of a
                        // round trip, the box is answering for all of them then — and every
                        // `UNSETTLED_RISE_EVERY` before (probing every second while they grew
                        // took a 1.5x run from 30 to 46 calls a second in 24 s, into slow spells
                        // of a second at its end).
                        let past = p.per_s >= p.w_max;
                        let due = settled
                            || !past
                            || p.unsettled_rise.is_none_or(|t| {
                                now.saturating_duration_since(t) >= UNSETTLED_RISE_EVERY
                            });
                        if due && p.held_back_within(RISE_EVERY + RISE_EVERY, now) {
                            let risen = p.per_s + (p.per_s * PACE_RISE).max(PACE_RISE_MIN);
                            p.per_s = if settled || past {
                                risen
                            } else {
                                risen.min(p.w_max)
                            };
                            if past && !settled {
                                p.unsettled_rise = Some(now);
                            }
                        }
                        Some(p)
                    });
                }
                None
            }
            _ => None,
        };
        if reading.slow {
            c.why = reading.why;
        }
        if c.health == Health::Normal {
            c.normal_since = c.normal_since.min(now);
        }
        move_share(&mut c, active, now);
        change
    }

    /// What happens to a new caller now, with `active` calls at once (admitted ones included)
    /// and `setting_up` of them being set up.
    pub fn check(&self, active: usize, setting_up: usize, now: Instant) -> Verdict {
        let l = &self.limits;
        if l.max_calls > 0 && active >= l.max_calls {
            return Verdict::Reject(Overload::Calls {
                active,
                max: l.max_calls,
            });
        }
        let mut c = self.control.lock();
        let waits = !l.max_wait.is_zero();
        // While Asterisk is slow or overloaded a new caller waits. The overloads of the 1.5x
        // and 3x runs last a second or two; a rejection now would be a hang-up sent into the
        // stall (one held every shedder for up to a second), where a waiting caller costs
        // Asterisk nothing more and is taken once it recovers. The door is shut meanwhile, so
        // few come; a sustained overload still rejects them, each at the end of its wait.
        match c.health {
            Health::Normal => {}
            Health::Slow(_) if waits => {
                return Verdict::Wait(Overload::Slow { why: c.why.clone() })
            }
            Health::Overloaded(_) if waits => {
                return Verdict::Wait(Overload::Overloaded { why: c.why.clone() })
            }
            Health::Slow(_) | Health::Overloaded(_) => {
                return Verdict::Reject(Overload::Overloaded { why: c.why.clone() })
            }
        }
        if let Some(ceiling) = c.ceiling.filter(|n| active >= *n) {
            return Verdict::Reject(Overload::Ceiling { active, ceiling });
        }
        if let Some(pace) = c.pace.as_mut() {
            pace.refill(now);
            if pace.tokens < 1.0 {
                pace.bound_at = Some(now);
                let why = Overload::Paced { per_s: pace.per_s };
                return if waits {
                    Verdict::Wait(why)
                } else {
                    Verdict::Reject(why)
                };
            }
        }
        if l.max_setups > 0 && setting_up >= l.max_setups {
            // A set-up takes milliseconds when Asterisk is well: a moment's wait frees a place.
            let why = Overload::Setups {
                setting_up,
                max: l.max_setups,
            };
            return if waits {
                Verdict::Wait(why)
            } else {
                Verdict::Reject(why)
            };
        }
        Verdict::Take
    }

    /// The verdict on a caller that has waited `waited` already: taken when it can be, else it
    /// waits out `max_wait` whatever holds it back, then is rejected. An overload declared
    /// meanwhile may clear within the wait; and rejecting every waiting caller the moment it is
    /// declared hangs up all who arrived while Asterisk was slow at once — 200 at 1.5 times a
    /// fast box's rate, a second in the shedders' queue — where their own deadlines spread
    /// those hang-ups at the rate the callers came.
    pub fn check_waiting(
        &self,
        active: usize,
        setting_up: usize,
        waited: Duration,
        now: Instant,
    ) -> Verdict {
        match self.check(active, setting_up, now) {
            Verdict::Take => Verdict::Take,
            Verdict::Wait(why) | Verdict::Reject(why) if waited >= self.limits.max_wait => {
                Verdict::Reject(Self::waited_too_long(waited, &why))
            }
            Verdict::Wait(why) | Verdict::Reject(why) => Verdict::Wait(why),
        }
    }

    /// Whether a new caller held back by the pace (`why`) is turned away at once, with `queued`
    /// callers waiting for the pace already: when the pace would take more than half of
    /// `max_wait` to start them. While the pace binds, more callers come than it lets in, so
    /// some are turned away whatever the wait; a queue kept full for `max_wait` made every
    /// caller served wait all of it in silence (set-up median 2 s in the 1.5x run) and those
    /// turned away wait it too before their congestion. Callers waiting for a slow Asterisk are
    /// not counted: a brief slowness is what waiting is for.
    pub fn pace_queue_full(&self, why: &Overload, queued: usize) -> Option<Overload> {
        let Overload::Paced { per_s } = why else {
            return None;
        };
        let room = (per_s * self.limits.max_wait.as_secs_f64() * PACE_QUEUE).ceil();
        (queued as f64 >= room.max(1.0)).then_some(Overload::PaceQueue {
            per_s: *per_s,
            waiting: queued,
        })
    }

    /// A caller that waited `waited` for `why` and is still not to be taken.
    pub fn waited_too_long(waited: Duration, why: &Overload) -> Overload {
        Overload::WaitedTooLong {
            waited,
            why: why.to_string(),
        }
    }

    /// A new caller reached voicebot1 (through Asterisk's door).
    pub fn offered(&self, now: Instant) {
        let mut c = self.control.lock();
        // Let in by the share of now or of a second ago, the higher: a caller let in just
        // before the share went down reaches voicebot1 after, and counted at the new share it
        // reads as arrivals rising (the share fell again, and the door let in half the pace).
        let higher = c.share.max(c.share_before);
        let share = if c.pace.is_some() && higher < 99.5 {
            higher
        } else {
            100.0
        };
        c.offered.push_back((now, share));
        if c.offered.len() > MAX_SAMPLES {
            c.offered.pop_front();
        }
    }

    /// What Asterisk's door should do now: shut while overloaded or at the ceiling; while
    /// pacing, let in the share that keeps callers reaching voicebot1 near the pace.
    pub fn door(&self, active: usize) -> DoorState {
        let c = self.control.lock();
        if matches!(c.health, Health::Overloaded(_)) || c.ceiling.is_some_and(|n| active >= n) {
            return DoorState::Share(0);
        }
        match c.pace {
            Some(_) if c.share < 99.5 => DoorState::Share(c.share.round() as u8),
            _ => DoorState::Open,
        }
    }

    /// The admission rate limit, calls a second; `None` while none is needed.
    pub fn pace(&self) -> Option<f64> {
        self.control.lock().pace.map(|p| p.per_s)
    }

    pub fn health(&self) -> Health {
        self.control.lock().health
    }

    /// The learned ceiling of calls at once; `None` while none is needed.
    pub fn ceiling(&self) -> Option<usize> {
        self.control.lock().ceiling
    }

    /// Whether the call was admitted already (its StasisStart came twice, or the janitor found it
    /// while its first turn was still queued).
    pub fn is_pending(&self, call: &CallId) -> bool {
        self.pending.lock().contains(call)
    }

    /// Calls admitted whose first turn has not come yet.
    pub fn pending(&self) -> usize {
        self.pending.lock().len()
    }

    /// A call was admitted and posted to its mailbox: a set-up starts (and uses the pace).
    pub fn admitted(&self, call: &CallId, now: Instant) {
        self.pending.lock().insert(call.clone());
        let mut c = self.control.lock();
        c.starts.push_back(now);
        if c.starts.len() > MAX_SAMPLES {
            c.starts.pop_front();
        }
        if let Some(pace) = c.pace.as_mut() {
            pace.refill(now);
            // Two callers may have been judged on the same token (the reader and the admission
            // thread): a small debt, repaid at the pace.
            pace.tokens = (pace.tokens - 1.0).max(-1.0);
        }
    }

    /// An admitted call's first turn: the registry holds it from now on.
    pub fn taken(&self, call: &CallId) {
        self.pending.lock().remove(call);
    }
}

/// Cuts the ceiling to 4/5 of the calls at once (never above where it was, never below the
/// floor); the new ceiling.
fn cut(c: &mut Control, active: usize, now: Instant) -> usize {
    let base = c.ceiling.map_or(active, |n| n.min(active));
    let ceiling = (base * CUT.0 / CUT.1).max(FLOOR);
    c.ceiling = Some(ceiling);
    c.last_cut = Some(now);
    ceiling
}

/// Cuts the pace to 4/5 (of the rate admitted when Asterisk slowed down, at the first cut of an
/// overload episode — `first`; of the pace after); the new pace.
fn cut_pace(c: &mut Control, now: Instant, first: bool) -> f64 {
    let rate = c.overload_rate.max(PACE_FLOOR);
    let pace = c.pace.get_or_insert(Pace {
        per_s: rate,
        w_max: rate,
        tokens: 0.0,
        at: now,
        bound_at: Some(now),
        unsettled_rise: None,
    });
    if first {
        // What overloaded Asterisk: the rate admitted when it slowed down, or the pace if that
        // was lower. A pace that held callers back lately was the rate Asterisk took: the cut
        // starts from it, as TCP's from its window (the rate measured then is lowered by the
        // callers who waited through the slow spells before the overload).
        pace.w_max = if pace.held_back_within(RATE_WINDOW, now) {
            pace.per_s
        } else {
            pace.per_s.min(rate)
        };
        pace.per_s = pace.w_max;
    }
    pace.per_s = (pace.per_s * CUT.0 as f64 / CUT.1 as f64).max(PACE_FLOOR);
    pace.tokens = pace.tokens.min(0.0);
    pace.bound_at = Some(now);
    pace.per_s
}

/// The door's share while pacing: callers reaching voicebot1 kept near the pace (plus a margin),
/// whatever the offered load; those refused at the door cost Asterisk a fraction of a rejection
/// after `Answer()`. The callers arriving at the door are estimated from those that came through
/// and the share that let each in (while the door was not shut, and Asterisk answered normally).
fn move_share(c: &mut Control, active: usize, now: Instant) {
    let shut = matches!(c.health, Health::Overloaded(_)) || c.ceiling.is_some_and(|n| active >= n);
    // While Asterisk is slow, the callers it lets in reach voicebot1 late, and few: counted then,
    // they read as arrivals falling, and the door opened wide two seconds into a slow spell of
    // a CI run at 180 callers a second, which then turned into an overload. The share holds
    // until Asterisk answers normally again, and arrivals are counted afresh from then.
    if shut || c.health != Health::Normal {
        c.open_since = None;
        return;
    }
    if now.saturating_duration_since(c.share_moved) < SHARE_EVERY {
        return;
    }
    c.share_moved = now;
    let open_since = *c.open_since.get_or_insert(now);
    let span = now
        .saturating_duration_since(open_since)
        .min(OFFERED_WINDOW);
    if span >= SHARE_EVERY / 2 {
        // Each caller let in stands for 100/share callers at the door, with the share that
        // let it in (the share moves every second; counted with the new one, callers let in
        // at the old read as a jump in arrivals).
        let arrivals = c
            .offered
            .iter()
            .filter(|x| now.saturating_duration_since(x.0) <= span)
            .map(|x| 100.0 / x.1.max(SHARE_FLOOR))
            .sum::<f64>()
            / span.as_secs_f64();
        // More callers than thought: at once (each let in too many is rejected over REST, at
        // about twice a refusal's cost to Asterisk: the first second of a 3x run let in 82 %
        // of 150 a second, read from the 1.5x run before it). Fewer: halfway (the waiting list
        // takes up a second's shortfall).
        c.arrivals = if c.arrivals > 0.0 && arrivals < c.arrivals {
            (c.arrivals + arrivals) / 2.0
        } else {
            arrivals
        };
    }
    c.share_before = c.share;
    // Opened by a quarter a second at most: a dip in callers reaching voicebot1 is as often
    // Asterisk beginning to slow down (its StasisStarts come late) as fewer callers, and a door
    // opened on it lets a flood in as the slowness begins (one opened 11 ms into a slow spell
    // at 1.5 times the load). A load that really ended opens it within seconds, harmlessly.
    c.share = match c.pace {
        Some(pace) if c.arrivals > 0.0 => (100.0 * pace.per_s * SHARE_MARGIN / c.arrivals)
            .min(c.share * SHARE_RISE)
            .clamp(SHARE_FLOOR, 100.0),
        _ => 100.0,
    };
}

/// Drops the entries of `q` older than `keep`.
fn prune<T>(q: &mut VecDeque<T>, now: Instant, keep: Duration, at: impl Fn(&T) -> Instant) {
    while q
        .front()
        .is_some_and(|x| now.saturating_duration_since(at(x)) > keep)
    {
        q.pop_front();
    }
}

/// A caller to be hung up because its call was not taken.
pub struct Rejection {
    pub call: CallId,
    /// The caller's channel name, for the log.
    pub caller: String,
    pub why: Overload,
    /// When it was decided.
    pub at: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnOverload;

    fn limits(max_calls: usize, max_setups: usize) -> AdmissionConfig {
        AdmissionConfig {
            max_calls,
            max_setups,
            max_rest_latency: Duration::from_millis(500),
            after_timeout: Duration::from_secs(2),
            on_overload: OnOverload::Reject,
            max_wait: Duration::from_secs(2),
            door: Some("VOICEBOT1_FULL_UNTIL".into()),
            door_share: Some("VOICEBOT1_ADMIT_PCT".into()),
        }
    }

    /// `n` answers of `op` taking `ms` each, at `at`.
    fn answers(a: &Admission, op: Operation, ms: u64, n: usize, at: Instant) {
        for _ in 0..n {
            let t = a.rest_sent(op, at);
            a.rest_answered(t, op, Duration::from_millis(ms), true, at);
        }
    }

    /// A normal second: every operation answers in 1-2 ms; ten calls admitted.
    fn normal(a: &Admission, at: Instant) {
        for i in 0..10 {
            a.admitted(&CallId(format!("n{i}")), at);
            a.taken(&CallId(format!("n{i}")));
        }
        answers(a, Operation::CreateBridge, 1, 5, at);
        answers(a, Operation::AddChannel, 2, 5, at);
        answers(a, Operation::Hangup, 1, 5, at);
    }

    /// A normal second with no new call: every operation answers in 1-2 ms.
    fn well(a: &Admission, at: Instant) {
        answers(a, Operation::CreateBridge, 1, 5, at);
        answers(a, Operation::AddChannel, 2, 5, at);
        answers(a, Operation::Hangup, 1, 5, at);
    }

    /// Twelve normal seconds from `t0`, 20 new callers a second offered and taken.
    fn twelve_normal_seconds_at_20_a_second(a: &Admission, t0: Instant) {
        for s in 0..12u64 {
            for i in 0..20u64 {
                let at = t0 + Duration::from_millis(s * 1000 + i * 50);
                a.offered(at);
                a.admitted(&CallId(format!("p{s}.{i}")), at);
            }
            well(a, t0 + Duration::from_secs(s));
            a.tick(100, t0 + Duration::from_secs(s));
        }
    }

    /// Seven normal seconds from `t0` at 120 calls active: a load the box has proven.
    fn seven_normal_seconds_at_120_calls(a: &Admission, t0: Instant) {
        for s in 0..7 {
            let at = t0 + Duration::from_secs(s);
            normal(a, at);
            a.tick(120, at);
        }
    }

    /// A loaded second: every operation answers 30-60 times slower.
    fn loaded(a: &Admission, at: Instant) {
        answers(a, Operation::CreateBridge, 40, 5, at);
        answers(a, Operation::AddChannel, 90, 5, at);
        answers(a, Operation::Hangup, 35, 5, at);
    }

    #[test]
    fn the_hard_caps_count_admitted_calls_not_yet_started() {
        let a = Admission::new(limits(3, 2));
        let now = Instant::now();
        assert_eq!(a.check(2, 0, now), Verdict::Take);
        assert_eq!(
            a.check(3, 0, now),
            Verdict::Reject(Overload::Calls { active: 3, max: 3 })
        );
        // Too many set-ups at once: a moment's wait, while Asterisk is well.
        assert!(matches!(
            a.check(1, 2, now),
            Verdict::Wait(Overload::Setups { .. })
        ));
        let b = Admission::new(AdmissionConfig {
            max_wait: Duration::ZERO,
            ..limits(3, 2)
        });
        assert_eq!(
            b.check(1, 2, now),
            Verdict::Reject(Overload::Setups {
                setting_up: 2,
                max: 2
            })
        );
        a.admitted(&CallId("9".into()), now);
        assert!(a.is_pending(&CallId("9".into())) && a.pending() == 1);
        a.taken(&CallId("9".into()));
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn a_brief_slowness_makes_callers_wait_and_leaves_no_cut() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        // Six normal seconds at 80 calls: a load the box carries.
        for s in 0..=6u64 {
            normal(&a, t0 + Duration::from_secs(s));
            assert_eq!(a.tick(80, t0 + Duration::from_secs(s)), None);
        }
        let t0 = t0 + Duration::from_secs(7);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // A freeze: two requests sent and not answered for 500 ms.
        let t1 = a.rest_sent(Operation::CreateBridge, at(200));
        let t2 = a.rest_sent(Operation::Hangup, at(200));
        assert!(matches!(a.tick(80, at(700)), Some(Change::Slowed { .. })));
        assert!(matches!(a.check(80, 5, at(700)), Verdict::Wait(_)));
        // 1.5 s later Asterisk answers them (slowly), then every request normally.
        a.rest_answered(
            t1,
            Operation::CreateBridge,
            Duration::from_millis(1500),
            true,
            at(1700),
        );
        a.rest_answered(
            t2,
            Operation::Hangup,
            Duration::from_millis(1500),
            true,
            at(1700),
        );
        assert_eq!(a.tick(80, at(1700)), None);
        assert!(
            matches!(a.check(80, 5, at(1700)), Verdict::Wait(_)),
            "still within max_wait"
        );
        let mut recovered = None;
        for ms in (1800..4000).step_by(100) {
            normal(&a, at(ms));
            if let Some(c) = a.tick(80, at(ms)) {
                recovered = Some((ms, c));
                break;
            }
        }
        // The two slow answers are soon outnumbered by normal ones; normal for 0.5 s: recovered,
        // 2.1 s after the freeze began.
        assert!(
            matches!(
                recovered,
                Some((2300, Change::Recovered { ceiling: None, .. }))
            ),
            "{recovered:?}"
        );
        assert_eq!(a.check(80, 5, at(2300)), Verdict::Take);
        assert_eq!(a.ceiling(), None, "a hiccup leaves no ceiling");
    }

    #[test]
    fn a_few_held_requests_of_one_operation_do_not_read_as_a_sick_asterisk() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        for s in 0..10u64 {
            let at = t0 + Duration::from_secs(s);
            normal(&a, at);
            // One hang-up in five held 3 s by a proxy.
            answers(&a, Operation::Hangup, 3000, 1, at);
            a.rest_sent(Operation::Hangup, at);
            assert_eq!(
                a.tick(100, at + Duration::from_millis(500)),
                None,
                "second {s}"
            );
            assert_eq!(a.check(100, 3, at), Verdict::Take);
        }
    }

    #[test]
    fn a_quiet_second_of_held_hang_ups_and_one_other_kind_is_not_a_sick_asterisk() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        normal(&a, t0);
        assert_eq!(a.tick(20, t0), None);
        // Two seconds on, only call ends: hang-ups held 3 s by a proxy, bridges destroyed at once.
        let t1 = t0 + Duration::from_secs(2);
        answers(&a, Operation::Hangup, 3000, 2, t1);
        answers(&a, Operation::DestroyBridge, 1, 2, t1);
        assert_eq!(a.tick(20, t1), None);
        assert_eq!(a.check(20, 0, t1), Verdict::Take);
        // A second kind slow as well: that is Asterisk.
        answers(&a, Operation::DestroyBridge, 300, 3, t1);
        assert!(matches!(a.tick(20, t1), Some(Change::Slowed { .. })));
    }

    #[test]
    fn sustained_slowness_rejects_cuts_again_while_slow_and_a_load_caused_cut_stays() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        seven_normal_seconds_at_120_calls(&a, t0);
        // Load: 200 calls, everything slow.
        loaded(&a, at(7100));
        assert!(matches!(a.tick(200, at(7100)), Some(Change::Slowed { .. })));
        assert!(matches!(a.check(200, 5, at(7100)), Verdict::Wait(_)));
        for ms in [8100, 9100] {
            loaded(&a, at(ms));
            assert_eq!(a.tick(200, at(ms)), None);
        }
        // Slow for max_wait and a second more: overloaded.
        loaded(&a, at(10100));
        let c = a.tick(200, at(10100));
        assert!(
            matches!(
                c,
                Some(Change::Overloaded {
                    active: 200,
                    ceiling: 160,
                    ..
                })
            ),
            "{c:?}"
        );
        // A new caller waits (it is rejected at the end of its wait if the overload lasts);
        // the door is shut.
        assert!(matches!(
            a.check(150, 5, at(10100)),
            Verdict::Wait(Overload::Overloaded { .. })
        ));
        assert!(matches!(
            a.check_waiting(150, 5, Duration::from_secs(2), at(10100)),
            Verdict::Reject(Overload::WaitedTooLong { .. })
        ));
        assert_eq!(a.door(150), DoorState::Share(0));
        // Still slow a second later, calls not ending: cut again.
        loaded(&a, at(11100));
        let c = a.tick(200, at(11100));
        assert!(
            matches!(c, Some(Change::CutAgain { ceiling: 128, .. })),
            "{c:?}"
        );
        // Normal again after RECOVER_AFTER. The overload came at 200 calls, above the 120 the box
        // had proven: the load's doing, the ceiling stays where it was cut.
        well(&a, at(12200));
        assert_eq!(a.tick(150, at(12200)), None);
        well(&a, at(12700));
        let c = a.tick(150, at(12700));
        assert!(
            matches!(
                c,
                Some(Change::Recovered {
                    ceiling: Some(128),
                    ..
                })
            ),
            "{c:?}"
        );
        assert_eq!(a.check(120, 5, at(12700)), Verdict::Take);
        assert!(matches!(
            a.check(128, 5, at(12700)),
            Verdict::Reject(Overload::Ceiling { ceiling: 128, .. })
        ));
        // It grows a twentieth a second while normal…
        well(&a, at(13800));
        a.tick(100, at(13800));
        assert_eq!(a.ceiling(), Some(134));
        // …and is forgotten once well above what the box carried.
        for s in 14..80 {
            normal(&a, at(s * 1000));
            a.tick(100, at(s * 1000));
        }
        assert_eq!(a.ceiling(), None);
    }

    #[test]
    fn a_caller_already_waiting_waits_out_its_time_through_an_overload() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        seven_normal_seconds_at_120_calls(&a, t0);
        for ms in [7100, 8100, 9100, 10100] {
            loaded(&a, at(ms));
            a.tick(200, at(ms));
        }
        // Overloaded: a new caller waits too (a hang-up now would reach Asterisk when it
        // answers slowest)…
        assert!(matches!(
            a.check(150, 5, at(10100)),
            Verdict::Wait(Overload::Overloaded { .. })
        ));
        // …one that has waited since Asterisk slowed down waits out max_wait…
        let second = Duration::from_secs(1);
        assert!(matches!(
            a.check_waiting(150, 5, second, at(10100)),
            Verdict::Wait(Overload::Overloaded { .. })
        ));
        // …and is rejected then, saying what it waited for.
        let v = a.check_waiting(150, 5, 2 * second, at(10100));
        assert!(
            matches!(&v, Verdict::Reject(Overload::WaitedTooLong { why, .. }) if why.contains("overloaded")),
            "{v:?}"
        );
        // Asterisk answers normally again within the wait: taken.
        well(&a, at(12200));
        a.tick(150, at(12200));
        well(&a, at(12700));
        a.tick(120, at(12700));
        assert_eq!(a.check_waiting(120, 5, second, at(12700)), Verdict::Take);
        // Past the ceiling it waits too, rather than being rejected before its time.
        assert!(matches!(
            a.check_waiting(200, 5, second, at(12700)),
            Verdict::Wait(Overload::Ceiling { .. })
        ));
    }

    #[test]
    fn a_neighbours_burst_of_seconds_leaves_the_proven_load_and_recovery_is_immediate() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Twelve normal seconds at 120 calls and 10 new calls a second: both proven.
        for s in 0..12 {
            normal(&a, at(s * 1000));
            a.tick(120, at(s * 1000));
        }
        // Ten seconds of a CPU hog beside Asterisk at the same 120 calls.
        for s in 0..10 {
            loaded(&a, at(12100 + s * 1000));
            a.tick(120, at(12100 + s * 1000));
        }
        assert!(matches!(a.health(), Health::Overloaded(_)));
        assert!(a.ceiling().is_some_and(|n| n < 120), "{:?}", a.ceiling());
        assert!(a.pace().is_some_and(|r| r < 5.0), "{:?}", a.pace());
        well(&a, at(22200));
        a.tick(100, at(22200));
        well(&a, at(22700));
        assert!(matches!(
            a.tick(100, at(22700)),
            Some(Change::Recovered { .. })
        ));
        assert_eq!(a.ceiling(), Some(120), "back at once to the proven load");
        assert!(
            a.pace().is_some_and(|r| r >= 10.0),
            "back at once to the proven rate: {:?}",
            a.pace()
        );
        assert_eq!(a.check(110, 5, at(22700)), Verdict::Take);
    }

    #[test]
    fn calls_at_once_still_growing_when_asterisk_stalls_are_not_a_load_it_had_proven() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Twelve normal seconds at 100 calls and 10 new calls a second (both proven), then
        // thirteen more while calls at once grow to 360 (a wave at the knee: each call costs
        // more once transferred, 7 s after it started)…
        for s in 0..25u64 {
            normal(&a, at(s * 1000));
            a.tick(100 + 20 * s.saturating_sub(12) as usize, at(s * 1000));
        }
        // …then Asterisk stalls at 360: overloaded, cut.
        for s in 25..30u64 {
            loaded(&a, at(s * 1000));
            a.tick(360, at(s * 1000));
        }
        assert!(matches!(a.health(), Health::Overloaded(_)));
        well(&a, at(30_100));
        a.tick(300, at(30_100));
        well(&a, at(30_600));
        assert!(matches!(
            a.tick(300, at(30_600)),
            Some(Change::Recovered { .. })
        ));
        // The box held 160 calls or more for the last 10 s of normal readings, not 360: the
        // stall was the load's, and the cut stays.
        assert!(a.ceiling().is_some_and(|n| n < 300), "{:?}", a.ceiling());
    }

    #[test]
    fn a_second_overload_while_paced_cuts_from_the_pace_not_from_the_rate_callers_waited_through() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Twelve normal seconds at 20 new calls a second, then four slow ones: paced at 12.8.
        twelve_normal_seconds_at_20_a_second(&a, t0);
        for s in 12..17u64 {
            loaded(&a, at(s * 1000));
            a.tick(if s == 12 { 100 } else { 150 }, at(s * 1000));
        }
        well(&a, at(17_100));
        a.tick(150, at(17_100));
        well(&a, at(17_600));
        let c = a.tick(150, at(17_600));
        assert!(
            matches!(c, Some(Change::Recovered { pace: Some(r), .. }) if (r - 14.4).abs() < 0.01),
            "{c:?}"
        );
        // Three seconds at the pace, 60 callers a second offered: it holds callers back.
        for step in 0..30u64 {
            let now = at(17_600 + step * 100);
            for i in 0..6u64 {
                if a.check(100, 0, now) == Verdict::Take {
                    a.admitted(&CallId(format!("q{step}.{i}")), now);
                }
            }
            a.tick(100, now);
        }
        // Slow again, callers waiting (none started), until it is an overload.
        let mut changes = Vec::new();
        for ms in (20_600..24_000).step_by(100) {
            loaded(&a, at(ms));
            changes.extend(a.tick(100, at(ms)));
        }
        // From the pace (14.4 a second, up to 15.4 over three seconds below the 16 that
        // overloaded Asterisk, a tenth down when it slowed: 4/5 of 13.86), not from the ~9 a
        // second the last 5 s saw.
        let pace = changes.iter().find_map(|c| match c {
            Change::Overloaded { pace, .. } => Some(*pace),
            _ => None,
        });
        assert!(
            pace.is_some_and(|p| (p - 11.088).abs() < 0.01),
            "{changes:?}"
        );
    }

    #[test]
    fn three_times_the_load_is_paced_near_what_asterisk_carried_and_the_door_lets_in_that_share() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        twelve_normal_seconds_at_20_a_second(&a, t0);
        // Then 60 a second, and Asterisk slows down for four seconds: overloaded, paced at 4/5
        // of the 20 a second it was taking, cut again while it stays slow.
        let mut changes = Vec::new();
        for s in 12..17u64 {
            loaded(&a, at(s * 1000));
            // 150 calls at once from the first slow reading on: more than the box proved.
            changes.extend(a.tick(if s == 12 { 100 } else { 150 }, at(s * 1000)));
        }
        // It slowed down at 13 s, when it had taken 16 a second over the last 5 s.
        assert!(
            changes.iter().any(
                |c| matches!(c, Change::Overloaded { pace, .. } if (*pace - 12.8).abs() < 0.01)
            ),
            "{changes:?}"
        );
        assert_eq!(a.door(150), DoorState::Share(0));
        // Normal again: back at once to 9/10 of the 16 that overloaded it.
        well(&a, at(17100));
        a.tick(150, at(17100));
        well(&a, at(17600));
        let c = a.tick(150, at(17600));
        assert!(
            matches!(c, Some(Change::Recovered { pace: Some(r), .. }) if (r - 14.4).abs() < 0.01),
            "{c:?}"
        );
        // 60 callers a second at the door, each let in by its share, taken as the pace allows.
        let (taken, offered) = callers_at_the_door(&a, at(17600), 100, 6);
        // Ten seconds: the pace climbs back from 14.4 a second to the 16 that overloaded
        // Asterisk, then past it by half a call every 4 s only (calls at once fell from 150 to
        // 100 at 17.1 s and have not settled: the box has not answered for them yet); the door
        // lets in about 1.25 times the pace, not the 60 offered.
        let pace = a.pace().unwrap_or_default();
        assert!((16.4..17.1).contains(&pace), "pace {pace}");
        assert!(
            (140..170).contains(&taken),
            "taken {taken} of {offered}, pace {pace}"
        );
        assert!((170..300).contains(&offered), "let in {offered} of 600");
        assert!(
            matches!(a.door(100), DoorState::Share(p) if (25..=50).contains(&p)),
            "{:?}",
            a.door(100)
        );
    }

    #[test]
    fn overloads_in_a_stalls_aftermath_are_one_episode_and_lower_the_learned_rate_once() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        twelve_normal_seconds_at_20_a_second(&a, t0);
        // Asterisk slow from 12 s, with normal half-seconds between: three overloads in five
        // seconds (a stall and its aftermath), then normal from 17.7 s, then slow again from
        // 25 s (a new episode). What each recovery restores the pace to.
        let slow = |ms: u64| {
            !(15_000..15_700).contains(&ms)
                && !(16_200..16_900).contains(&ms)
                && !(17_700..25_000).contains(&ms)
                && ms < 28_500
        };
        let (mut overloads, mut restored) = (Vec::new(), Vec::new());
        for ms in (12_100..30_000).step_by(100) {
            if ms % 500 == 0 {
                if slow(ms) {
                    loaded(&a, at(ms));
                } else {
                    well(&a, at(ms));
                }
            }
            // 20 callers a second taken; 150 calls at once from the first slow reading (more
            // than the 100 the box proved), 200 from the new episode's (more than the 150 it
            // proved from 17.7 s to 25 s).
            for i in 0..2 {
                a.admitted(&CallId(format!("e{ms}.{i}")), at(ms));
            }
            let active = if ms < 12_500 {
                100
            } else if ms < 25_500 {
                150
            } else {
                200
            };
            match a.tick(active, at(ms)) {
                Some(Change::Overloaded { .. }) => overloads.push(ms),
                Some(Change::Recovered { pace: Some(p), .. }) => restored.push(p),
                _ => {}
            }
        }
        // Three overloads, the first two within five seconds of each other: the second
        // recovery restores what the first did; the third, a new episode, restores less.
        assert_eq!(overloads.len(), 3, "overloads at {overloads:?} ms");
        assert!(overloads[1] - overloads[0] < 5_000, "{overloads:?}");
        assert!(overloads[2] - overloads[0] >= 5_000, "{overloads:?}");
        assert_eq!(restored.len(), 3, "{restored:?}");
        assert!((restored[1] - restored[0]).abs() < 0.01, "{restored:?}");
        assert!(restored[2] < restored[1] - 0.5, "{restored:?}");
    }

    /// `per_tick` callers every 100 ms at the door for `ticks` ticks from `t0` (100 calls
    /// active, Asterisk answering normally), each let in by the door's share and taken as the
    /// pace allows: how many were taken, and how many the door let in.
    fn callers_at_the_door(
        a: &Admission,
        t0: Instant,
        ticks: u64,
        per_tick: u64,
    ) -> (usize, usize) {
        let (mut taken, mut offered) = (0, 0);
        for step in 0..ticks {
            let now = t0 + Duration::from_millis(step * 100);
            let share = match a.door(100) {
                DoorState::Open => 100,
                DoorState::Share(p) => u64::from(p),
            };
            for i in 0..per_tick {
                // The dialplan's RAND(1,100) > share refuses, spread evenly here.
                if (step * per_tick + i) * 37 % 100 >= share {
                    continue;
                }
                offered += 1;
                a.offered(now);
                if a.check(100, 0, now) == Verdict::Take {
                    a.admitted(&CallId(format!("q{step}.{i}")), now);
                    taken += 1;
                }
            }
            if step % 10 == 0 {
                well(a, now);
            }
            a.tick(100, now);
        }
        (taken, offered)
    }

    /// Twelve normal seconds at 20 a second, four slow ones with 150 calls at once (overloaded
    /// at 16 a second), Asterisk normal again at 17.6 s: paced at 14.4.
    fn overloaded_at_16_a_second_and_recovered(a: &Admission, t0: Instant) {
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        twelve_normal_seconds_at_20_a_second(a, t0);
        for s in 12..17u64 {
            loaded(a, at(s * 1000));
            a.tick(if s == 12 { 100 } else { 150 }, at(s * 1000));
        }
        well(a, at(17_100));
        a.tick(150, at(17_100));
        well(a, at(17_600));
        a.tick(150, at(17_600));
    }

    /// Paced after an overload (the twelve normal seconds, four slow ones, recovery at 17.6 s),
    /// then 60 callers a second at the door for five seconds: the share the door lets in.
    fn paced_with_60_a_second_at_the_door(a: &Admission, t0: Instant) -> u8 {
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        overloaded_at_16_a_second_and_recovered(a, t0);
        callers_at_the_door(a, at(17_600), 50, 6);
        match a.door(100) {
            DoorState::Share(share) => share,
            DoorState::Open => panic!("paced, the door lets everyone in"),
        }
    }

    #[test]
    fn a_dip_in_callers_reaching_voicebot1_opens_the_door_a_quarter_a_second_at_most() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let share = paced_with_60_a_second_at_the_door(&a, t0);
        // Three seconds in which only two a second reach voicebot1, Asterisk answering normally.
        let mut shares = Vec::new();
        for step in 0..30u64 {
            let now = at(22_600 + step * 100);
            if step % 5 == 0 {
                a.offered(now);
            }
            if step % 10 == 0 {
                well(&a, now);
            }
            a.tick(100, now);
            if step % 10 == 9 {
                shares.push(a.door(100));
            }
        }
        // The share rises by a quarter a second, not to everyone.
        let at_most =
            |seconds: i32| (f64::from(share) * SHARE_RISE.powi(seconds)).round() as u8 + 1;
        assert!(
            matches!(shares[..], [DoorState::Share(p1), DoorState::Share(p2), DoorState::Share(p3)]
                if p1 <= at_most(1) && p2 <= at_most(2) && p3 <= at_most(3)),
            "from {share}: {shares:?}"
        );
    }

    #[test]
    fn the_door_holds_its_share_while_asterisk_is_slow() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Paced, 60 callers a second at the door for five seconds: the door lets in a share.
        let share = paced_with_60_a_second_at_the_door(&a, t0);
        assert!((25..=50).contains(&share), "share {share}");
        // Asterisk slows down for two seconds (not an overload yet): the callers it lets in
        // reach voicebot1 late, and few — five a second. That is no drop in arrivals.
        for step in 0..20u64 {
            let now = at(22_700 + step * 100);
            if step % 2 == 0 {
                a.offered(now);
            }
            if step % 5 == 0 {
                loaded(&a, now);
            }
            a.tick(100, now);
            assert!(matches!(a.health(), Health::Slow(_)), "{:?}", a.health());
            assert!(
                matches!(a.door(100), DoorState::Share(p) if p == share),
                "{:?} at {} ms",
                a.door(100),
                step * 100
            );
        }
    }

    /// Paced at about 14.4 a second after an overload at 16 (the twelve normal seconds, four slow
    /// ones, recovery at 17.6 s); the pace holds 60 callers a second back for three seconds.
    fn paced_and_binding(a: &Admission, t0: Instant) -> f64 {
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        overloaded_at_16_a_second_and_recovered(a, t0);
        for step in 0..30u64 {
            let now = at(17_600 + step * 100);
            for i in 0..6u64 {
                if a.check(100, 0, now) == Verdict::Take {
                    a.admitted(&CallId(format!("b{step}.{i}")), now);
                }
            }
            if step % 10 == 0 {
                well(a, now);
            }
            a.tick(100, now);
        }
        a.pace().unwrap_or_default()
    }

    #[test]
    fn a_slow_spell_while_the_pace_holds_callers_back_steps_it_back_a_tenth() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let before = paced_and_binding(&a, t0);
        assert!((14.0..17.0).contains(&before), "pace {before}");
        loaded(&a, at(20_700));
        assert!(matches!(
            a.tick(100, at(20_700)),
            Some(Change::Slowed { .. })
        ));
        let after = a.pace().unwrap_or_default();
        assert!((after - before * 0.9).abs() < 0.01, "{before} -> {after}");
    }

    #[test]
    fn the_pace_probes_past_the_rate_that_overloaded_asterisk_only_once_its_calls_settled() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let learned = paced_and_binding(&a, t0);
        assert!((learned - 15.4).abs() < 0.01, "pace {learned}");
        // Held back second by second (60 callers a second, Asterisk normal); the pace after each.
        let bind = |second: u64, active: usize| {
            for step in 0..10u64 {
                let now = at(second * 1000 + 600 + step * 100);
                for i in 0..6u64 {
                    if a.check(active, 0, now) == Verdict::Take {
                        a.admitted(&CallId(format!("s{second}.{step}.{i}")), now);
                    }
                }
                if step == 0 {
                    well(&a, now);
                }
                a.tick(active, now);
            }
            a.pace().unwrap_or_default()
        };
        // Twelve seconds while calls at once grow from 100 to 220 (each call the pace lets in
        // lasts longer than the wave so far): up to the 16 a second that overloaded Asterisk at
        // once, past it by half a call every four seconds only.
        let growing: Vec<f64> = (20..32u64)
            .map(|s| bind(s, 100 + (s as usize - 20) * 10))
            .collect();
        assert!((growing[1] - 16.0).abs() < 0.01, "{growing:?}");
        let rises = growing.windows(2).filter(|w| w[1] > w[0]).count();
        assert!((3..=5).contains(&rises), "{growing:?}");
        assert!(growing[11] < 17.6, "{growing:?}");
        // Calls at once stay at 220: settled ten seconds later, then up every second.
        let settling: Vec<f64> = (32..48u64).map(|s| bind(s, 220)).collect();
        let every_second = settling[10..].windows(2).all(|w| w[1] > w[0]);
        assert!(every_second, "{settling:?}");
    }

    #[test]
    fn callers_held_back_by_the_pace_queue_for_half_of_max_wait_at_most() {
        let a = Admission::new(limits(0, 0));
        let paced = Overload::Paced { per_s: 20.0 };
        // max_wait 2 s: at 20 a second, 20 callers waiting for the pace start within a second.
        assert_eq!(a.pace_queue_full(&paced, 19), None);
        assert!(matches!(
            a.pace_queue_full(&paced, 20),
            Some(Overload::PaceQueue { waiting: 20, .. })
        ));
        assert_eq!(
            a.pace_queue_full(&paced, 20).map(|o| o.reason()),
            Some(NotTaken::Paced)
        );
        // A slow Asterisk is what waiting is for: no bound but MAX_WAITING (intake's).
        let slow = Overload::Slow { why: "late".into() };
        assert_eq!(a.pace_queue_full(&slow, 250), None);
        // A pace of one call every two seconds still lets one caller wait.
        assert_eq!(a.pace_queue_full(&Overload::Paced { per_s: 0.5 }, 0), None);
    }

    #[test]
    fn a_slow_spell_while_the_pace_holds_nobody_back_leaves_it() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        paced_and_binding(&a, t0);
        // Five quiet seconds: nobody offered, nobody held back.
        for s in 21..26u64 {
            well(&a, at(s * 1000));
            a.tick(100, at(s * 1000));
        }
        let before = a.pace();
        assert!(before.is_some());
        a.signals.lock().recent.clear();
        loaded(&a, at(26_000));
        assert!(matches!(
            a.tick(100, at(26_000)),
            Some(Change::Slowed { .. })
        ));
        assert_eq!(a.pace(), before);
    }

    #[test]
    fn a_learned_pace_is_kept_two_minutes_unused_for_the_next_wave() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        paced_and_binding(&a, t0);
        // A minute and a half with no caller: the pace stays, unchanged once nothing probes it.
        for s in 21..111u64 {
            well(&a, at(s * 1000));
            a.tick(20, at(s * 1000));
        }
        let learned = a.pace().unwrap_or_default();
        assert!(learned > 10.0, "pace {learned}");
        // The next wave is held back by it, and probes up from it by a fiftieth a second (at
        // least half a call): calls at once have settled at 20.
        for step in 0..10u64 {
            let now = at(111_000 + step * 100);
            for i in 0..6u64 {
                if a.check(100, 0, now) == Verdict::Take {
                    a.admitted(&CallId(format!("w{step}.{i}")), now);
                }
            }
            a.tick(20, now);
        }
        let risen = a.pace().unwrap_or_default();
        assert!((risen - learned - 0.5).abs() < 0.01, "{learned} -> {risen}");
        // Unused for two minutes: forgotten.
        for s in 113..235u64 {
            well(&a, at(s * 1000));
            a.tick(20, at(s * 1000));
        }
        assert_eq!(a.pace(), None);
    }

    #[test]
    fn slow_spells_that_come_and_go_at_the_knee_count_as_overload() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        normal(&a, t0);
        let mut overloaded = None;
        // 700 ms slow, 300 ms well, again and again: never 2 s in a row.
        for tick in 0..60u64 {
            let ms = 1000 + tick * 100;
            if tick % 10 < 7 {
                loaded(&a, at(ms));
            } else {
                a.signals.lock().recent.clear();
                normal(&a, at(ms));
            }
            if let Some(Change::Overloaded { .. }) = a.tick(200, at(ms)) {
                overloaded = Some(ms);
                break;
            }
        }
        // 2.5 s slow of the last 5 s: during the fourth spell (0.7 s slow a second).
        assert!(
            overloaded.is_some_and(|ms| (4000..5500).contains(&ms)),
            "{overloaded:?}"
        );
    }

    /// `ticks` ticks of 100 ms from `from_ms` after `t0` with `active` calls: slow spells of
    /// 400 ms, then 600 ms of answers as fast as ever (each tick judged on its own answers), and
    /// no caller taken. The changes, with when (ms after `t0`).
    fn slow_spells(
        a: &Admission,
        t0: Instant,
        from_ms: u64,
        ticks: u64,
        active: usize,
    ) -> Vec<(u64, Change)> {
        let mut changes = Vec::new();
        for tick in 0..ticks {
            let ms = from_ms + tick * 100;
            let now = t0 + Duration::from_millis(ms);
            a.signals.lock().recent.clear();
            if tick % 10 < 4 {
                loaded(a, now);
            } else {
                well(a, now);
            }
            changes.extend(a.tick(active, now).map(|c| (ms, c)));
        }
        changes
    }

    #[test]
    fn a_third_slow_spell_within_five_seconds_is_overload_even_when_the_readings_flip() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        normal(&a, t0);
        // Spells of 400 ms slow then 600 ms well (the 500 ms that recover, and a tick): 40 % of
        // the time slow, under the half the time rule.
        let changes = slow_spells(&a, t0, 1000, 40, 200);
        let slowed: Vec<u64> = changes
            .iter()
            .filter(|(_, c)| matches!(c, Change::Slowed { .. }))
            .map(|(ms, _)| *ms)
            .collect();
        let overloaded = changes
            .iter()
            .find(|(_, c)| matches!(c, Change::Overloaded { .. }))
            .map(|(ms, _)| *ms);
        // Slowed at 1 s and 2 s: waiting only; the third spell, at 3 s, is the knee.
        assert_eq!(&slowed[..2], &[1000, 2000], "{changes:?}");
        assert_eq!(overloaded, Some(3100), "{changes:?}");
    }

    #[test]
    fn at_the_knee_the_rate_that_overloaded_asterisk_is_the_one_before_its_first_slow_spell() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        twelve_normal_seconds_at_20_a_second(&a, t0);
        // Then spells of 400 ms slow, 600 ms well, while callers wait through each and few are
        // taken between them: the third spell, at 14 s, is the knee.
        let changes: Vec<Change> = slow_spells(&a, t0, 12_000, 25, 150)
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        // Paced at 4/5 of what Asterisk took before it first slowed down (20 a second over the
        // last 5 s at 12 s), not of the fewer taken while its callers waited (12 a second at
        // 14 s, which made 9.6).
        let pace = changes.iter().find_map(|c| match c {
            Change::Overloaded { pace, .. } => Some(*pace),
            _ => None,
        });
        assert!(pace.is_some_and(|p| (p - 16.0).abs() < 0.01), "{changes:?}");
    }

    #[test]
    fn two_slow_spells_within_five_seconds_only_make_callers_wait() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        normal(&a, t0);
        for tick in 0..70u64 {
            let ms = 1000 + tick * 100;
            a.signals.lock().recent.clear();
            // Slow 1.0-1.4 s and 3.0-3.4 s, then 6.5-6.9 s: never three within 5 s.
            if matches!(tick, 0..=3 | 20..=23 | 55..=58) {
                loaded(&a, at(ms));
            } else {
                normal(&a, at(ms));
            }
            let c = a.tick(200, at(ms));
            assert!(!matches!(c, Some(Change::Overloaded { .. })), "{ms}: {c:?}");
        }
        assert_eq!(a.health(), Health::Normal);
    }

    #[test]
    fn late_events_read_as_a_slow_asterisk_and_an_unanswered_request_too() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        for i in 0..10 {
            a.event_lag(Duration::from_millis(1), t0 + Duration::from_millis(i * 10));
        }
        assert_eq!(a.tick(50, t0 + Duration::from_millis(100)), None);
        let t1 = t0 + Duration::from_secs(2);
        for i in 0..5 {
            a.event_lag(
                Duration::from_millis(300),
                t1 + Duration::from_millis(i * 10),
            );
        }
        let c = a.tick(50, t1 + Duration::from_millis(60));
        assert!(
            matches!(&c, Some(Change::Slowed { why }) if why.contains("ARI events 300 ms late")),
            "{c:?}"
        );

        let b = Admission::new(limits(0, 0));
        let t = b.rest_sent(Operation::Hangup, t0);
        b.rest_answered(
            t,
            Operation::Hangup,
            Duration::from_secs(5),
            false,
            t0 + Duration::from_secs(5),
        );
        let c = b.tick(10, t0 + Duration::from_secs(5));
        assert!(
            matches!(&c, Some(Change::Slowed { why }) if why.contains("unanswered")),
            "{c:?}"
        );
    }

    #[test]
    fn baselines_follow_a_box_that_got_slower_for_good() {
        let a = Admission::new(limits(0, 0));
        let t0 = Instant::now();
        answers(&a, Operation::CreateBridge, 1, 10, t0);
        // From now on every answer takes 30 ms: slow at first, normal a minute later.
        let mut slow_then = 0;
        let mut slow_later = 0;
        for s in 1..=120u64 {
            let at = t0 + Duration::from_secs(s);
            let token = a.rest_sent(Operation::CreateBridge, at);
            a.rest_answered(
                token,
                Operation::CreateBridge,
                Duration::from_millis(30),
                true,
                at,
            );
            let slow = a.signals.lock().recent.back().is_some_and(|x| x.slow);
            if s <= 5 && slow {
                slow_then += 1;
            }
            if s > 100 && slow {
                slow_later += 1;
            }
        }
        assert_eq!((slow_then, slow_later), (5, 0));
    }
}
