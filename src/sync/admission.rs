//! Admission: who may start a handshake (per-source penalties, a global guessing budget,
//! per-source handshake slots) and with which secret a server may listen.
//!
//! Modelled on OpenSSH's `PerSourcePenalties` and `MaxStartups`. Every decision here is pure
//! logic over a clock passed in (`now`), so the tables are tested without sleeping:
//!
//! - A *source* is an IPv4 address or an IPv6 /64 (one customer's prefix; v4-mapped IPv6 is
//!   IPv4), see [`SourceKey`].
//! - A guess is counted when the server is about to send PAKE_REPLY (the message that lets a
//!   client test one guess offline), *before* it goes out, and is cleared only by a valid
//!   confirmation. Whatever else ends the handshake (a hang-up, silence, garbage, any other
//!   message) leaves the failure counted.
//! - After [`FREE_FAILURES_PER_SOURCE`] failures a source is *penalised*: its new connections are
//!   closed at once with `ERROR rate_limited` (no permit or slot held, no sleeping task) until
//!   its penalty has passed; the penalty doubles with each further failure up to
//!   [`MAX_PENALTY_MS`].
//! - Across all sources, failures draw on one token bucket ([`GLOBAL_FAILURE_BURST`] tokens,
//!   refilled at [`GLOBAL_FAILURES_PER_HOUR`]). While it is empty, sources that have not
//!   authenticated within [`TRUSTED_FOR_MS`] are refused, so many addresses cannot guess many
//!   times faster than one; clients that connected recently keep getting in.
//! - Both tables are bounded: records expire, and a full table evicts the record closest to
//!   expiry.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Failures a source may have without any penalty (typos, a client started with an old secret).
pub const FREE_FAILURES_PER_SOURCE: u32 = 3;
/// Penalty after the first failure beyond the free ones; each further failure doubles it.
pub const PENALTY_BASE_MS: u64 = 1_000;
/// Longest penalty: a source that keeps failing may test one guess per this long.
pub const MAX_PENALTY_MS: u64 = 300_000;
/// A source's failures are forgotten once it has neither failed for this long nor is penalised.
pub const FORGET_FAILURES_AFTER_MS: u64 = 3_600_000;
/// Most sources whose failures are remembered (as OpenSSH's `max-sources4`).
pub const MAX_TRACKED_SOURCES: usize = 65_536;
/// Failed guesses the whole server absorbs at once before it refuses untrusted sources.
pub const GLOBAL_FAILURE_BURST: u32 = 60;
/// Rate at which the global budget refills: the steady-state guesses per hour from all
/// untrusted sources together.
pub const GLOBAL_FAILURES_PER_HOUR: u32 = 360;
/// A source that authenticated is exempt from the global budget (not from its own penalty)
/// for this long.
pub const TRUSTED_FOR_MS: u64 = 86_400_000;
/// Most trusted sources remembered; the oldest is forgotten first.
pub const MAX_TRUSTED_SOURCES: usize = 4_096;
/// Handshakes in progress from one source; more are closed at once, so one source cannot take
/// every connection permit for the length of a handshake.
pub const MAX_HANDSHAKES_PER_SOURCE: u32 = 16;

/// The secret every installation starts with; a server refuses to listen beyond loopback with it.
pub const DEFAULT_SECRET: &str = "default_secret_key";
/// Secrets shorter than this many characters get a warning (once per process).
pub const SHORT_SECRET_CHARS: usize = 12;

/// The unit penalties and slots are counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// One IPv4 address (also for v4-mapped IPv6 addresses).
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address: one end site usually owns the whole /64, so keying
    /// on single addresses would give it 2^64 of them.
    V6Prefix64(u64),
}

impl SourceKey {
    /// The source an address belongs to.
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(v4) => SourceKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(v4),
                None => SourceKey::V6Prefix64((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceKey::V4(a) => write!(f, "{a}"),
            SourceKey::V6Prefix64(p) => {
                let a = std::net::Ipv6Addr::from(u128::from(*p) << 64);
                write!(f, "{a}/64")
            }
        }
    }
}

