//! A circuit breaker per upstream provider: stop sending requests to an upstream that is
//! failing, try again after a cooldown with a few probe requests, and resume when they
//! succeed.
//!
//! Owns the state machine only. It never sleeps, reads a clock or decides what counts as a
//! failure: the caller passes `now` (an [`Instant`], so tests walk time by adding
//! durations) and says whether each request succeeded. Every state change is returned as a
//! [`Transition`] so the caller can write it to the audit log and metrics.
//!
//! ```text
//!  Closed --(failures/requests >= ratio, requests >= min, within window)--> Open
//!  Open   --(cooldown elapsed; the first try_acquire after it)-----------> HalfOpen
//!  HalfOpen --(half_open_probes probes all succeeded)---------------------> Closed
//!  HalfOpen --(any probe failed)-------------------------------------------> Open (cooldown restarts)
//! ```
//!
//! A permit dropped without [`Permit::record`] is **neutral**: it counts as neither
//! success nor failure, and a dropped half-open probe frees its slot for another probe.
//! Dropping happens when the client went away or the gateway task was cancelled, which says
//! nothing about the upstream; a request that timed out waiting for the upstream must be
//! recorded as a failure explicitly.

#![forbid(unsafe_code)]

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a caller refused because every half-open probe slot is taken is told to wait:
/// the probes are in flight and will settle the question soon, far sooner than a cooldown.
pub const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a breaker configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakerError {
    #[error("circuit breaker setting {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Breaker settings. Ratios are integers in permille (500 = 50%) so configuration and
/// comparisons stay exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// How far back outcomes count.
    pub window: Duration,
    /// The window is kept as this many buckets; an outcome stops counting when its bucket
    /// leaves the window, so the effective window is between `window - window/buckets` and
    /// `window` long.
    pub buckets: u32,
    /// Fewer outcomes than this in the window never open the breaker (one failure out of
    /// one request is not a trend).
    pub min_requests: u32,
    /// Open when failures × 1000 >= requests × this, in the window. 1..=1000.
    pub failure_permille: u32,
    /// How long an open breaker refuses before letting probes through.
    pub cooldown: Duration,
    /// Probe requests allowed at once while half-open; this many successes close it.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            window: Duration::from_secs(30),
            buckets: 10,
            min_requests: 10,
            failure_permille: 500,
            cooldown: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }
}

impl BreakerConfig {
    pub fn validate(&self) -> Result<(), BreakerError> {
        let bad = |field, reason: &str| {
            Err(BreakerError::Invalid {
                field,
                reason: reason.to_string(),
            })
        };
        if self.window.is_zero() {
            return bad("window", "must be longer than zero");
        }
        if !(1..=1000).contains(&self.buckets) {
            return bad("buckets", "must be between 1 and 1000");
        }
        if self.min_requests == 0 {
            return bad("min_requests", "must be at least 1");
        }
        if !(1..=1000).contains(&self.failure_permille) {
            return bad(
                "failure_permille",
                "must be between 1 and 1000 (permille: 500 = 50%)",
            );
        }
        if !(1..=100).contains(&self.half_open_probes) {
            return bad("half_open_probes", "must be between 1 and 100");
        }
        Ok(())
    }
}

/// What the breaker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// Stable lowercase name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Closed → Open.
    FailureRatio {
        failures: u32,
        requests: u32,
        window: Duration,
    },
    /// Open → HalfOpen.
    CooldownElapsed { cooldown: Duration },
    /// HalfOpen → Closed.
    ProbesSucceeded { probes: u32 },
    /// HalfOpen → Open.
    ProbeFailed,
}

/// A change of state, for the audit log and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub reason: Reason,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit {} -> {}: ", self.from, self.to)?;
        match &self.reason {
            Reason::FailureRatio {
                failures,
                requests,
                window,
            } => write!(
                f,
                "{failures} of {requests} requests failed in the last {}s",
                window.as_secs()
            ),
            Reason::CooldownElapsed { cooldown } => {
                write!(f, "cooldown of {}s elapsed, probing", cooldown.as_secs())
            }
            Reason::ProbesSucceeded { probes } => write!(f, "{probes} probe(s) succeeded"),
            Reason::ProbeFailed => f.write_str("a probe failed, cooldown restarts"),
        }
    }
}

/// A refused request: the breaker is open (or all half-open probe slots are in use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("upstream circuit is {state}; retry after {}s", retry_after.as_secs().max(1))]
pub struct BreakerOpen {
    pub state: State,
    pub retry_after: Duration,
}

