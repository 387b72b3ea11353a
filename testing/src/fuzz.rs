//! Fuzzing on stable Rust: mutations of valid files (and random bytes) driven by proptest,
//! fed to a reader for a bounded budget. (cargo-fuzz needs a nightly toolchain; this runs
//! in every `cargo test`, a few dozen inputs per target, and for longer in CI.)
//!
//! A target is a strategy for inputs — usually [`mutated`] copies of a few valid files —
//! and a check that returns the reader's [`Verdict`]: it read the input (and the value
//! passed the check's own invariants: sane sizes, finite numbers, the shapes the header
//! promised), or refused it with a clear error ([`verdict`]). Anything else — a failed
//! invariant, an unclear error, a panic — fails the test with the input, shrunk by
//! proptest to a small one. [`fuzz`] returns the counts of each kind.
//!
//! The budget comes from the environment:
//!
//! - `STRATA_FUZZ_SECONDS=S` runs each target for `S` seconds;
//! - otherwise `STRATA_FUZZ_CASES=N` inputs per target (default [`DEFAULT_CASES`]).
//!
//! Each round of 64 inputs is seeded from the target's name and the round's number, so a
//! failure is reproduced by running the same target with the same budget again.
//!
//! That no input makes a reader allocate without bound is checked from outside: CI runs
//! the targets under an address-space limit (`ulimit -v`, see `.ci/run`) far below what a
//! trusted header could ask for, so such an allocation aborts the run. (A counting global
//! allocator would need `unsafe`, which only strata-tensor's kernels may use.)
//!
//! ```
//! use strata_testing::fuzz::{fuzz, mutated, verdict};
//!
//! // A reader of a tiny format: a length byte, then that many bytes.
//! fn read(bytes: &[u8]) -> Result<&[u8], String> {
//!     let n = *bytes.first().ok_or("empty input")? as usize;
//!     bytes.get(1..1 + n).ok_or_else(|| format!("{n} bytes promised, {} given", bytes.len() - 1))
//! }
//! let valid = vec![vec![3u8, b'a', b'b', b'c']];
//! let tally = fuzz("doc-example", mutated(valid), |bytes| {
//!     let body = read(&bytes);
//!     if let Ok(body) = &body {
//!         proptest::prop_assert_eq!(body.len(), bytes[0] as usize);
//!     }
//!     verdict(&body)
//! });
//! assert_eq!(tally.accepted + tally.refused, tally.inputs);
//! ```

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// Inputs per target in a plain `cargo test`.
pub const DEFAULT_CASES: u32 = 64;

/// Inputs per proptest round (each round has its own seed).
const ROUND: u32 = 64;

/// How long or how much to fuzz each target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// This many inputs.
    Cases(u32),
    /// Rounds of inputs until this much time has passed.
    Time(Duration),
}

/// The budget the environment asks for (see the module docs).
pub fn budget() -> Budget {
    let var = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    match (var("STRATA_FUZZ_SECONDS"), var("STRATA_FUZZ_CASES")) {
        (Some(s), _) if s > 0 => Budget::Time(Duration::from_secs(s)),
        (_, Some(n)) if n > 0 => Budget::Cases(u32::try_from(n).unwrap_or(u32::MAX)),
        _ => Budget::Cases(DEFAULT_CASES),
    }
}

/// A 32-byte seed from `name` and `round` (FNV-1a, spread over the bytes).
fn seed(name: &str, round: u64) -> [u8; 32] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(round.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let v = h.rotate_left(17 * i as u32) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// What a reader made of one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It read the input, and the value passed the target's checks.
    Accepted,
    /// It refused the input with a clear error.
    Refused,
}

impl Verdict {
    /// [`Accepted`](Verdict::Accepted) when any of `verdicts` is: an input read in several
    /// ways (with and without a header, by eval and by predict) counts as read when one
    /// way read it.
    pub fn any(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        if verdicts.into_iter().any(|v| v == Verdict::Accepted) {
            Verdict::Accepted
        } else {
            Verdict::Refused
        }
    }
}

