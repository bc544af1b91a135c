//! Spending limits: an in-memory [`Ledger`] of named scopes ("run:<id>", "key:<id>",
//! "agent:<name>"), each with a limit, money spent and money reserved by requests in flight.
//!
//! Owns the admission arithmetic and nothing else: it does not price tokens (see
//! `prices`), persist totals, or talk to providers. A request first [`Ledger::reserve`]s its
//! worst-case cost on every scope it belongs to, all or nothing, then
//! [`Reservation::settle`]s with what the provider actually billed. One mutex guards all
//! scopes, so a check and the reservation that follows it can never interleave with
//! another request's: two requests can never both take the last dollar.
//!
//! Real usage is always recorded, even past the limit (the provider bills it whether we
//! like it or not); the scope's remainder then goes negative and later reservations are
//! refused until the period resets.

#![forbid(unsafe_code)]

use crate::money::Usd;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why budget configuration text is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("`{text}` is not a budget period. Hint: use never, hourly, daily, monthly, or a duration such as 90s, 15m, 12h or 7d")]
    BadPeriod { text: String },
}

/// Wall-clock source, injected so tests can cross period boundaries without sleeping.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to, in whole milliseconds since the Unix epoch.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn at_unix_secs(secs: u64) -> ManualClock {
        ManualClock(AtomicU64::new(secs.saturating_mul(1000)))
    }

    pub fn set_unix_secs(&self, secs: u64) {
        self.0.store(secs.saturating_mul(1000), Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// When a scope's `spent` goes back to zero. Calendar periods follow UTC (hour, midnight,
/// first of the month); `Every(d)` windows are multiples of `d` since the Unix epoch, so
/// a restarted process agrees with the one before it on where a window starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Period {
    #[default]
    Never,
    Hourly,
    Daily,
    Monthly,
    Every(Duration),
}

impl Period {
    /// `never`, `hourly`, `daily`, `monthly`, or `<n>s|m|h|d` (at least one second).
    pub fn parse(text: &str) -> Result<Period, BudgetError> {
        let bad = || BudgetError::BadPeriod {
            text: text.chars().take(48).collect(),
        };
        let t = text.trim().to_ascii_lowercase();
        match t.as_str() {
            "never" => return Ok(Period::Never),
            "hourly" => return Ok(Period::Hourly),
            "daily" => return Ok(Period::Daily),
            "monthly" => return Ok(Period::Monthly),
            _ => {}
        }
        let unit_at = t.len().checked_sub(1).ok_or_else(bad)?;
        let (n, unit) = t.split_at(unit_at);
        let n: u64 = n.parse().map_err(|_| bad())?;
        let secs = match unit {
            "s" => Some(n),
            "m" => n.checked_mul(60),
            "h" => n.checked_mul(3600),
            "d" => n.checked_mul(86_400),
            _ => None,
        };
        match secs {
            Some(s) if s > 0 => Ok(Period::Every(Duration::from_secs(s))),
            _ => Err(bad()),
        }
    }

    /// Which window `now` falls in, and when the next one starts (`None`: never).
    fn window(self, now: SystemTime) -> (u64, Option<SystemTime>) {
        let ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let secs = ms / 1000;
        let at = |s: u64| Some(UNIX_EPOCH + Duration::from_secs(s));
        match self {
            Period::Never => (0, None),
            Period::Hourly => (secs / 3600, at((secs / 3600 + 1) * 3600)),
            Period::Daily => (secs / 86_400, at((secs / 86_400 + 1) * 86_400)),
            Period::Monthly => {
                let (y, m) = year_month(secs / 86_400);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (y * 12 + (m - 1), at(days_from_civil(ny, nm) * 86_400))
            }
            Period::Every(d) => {
                // A zero duration would divide by zero; treat it as one millisecond.
                let len = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
                let index = ms / len;
                let next = index.saturating_add(1).saturating_mul(len);
                (index, Some(UNIX_EPOCH + Duration::from_millis(next)))
            }
        }
    }
}

/// (year, month 1..=12) of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`,
/// restricted to dates after the epoch).
fn year_month(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m)
}

/// Days since 1970-01-01 of the first day of (year, month) (Hinnant's `days_from_civil`).
fn days_from_civil(y: u64, m: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5; // day 1 of the month
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Never => f.write_str("never"),
            Period::Hourly => f.write_str("hourly"),
            Period::Daily => f.write_str("daily"),
            Period::Monthly => f.write_str("monthly"),
            Period::Every(d) => {
                let s = d.as_secs();
                match s {
                    _ if s % 86_400 == 0 && s > 0 => write!(f, "{}d", s / 86_400),
                    _ if s % 3600 == 0 && s > 0 => write!(f, "{}h", s / 3600),
                    _ if s % 60 == 0 && s > 0 => write!(f, "{}m", s / 60),
                    _ => write!(f, "{s}s"),
                }
            }
        }
    }
}

impl Serialize for Period {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Period, D::Error> {
        let text = String::deserialize(d)?;
        Period::parse(&text).map_err(de::Error::custom)
    }
}

