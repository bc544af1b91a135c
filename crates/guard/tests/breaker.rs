//! The circuit breaker walked through every transition on an injected clock: no test
//! sleeps, time is `t0 + offset`.

use ironcage_guard::breaker::{
    BreakerConfig, BreakerError, BreakerOpen, CircuitBreaker, Reason, State, Transition,
    HALF_OPEN_RETRY_AFTER,
};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn config() -> BreakerConfig {
    BreakerConfig {
        window: secs(30),
        buckets: 10,
        min_requests: 10,
        failure_permille: 500,
        cooldown: secs(30),
        half_open_probes: 2,
    }
}

fn breaker() -> (CircuitBreaker, Instant) {
    (CircuitBreaker::new(config()).unwrap(), Instant::now())
}

/// Sends one request at `at` with the given outcome; returns the transition, if any.
fn send(b: &CircuitBreaker, at: Instant, ok: bool) -> Option<Transition> {
    b.try_acquire(at).expect("breaker refused").record(ok, at)
}

/// Opens a fresh breaker at `t0`: 10 failures.
fn opened() -> (CircuitBreaker, Instant) {
    let (b, t0) = breaker();
    for i in 0..9 {
        assert_eq!(send(&b, t0, false), None, "request {i}");
    }
    let t = send(&b, t0, false).expect("the 10th failure opens");
    assert_eq!((t.from, t.to), (State::Closed, State::Open));
    (b, t0)
}

#[test]
fn closed_opens_at_the_failure_ratio_once_min_requests_is_reached() {
    let (b, t0) = breaker();
    // 5 successes, then failures: the 10th request makes 5/10 = 50% and opens.
    for _ in 0..5 {
        assert_eq!(send(&b, t0, true), None);
    }
    for _ in 0..4 {
        assert_eq!(send(&b, t0, false), None);
    }
    assert_eq!(b.state(), State::Closed);
    let t = send(&b, t0 + secs(1), false).unwrap();
    assert_eq!(
        t,
        Transition {
            from: State::Closed,
            to: State::Open,
            reason: Reason::FailureRatio {
                failures: 5,
                requests: 10,
                window: secs(30)
            }
        }
    );
    assert_eq!(
        t.to_string(),
        "circuit closed -> open: 5 of 10 requests failed in the last 30s"
    );
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.stats().opened, 1);
}

