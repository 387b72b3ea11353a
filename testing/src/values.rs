//! Value strategies. Each stays away from the points where some op is not
//! differentiable (kinks, poles, ties), and its doc says which points and why. "Away"
//! means far beyond gradcheck's step of 1e-6: the central difference must never straddle
//! the bad point, and second and third derivatives must stay moderate so that the O(eps²)
//! error of the central difference stays below the tolerance.

use proptest::collection::vec;
use proptest::prelude::*;
use strata_tensor::{IndexTensor, Tensor};

use crate::{index, numel, tensor};

/// Uniform in [-2, 2]: for ops that are smooth everywhere.
pub fn smooth(n: usize) -> BoxedStrategy<Vec<f64>> {
    vec(-2.0..2.0f64, n).boxed()
}

/// `|x|` in [0.1, 2] with either sign: for ops with a kink or a pole at 0 (relu, abs,
/// leaky_relu, sign, recip, a denominator).
pub fn nonzero(n: usize) -> BoxedStrategy<Vec<f64>> {
    vec(
        (0.1..2.0f64, any::<bool>()).prop_map(|(m, neg)| if neg { -m } else { m }),
        n,
    )
    .boxed()
}

/// In [0.1, 3]: for ops defined (or smooth) only for positive inputs (log, sqrt, rsqrt,
/// the base of pow).
pub fn positive(n: usize) -> BoxedStrategy<Vec<f64>> {
    vec(0.1..3.0f64, n).boxed()
}

/// In [-0.9, 2]: log1p has its pole at -1.
pub fn above_minus_one(n: usize) -> BoxedStrategy<Vec<f64>> {
    vec(-0.9..2.0f64, n).boxed()
}

/// Pairwise at least 0.05 apart (a shuffled grid of step 0.1, each point moved by less
/// than 0.05): for ops that pick one element among several (amax, amin, max_dim,
/// max_pool2d), whose gradient is split or arbitrary on ties, and for std, whose gradient
/// has a pole at zero spread.
pub fn distinct(n: usize) -> BoxedStrategy<Vec<f64>> {
    (
        Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
        vec(0.0..0.05f64, n),
        -0.5..0.5f64,
    )
        .prop_map(move |(order, jitter, shift)| {
            order
                .iter()
                .zip(jitter)
                .map(|(&k, j)| (k as f64 - n as f64 / 2.0) * 0.1 + j + shift)
                .collect()
        })
        .boxed()
}

/// On the grid `0.1·k` in [-2, 2], each point moved up by less than 0.02. Paired with
/// [`grid_high`] (the same grid shifted by 0.05) the two never come closer than 0.03, so
/// `maximum`/`minimum` of the two have no ties; bounds at `0.1·k + 0.05` (clamp,
/// softplus's threshold) are never closer than 0.03 either.
pub fn grid_low(n: usize) -> BoxedStrategy<Vec<f64>> {
    grid(n, 0.0)
}

/// [`grid_low`] shifted by 0.05.
pub fn grid_high(n: usize) -> BoxedStrategy<Vec<f64>> {
    grid(n, 0.05)
}

fn grid(n: usize, offset: f64) -> BoxedStrategy<Vec<f64>> {
    vec(
        (-20i32..20, 0.0..0.02f64).prop_map(move |(k, j)| f64::from(k) * 0.1 + offset + j),
        n,
    )
    .boxed()
}

/// Uniform in [-1.5, 1.5] with exact zeros about one time in four: prod's gradient must
/// stay exact when the product has a zero factor (prod is multilinear, so the central
/// difference is exact there too).
pub fn with_zeros(n: usize) -> BoxedStrategy<Vec<f64>> {
    vec(prop_oneof![1 => Just(0.0), 3 => -1.5..1.5f64], n).boxed()
}

/// An integer plus a fraction in [0.1, 0.4] or [0.6, 0.9]: floor, ceil and round jump at
/// integers and halves, and their zero gradient holds only away from the jumps.
pub fn fractional(n: usize) -> BoxedStrategy<Vec<f64>> {
    vec(
        (-3i32..3, 0.1..0.4f64, any::<bool>())
            .prop_map(|(i, f, upper)| f64::from(i) + f + if upper { 0.5 } else { 0.0 }),
        n,
    )
    .boxed()
}

/// In [lo, hi).
pub fn within(n: usize, lo: f64, hi: f64) -> BoxedStrategy<Vec<f64>> {
    vec(lo..hi, n).boxed()
}

/// A 0/1 mask (for where_, masked_fill).
pub fn mask(shape: Vec<usize>) -> BoxedStrategy<Tensor<f64>> {
    let n = numel(&shape);
    vec(any::<bool>(), n)
        .prop_map(move |bits| tensor(bits.into_iter().map(f64::from).collect(), &shape))
        .boxed()
}

/// Indices in `0..bound` (repeats allowed) for an index tensor of `shape`.
pub fn index_values(shape: Vec<usize>, bound: usize) -> BoxedStrategy<IndexTensor> {
    let n = numel(&shape);
    vec(0..bound as i64, n)
        .prop_map(move |data| index(data, &shape))
        .boxed()
}