/// Why a connection or a guess was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// This source failed too often; it may try again after `retry_after`.
    Penalised { retry_after: Duration },
    /// Many sources failed recently and this one is not trusted; a token is due in `retry_after`.
    BudgetSpent { retry_after: Duration },
    /// This source already has [`MAX_HANDSHAKES_PER_SOURCE`] handshakes in progress.
    TooManyHandshakes,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: &Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
        match self {
            Refusal::Penalised { retry_after } => write!(
                f,
                "too many failed handshakes from this address; try again in {} s (and check the secret)",
                secs(retry_after)
            ),
            Refusal::BudgetSpent { retry_after } => write!(
                f,
                "too many failed handshakes from many addresses (a guessing attack?); new addresses are refused for {} s",
                secs(retry_after)
            ),
            Refusal::TooManyHandshakes => write!(
                f,
                "{MAX_HANDSHAKES_PER_SOURCE} handshakes from this address are already in progress"
            ),
        }
    }
}

/// What is remembered about a source that failed.
#[derive(Debug, Clone, Copy)]
struct FailureRecord {
    /// Failed guesses, including those still in flight (counted in advance).
    failures: u32,
    /// Guesses sent a reply whose handshake has not ended yet.
    in_flight: u32,
    last_failure: Instant,
    /// New connections are refused until then.
    penalised_until: Instant,
}

impl FailureRecord {
    /// Whether this record may be dropped at `now` without giving the source anything back.
    fn expired(&self, now: Instant) -> bool {
        self.in_flight == 0
            && now >= self.penalised_until
            && now.saturating_duration_since(self.last_failure)
                >= Duration::from_millis(FORGET_FAILURES_AFTER_MS)
    }
}

/// The penalty after `failures` failures in a row.
pub fn penalty_after(failures: u32) -> Duration {
    if failures < FREE_FAILURES_PER_SOURCE {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE_FAILURES_PER_SOURCE).min(32);
    let ms = PENALTY_BASE_MS.saturating_mul(1u64 << doublings);
    Duration::from_millis(ms.min(MAX_PENALTY_MS))
}

/// The global token bucket of failed guesses.
#[derive(Debug, Clone, Copy)]
struct Budget {
    tokens: f64,
    at: Instant,
}

impl Budget {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let rate = f64::from(GLOBAL_FAILURES_PER_HOUR) / 3600.0;
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(GLOBAL_FAILURE_BURST));
        self.at = self.at.max(now);
    }

    /// Time until one whole token is available (zero if one is).
    fn wait_for_token(&self) -> Duration {
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        let rate = f64::from(GLOBAL_FAILURES_PER_HOUR) / 3600.0;
        Duration::from_secs_f64((1.0 - self.tokens) / rate)
    }
}

/// The tables behind [`Admission`], pure: every method takes the time.
#[derive(Debug)]
pub struct AdmissionTable {
    failures: HashMap<SourceKey, FailureRecord>,
    /// Sources that authenticated, with the time they last did.
    trusted: HashMap<SourceKey, Instant>,
    /// Handshakes in progress per source.
    pending: HashMap<SourceKey, u32>,
    budget: Budget,
}

impl AdmissionTable {
    /// Empty tables with a full global budget.
    pub fn new(now: Instant) -> Self {
        AdmissionTable {
            failures: HashMap::new(),
            trusted: HashMap::new(),
            pending: HashMap::new(),
            budget: Budget {
                tokens: f64::from(GLOBAL_FAILURE_BURST),
                at: now,
            },
        }
    }

    fn is_trusted(&self, key: SourceKey, now: Instant) -> bool {
        self.trusted.get(&key).is_some_and(|at| {
            now.saturating_duration_since(*at) < Duration::from_millis(TRUSTED_FOR_MS)
        })
    }

    /// Refuses a penalised source, or an untrusted one while the global budget is spent.
    fn check(&mut self, key: SourceKey, now: Instant) -> std::result::Result<(), Refusal> {
        if let Some(r) = self.failures.get(&key) {
            if now < r.penalised_until {
                return Err(Refusal::Penalised {
                    retry_after: r.penalised_until - now,
                });
            }
        }
        self.budget.refill(now);
        if self.budget.tokens < 1.0 && !self.is_trusted(key, now) {
            return Err(Refusal::BudgetSpent {
                retry_after: self.budget.wait_for_token(),
            });
        }
        Ok(())
    }