/// The longest error message counted as clear: one that fits on a screen (a reader that
/// echoes a whole corrupt input into its error is not clear).
pub const MAX_ERROR_CHARS: usize = 2000;

/// The verdict of a reader's `result` whose value (if any) the caller has checked:
/// [`Verdict::Accepted`] for `Ok`, [`Verdict::Refused`] for an error whose message is
/// clear (not empty, at most [`MAX_ERROR_CHARS`] characters).
///
/// # Errors
/// A test failure for an unclear message.
pub fn verdict<T, E: Display>(result: &Result<T, E>) -> Result<Verdict, TestCaseError> {
    match result {
        Ok(_) => Ok(Verdict::Accepted),
        Err(e) => {
            let message = e.to_string();
            let chars = message.chars().count();
            prop_assert!(!message.trim().is_empty(), "an error without a message");
            prop_assert!(
                chars <= MAX_ERROR_CHARS,
                "an error of {} characters: {}…",
                chars,
                message.chars().take(200).collect::<String>()
            );
            Ok(Verdict::Refused)
        }
    }
}

/// The inputs of one run of a target, by [`Verdict`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Inputs checked.
    pub inputs: u64,
    /// Inputs read, with values that passed the checks.
    pub accepted: u64,
    /// Inputs refused with a clear error.
    pub refused: u64,
}

/// Runs the target `name`: `check` on inputs drawn from `strategy` for the [`budget`],
/// and prints (to stderr, shown by `cargo test -- --nocapture`) and returns the
/// [`Tally`].
///
/// # Panics
/// When `check` returns an error or panics, with the (shrunk) input that made it fail.
pub fn fuzz<S>(
    name: &str,
    strategy: S,
    check: impl Fn(S::Value) -> Result<Verdict, TestCaseError>,
) -> Tally
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    quiet_allocation_limits();
    let budget = budget();
    let started = Instant::now();
    let accepted = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let counted = |value: S::Value| -> Result<(), TestCaseError> {
        let counter = match check(value)? {
            Verdict::Accepted => &accepted,
            Verdict::Refused => &refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    };
    let mut done = 0u64;
    for round in 0u64.. {
        let cases = match budget {
            Budget::Cases(n) => {
                let left = u64::from(n).saturating_sub(done);
                if left == 0 {
                    break;
                }
                left.min(u64::from(ROUND)) as u32
            }
            Budget::Time(limit) => {
                if started.elapsed() >= limit {
                    break;
                }
                ROUND
            }
        };
        let config = Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 512,
            ..Config::default()
        };
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed(name, round));
        let mut runner = TestRunner::new_with_rng(config, rng);
        match runner.run(&strategy, counted) {
            Ok(()) => {}
            Err(TestError::Fail(reason, input)) => panic!(
                "fuzz target {name} (round {round}) failed: {reason}\nminimal failing input: \
                 {input:?}"
            ),
            Err(TestError::Abort(reason)) => panic!("fuzz target {name} aborted: {reason}"),
        }
        done += u64::from(cases);
    }
    let tally = Tally {
        inputs: done,
        accepted: accepted.into_inner(),
        refused: refused.into_inner(),
    };
    eprintln!(
        "fuzz {name}: {} inputs in {:.1} s: {} read, {} refused with a clear error",
        tally.inputs,
        started.elapsed().as_secs_f64(),
        tally.accepted,
        tally.refused
    );
    tally
}

/// Installs (once) a panic hook that prints nothing for the panics that
/// [`strata_tensor::with_allocation_limit`] catches — a record asking for a network too
/// large to build is refused that way, thousands of times in a run — and defers to the
/// previous hook for every other panic, as the `strata` CLI does.
fn quiet_allocation_limits() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info
                .payload()
                .is::<strata_tensor::AllocationLimitExceeded>()
            {
                previous(info);
            }
        }));
    });
}

