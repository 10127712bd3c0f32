//! Admission control: whether a new caller gets a call, decided on the event reader before the
//! call costs Asterisk anything.
//!
//! Overload on these boxes is Asterisk's: its CPU saturates first, its REST answers slow down,
//! then time out, and every call set up meanwhile joins a queue of time-outs. So a new call is not
//! taken when voicebot1 already carries its ceiling of calls or of set-ups, or when Asterisk has
//! answered slowly lately or not at all (see [`Responsiveness`]).
//!
//! A slow answer comes late: the calls taken just before it load Asterisk for their whole life,
//! and a gate that opens again as soon as answers speed up lets the next wave in and stalls
//! Asterisk again (measured: REST answers of 1–2 s at 1.5 times the saturating rate). So
//! admission also learns a ceiling of calls at once from those answers, the way TCP learns its
//! window ([`Ceiling`]): cut to 4/5 of the calls active when Asterisk answers slowly or not at
//! all, raised by one call a second while it answers fast. Such a caller gets a defined
//! outcome at once: by default it is hung up with cause congestion (34) by a shedder thread — one
//! request, never queued behind the workers, whose calls may be the ones waiting on Asterisk — or
//! (`on_overload = "transfer"`) it goes to the destination without the bot.
//!
//! This module is the policy, with no I/O: [`Admission::check`] on numbers and Asterisk's
//! [`Responsiveness`]. Its effects — offering a new caller, the shedder threads that hang up the
//! callers not taken — are `intake`'s, beside the reader.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info};
use parking_lot::Mutex;

use crate::call::Phase;
use crate::config::AdmissionConfig;
use crate::ids::CallId;
use crate::metrics::NotTaken;

/// Why a new call is not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overload {
    Calls {
        active: usize,
        max: usize,
    },
    /// The ceiling learned from Asterisk's slow answers (see [`Ceiling`]).
    Ceiling {
        active: usize,
        ceiling: usize,
        cut_at: usize,
    },
    Setups {
        setting_up: usize,
        max: usize,
    },
    Slow {
        average: Duration,
        max: Duration,
    },
    /// One answer of the last two seconds took over the limit (the average may not show it yet).
    SlowAnswer {
        took: Duration,
        max: Duration,
    },
    Unanswered {
        ago: Duration,
    },
}

impl Overload {
    /// The reason's label in `voicebot1_calls_not_taken_total`.
    pub fn reason(&self) -> NotTaken {
        match self {
            Overload::Calls { .. } => NotTaken::Calls,
            Overload::Ceiling { .. } => NotTaken::Ceiling,
            Overload::Setups { .. } => NotTaken::Setups,
            Overload::Slow { .. } | Overload::SlowAnswer { .. } => NotTaken::Slow,
            Overload::Unanswered { .. } => NotTaken::Unanswered,
        }
    }
}

impl fmt::Display for Overload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Overload::Calls { active, max } => write!(f, "{active} calls active, admission.max_calls is {max}"),
            Overload::Ceiling { active, ceiling, cut_at } => write!(
                f,
                "{active} calls active, the learned ceiling is {ceiling}, set when Asterisk answered slowly with {cut_at} active"
            ),
            Overload::Setups { setting_up, max } => write!(f, "{setting_up} calls being set up, admission.max_setups is {max}"),
            Overload::Slow { average, max } => write!(
                f,
                "Asterisk answers REST requests in {} ms on average, admission.max_rest_latency_ms is {}",
                average.as_millis(),
                max.as_millis()
            ),
            Overload::SlowAnswer { took, max } => write!(
                f,
                "a REST request took {} ms in the last 2 s, admission.max_rest_latency_ms is {}",
                took.as_millis(),
                max.as_millis()
            ),
            Overload::Unanswered { ago } => write!(f, "a REST request went unanswered {:.1} s ago", ago.as_secs_f64()),
        }
    }
}

/// A cut lowers the ceiling to this share of the calls active (numerator, denominator).
const CUT: (usize, usize) = (4, 5);
/// The ceiling never goes below this many calls: a box that cannot carry ten calls is sick, and
/// the latency checks shed for it.
const FLOOR: usize = 10;
/// While Asterisk answers fast, the ceiling rises by one call this often.
const RISE_EVERY: Duration = Duration::from_secs(1);
/// Asterisk answers fast when its slowest answer of the last 2 s, and its average, are below
/// `max_rest_latency_ms` divided by this; between that and the limit the ceiling holds.
const FAST_SHARE: u32 = 4;

