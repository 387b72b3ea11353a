//! When and how kernels split work across rayon's thread pool.
//!
//! Work is split into chunks whose boundaries depend only on the problem size, never on the
//! thread count, so every result is bitwise identical whatever `RAYON_NUM_THREADS` says.
//! Below a threshold of work a kernel runs on the calling thread: handing a job to rayon
//! costs a few microseconds, as much as adding ~30,000 floats on one core.

use rayon::prelude::*;

/// Elements of a cheap elementwise op (one add) below which threading does not pay.
/// Measured on the 2-core reference machine: at 32 Ki f32 an add takes ~8 µs on one core,
/// about twice the cost of a rayon fork/join round trip.
pub(crate) const PAR_MIN_WORK: usize = 1 << 15;

/// Relative cost of one element of an op, in units of one add.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cost {
    /// add, mul, max, relu, copy
    Cheap,
    /// exp, log, tanh, sigmoid, gelu, erf: a few dozen flops
    Transcendental,
}

impl Cost {
    fn weight(self) -> usize {
        match self {
            Cost::Cheap => 1,
            Cost::Transcendental => 8,
        }
    }
}

/// The chunk length to split `n` elements into, or `None` to run on the calling thread.
pub(crate) fn chunk_len(n: usize, cost: Cost) -> Option<usize> {
    let work = n.saturating_mul(cost.weight());
    if work < PAR_MIN_WORK || rayon::current_num_threads() < 2 {
        return None;
    }
    // At least PAR_MIN_WORK of work per chunk; about 64 chunks for large problems so idle
    // threads can steal; the split is a function of n alone.
    let min_len = PAR_MIN_WORK.div_ceil(cost.weight());
    Some((n / 64).max(min_len).next_multiple_of(16))
}

/// Calls `f(start, chunk)` for consecutive chunks of `out`, in parallel when worthwhile.
pub(crate) fn for_each_chunk_mut<T: Send>(
    out: &mut [T],
    cost: Cost,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    match chunk_len(out.len(), cost) {
        None => f(0, out),
        Some(len) => out
            .par_chunks_mut(len)
            .enumerate()
            .for_each(|(i, chunk)| f(i * len, chunk)),
    }
}

/// Calls `f(start, chunk)` for consecutive chunks of `chunk_len` elements of `out`, in
/// parallel when there are several.
pub(crate) fn for_each_chunk_mut_by<T: Send>(
    out: &mut [T],
    chunk_len: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if chunk_len == 0 || chunk_len >= out.len() {
        f(0, out);
    } else {
        out.par_chunks_mut(chunk_len)
            .enumerate()
            .for_each(|(i, chunk)| f(i * chunk_len, chunk));
    }
}

/// Fills `buf` with `value`, in parallel when large.
pub(crate) fn fill<T: Copy + Send + Sync>(buf: &mut [T], value: T) {
    for_each_chunk_mut(buf, Cost::Cheap, |_, chunk| chunk.fill(value));
}