/// Counters for /metrics. Totals count since the breaker was made; `window_*` are the
/// outcomes currently inside the rolling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub successes: u64,
    pub failures: u64,
    /// Permits dropped without an outcome.
    pub dropped: u64,
    /// `try_acquire` calls refused.
    pub rejected: u64,
    /// Times the breaker went to Open.
    pub opened: u64,
    pub window_requests: u32,
    pub window_failures: u32,
    pub probes_in_flight: u32,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// `issued` probe permits are out or have succeeded; `succeeded` of them succeeded.
    HalfOpen {
        issued: u32,
        succeeded: u32,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    requests: u32,
    failures: u32,
}

#[derive(Debug)]
struct Core {
    phase: Phase,
    /// Bumped on every transition. A permit remembers the generation it was issued in;
    /// outcomes of permits from an earlier generation (in flight across a transition)
    /// update the totals but not the state machine, so a slow request issued while closed
    /// cannot close a breaker that has since reopened, nor count as a probe.
    generation: u64,
    /// Time zero for bucket numbering: the first `now` seen.
    origin: Option<Instant>,
    /// Latest `now` seen. Callers on several threads read the clock before taking the lock,
    /// so `now` can arrive slightly out of order; time never runs backwards in here.
    latest: Option<Instant>,
    buckets: Vec<Bucket>,
    stats: Stats,
}

struct Inner {
    config: BreakerConfig,
    bucket_len: Duration,
    core: Mutex<Core>,
}

impl Inner {
    /// Every update under the lock is a handful of assignments that cannot panic midway,
    /// so a poisoned lock still holds consistent data.
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Core {
    fn clamp(&mut self, now: Instant) -> Instant {
        let now = match self.latest {
            Some(l) if l > now => l,
            _ => now,
        };
        self.latest = Some(now);
        self.origin.get_or_insert(now);
        now
    }

    fn epoch(&self, now: Instant, bucket_len: Duration) -> u64 {
        let since = self
            .origin
            .map_or(Duration::ZERO, |o| now.saturating_duration_since(o));
        let e = since.as_nanos() / bucket_len.as_nanos().max(1);
        u64::try_from(e).unwrap_or(u64::MAX)
    }

    /// (requests, failures) in the window ending at bucket `epoch`.
    fn window(&self, epoch: u64) -> (u32, u32) {
        let n = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|b| b.epoch <= epoch && b.epoch + n > epoch && b.requests > 0)
            .fold((0u32, 0u32), |(r, f), b| {
                (r.saturating_add(b.requests), f.saturating_add(b.failures))
            })
    }

    fn add(&mut self, epoch: u64, failed: bool) {
        let n = self.buckets.len() as u64;
        let slot = &mut self.buckets[(epoch % n) as usize];
        if slot.epoch != epoch || slot.requests == 0 {
            *slot = Bucket {
                epoch,
                requests: 0,
                failures: 0,
            };
        }
        slot.requests = slot.requests.saturating_add(1);
        slot.failures = slot.failures.saturating_add(u32::from(failed));
    }

    fn go(&mut self, phase: Phase, from: State, to: State, reason: Reason) -> Transition {
        self.phase = phase;
        self.generation += 1;
        if to == State::Open {
            self.stats.opened += 1;
        }
        if to == State::Closed {
            // A fresh start: the failures that opened the breaker must not reopen it.
            self.buckets.iter_mut().for_each(|b| *b = Bucket::default());
        }
        Transition { from, to, reason }
    }

    fn state(&self) -> State {
        match self.phase {
            Phase::Closed => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }
}

/// A circuit breaker. `&self` methods, safe to share between threads; cloning is cheap and
/// shares the same state.
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Result<CircuitBreaker, BreakerError> {
        config.validate()?;
        let bucket_len = (config.window / config.buckets).max(Duration::from_nanos(1));
        Ok(CircuitBreaker {
            inner: Arc::new(Inner {
                config,
                bucket_len,
                core: Mutex::new(Core {
                    phase: Phase::Closed,
                    generation: 0,
                    origin: None,
                    latest: None,
                    buckets: vec![Bucket::default(); config.buckets as usize],
                    stats: Stats::default(),
                }),
            }),
        })
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.inner.config
    }