/// A refused reservation: which scope said no, and its numbers at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub scope: String,
    pub limit: Usd,
    pub spent: Usd,
    pub reserved: Usd,
    pub requested: Usd,
    /// When the scope's spending next resets, if it has a period.
    pub resets_at: Option<SystemTime>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "budget exceeded for {}: {} limit, {} spent, ",
            self.scope, self.limit, self.spent
        )?;
        if self.reserved != Usd::ZERO {
            write!(f, "{} reserved by requests in flight, ", self.reserved)?;
        }
        write!(f, "{} requested", self.requested)?;
        if let Some(at) = self.resets_at {
            let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            write!(f, " (resets at unix time {secs})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refusal {}

/// One scope's numbers. `remaining` is `limit - spent - reserved` and can be negative
/// after a response cost more than was reserved; `None` for an unlimited scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub limit: Option<Usd>,
    pub spent: Usd,
    pub reserved: Usd,
    pub remaining: Option<Usd>,
    pub period: Period,
    pub resets_at: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Scope {
    limit: Option<Usd>,
    period: Period,
    /// The period window `spent` belongs to.
    window: u64,
    spent: Usd,
    reserved: Usd,
}

impl Scope {
    /// Starts a new period's spending if `now` has crossed into one. Reserved money stays:
    /// it belongs to requests still running, which settle into the period they finish in.
    fn roll(&mut self, now: SystemTime) {
        let (window, _) = self.period.window(now);
        if window != self.window {
            self.window = window;
            self.spent = Usd::ZERO;
        }
    }

    /// Would `amount` more fit? Overflow counts as "no".
    fn fits(&self, amount: Usd) -> bool {
        match self.limit {
            None => true,
            Some(limit) => self
                .spent
                .checked_add(self.reserved)
                .and_then(|t| t.checked_add(amount))
                .is_some_and(|t| t <= limit),
        }
    }

    fn snapshot(&self, now: SystemTime) -> Snapshot {
        Snapshot {
            limit: self.limit,
            spent: self.spent,
            reserved: self.reserved,
            remaining: self
                .limit
                .map(|l| l.saturating_sub(self.spent).saturating_sub(self.reserved)),
            period: self.period,
            resets_at: self.period.window(now).1,
        }
    }
}

struct Inner {
    clock: Arc<dyn Clock>,
    scopes: Mutex<HashMap<String, Scope>>,
}

impl Inner {
    /// A panic elsewhere while holding the lock cannot leave a scope half-updated (every
    /// update is a few saturating assignments), so a poisoned lock is still good data.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Scope>> {
        self.scopes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves `amount` on every scope or on none.
    fn reserve_all(&self, scopes: &[String], amount: Usd) -> Result<(), Refusal> {
        let now = self.clock.now();
        let mut map = self.lock();
        for name in scopes {
            let scope = map.entry(name.clone()).or_default();
            scope.roll(now);
            if !scope.fits(amount) {
                return Err(Refusal {
                    scope: name.clone(),
                    limit: scope.limit.unwrap_or(Usd::MAX),
                    spent: scope.spent,
                    reserved: scope.reserved,
                    requested: amount,
                    resets_at: scope.period.window(now).1,
                });
            }
        }
        for name in scopes {
            if let Some(scope) = map.get_mut(name) {
                scope.reserved = scope.reserved.saturating_add(amount);
                debug_assert!(
                    scope
                        .limit
                        .is_none_or(|l| scope.spent.saturating_add(scope.reserved) <= l),
                    "reservation on {name} went past its limit"
                );
            }
        }
        Ok(())
    }

    /// Returns `reserved` from every scope and adds `actual` to its spending.
    fn finish(&self, scopes: &[String], reserved: Usd, actual: Usd) {
        let now = self.clock.now();
        let mut map = self.lock();
        for name in scopes {
            // A scope removed while this request ran comes back as unlimited, so the money
            // actually spent is still on record.
            let scope = map.entry(name.clone()).or_default();
            scope.roll(now);
            scope.reserved = scope.reserved.saturating_sub(reserved).max(Usd::ZERO);
            scope.spent = scope.spent.saturating_add(actual);
        }
    }
}

/// The budget ledger. Cloning is cheap and shares the same scopes.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("scopes", &self.inner.lock().len())
            .finish()
    }
}

impl Default for Ledger {
    fn default() -> Ledger {
        Ledger::new(Arc::new(SystemClock))
    }
}