#[test]
fn below_the_ratio_stays_closed() {
    let (b, t0) = breaker();
    // One failure in three, spread evenly: never half.
    for i in 0..100 {
        assert_eq!(send(&b, t0, i % 3 != 2), None, "request {i}");
    }
    // 4 of 9 then a success: 4 of 10, still closed.
    let (b, t0) = breaker();
    for i in 0..9 {
        assert_eq!(send(&b, t0, i >= 4), None, "request {i}");
    }
    assert_eq!(send(&b, t0, true), None);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn fewer_than_min_requests_never_open_even_if_all_fail() {
    let (b, t0) = breaker();
    for _ in 0..9 {
        assert_eq!(send(&b, t0, false), None);
    }
    assert_eq!(b.state(), State::Closed);
    let s = b.stats();
    assert_eq!((s.window_requests, s.window_failures), (9, 9));
}

#[test]
fn a_success_that_reaches_min_requests_can_open_too() {
    let (b, t0) = breaker();
    for _ in 0..5 {
        send(&b, t0, false);
    }
    for _ in 0..4 {
        send(&b, t0, true);
    }
    let t = send(&b, t0, true).expect("5 of 10 failed");
    assert_eq!(t.to, State::Open);
}

#[test]
fn old_failures_leave_the_window() {
    let (b, t0) = breaker();
    for _ in 0..9 {
        send(&b, t0, false);
    }
    // 30 s later the bucket holding those failures has left the window.
    let later = t0 + secs(30);
    assert_eq!(send(&b, later, false), None);
    let s = b.stats();
    assert_eq!((s.window_requests, s.window_failures), (1, 1));
    assert_eq!(b.state(), State::Closed);
    // Failures spread inside the window still count together: 9 more over 27 s open it.
    let mut opened = None;
    for i in 1..=9u64 {
        opened = send(&b, later + secs(3 * i), false).or(opened);
    }
    assert_eq!(opened.map(|t| t.to), Some(State::Open));
}

#[test]
fn outcomes_within_the_window_but_in_an_expired_bucket_do_not_count() {
    let (b, t0) = breaker();
    for _ in 0..9 {
        send(&b, t0 + secs(2), false);
    }
    // Buckets are 3 s long; at t0+32 the bucket [0,3) is out, so the 9 failures are gone.
    assert_eq!(send(&b, t0 + secs(32), false), None);
    assert_eq!(b.stats().window_requests, 1);
    // At t0+29 they would all still count (checked on a fresh breaker).
    let (b2, t0) = breaker();
    for _ in 0..9 {
        send(&b2, t0 + secs(2), false);
    }
    assert_eq!(
        send(&b2, t0 + secs(29), false).map(|t| t.to),
        Some(State::Open)
    );
}

#[test]
fn open_refuses_until_the_cooldown_then_half_opens_with_a_probe() {
    let (b, t0) = opened();
    let e = b.try_acquire(t0 + secs(10)).unwrap_err();
    assert_eq!(
        e,
        BreakerOpen {
            state: State::Open,
            retry_after: secs(20)
        }
    );
    assert_eq!(e.to_string(), "upstream circuit is open; retry after 20s");
    assert!(b
        .try_acquire(t0 + secs(30) - Duration::from_nanos(1))
        .is_err());
    assert_eq!(b.stats().rejected, 2);
    let p = b.try_acquire(t0 + secs(30)).unwrap();
    assert!(p.is_probe());
    assert_eq!(
        p.transition(),
        Some(&Transition {
            from: State::Open,
            to: State::HalfOpen,
            reason: Reason::CooldownElapsed { cooldown: secs(30) }
        })
    );
    assert_eq!(b.state(), State::HalfOpen);
    drop(p);
}

#[test]
fn half_open_allows_only_the_configured_number_of_probes() {
    let (b, t0) = opened();
    let t = t0 + secs(30);
    let p1 = b.try_acquire(t).unwrap();
    let p2 = b.try_acquire(t).unwrap();
    assert!(
        p2.transition().is_none(),
        "only the first acquire transitions"
    );
    let e = b.try_acquire(t).unwrap_err();
    assert_eq!(
        e,
        BreakerOpen {
            state: State::HalfOpen,
            retry_after: HALF_OPEN_RETRY_AFTER
        }
    );
    assert_eq!(b.stats().probes_in_flight, 2);
    // A succeeded probe does not free a slot: the total number of probes is bounded.
    assert_eq!(p1.record(true, t), None);
    assert!(b.try_acquire(t).is_err());
    let closed = p2.record(true, t).unwrap();
    assert_eq!(
        closed,
        Transition {
            from: State::HalfOpen,
            to: State::Closed,
            reason: Reason::ProbesSucceeded { probes: 2 }
        }
    );
    assert_eq!(b.state(), State::Closed);
    // Closing starts from a clean window: one failure does not reopen it.
    assert_eq!(send(&b, t, false), None);
    assert_eq!(b.stats().window_requests, 1);
}

#[test]
fn a_failed_probe_reopens_and_restarts_the_cooldown() {
    let (b, t0) = opened();
    let t = t0 + secs(31);
    let p1 = b.try_acquire(t).unwrap();
    let p2 = b.try_acquire(t).unwrap();
    let reopened = p1.record(false, t).unwrap();
    assert_eq!(
        (reopened.from, reopened.to, reopened.reason.clone()),
        (State::HalfOpen, State::Open, Reason::ProbeFailed)
    );
    assert_eq!(b.stats().opened, 2);
    // The other probe, issued before the reopening, cannot close the breaker.
    assert_eq!(p2.record(true, t), None);
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        b.try_acquire(t + secs(29)).unwrap_err().retry_after,
        secs(1)
    );
    let p = b.try_acquire(t + secs(30)).unwrap();
    assert_eq!(p.transition().map(|t| t.to), Some(State::HalfOpen));
    drop(p);
}