    /// Asks to send one request. Closed: always granted. Open: refused until the cooldown
    /// has passed; the first call after it moves to HalfOpen and gets the first probe
    /// (the permit then carries that [`Transition`]). HalfOpen: granted while fewer than
    /// `half_open_probes` probes are out.
    pub fn try_acquire(&self, now: Instant) -> Result<Permit, BreakerOpen> {
        let cfg = &self.inner.config;
        let mut core = self.inner.lock();
        let now = core.clamp(now);
        let (probe, transition) = match core.phase {
            Phase::Closed => (false, None),
            Phase::Open { until } if now < until => {
                core.stats.rejected += 1;
                return Err(BreakerOpen {
                    state: State::Open,
                    retry_after: until - now,
                });
            }
            Phase::Open { .. } => {
                let t = core.go(
                    Phase::HalfOpen {
                        issued: 1,
                        succeeded: 0,
                    },
                    State::Open,
                    State::HalfOpen,
                    Reason::CooldownElapsed {
                        cooldown: cfg.cooldown,
                    },
                );
                (true, Some(t))
            }
            Phase::HalfOpen { issued, succeeded } => {
                if issued >= cfg.half_open_probes {
                    core.stats.rejected += 1;
                    return Err(BreakerOpen {
                        state: State::HalfOpen,
                        retry_after: HALF_OPEN_RETRY_AFTER,
                    });
                }
                core.phase = Phase::HalfOpen {
                    issued: issued + 1,
                    succeeded,
                };
                (true, None)
            }
        };
        Ok(Permit {
            inner: Arc::clone(&self.inner),
            generation: core.generation,
            probe,
            transition,
            open: true,
        })
    }

    /// The state as of the last call; an Open breaker whose cooldown has passed still
    /// reads Open until the next `try_acquire`.
    pub fn state(&self) -> State {
        self.inner.lock().state()
    }

    pub fn stats(&self) -> Stats {
        let core = self.inner.lock();
        let mut s = core.stats;
        let now = core.latest;
        let epoch = now.map_or(0, |n| core.epoch(n, self.inner.bucket_len));
        (s.window_requests, s.window_failures) = core.window(epoch);
        s.probes_in_flight = match core.phase {
            Phase::HalfOpen { issued, succeeded } => issued - succeeded,
            _ => 0,
        };
        s
    }
}

/// Permission to send one request. Report its outcome with [`Permit::record`]; dropping
/// it unrecorded is neutral (see the module docs).
#[must_use = "record the request's outcome with Permit::record"]
pub struct Permit {
    inner: Arc<Inner>,
    generation: u64,
    probe: bool,
    transition: Option<Transition>,
    open: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("probe", &self.probe)
            .field("transition", &self.transition)
            .finish()
    }
}

impl Permit {
    /// Whether this request is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The transition acquiring this permit caused (Open → HalfOpen), if any.
    pub fn transition(&self) -> Option<&Transition> {
        self.transition.as_ref()
    }

    /// Reports the request's outcome; returns the transition it caused, if any.
    pub fn record(mut self, success: bool, now: Instant) -> Option<Transition> {
        self.open = false;
        let cfg = &self.inner.config;
        let bucket_len = self.inner.bucket_len;
        let mut core = self.inner.lock();
        let now = core.clamp(now);
        if success {
            core.stats.successes += 1;
        } else {
            core.stats.failures += 1;
        }
        if self.generation != core.generation {
            return None;
        }
        match core.phase {
            Phase::Closed => {
                let epoch = core.epoch(now, bucket_len);
                core.add(epoch, !success);
                let (requests, failures) = core.window(epoch);
                let tripped = requests >= cfg.min_requests
                    && u64::from(failures) * 1000
                        >= u64::from(requests) * u64::from(cfg.failure_permille);
                tripped.then(|| {
                    core.go(
                        Phase::Open {
                            until: now + cfg.cooldown,
                        },
                        State::Closed,
                        State::Open,
                        Reason::FailureRatio {
                            failures,
                            requests,
                            window: cfg.window,
                        },
                    )
                })
            }
            // Only a permit of the current generation gets here, and none is issued while
            // open; kept for completeness.
            Phase::Open { .. } => None,
            Phase::HalfOpen { issued, succeeded } => {
                if !success {
                    return Some(core.go(
                        Phase::Open {
                            until: now + cfg.cooldown,
                        },
                        State::HalfOpen,
                        State::Open,
                        Reason::ProbeFailed,
                    ));
                }
                let succeeded = succeeded + 1;
                if succeeded >= cfg.half_open_probes {
                    return Some(core.go(
                        Phase::Closed,
                        State::HalfOpen,
                        State::Closed,
                        Reason::ProbesSucceeded {
                            probes: cfg.half_open_probes,
                        },
                    ));
                }
                core.phase = Phase::HalfOpen { issued, succeeded };
                None
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let mut core = self.inner.lock();
        core.stats.dropped += 1;
        if let (true, Phase::HalfOpen { issued, succeeded }) =
            (self.probe && self.generation == core.generation, core.phase)
        {
            core.phase = Phase::HalfOpen {
                issued: issued.saturating_sub(1).max(succeeded),
                succeeded,
            };
        }
    }
}
