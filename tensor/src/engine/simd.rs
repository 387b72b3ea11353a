//! Runtime CPU-feature dispatch, so plain Rust loops vectorise to AVX2 or AVX-512.
//!
//! The crate is built for the baseline x86-64 target (SSE2), which is what users get from
//! crates.io. Hot loops are written as ordinary scalar Rust and run through [`dispatch`],
//! which calls them inside a function compiled with `#[target_feature]` for the best
//! instruction set the CPU has; because the loop is inlined into that function, LLVM
//! vectorises it at that width. The check runs once and is cached.
//!
//! Setting the environment variable `STRATA_PORTABLE` (to anything but `""` or `"0"`)
//! before the first kernel runs forces the portable path: the baseline loops, no fused
//! multiply-adds, and none of the hand-written AVX-512 kernels (recurrent gates and
//! panels), so that the fallback paths can be tested on a CPU that has AVX-512. It is read
//! once, with the CPU check. (faer's GEMM keeps its own dispatch.)

use std::sync::atomic::{AtomicU8, Ordering};

const UNKNOWN: u8 = 0;
const BASELINE: u8 = 1;
const AVX2: u8 = 2;
const AVX512: u8 = 3;

static LEVEL: AtomicU8 = AtomicU8::new(UNKNOWN);

/// The environment variable that forces the portable kernels (see the module docs).
pub const PORTABLE_ENV: &str = "STRATA_PORTABLE";

/// Whether [`PORTABLE_ENV`] asks for the portable kernels.
fn portable_requested() -> bool {
    std::env::var_os(PORTABLE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

#[cold]
fn detect() -> u8 {
    if portable_requested() {
        LEVEL.store(BASELINE, Ordering::Relaxed);
        return BASELINE;
    }
    #[cfg(target_arch = "x86_64")]
    let level = if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512dq")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("avx2")
    {
        AVX512
    } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        AVX2
    } else {
        BASELINE
    };
    #[cfg(not(target_arch = "x86_64"))]
    let level = BASELINE;
    LEVEL.store(level, Ordering::Relaxed);
    level
}

/// The instruction set the kernels' runtime dispatch uses on this machine: `"avx512"`, `"avx2"` or
/// `"baseline"` (always `"baseline"` when `STRATA_PORTABLE=1` forces the portable kernels).
pub fn simd_level() -> &'static str {
    match level() {
        AVX512 => "avx512",
        AVX2 => "avx2",
        _ => "baseline",
    }
}

/// Whether the dispatched kernels may use fused multiply-adds (every level but the
/// baseline has FMA; there `mul_add` would be a library call).
pub(crate) fn has_fma() -> bool {
    level() != BASELINE
}

#[inline(always)]
fn level() -> u8 {
    match LEVEL.load(Ordering::Relaxed) {
        UNKNOWN => detect(),
        l => l,
    }
}

/// Runs `f` compiled for the best instruction set of this CPU. `f` should be a closure
/// marked `#[inline(always)]` that contains the whole hot loop.
#[inline(always)]
pub(crate) fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match level() {
            // SAFETY: `detect` verified that the CPU supports these features.
            AVX512 => unsafe { with_avx512(f) },
            // SAFETY: as above.
            AVX2 => unsafe { with_avx2(f) },
            _ => f(),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    f()
}

/// The longest row a row-by-row kernel prefetches whole while it works on the one before
/// (a third of a 48 KiB L1).
pub(crate) const PREFETCH_ROW_MAX_BYTES: usize = 16 << 10;

/// Asks the CPU to start loading the cache lines of `xs` into L1, ahead of a pass that
/// will read them. A hint only: no effect on results, and none on other architectures.
#[inline(always)]
pub(crate) fn prefetch<T>(xs: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        const LINE: usize = 64;
        let (ptr, bytes) = (xs.as_ptr().cast::<i8>(), std::mem::size_of_val(xs));
        for offset in (0..bytes).step_by(LINE) {
            // SAFETY: `offset < bytes`, so the address lies inside `xs`; a prefetch never
            // faults and changes no memory (SSE, part of the x86-64 baseline).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = xs;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI runs the tensor and autograd tests a second time with `STRATA_PORTABLE=1`; this
    /// checks that the switch took hold there (and that it is off otherwise).
    #[test]
    fn the_portable_switch_selects_the_baseline() {
        if portable_requested() {
            assert_eq!(simd_level(), "baseline");
            assert!(!has_fma());
        } else {
            assert_eq!(level(), detect());
        }
        println!("kernels: {}", simd_level());
    }
}