/// The ceiling of calls at once learned from Asterisk's answers: none until Asterisk first answers
/// slowly or not at all; then cut to 4/5 of the calls active (at most once per 2 s, the time a
/// slow answer counts, and never raised by a cut: while the calls taken before a cut end, the
/// load above the ceiling explains the slow answers), and raised by one call a second while
/// Asterisk answers fast, reached or not: a hiccup at a quiet hour must not cap the busy one, so
/// the memory of a cut fades at one call a second. Held between the two. Like TCP's window, it
/// settles just under the load where Asterisk stalls, and follows the box as it gets faster or
/// slower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ceiling {
    /// `None`: Asterisk has not answered slowly yet.
    calls: Option<usize>,
    /// The calls active at the last cut, for the log.
    cut_at: usize,
    /// When it was last cut (`None`: never).
    cut: Option<Instant>,
    /// When it last moved, cut or risen.
    moved: Instant,
}

/// What Asterisk's answers say about it now.
enum Asterisk {
    Fast,
    /// Slower than fast, not over the limit: the ceiling holds.
    Strained,
    Overloaded(Overload),
}

/// The admission state: the limits, the learned ceiling, and the calls admitted whose first turn
/// has not come yet (the registry holds a call only from then on).
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionConfig,
    ceiling: Mutex<Ceiling>,
    pending: Mutex<HashSet<CallId>>,
}

impl Admission {
    pub fn new(limits: AdmissionConfig) -> Admission {
        let ceiling = Ceiling {
            calls: None,
            cut_at: 0,
            cut: None,
            moved: Instant::now(),
        };
        Admission {
            limits,
            ceiling: Mutex::new(ceiling),
            pending: Mutex::new(HashSet::new()),
        }
    }

    /// The learned ceiling of calls at once; `None` while Asterisk has not answered slowly.
    pub fn ceiling(&self) -> Option<usize> {
        self.ceiling.lock().calls
    }

    /// Whether the call was admitted already (its StasisStart came twice, or the janitor found it
    /// while its first turn was still queued).
    pub fn is_pending(&self, call: &CallId) -> bool {
        self.pending.lock().contains(call)
    }

    /// Whether one more call may be taken now.
    pub fn check(
        &self,
        registry: &HashMap<CallId, Phase>,
        rest: &Responsiveness,
        now: Instant,
    ) -> Result<(), Overload> {
        let l = &self.limits;
        let pending = self.pending.lock().len();
        let active = registry.len() + pending;
        let asterisk = self.asterisk(rest);
        let ceiling = self.learn(active, &asterisk, now);
        if l.max_calls > 0 && active >= l.max_calls {
            return Err(Overload::Calls {
                active,
                max: l.max_calls,
            });
        }
        if let Ceiling {
            calls: Some(ceiling),
            cut_at,
            ..
        } = ceiling
        {
            if active >= ceiling {
                return Err(Overload::Ceiling {
                    active,
                    ceiling,
                    cut_at,
                });
            }
        }
        if l.max_setups > 0 {
            let setting_up = registry.values().filter(|p| **p == Phase::Setup).count() + pending;
            if setting_up >= l.max_setups {
                return Err(Overload::Setups {
                    setting_up,
                    max: l.max_setups,
                });
            }
        }
        match asterisk {
            Asterisk::Overloaded(why) => Err(why),
            Asterisk::Fast | Asterisk::Strained => Ok(()),
        }
    }

    /// What Asterisk's recent answers say.
    fn asterisk(&self, rest: &Responsiveness) -> Asterisk {
        let l = &self.limits;
        if let Some(ago) = rest.since_unanswered().filter(|ago| *ago < l.after_timeout) {
            return Asterisk::Overloaded(Overload::Unanswered { ago });
        }
        let max = l.max_rest_latency;
        if max.is_zero() {
            return Asterisk::Fast;
        }
        let (average, took) = (rest.average(), rest.recent_peak());
        if average > max {
            Asterisk::Overloaded(Overload::Slow { average, max })
        } else if took > max {
            Asterisk::Overloaded(Overload::SlowAnswer { took, max })
        } else if average.max(took) < max / FAST_SHARE {
            Asterisk::Fast
        } else {
            Asterisk::Strained
        }
    }