impl Ledger {
    pub fn new(clock: Arc<dyn Clock>) -> Ledger {
        Ledger {
            inner: Arc::new(Inner {
                clock,
                scopes: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sets (or, with `None`, lifts) a scope's limit and period, creating the scope if
    /// needed. Money already spent or reserved is kept: lowering a limit below it just
    /// refuses new reservations.
    pub fn set_limit(&self, scope: &str, limit: Option<Usd>, period: Period) {
        let now = self.inner.clock.now();
        let mut map = self.inner.lock();
        let s = map.entry(scope.to_string()).or_default();
        s.roll(now);
        if s.period != period {
            s.period = period;
            s.window = period.window(now).0;
        }
        s.limit = limit;
    }

    /// Forgets a scope (e.g. a finished run's), returning whether it existed. A request
    /// still in flight on it will recreate it, unlimited, when it settles.
    pub fn remove(&self, scope: &str) -> bool {
        self.inner.lock().remove(scope).is_some()
    }

    /// Reserves `amount` on every scope in `scopes` (duplicates count once), or on none.
    /// A scope never configured is unlimited but tracked. Refuses with the first scope in
    /// `scopes` where `spent + reserved + amount` would exceed the limit. A negative amount
    /// is treated as zero.
    pub fn reserve<S: AsRef<str>>(
        &self,
        scopes: &[S],
        amount: Usd,
    ) -> Result<Reservation, Refusal> {
        let mut names: Vec<String> = Vec::with_capacity(scopes.len());
        for s in scopes {
            if !names.iter().any(|n| n == s.as_ref()) {
                names.push(s.as_ref().to_string());
            }
        }
        let amount = amount.max(Usd::ZERO);
        self.inner.reserve_all(&names, amount)?;
        Ok(Reservation {
            inner: Arc::clone(&self.inner),
            scopes: names,
            amount,
            open: true,
        })
    }

    /// Records spending that had no reservation (e.g. usage reported for a request that
    /// was admitted some other way). Always recorded, even past the limit.
    pub fn charge<S: AsRef<str>>(&self, scopes: &[S], amount: Usd) {
        let mut names: Vec<String> = Vec::with_capacity(scopes.len());
        for s in scopes {
            if !names.iter().any(|n| n == s.as_ref()) {
                names.push(s.as_ref().to_string());
            }
        }
        self.inner.finish(&names, Usd::ZERO, amount.max(Usd::ZERO));
    }

    /// A scope's numbers now; an unknown scope reads as unlimited and empty.
    pub fn snapshot(&self, scope: &str) -> Snapshot {
        let now = self.inner.clock.now();
        let mut map = self.inner.lock();
        match map.get_mut(scope) {
            Some(s) => {
                s.roll(now);
                s.snapshot(now)
            }
            None => Scope::default().snapshot(now),
        }
    }

    /// Every scope's numbers, sorted by name (for /metrics).
    pub fn snapshots(&self) -> Vec<(String, Snapshot)> {
        let now = self.inner.clock.now();
        let mut map = self.inner.lock();
        let mut out: Vec<(String, Snapshot)> = map
            .iter_mut()
            .map(|(k, s)| {
                s.roll(now);
                (k.clone(), s.snapshot(now))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Money held for one request on one or more scopes. Settle it with the real cost; if it
/// is dropped unsettled (the request failed, panicked or was cancelled) the money is
/// released, so a crashed request never leaks budget. Releasing bills nothing: a caller
/// that knows a failed request still cost something must `settle` with that cost.
#[must_use = "a reservation dropped at once releases its money: settle it when the request ends"]
pub struct Reservation {
    inner: Arc<Inner>,
    scopes: Vec<String>,
    amount: Usd,
    open: bool,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("scopes", &self.scopes)
            .field("amount", &self.amount)
            .finish()
    }
}

impl Reservation {
    /// Money currently held.
    pub fn amount(&self) -> Usd {
        self.amount
    }

    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// Holds `more` on every scope, or refuses exactly like [`Ledger::reserve`] and leaves
    /// this reservation as it was. For a stream that is about to outgrow its reservation:
    /// a refusal is the signal to stop it.
    pub fn extend(&mut self, more: Usd) -> Result<(), Refusal> {
        let more = more.max(Usd::ZERO);
        self.inner.reserve_all(&self.scopes, more)?;
        self.amount = self.amount.saturating_add(more);
        Ok(())
    }

    /// Ends the request: releases the reservation and records `actual` as spent on every
    /// scope, even when it is larger than what was reserved (a negative `actual` counts as
    /// zero).
    pub fn settle(mut self, actual: Usd) {
        self.open = false;
        self.inner
            .finish(&self.scopes, self.amount, actual.max(Usd::ZERO));
    }

    /// Ends the request without billing anything (same as dropping it).
    pub fn release(self) {}
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.open {
            self.inner.finish(&self.scopes, self.amount, Usd::ZERO);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_helpers_agree_on_known_dates() {
        // 2024-02-29 is day 19782; 2024-03-01 is day 19783; 2000-01-01 is day 10957.
        assert_eq!(year_month(19_782), (2024, 2));
        assert_eq!(year_month(19_783), (2024, 3));
        assert_eq!(days_from_civil(2024, 3), 19_783);
        assert_eq!(days_from_civil(2000, 1), 10_957);
        assert_eq!(days_from_civil(1970, 1), 0);
        assert_eq!(year_month(0), (1970, 1));
        // Every month start over 30 years maps back to itself.
        for y in 1990..2020 {
            for m in 1..=12 {
                assert_eq!(year_month(days_from_civil(y, m)), (y, m));
                assert_eq!(
                    year_month(days_from_civil(y, m) - 1).1,
                    if m == 1 { 12 } else { m - 1 }
                );
            }
        }
    }
}