#[test]
fn a_dropped_probe_is_neutral_and_frees_its_slot() {
    let (b, t0) = opened();
    let t = t0 + secs(30);
    let p1 = b.try_acquire(t).unwrap();
    let p2 = b.try_acquire(t).unwrap();
    assert!(b.try_acquire(t).is_err());
    drop(p1);
    assert_eq!(
        b.state(),
        State::HalfOpen,
        "a dropped probe neither opens nor closes"
    );
    let p3 = b
        .try_acquire(t)
        .expect("the dropped probe's slot is free again");
    assert_eq!(p2.record(true, t), None);
    assert_eq!(p3.record(true, t).map(|t| t.to), Some(State::Closed));
    let s = b.stats();
    assert_eq!((s.dropped, s.successes), (1, 2));
}

#[test]
fn dropped_permits_in_closed_state_count_for_nothing() {
    let (b, t0) = breaker();
    for _ in 0..50 {
        drop(b.try_acquire(t0).unwrap());
    }
    let s = b.stats();
    assert_eq!(
        (s.window_requests, s.dropped, s.successes, s.failures),
        (0, 50, 0, 0)
    );
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn permits_from_before_a_transition_do_not_steer_the_new_state() {
    let (b, t0) = breaker();
    let slow: Vec<_> = (0..10).map(|_| b.try_acquire(t0).unwrap()).collect();
    for _ in 0..10 {
        send(&b, t0, false);
    }
    assert_eq!(b.state(), State::Open);
    // Closed-era permits finishing while open: counted in totals only.
    for p in slow {
        assert_eq!(p.record(true, t0 + secs(1)), None);
    }
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.stats().successes, 10);
}

#[test]
fn time_running_backwards_between_callers_is_harmless() {
    let (b, t0) = breaker();
    let late = t0 + secs(100);
    send(&b, late, true);
    // A caller that read the clock earlier but locked later.
    for _ in 0..20 {
        send(&b, t0, true);
    }
    assert_eq!(b.stats().window_requests, 21);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn concurrent_callers_get_exactly_the_probe_limit() {
    let (b, t0) = opened();
    let t = t0 + secs(30);
    let threads = 32;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (b, barrier) = (b.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                b.try_acquire(t).ok().map(|p| (p.transition().cloned(), p))
            })
        })
        .collect();
    let permits: Vec<_> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(permits.len(), 2);
    let transitions = permits.iter().filter(|(t, _)| t.is_some()).count();
    assert_eq!(transitions, 1, "exactly one caller saw Open -> HalfOpen");
    assert_eq!(b.stats().rejected, threads as u64 - 2);
}

#[test]
fn concurrent_failures_open_exactly_once() {
    let (b, t0) = breaker();
    let threads = 40;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (b, barrier) = (b.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                b.try_acquire(t0).ok().and_then(|p| p.record(false, t0))
            })
        })
        .collect();
    let opens = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .filter(|t| t.to == State::Open)
        .count();
    assert_eq!(opens, 1);
    assert_eq!(b.stats().opened, 1);
}

#[test]
fn config_is_validated() {
    let bad = |f: fn(&mut BreakerConfig), field: &str| {
        let mut c = config();
        f(&mut c);
        let e = CircuitBreaker::new(c).unwrap_err();
        let BreakerError::Invalid { field: got, .. } = &e;
        assert_eq!(*got, field, "{e}");
    };
    bad(|c| c.window = Duration::ZERO, "window");
    bad(|c| c.buckets = 0, "buckets");
    bad(|c| c.min_requests = 0, "min_requests");
    bad(|c| c.failure_permille = 0, "failure_permille");
    bad(|c| c.failure_permille = 1001, "failure_permille");
    bad(|c| c.half_open_probes = 0, "half_open_probes");
    assert!(BreakerConfig::default().validate().is_ok());
    // A 100% threshold opens only when every request failed.
    let mut c = config();
    c.failure_permille = 1000;
    let b = CircuitBreaker::new(c).unwrap();
    let t0 = Instant::now();
    send(&b, t0, true);
    for _ in 0..20 {
        assert_eq!(send(&b, t0, false), None);
    }
}

#[test]
fn state_names_are_stable_for_metrics() {
    assert_eq!(State::Closed.to_string(), "closed");
    assert_eq!(State::Open.as_str(), "open");
    assert_eq!(State::HalfOpen.as_str(), "half-open");
}