    /// At accept: may this source start a handshake? On `Ok` it holds one more slot, to be
    /// given back with [`AdmissionTable::release`].
    pub fn admit(&mut self, key: SourceKey, now: Instant) -> std::result::Result<(), Refusal> {
        self.check(key, now)?;
        let n = self.pending.entry(key).or_insert(0);
        if *n >= MAX_HANDSHAKES_PER_SOURCE {
            return Err(Refusal::TooManyHandshakes);
        }
        *n += 1;
        Ok(())
    }

    /// A handshake of this source ended (either way).
    pub fn release(&mut self, key: SourceKey) {
        if let Some(n) = self.pending.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending.remove(&key);
            }
        }
    }

    /// Just before PAKE_REPLY goes out: counts the guess as failed in advance (undone only by
    /// [`AdmissionTable::guess_succeeded`]; the penalty is set when it ends, by
    /// [`AdmissionTable::guess_failed`]), or refuses it. Checked again here, not only at accept,
    /// because the source's other handshakes may have failed in between. Guesses of one source
    /// in flight at once are bounded by its slots, so honest clients behind one address can
    /// authenticate concurrently.
    pub fn begin_guess(
        &mut self,
        key: SourceKey,
        now: Instant,
    ) -> std::result::Result<(), Refusal> {
        self.check(key, now)?;
        self.budget.tokens = (self.budget.tokens - 1.0).max(0.0);
        let record = match self.failures.get(&key).copied() {
            Some(r) if !r.expired(now) => r,
            _ => {
                self.make_room(now);
                FailureRecord {
                    failures: 0,
                    in_flight: 0,
                    last_failure: now,
                    penalised_until: now,
                }
            }
        };
        self.failures.insert(
            key,
            FailureRecord {
                failures: record.failures.saturating_add(1),
                in_flight: record.in_flight.saturating_add(1),
                last_failure: now,
                penalised_until: record.penalised_until,
            },
        );
        Ok(())
    }

    /// A guess that was sent a reply ended without a valid confirmation (however it ended):
    /// the source's penalty starts now, from all its failures so far.
    pub fn guess_failed(&mut self, key: SourceKey, now: Instant) {
        if let Some(r) = self.failures.get_mut(&key) {
            r.in_flight = r.in_flight.saturating_sub(1);
            r.last_failure = now;
            r.penalised_until = r.penalised_until.max(now + penalty_after(r.failures));
        }
    }

    /// The client's confirmation was valid: forget the source's failures, give the guess's
    /// token back and trust the source.
    pub fn guess_succeeded(&mut self, key: SourceKey, now: Instant) {
        // Its other guesses still in flight stay counted in advance.
        if let Some(r) = self.failures.get_mut(&key) {
            r.in_flight = r.in_flight.saturating_sub(1);
            r.failures = r.in_flight;
            r.penalised_until = now;
            if r.in_flight == 0 {
                self.failures.remove(&key);
            }
        }
        self.budget.refill(now);
        self.budget.tokens = (self.budget.tokens + 1.0).min(f64::from(GLOBAL_FAILURE_BURST));
        if !self.trusted.contains_key(&key) && self.trusted.len() >= MAX_TRUSTED_SOURCES {
            self.trusted.retain(|_, at| {
                now.saturating_duration_since(*at) < Duration::from_millis(TRUSTED_FOR_MS)
            });
            if self.trusted.len() >= MAX_TRUSTED_SOURCES {
                if let Some(oldest) = self
                    .trusted
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| *k)
                {
                    self.trusted.remove(&oldest);
                }
            }
        }
        self.trusted.insert(key, now);
    }

    /// Keeps the failure table below its cap: drops expired records, then the one whose penalty
    /// ends first (the least valuable to keep).
    fn make_room(&mut self, now: Instant) {
        if self.failures.len() < MAX_TRACKED_SOURCES {
            return;
        }
        self.failures.retain(|_, r| !r.expired(now));
        if self.failures.len() >= MAX_TRACKED_SOURCES {
            let victim = self
                .failures
                .iter()
                .min_by_key(|(_, r)| (r.penalised_until, r.last_failure))
                .map(|(k, _)| *k);
            if let Some(k) = victim {
                self.failures.remove(&k);
            }
        }
    }

    /// Failures remembered for `key` (0 if none or expired), for tests and logs.
    pub fn failures_of(&self, key: SourceKey, now: Instant) -> u32 {
        self.failures
            .get(&key)
            .filter(|r| !r.expired(now))
            .map_or(0, |r| r.failures)
    }

    /// Sources with a failure record (expired ones included until evicted).
    pub fn tracked_sources(&self) -> usize {
        self.failures.len()
    }
}

