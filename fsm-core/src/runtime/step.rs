//! What a step receives and returns, and the contract between the generated code and the
//! executor. None of it needs an async runtime.

use core::fmt;
use std::borrow::Cow;

/// Identifies one execution: a UUID (version 7), unique across executors, processes and
/// restarts, so that an [`IdempotencyKey`] never names two executions' steps.
///
/// Its 48 high bits are a Unix time in milliseconds (executions started later sort later);
/// the rest is random. Displayed and parsed in the usual form,
/// `0190b3c5-8e5a-7c2d-9f31-4a8b2c1d0e7f`.
///
/// Held as two 64-bit halves rather than a `u128`: the same 16 bytes, aligned to 8, so that
/// the [`Context`] every step receives stays 24 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecutionId {
    high: u64,
    low: u64,
}

impl ExecutionId {
    /// The id of the 128-bit value `v`.
    pub const fn from_u128(v: u128) -> Self {
        ExecutionId {
            high: (v >> 64) as u64,
            low: v as u64,
        }
    }

    /// The id as a 128-bit value.
    pub const fn as_u128(self) -> u128 {
        (self.high as u128) << 64 | self.low as u128
    }

    /// The id of branch `position` of the fan-out at step `step` of this execution: the
    /// same every time it is asked (a durable parent resumed after a crash finds its
    /// branches again), with this id's time, and 74 bits that hash the three together.
    pub fn branch(self, step: u32, position: u32) -> ExecutionId {
        let mix = |mut z: u64| {
            // SplitMix64's finaliser.
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let a = mix(self.low ^ mix(self.high ^ (u64::from(step) << 32 | u64::from(position))));
        let b = mix(a ^ self.high);
        let high = self.high & !0xfff | (b & 0xfff);
        ExecutionId::from_u128(id_from(high, a))
    }
}

impl fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExecutionId({self})")
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.as_u128();
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xffff_ffff_ffff
        )
    }
}

/// A string that is not an [`ExecutionId`] (32 hexadecimal digits, with or without hyphens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIdError;

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "not an execution id: expected a UUID such as 0190b3c5-8e5a-7c2d-9f31-4a8b2c1d0e7f",
        )
    }
}

impl std::error::Error for ParseIdError {}

impl core::str::FromStr for ExecutionId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, ParseIdError> {
        let hyphens = [8, 13, 18, 23];
        let plain = s.len() == 32;
        if !plain && (s.len() != 36 || hyphens.iter().any(|&i| s.as_bytes()[i] != b'-')) {
            return Err(ParseIdError);
        }
        let mut v: u128 = 0;
        for (i, c) in s.bytes().enumerate() {
            if !plain && hyphens.contains(&i) {
                continue;
            }
            let d = (c as char).to_digit(16).ok_or(ParseIdError)?;
            v = v << 4 | u128::from(d);
        }
        Ok(ExecutionId::from_u128(v))
    }
}

/// Makes [`ExecutionId`]s: UUIDv7, with a random 74-bit tail drawn once and counted up.
///
/// Each thread takes numbers from the shared counter a block at a time and counts through its
/// block alone, so that an id costs a thread-local increment rather than an atomic add on a
/// cache line every worker writes (the in-memory executor makes one per run). Ids are unique,
/// not ordered across threads.
#[cfg_attr(not(feature = "runtime"), allow(dead_code))]
pub(crate) struct IdSource {
    /// The time, version and random bits above the counter.
    high: u64,
    low: u64,
    counter: std::sync::atomic::AtomicU64,
    /// This source among every source the process made: a thread's block belongs to one.
    serial: u64,
}

/// Numbers a thread takes from a source's counter at a time.
#[cfg_attr(not(feature = "runtime"), allow(dead_code))]
const ID_BLOCK: u64 = 256;

#[cfg_attr(not(feature = "runtime"), allow(dead_code))]
static ID_SOURCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

std::thread_local! {
    /// The block of numbers this thread counts through: the source's serial, the next
    /// number, the end of the block.
    static ID_BLOCK_IN_USE: std::cell::Cell<(u64, u64, u64)> = const { std::cell::Cell::new((0, 0, 0)) };
}