    /// Moves the learned ceiling by what Asterisk says with `active` calls at once; returns it.
    fn learn(&self, active: usize, asterisk: &Asterisk, now: Instant) -> Ceiling {
        let mut c = self.ceiling.lock();
        match asterisk {
            Asterisk::Overloaded(why)
                if c.cut
                    .is_none_or(|at| now.saturating_duration_since(at) >= RECENT) =>
            {
                let cut = (active * CUT.0 / CUT.1).max(FLOOR);
                if c.calls.is_none_or(|n| cut < n) {
                    let was = c
                        .calls
                        .map_or_else(|| "none".to_string(), |n| n.to_string());
                    info!("admission: Asterisk is overloaded ({why}) with {active} calls active: taking at most {cut} calls at once from now on (was {was})");
                    *c = Ceiling {
                        calls: Some(cut),
                        cut_at: active,
                        cut: Some(now),
                        moved: now,
                    };
                }
            }
            Asterisk::Fast if now.saturating_duration_since(c.moved) >= RISE_EVERY => {
                if let Some(n) = c.calls {
                    c.calls = Some(n + 1);
                    c.moved = now;
                    debug!(
                        "admission: Asterisk answers fast; the ceiling rises to {} calls",
                        n + 1
                    );
                }
            }
            _ => {}
        }
        *c
    }

    /// A call was admitted and posted to its mailbox.
    pub fn admitted(&self, call: &CallId) {
        self.pending.lock().insert(call.clone());
    }