/// The server's admission state, shared by the accept loop and the handshakes.
#[derive(Debug)]
pub struct Admission {
    table: Mutex<AdmissionTable>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            table: Mutex::new(AdmissionTable::new(Instant::now())),
        }
    }
}

impl Admission {
    fn table(&self) -> std::sync::MutexGuard<'_, AdmissionTable> {
        // The table holds plain counters; a panic elsewhere cannot leave it inconsistent.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// At accept: a slot for a handshake from `ip`, or why not.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        now: Instant,
    ) -> std::result::Result<HandshakeSlot, Refusal> {
        let key = SourceKey::of(ip);
        self.table().admit(key, now)?;
        Ok(HandshakeSlot {
            admission: Arc::clone(self),
            key,
            guessing: AtomicBool::new(false),
        })
    }
}

/// A handshake in progress from one source; its slot is given back when dropped.
#[derive(Debug)]
pub struct HandshakeSlot {
    admission: Arc<Admission>,
    key: SourceKey,
    /// A guess was counted and has not succeeded: dropping the slot settles it as failed, so
    /// no way of ending the handshake (even a cancelled task) escapes the penalty.
    guessing: AtomicBool,
}

impl HandshakeSlot {
    /// The source this slot counts against.
    pub fn source(&self) -> SourceKey {
        self.key
    }