/// One edit of a byte string.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Flips bit `bit` of the byte at the (wrapped) index.
    FlipBit(prop::sample::Index, u8),
    /// Sets the byte at the index.
    SetByte(prop::sample::Index, u8),
    /// Writes an extreme 32-bit value (0, 1, 2^31, 2^32 − 1, …) at the index, in either
    /// byte order: the sizes and counts of headers.
    SetWord(prop::sample::Index, u32, bool),
    /// Writes an extreme 64-bit value at the index (little-endian): safetensors' header
    /// length and offsets.
    SetLong(prop::sample::Index, u64),
    /// Inserts bytes at the index.
    Insert(prop::sample::Index, Vec<u8>),
    /// Removes up to `n` bytes from the index.
    Remove(prop::sample::Index, u8),
    /// Cuts the input at the index.
    Truncate(prop::sample::Index),
    /// Repeats a piece of the input at its end.
    RepeatTail(prop::sample::Index),
}

fn extreme_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(2),
        Just(0x7f),
        Just(0xff),
        Just(0x8000_0000),
        Just(0x7fff_ffff),
        Just(u32::MAX),
        Just(u32::MAX - 1),
        Just(1 << 16),
        any::<u32>(),
    ]
}

fn extreme_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(8),
        Just(u64::MAX),
        Just(i64::MAX as u64),
        Just(1 << 32),
        Just(100_000_001),
        any::<u64>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<prop::sample::Index>;
    prop_oneof![
        3 => (at(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        3 => (at(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        2 => (at(), extreme_u32(), any::<bool>()).prop_map(|(i, v, be)| Mutation::SetWord(i, v, be)),
        1 => (at(), extreme_u64()).prop_map(|(i, v)| Mutation::SetLong(i, v)),
        1 => (at(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Mutation::Insert(i, v)),
        1 => (at(), any::<u8>()).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => at().prop_map(Mutation::Truncate),
        1 => at().prop_map(Mutation::RepeatTail),
    ]
}

/// `bytes` with `m` applied.
pub fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    let at = |i: &prop::sample::Index| if len == 0 { 0 } else { i.index(len) };
    match m {
        Mutation::FlipBit(i, b) if len > 0 => bytes[at(i)] ^= 1 << b,
        Mutation::SetByte(i, v) if len > 0 => bytes[at(i)] = *v,
        Mutation::SetWord(i, v, big) => {
            let w = if *big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            let start = at(i).min(len.saturating_sub(4));
            for (k, b) in w.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(start + k) {
                    *slot = *b;
                }
            }
        }
        Mutation::SetLong(i, v) => {
            let start = at(i).min(len.saturating_sub(8));
            for (k, b) in v.to_le_bytes().iter().enumerate() {
                if let Some(slot) = bytes.get_mut(start + k) {
                    *slot = *b;
                }
            }
        }
        Mutation::Insert(i, v) => {
            let p = if len == 0 { 0 } else { at(i) };
            bytes.splice(p..p, v.iter().copied());
        }
        Mutation::Remove(i, n) if len > 0 => {
            let p = at(i);
            let end = (p + *n as usize).min(len);
            bytes.drain(p..end);
        }
        Mutation::Truncate(i) => bytes.truncate(at(i)),
        Mutation::RepeatTail(i) if len > 0 => {
            let tail = bytes[at(i)..].to_vec();
            bytes.extend_from_slice(&tail);
        }
        _ => {}
    }
}

/// Copies of one of `seeds` with up to eight [`Mutation`]s applied, and now and then
/// random bytes: what a reader meets when a file is truncated, corrupted, or forged.
///
/// # Panics
/// When `seeds` is empty.
pub fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(!seeds.is_empty(), "mutated needs at least one valid input");
    let n = seeds.len();
    let edited = (0..n, prop::collection::vec(mutation(), 0..8)).prop_map(move |(k, edits)| {
        let mut bytes = seeds[k].clone();
        for m in &edits {
            apply(&mut bytes, m);
        }
        bytes
    });
    prop_oneof![
        9 => edited,
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

/// A fresh, empty scratch folder for target `name` (in the system's temporary folder,
/// unique to this process).
///
/// # Panics
/// When it cannot be created.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch folder");
    dir
}