    /// An admitted call's first turn: the registry holds it from now on.
    pub fn taken(&self, call: &CallId) {
        self.pending.lock().remove(call);
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

/// How fast Asterisk has answered REST requests lately: the signal admission control sheds new
/// calls on when Asterisk is overloaded (its CPU saturated, its answers late or missing).
#[derive(Debug)]
pub struct Responsiveness {
    epoch: Instant,
    /// Moving average of answer times (each request weighs 1/8), microseconds.
    average_us: AtomicU64,
    /// When the last request was answered, or went unanswered; ms since `epoch`.
    last_ms: AtomicU64,
    /// When a request last went unanswered (transport error: timeout, refused, reset); ms since
    /// `epoch`, `u64::MAX` for never.
    unanswered_ms: AtomicU64,
    /// The slowest answer of the last `RECENT` (microseconds) and when it came (ms since
    /// `epoch`): a saturated Asterisk answers most requests fast and a few in over a second,
    /// which the average hides.
    peak_us: AtomicU64,
    peak_ms: AtomicU64,
}

/// What says something about Asterisk now: a moving average last fed longer ago than this does
/// not, nor a slowest answer older than this.
pub const RECENT: Duration = Duration::from_secs(2);

impl Responsiveness {
    pub fn new() -> Responsiveness {
        Responsiveness {
            epoch: Instant::now(),
            average_us: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            unanswered_ms: AtomicU64::new(u64::MAX),
            peak_us: AtomicU64::new(0),
            peak_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether `at` (ms since `epoch`, read from one of the fields) is within `RECENT` of `now`.
    fn is_recent(now: u64, at: &AtomicU64) -> bool {
        now.saturating_sub(at.load(Ordering::Relaxed)) <= RECENT.as_millis() as u64
    }

    /// Forget the past: after a (re)connect, what went unanswered before says nothing about the
    /// Asterisk that answers now.
    pub fn reset(&self) {
        self.unanswered_ms.store(u64::MAX, Ordering::Relaxed);
        self.average_us.store(0, Ordering::Relaxed);
        self.last_ms.store(0, Ordering::Relaxed);
        self.peak_us.store(0, Ordering::Relaxed);
    }

    /// One request's answer time; `answered` is false when no HTTP answer came.
    pub fn record(&self, took: Duration, answered: bool) {
        let now = self.now_ms();
        if !answered {
            self.unanswered_ms.store(now, Ordering::Relaxed);
        }
        let sample = took.as_micros().min(u64::MAX as u128) as u64;
        // Concurrent updates may lose one sample: an estimate needs no lock.
        let old = if Self::is_recent(now, &self.last_ms) {
            self.average_us.load(Ordering::Relaxed)
        } else {
            sample
        };
        self.average_us
            .store(old - old / 8 + sample / 8, Ordering::Relaxed);
        self.last_ms.store(now, Ordering::Relaxed);
        if !Self::is_recent(now, &self.peak_ms) || sample >= self.peak_us.load(Ordering::Relaxed) {
            self.peak_us.store(sample, Ordering::Relaxed);
            self.peak_ms.store(now, Ordering::Relaxed);
        }
    }

    /// The slowest answer of the last two seconds; zero when none came.
    pub fn recent_peak(&self) -> Duration {
        if !Self::is_recent(self.now_ms(), &self.peak_ms) {
            return Duration::ZERO;
        }
        Duration::from_micros(self.peak_us.load(Ordering::Relaxed))
    }

    /// The recent average answer time; zero when no request was made lately.
    pub fn average(&self) -> Duration {
        if !Self::is_recent(self.now_ms(), &self.last_ms) {
            return Duration::ZERO;
        }
        Duration::from_micros(self.average_us.load(Ordering::Relaxed))
    }

    /// How long ago a request last went unanswered.
    pub fn since_unanswered(&self) -> Option<Duration> {
        match self.unanswered_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            at => Some(Duration::from_millis(self.now_ms().saturating_sub(at))),
        }
    }
}

impl Default for Responsiveness {
    fn default() -> Self {
        Responsiveness::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::OnOverload;

    fn limits(max_calls: usize, max_setups: usize, max_rest_latency_ms: u64) -> AdmissionConfig {
        AdmissionConfig {
            max_calls,
            max_setups,
            max_rest_latency: Duration::from_millis(max_rest_latency_ms),
            after_timeout: Duration::from_secs(2),
            on_overload: OnOverload::Reject,
        }
    }

    fn registry(phases: &[Phase]) -> HashMap<CallId, Phase> {
        phases
            .iter()
            .enumerate()
            .map(|(i, p)| (CallId(i.to_string()), *p))
            .collect()
    }

    #[test]
    fn the_call_ceiling_counts_admitted_calls_not_yet_started() {
        let a = Admission::new(limits(3, 0, 0));
        let rest = Responsiveness::new();
        let reg = registry(&[Phase::Connected, Phase::Media]);
        assert_eq!(a.check(&reg, &rest, Instant::now()), Ok(()));
        a.admitted(&CallId("9".into()));
        assert!(a.is_pending(&CallId("9".into())));
        assert_eq!(
            a.check(&reg, &rest, Instant::now()),
            Err(Overload::Calls { active: 3, max: 3 })
        );
        a.taken(&CallId("9".into()));
        a.taken(&CallId("9".into()));
        assert_eq!(a.check(&reg, &rest, Instant::now()), Ok(()));
    }

    #[test]
    fn the_setup_ceiling_counts_only_calls_in_set_up() {
        let a = Admission::new(limits(0, 2, 0));
        let rest = Responsiveness::new();
        assert_eq!(
            a.check(
                &registry(&[Phase::Setup, Phase::Transfer, Phase::Connected]),
                &rest,
                Instant::now()
            ),
            Ok(())
        );
        let err = a.check(
            &registry(&[Phase::Setup, Phase::Setup]),
            &rest,
            Instant::now(),
        );
        assert_eq!(
            err,
            Err(Overload::Setups {
                setting_up: 2,
                max: 2
            })
        );
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("admission.max_setups is 2"));
    }

    #[test]
    fn slow_or_unanswered_rest_requests_shed_new_calls() {
        let a = Admission::new(limits(0, 0, 100));
        let rest = Responsiveness::new();
        let reg = registry(&[]);
        for _ in 0..40 {
            rest.record(Duration::from_millis(5), true);
        }
        assert_eq!(a.check(&reg, &rest, Instant::now()), Ok(()));
        for _ in 0..40 {
            rest.record(Duration::from_millis(400), true);
        }
        assert!(
            matches!(
                a.check(&reg, &rest, Instant::now()),
                Err(Overload::Slow { .. })
            ),
            "{:?}",
            rest.average()
        );
        for _ in 0..60 {
            rest.record(Duration::from_millis(2), true);
        }
        assert!(
            matches!(
                a.check(&reg, &rest, Instant::now()),
                Err(Overload::SlowAnswer { .. })
            ),
            "the slowest answer still counts for 2 s"
        );
        // Two seconds later the slow answers are history.
        let rest = Responsiveness::new();
        for _ in 0..60 {
            rest.record(Duration::from_millis(2), true);
        }
        assert_eq!(
            a.check(&reg, &rest, Instant::now()),
            Ok(()),
            "recovers as answers speed up: {:?}",
            rest.average()
        );
        // One answer over the limit among fast ones: the average stays low, the call is not taken.
        rest.record(Duration::from_millis(150), true);
        rest.record(Duration::from_millis(2), true);
        assert!(
            rest.average() < Duration::from_millis(100),
            "{:?}",
            rest.average()
        );
        assert_eq!(
            a.check(&reg, &rest, Instant::now()),
            Err(Overload::SlowAnswer {
                took: Duration::from_millis(150),
                max: Duration::from_millis(100)
            })
        );
        rest.record(Duration::from_millis(5000), false);
        assert!(matches!(
            a.check(&reg, &rest, Instant::now()),
            Err(Overload::Unanswered { .. })
        ));
        // A reconnect: the Asterisk that answers now is not the one that did not.
        rest.reset();
        assert_eq!(a.check(&reg, &rest, Instant::now()), Ok(()));
    }

    #[test]
    fn a_ceiling_is_learned_from_slow_answers_and_rises_while_answers_are_fast() {
        let a = Admission::new(limits(0, 0, 400));
        let (fast, slow) = (Responsiveness::new(), Responsiveness::new());
        fast.record(Duration::from_millis(5), true);
        slow.record(Duration::from_millis(900), true);
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let reg = registry(&[Phase::Connected; 100]);
        assert_eq!(a.check(&reg, &fast, at(0.0)), Ok(()));
        assert_eq!(
            a.ceiling(),
            None,
            "nothing learned while Asterisk answers fast"
        );

        // A slow answer with 100 calls active: cut to 80, and this caller is not taken.
        assert_eq!(
            a.check(&reg, &slow, at(1.0)),
            Err(Overload::Ceiling {
                active: 100,
                ceiling: 80,
                cut_at: 100
            })
        );
        assert_eq!(a.ceiling(), Some(80));
        // The same slow answer a moment later cuts no further: one cut per 2 s.
        let reg = registry(&[Phase::Connected; 80]);
        assert!(a.check(&reg, &slow, at(2.0)).is_err());
        assert_eq!(a.ceiling(), Some(80));
        // Still slow 2 s on with the calls down to the ceiling: cut again, to 64.
        assert!(a.check(&reg, &slow, at(3.0)).is_err());
        assert_eq!(a.ceiling(), Some(64));
        // Still slow while the calls over the ceiling end: no cut (they explain it).
        assert!(a.check(&reg, &slow, at(6.0)).is_err());
        assert_eq!(a.ceiling(), Some(64));

        // Fast answers: one call more per second (the first rise is due at once: the last move
        // was the cut at 3 s).
        let reg = registry(&[Phase::Connected; 64]);
        assert_eq!(a.check(&reg, &fast, at(6.5)), Ok(()));
        assert_eq!(a.ceiling(), Some(65));
        assert!(matches!(a.check(&reg, &fast, at(7.0)), Ok(())));
        assert_eq!(a.ceiling(), Some(65), "not twice in one second");
        assert_eq!(a.check(&reg, &fast, at(7.5)), Ok(()));
        assert_eq!(a.ceiling(), Some(66));
        let reg = registry(&[Phase::Connected; 66]);
        assert_eq!(
            a.check(&reg, &fast, at(7.6)),
            Err(Overload::Ceiling {
                active: 66,
                ceiling: 66,
                cut_at: 80
            })
        );

        // Between fast and slow (a 150 ms answer, the limit 400 ms): the ceiling holds.
        let strained = Responsiveness::new();
        strained.record(Duration::from_millis(150), true);
        assert_eq!(
            a.check(&registry(&[Phase::Connected; 64]), &strained, at(20.0)),
            Ok(())
        );
        assert_eq!(a.ceiling(), Some(66));

        // An unanswered request cuts as a slow answer does, never below the floor.
        let gone = Responsiveness::new();
        gone.record(Duration::from_secs(5), false);
        assert!(matches!(
            a.check(&registry(&[Phase::Media; 3]), &gone, at(30.0)),
            Err(Overload::Unanswered { .. })
        ));
        assert_eq!(a.ceiling(), Some(FLOOR));
        let err = a
            .check(&registry(&[Phase::Media; 10]), &fast, at(30.5))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("learned ceiling is 10, set when Asterisk answered slowly with 3 active"),
            "{err}"
        );
    }
}