    /// See [`AdmissionTable::begin_guess`].
    pub fn begin_guess(&self, now: Instant) -> std::result::Result<(), Refusal> {
        self.admission.table().begin_guess(self.key, now)?;
        self.guessing.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// See [`AdmissionTable::guess_succeeded`].
    pub fn guess_succeeded(&self, now: Instant) {
        if self.guessing.swap(false, Ordering::Relaxed) {
            self.admission.table().guess_succeeded(self.key, now);
        }
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut table = self.admission.table();
        if self.guessing.swap(false, Ordering::Relaxed) {
            table.guess_failed(self.key, Instant::now());
        }
        table.release(self.key);
    }
}

/// Whether `ip` is a loopback address (127.0.0.0/8, ::1, or v4-mapped 127.0.0.0/8).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// How to set a secret, for error messages.
const HOW_TO_SET_A_SECRET: &str =
    "set one with --secret-file PATH, the SSP_SECRET environment variable, or the page's secret field";

/// Refuses an empty secret (on either side).
pub fn check_secret_not_empty(secret: &str) -> Result<()> {
    if secret.is_empty() {
        return Err(Error::Config(format!(
            "the shared secret is empty: {HOW_TO_SET_A_SECRET}"
        )));
    }
    Ok(())
}

/// Refuses to listen on `addrs` with an empty secret, or beyond loopback with
/// [`DEFAULT_SECRET`] (which every attacker tries first). An unspecified address (0.0.0.0, ::)
/// is every interface, so it is not loopback.
pub fn check_secret_for_listening(secret: &str, addrs: &[SocketAddr]) -> Result<()> {
    check_secret_not_empty(secret)?;
    if secret == DEFAULT_SECRET {
        if let Some(public) = addrs.iter().find(|a| !is_loopback(a.ip())) {
            return Err(Error::Config(format!(
                "refusing to listen on {public} with the default secret {DEFAULT_SECRET:?} (anyone could connect): {HOW_TO_SET_A_SECRET}, or listen on localhost"
            )));
        }
    }
    Ok(())
}

/// The warning a secret deserves, if any.
pub fn secret_warning(secret: &str) -> Option<String> {
    let chars = secret.chars().count();
    if secret == DEFAULT_SECRET {
        Some(format!(
            "using the default secret {DEFAULT_SECRET:?}: anyone who can reach this port can connect; {HOW_TO_SET_A_SECRET}"
        ))
    } else if chars < SHORT_SECRET_CHARS {
        Some(format!(
            "the shared secret has only {chars} characters; an online attacker may guess a short one: use at least {SHORT_SECRET_CHARS}"
        ))
    } else {
        None
    }
}

/// Logs [`secret_warning`] the first time a weak secret is used in this process.
pub fn warn_once_about(secret: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Some(w) = secret_warning(secret) {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!("{w}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn v4(last: u8) -> SourceKey {
        SourceKey::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn sources_key_on_the_ipv4_address_and_the_ipv6_slash_64() {
        let key = |s: &str| SourceKey::of(s.parse().unwrap());
        let cases = [
            // (a, b, same source?)
            ("192.0.2.1", "192.0.2.1", true),
            ("192.0.2.1", "192.0.2.2", false),
            ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true),
            ("2001:db8:1:2::1", "2001:db8:1:3::1", false),
            ("::ffff:192.0.2.1", "192.0.2.1", true),
            ("::ffff:192.0.2.1", "::ffff:192.0.2.2", false),
            ("::1", "::2", true),
        ];
        for (a, b, same) in cases {
            assert_eq!(key(a) == key(b), same, "{a} vs {b}");
        }
        assert_eq!(key("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(key("::ffff:10.0.0.1").to_string(), "10.0.0.1");
    }

    #[test]
    fn penalties_start_after_the_free_failures_and_double_to_the_cap() {
        let cases = [
            (0, 0),
            (1, 0),
            (2, 0),
            (3, 1_000),
            (4, 2_000),
            (5, 4_000),
            (11, 256_000),
            (12, MAX_PENALTY_MS),
            (40, MAX_PENALTY_MS),
            (u32::MAX, MAX_PENALTY_MS),
        ];
        for (failures, want_ms) in cases {
            assert_eq!(penalty_after(failures), ms(want_ms), "after {failures}");
        }
    }

    #[test]
    fn a_penalised_source_is_refused_until_its_penalty_has_passed() {
        let t0 = Instant::now();
        let mut t = AdmissionTable::new(t0);
        for _ in 0..FREE_FAILURES_PER_SOURCE {
            t.admit(v4(1), t0).unwrap();
            t.begin_guess(v4(1), t0).unwrap();
            t.guess_failed(v4(1), t0);
            t.release(v4(1));
        }
        let refused = t.admit(v4(1), t0 + ms(999));
        assert_eq!(refused, Err(Refusal::Penalised { retry_after: ms(1) }));
        // Other sources are not affected, and the penalty ends on time.
        t.admit(v4(2), t0).unwrap();
        t.admit(v4(1), t0 + ms(1_000)).unwrap();
    }

    #[test]
    fn concurrent_guesses_of_one_source_are_bounded_by_its_slots_then_penalised() {
        let t0 = Instant::now();
        let mut t = AdmissionTable::new(t0);
        for _ in 0..MAX_HANDSHAKES_PER_SOURCE {
            t.admit(v4(1), t0).unwrap();
            t.begin_guess(v4(1), t0).unwrap();
        }
        assert_eq!(t.admit(v4(1), t0), Err(Refusal::TooManyHandshakes));
        for _ in 0..MAX_HANDSHAKES_PER_SOURCE {
            t.guess_failed(v4(1), t0);
            t.release(v4(1));
        }
        assert_eq!(
            t.admit(v4(1), t0),
            Err(Refusal::Penalised {
                retry_after: penalty_after(MAX_HANDSHAKES_PER_SOURCE)
            })
        );
    }

    #[test]
    fn honest_clients_behind_one_address_authenticate_concurrently() {
        let t0 = Instant::now();
        let mut t = AdmissionTable::new(t0);
        let n = FREE_FAILURES_PER_SOURCE + 3;
        for _ in 0..n {
            t.admit(v4(1), t0).unwrap();
            t.begin_guess(v4(1), t0).unwrap();
        }
        for _ in 0..n {
            t.guess_succeeded(v4(1), t0);
            t.release(v4(1));
        }
        assert_eq!(t.failures_of(v4(1), t0), 0);
        t.admit(v4(1), t0).unwrap();
    }

    #[test]
    fn success_clears_the_failures_and_a_slot_is_given_back() {
        let t0 = Instant::now();
        let mut t = AdmissionTable::new(t0);
        for _ in 0..2 {
            t.begin_guess(v4(1), t0).unwrap();
            t.guess_failed(v4(1), t0);
        }
        assert_eq!(t.failures_of(v4(1), t0), 2);
        t.begin_guess(v4(1), t0).unwrap();
        t.guess_succeeded(v4(1), t0);
        assert_eq!(t.failures_of(v4(1), t0), 0);
        t.admit(v4(1), t0).unwrap();

        for _ in 0..MAX_HANDSHAKES_PER_SOURCE - 1 {
            t.admit(v4(1), t0).unwrap();
        }
        assert_eq!(t.admit(v4(1), t0), Err(Refusal::TooManyHandshakes));
        t.release(v4(1));
        t.admit(v4(1), t0).unwrap();
    }

    #[test]
    fn failures_expire_after_the_forget_time() {
        let t0 = Instant::now();
        let mut t = AdmissionTable::new(t0);
        for _ in 0..FREE_FAILURES_PER_SOURCE {
            t.begin_guess(v4(1), t0).unwrap();
            t.guess_failed(v4(1), t0);
        }
        let forget = ms(FORGET_FAILURES_AFTER_MS);
        assert_eq!(t.failures_of(v4(1), t0 + forget - ms(1)), 3);
        assert_eq!(t.failures_of(v4(1), t0 + forget), 0);
        // A fresh start: the next failure is the first again.
        t.begin_guess(v4(1), t0 + forget).unwrap();
        assert_eq!(t.failures_of(v4(1), t0 + forget), 1);
    }

    #[test]
    fn the_failure_table_is_capped_and_evicts_the_record_closest_to_expiry() {
        let t0 = Instant::now();
        let mut t = AdmissionTable::new(t0);
        // Trusted sources are exempt from the global budget, so it does not get in the way.
        let key = |i: u32| SourceKey::V4(Ipv4Addr::from(0x0a00_0000 + i));
        for i in 0..MAX_TRACKED_SOURCES as u32 {
            t.trusted.insert(key(i), t0);
            t.failures.insert(
                key(i),
                FailureRecord {
                    failures: 5,
                    in_flight: 0,
                    last_failure: t0,
                    penalised_until: t0 + ms(10_000 + u64::from(i)),
                },
            );
        }
        let newcomer = key(MAX_TRACKED_SOURCES as u32);
        t.trusted.insert(newcomer, t0);
        t.begin_guess(newcomer, t0).unwrap();
        assert_eq!(t.tracked_sources(), MAX_TRACKED_SOURCES);
        assert_eq!(
            t.failures_of(key(0), t0),
            0,
            "the earliest penalty is evicted"
        );
        assert_eq!(t.failures_of(key(1), t0), 5);
        assert_eq!(t.failures_of(newcomer, t0), 1);

        // Expired records go before any live one.
        let later = t0 + ms(FORGET_FAILURES_AFTER_MS);
        t.failures.insert(
            key(1),
            FailureRecord {
                failures: 1,
                in_flight: 0,
                last_failure: t0,
                penalised_until: t0,
            },
        );
        let another = key(MAX_TRACKED_SOURCES as u32 + 1);
        t.trusted.insert(another, later);
        t.begin_guess(another, later).unwrap();
        assert!(t.tracked_sources() <= MAX_TRACKED_SOURCES);
    }

    #[test]
    fn many_sources_share_one_global_budget_but_trusted_sources_still_get_in() {
        let t0 = Instant::now();
        let mut t = AdmissionTable::new(t0);
        let trusted = v4(250);
        t.guess_succeeded(trusted, t0);
        // Each source stays within its free failures; together they spend the budget.
        let mut tested = 0u32;
        for i in 0..200u32 {
            let src = SourceKey::V4(Ipv4Addr::from(0x0a00_0000 + i));
            for _ in 0..FREE_FAILURES_PER_SOURCE {
                if t.begin_guess(src, t0).is_ok() {
                    tested += 1;
                }
            }
        }
        assert_eq!(tested, GLOBAL_FAILURE_BURST);
        let fresh = SourceKey::V4(Ipv4Addr::new(203, 0, 113, 9));
        match t.admit(fresh, t0) {
            Err(Refusal::BudgetSpent { retry_after }) => {
                assert!(
                    retry_after <= Duration::from_secs(3600 / u64::from(GLOBAL_FAILURES_PER_HOUR))
                )
            }
            other => panic!("an untrusted newcomer got {other:?}"),
        }
        t.admit(trusted, t0).unwrap();
        // The budget refills at its hourly rate.
        let one_token = Duration::from_secs(3600) / GLOBAL_FAILURES_PER_HOUR;
        t.admit(fresh, t0 + one_token).unwrap();
    }

    #[test]
    fn trusted_sources_expire_and_their_table_is_capped() {
        let t0 = Instant::now();
        let mut t = AdmissionTable::new(t0);
        let key = |i: u32| SourceKey::V4(Ipv4Addr::from(0x0b00_0000 + i));
        for i in 0..MAX_TRUSTED_SOURCES as u32 + 10 {
            t.guess_succeeded(key(i), t0 + ms(u64::from(i)));
        }
        assert_eq!(t.trusted.len(), MAX_TRUSTED_SOURCES);
        assert!(
            !t.is_trusted(key(0), t0 + ms(20_000)),
            "the oldest were evicted"
        );
        let last = key(MAX_TRUSTED_SOURCES as u32 + 9);
        assert!(t.is_trusted(last, t0 + ms(20_000)));
        assert!(!t.is_trusted(last, t0 + ms(TRUSTED_FOR_MS + 20_000)));
    }

    #[test]
    fn the_default_or_an_empty_secret_never_listens_beyond_loopback() {
        let addr = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let good = "a long and random secret";
        let cases: &[(&str, &[&str], bool)] = &[
            (DEFAULT_SECRET, &["127.0.0.1:8888"], true),
            (DEFAULT_SECRET, &["127.5.6.7:8888"], true),
            (DEFAULT_SECRET, &["[::1]:8888", "127.0.0.1:8888"], true),
            (DEFAULT_SECRET, &["[::ffff:127.0.0.1]:8888"], true),
            (DEFAULT_SECRET, &["0.0.0.0:8888"], false),
            (DEFAULT_SECRET, &["[::]:8888"], false),
            (DEFAULT_SECRET, &["192.168.1.5:8888"], false),
            (
                DEFAULT_SECRET,
                &["127.0.0.1:8888", "192.168.1.5:8888"],
                false,
            ),
            ("", &["127.0.0.1:8888"], false),
            ("", &["0.0.0.0:8888"], false),
            (good, &["0.0.0.0:8888"], true),
            ("short", &["0.0.0.0:8888"], true),
        ];
        for (secret, addrs, ok) in cases {
            let addrs: Vec<SocketAddr> = addrs.iter().map(|a| addr(a)).collect();
            let r = check_secret_for_listening(secret, &addrs);
            assert_eq!(r.is_ok(), *ok, "{secret:?} on {addrs:?}: {r:?}");
            if let Err(e) = r {
                assert_eq!(e.kind(), crate::ErrorKind::Config);
                let msg = e.to_string();
                assert!(!msg.contains('\n') && msg.contains("SSP_SECRET"), "{msg}");
            }
        }
        assert!(Ipv6Addr::LOCALHOST.is_loopback());
    }

    #[test]
    fn short_and_default_secrets_get_a_warning() {
        let cases = [
            (DEFAULT_SECRET, true),
            ("", true),
            ("elevenchars", true),
            ("ünïcödé_chr", true),
            ("twelve chars", false),
            ("correct horse battery staple", false),
        ];
        for (secret, warned) in cases {
            assert_eq!(secret_warning(secret).is_some(), warned, "{secret:?}");
        }
    }
}