#[cfg_attr(not(feature = "runtime"), allow(dead_code))]
impl IdSource {
    /// A source whose ids carry the time it was made and the random bits `random`.
    pub(crate) fn new(random: u128) -> Self {
        IdSource {
            high: id_high(unix_millis(), random),
            low: random as u64,
            counter: std::sync::atomic::AtomicU64::new(0),
            serial: ID_SOURCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The next id (of this source's time).
    #[inline]
    pub(crate) fn next(&self) -> ExecutionId {
        let n = ID_BLOCK_IN_USE.with(|block| {
            let (serial, next, end) = block.get();
            if serial == self.serial && next < end {
                block.set((serial, next + 1, end));
                return next;
            }
            let start = self
                .counter
                .fetch_add(ID_BLOCK, std::sync::atomic::Ordering::Relaxed);
            block.set((self.serial, start + 1, start + ID_BLOCK));
            start
        });
        ExecutionId::from_u128(id_from(self.high, self.low.wrapping_add(n)))
    }
}

/// An id of the time now with the random bits `random` (a store's executions sort by start).
#[cfg_attr(not(feature = "durable"), allow(dead_code))]
pub(crate) fn new_id(random: u128) -> ExecutionId {
    ExecutionId::from_u128(id_from(id_high(unix_millis(), random), random as u64))
}

/// The 64 high bits of a UUIDv7: 48 bits of time, the version, 12 random bits.
fn id_high(millis: u64, random: u128) -> u64 {
    (millis & 0xffff_ffff_ffff) << 16 | 0x7000 | ((random >> 64) as u64 & 0x0fff)
}

/// A UUIDv7 from its high half and 62 random bits below the variant.
fn id_from(high: u64, low: u64) -> u128 {
    u128::from(high) << 64 | u128::from(low & (u64::MAX >> 2) | 1 << 63)
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A key for deduplicating a step's effects in the services it calls.
///
/// It is the same for every attempt of the same step of the same execution (retries, and in
/// time restarts), and different for every other step: pass it to a payment gateway as its
/// idempotency key and a retried charge is not charged twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    /// The execution.
    pub execution: ExecutionId,
    /// The step's position in the execution: 0 for the first step, 1 for the next... An
    /// execution that would take a 4,294,967,296th step ends instead, `Errored` with an error
    /// of kind [`StepError::STEP_LIMIT`], so a key never names two steps.
    pub step: u32,
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-step-{}", self.execution, self.step)
    }
}

/// What a step knows about the execution it runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The execution.
    pub execution: ExecutionId,
    /// The attempt, from 1; retries count up.
    pub attempt: u32,
    /// The step's position in the execution: 0 for the first step (see
    /// [`IdempotencyKey::step`]).
    pub step: u32,
}

impl Context {
    /// The same for every attempt of this step, and for its runs after a restart; see
    /// [`IdempotencyKey`].
    #[inline]
    pub fn idempotency_key(&self) -> IdempotencyKey {
        IdempotencyKey {
            execution: self.execution,
            step: self.step,
        }
    }
}

/// Why a step failed, and whether trying again may help.
///
/// The `kind` is what error routing matches (`#[fsm(catch(kind => State))]`), like the error
/// names of Amazon States Language. A retryable error is retried as the state's retry policy
/// says; a non-retryable one fails the step at once.
///
/// Any `std::error::Error` converts into a retryable `StepError` of kind `"error"`, so `?`
/// works in steps; build one with [`StepError::retryable`] or [`StepError::fatal`] to choose.
#[derive(Clone, PartialEq, Eq)]
pub struct StepError {
    // Boxed: a step's `Result` stays small on the path where nothing fails.
    inner: Box<ErrorInner>,
}

#[derive(Clone, PartialEq, Eq)]
struct ErrorInner {
    kind: Cow<'static, str>,
    message: String,
    retryable: bool,
}

impl StepError {
    /// Kind of the error an attempt gets when it runs past its timeout (retryable).
    pub const TIMEOUT: &'static str = "timeout";
    /// Kind of the error a durable execution ends with when a worker cannot read its stored
    /// data (a state the definition no longer has, data that no longer deserializes): the
    /// execution is set aside, errored, until an operator redrives it.
    pub const BAD_STATE: &'static str = "bad_state";
    /// Kind of the error an attempt gets when its step panics (not retryable), and of an
    /// execution whose machine's `Clone` panicked.
    pub const PANIC: &'static str = "panic";
    /// Kind of the error an execution ends with when its history is full
    /// (`ExecutorBuilder::history_limit`, feature `runtime`); not
    /// retried, not routed.
    pub const HISTORY_LIMIT: &'static str = "history_limit";
    /// Kind of the error an execution ends with when it has used every step number of its
    /// idempotency keys (`u32::MAX` steps); not retried, not routed.
    pub const STEP_LIMIT: &'static str = "step_limit";
    /// The kind of the error of a fanning-out state whose branch (or too many of whose
    /// items) failed: not retried; route it with `catch(branch_failed => State)`.
    pub const BRANCH_FAILED: &'static str = "branch_failed";

    /// An error that may go away: the step is retried if its policy allows.
    pub fn retryable(kind: impl Into<Cow<'static, str>>, message: impl fmt::Display) -> Self {
        StepError::new(kind.into(), message.to_string(), true)
    }

    /// An error that will not go away by trying again: the step fails at once.
    pub fn fatal(kind: impl Into<Cow<'static, str>>, message: impl fmt::Display) -> Self {
        StepError::new(kind.into(), message.to_string(), false)
    }

    fn new(kind: Cow<'static, str>, message: String, retryable: bool) -> Self {
        StepError {
            inner: Box::new(ErrorInner {
                kind,
                message,
                retryable,
            }),
        }
    }

    /// What kind of error this is, for routing.
    pub fn kind(&self) -> &str {
        &self.inner.kind
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// Whether trying the step again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.inner.retryable
    }
}

impl<E: std::error::Error> From<E> for StepError {
    fn from(error: E) -> Self {
        StepError::retryable("error", error)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let retry = if self.is_retryable() {
            "retryable"
        } else {
            "not retryable"
        };
        write!(f, "{}: {} ({retry})", self.kind(), self.message())
    }
}

impl fmt::Debug for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepError")
            .field("kind", &self.kind())
            .field("message", &self.message())
            .field("retryable", &self.is_retryable())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_v7_and_read_back_from_their_text() {
        let source = IdSource::new(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let (a, b) = (source.next(), source.next());
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "7", "version 7: {text}");
        assert!(
            matches!(&text[19..20], "8" | "9" | "a" | "b"),
            "variant: {text}"
        );
        assert_eq!(text.parse::<ExecutionId>(), Ok(a));
        assert_eq!(text.replace('-', "").parse::<ExecutionId>(), Ok(a));
        for bad in [
            "",
            "exec-1",
            &text[1..],
            &text.replace('-', "_"),
            &text.replace('7', "g"),
        ] {
            assert_eq!(bad.parse::<ExecutionId>(), Err(ParseIdError), "{bad:?}");
        }
    }

    #[test]
    fn sources_with_different_random_bits_do_not_meet() {
        let (a, b) = (IdSource::new(1 << 70), IdSource::new(2 << 70));
        let ids: std::collections::HashSet<ExecutionId> =
            (0..1000).flat_map(|_| [a.next(), b.next()]).collect();
        assert_eq!(ids.len(), 2000);
    }

    #[test]
    fn threads_counting_through_blocks_never_hand_out_one_id_twice() {
        // Four threads share one source, and each also alternates with a second source
        // (its block of the first is given up and a new one taken each time), across more
        // numbers than one block holds.
        let (shared, other) = (IdSource::new(1 << 70), IdSource::new(2 << 70));
        let ids: Vec<ExecutionId> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let (shared, other) = (&shared, &other);
                    scope.spawn(move || {
                        let mut ids = Vec::new();
                        for i in 0..3 * ID_BLOCK {
                            ids.push(shared.next());
                            if (i + t) % 5 == 0 {
                                ids.push(other.next());
                            }
                        }
                        ids
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        let distinct: std::collections::HashSet<&ExecutionId> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        assert!(ids.len() > 12 * ID_BLOCK as usize);
    }
}
