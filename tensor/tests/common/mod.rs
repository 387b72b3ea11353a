//! Shared helpers for strata-tensor's property tests: proptest strategies for shapes,
//! values and layouts, naive row-major references, and the one approximate-comparison
//! assertion every test goes through (STYLE §7).
//!
//! Every reference here is written from the definition, index by index over row-major
//! `Vec<f64>`s, and never calls the library: a test compares the library's kernel with an
//! obvious loop, not with another kernel. The only exception is [`make_view`], which uses
//! the library's view constructors (`slice`, `permute`, `transpose`) to lay the reference
//! values out in a non-contiguous way; it fills the storage itself, so the logical values
//! of the view are known without reading them back through the library.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use strata_testing::{
    TestResult, broadcast_shape, broadcast_source, indices, numel, ravel, reference, resolve,
    strides, unravel,
};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use strata_tensor::{Element, Tensor};

// ---------------------------------------------------------------------------------------
// Row-major index arithmetic.
// ---------------------------------------------------------------------------------------

/// The permutation that sorts `keys[..n]` (stable), so equal keys still give a permutation.
pub fn perm_from_keys(keys: &[u32], n: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    p.sort_by_key(|&i| keys[i]);
    p
}

/// `q` with `q[p[k]] = k`.
pub fn inverse_perm(p: &[usize]) -> Vec<usize> {
    let mut q = vec![0; p.len()];
    for (k, &pk) in p.iter().enumerate() {
        q[pk] = k;
    }
    q
}

/// `torch.permute(x, perm)` on row-major data: output dimension `k` is input dimension
/// `perm[k]`. Returns the values and the new shape.
pub fn naive_permute(data: &[f64], shape: &[usize], perm: &[usize]) -> (Vec<f64>, Vec<usize>) {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let out = indices(&out_shape)
        .map(|o| {
            let mut i = vec![0; shape.len()];
            for (k, &p) in perm.iter().enumerate() {
                i[p] = o[k];
            }
            data[ravel(&i, shape)]
        })
        .collect();
    (out, out_shape)
}

/// The values of a view given by an index map: output element `o` of `out_shape` is input
/// element `src(o)` of the row-major `data` of `shape`.
pub fn naive_map(
    data: &[f64],
    shape: &[usize],
    out_shape: &[usize],
    src: impl Fn(&[usize]) -> Vec<usize>,
) -> Vec<f64> {
    indices(out_shape)
        .map(|o| data[ravel(&src(&o), shape)])
        .collect()
}

/// `data` of `shape` broadcast to `out_shape` and written out row-major.
pub fn naive_broadcast(data: &[f64], shape: &[usize], out_shape: &[usize]) -> Vec<f64> {
    indices(out_shape)
        .map(|o| data[broadcast_source(&o, shape)])
        .collect()
}

/// Picks a dimension in `0..ndim` from `key`, then writes it as negative half the time.
pub fn pick_dim(key: usize, ndim: usize) -> (usize, isize) {
    let n = ndim.max(1);
    let d = key % n;
    let signed = if (key / n) % 2 == 1 {
        d as isize - n as isize
    } else {
        d as isize
    };
    (d, signed)
}

/// `sum_k a[k] * b[k]`.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

// ---------------------------------------------------------------------------------------
// The approximate comparison.
// ---------------------------------------------------------------------------------------

/// Tolerance of a comparison: `|actual - expected| <= abs + rel * |expected|`.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    /// Relative part.
    pub rel: f64,
    /// Absolute part.
    pub abs: f64,
}

/// Bit-for-bit equality (NaN equals NaN).
pub const EXACT: Tol = Tol { rel: 0.0, abs: 0.0 };

/// `rel` relative to `max(|expected|, 1)`: the tolerance for values of order one.
pub const fn tol(rel: f64) -> Tol {
    Tol { rel, abs: rel }
}

/// Compares `actual` with `expected` element by element; on failure reports the first
/// mismatching index (as a multi-index of `shape`), both values, the difference, the
/// tolerance, and how many elements differ.
pub fn assert_close(
    what: &str,
    shape: &[usize],
    actual: &[f64],
    expected: &[f64],
    tol: Tol,
) -> TestResult {
    if actual.len() != expected.len() {
        return Err(TestCaseError::fail(format!(
            "{what}: {} values, expected {} (shape {shape:?})",
            actual.len(),
            expected.len()
        )));
    }
    let ok = |a: f64, e: f64| {
        a == e || (a.is_nan() && e.is_nan()) || (a - e).abs() <= tol.abs + tol.rel * e.abs()
    };
    let bad: Vec<usize> = (0..actual.len())
        .filter(|&i| !ok(actual[i], expected[i]))
        .collect();
    if let Some(&i) = bad.first() {
        let (a, e) = (actual[i], expected[i]);
        let at = if numel(shape) == actual.len() {
            format!("{:?}", unravel(i, shape))
        } else {
            format!("flat {i}")
        };
        return Err(TestCaseError::fail(format!(
            "{what}: first mismatch at index {at} of shape {shape:?}: actual {a:e}, expected \
             {e:e}, |diff| {:e} > tolerance {:e} (rel {:e}, abs {:e}); {} of {} elements differ",
            (a - e).abs(),
            tol.abs + tol.rel * e.abs(),
            tol.rel,
            tol.abs,
            bad.len(),
            actual.len()
        )));
    }
    Ok(())
}

/// Checks a tensor's shape, then its values (see [`assert_close`]).
pub fn assert_tensor<T: Element>(
    what: &str,
    actual: &Tensor<T>,
    shape: &[usize],
    expected: &[f64],
    tol: Tol,
) -> TestResult {
    if actual.shape() != shape {
        return Err(TestCaseError::fail(format!(
            "{what}: shape {:?}, expected {shape:?}",
            actual.shape()
        )));
    }
    assert_close(what, shape, &to_f64(actual), expected, tol)
}

/// A tensor's values, row-major, as f64.
pub fn to_f64<T: Element>(t: &Tensor<T>) -> Vec<f64> {
    t.to_vec().into_iter().map(|v| v.to_f64()).collect()
}

/// A contiguous tensor of the element type `T` holding `data` (rounded to `T`).
pub fn tensor<T: Element>(data: &[f64], shape: &[usize]) -> Tensor<T> {
    Tensor::from_vec(data.iter().map(|&v| T::from_f64(v)).collect(), shape)
        .expect("data fits shape")
}

/// Asserts that `r` is an error of the pattern `$pat` (and not a panic: the call is made
/// inside `catch_unwind`).
#[macro_export]
macro_rules! assert_err {
    ($call:expr, $pat:pat) => {{
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| $call));
        match r {
            Err(_) => {
                return Err(proptest::test_runner::TestCaseError::fail(format!(
                    "`{}` panicked instead of returning {}",
                    stringify!($call),
                    stringify!($pat)
                )));
            }
            Ok(Ok(_)) => {
                return Err(proptest::test_runner::TestCaseError::fail(format!(
                    "`{}` succeeded; expected {}",
                    stringify!($call),
                    stringify!($pat)
                )));
            }
            Ok(Err(e)) => {
                if !matches!(e, $pat) {
                    return Err(proptest::test_runner::TestCaseError::fail(format!(
                        "`{}` returned {e:?}; expected {}",
                        stringify!($call),
                        stringify!($pat)
                    )));
                }
            }
        }
    }};
}

// ---------------------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------------------

/// A dimension size: 1..=6, sometimes 0.
pub fn dim_size() -> impl Strategy<Value = usize> {
    prop_oneof![12 => 1..=6usize, 1 => Just(0usize)]
}

/// A shape whose rank lies in `ranks`, dimensions from [`dim_size`].
pub fn shape(ranks: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(dim_size(), ranks)
}

/// A shape whose rank lies in `ranks`, with no empty dimension.
pub fn shape_nonempty(ranks: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..=6usize, ranks)
}

/// One value: mostly uniform in [-2, 2), sometimes a small integer (to make ties).
pub fn value() -> impl Strategy<Value = f64> {
    prop_oneof![3 => -2.0..2.0f64, 1 => (-2i32..=2).prop_map(f64::from)]
}

/// `n` values from [`value`].
pub fn values(n: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(value(), n)
}

/// A shape from `shapes` with values for it.
pub fn with_values(
    shapes: impl Strategy<Value = Vec<usize>>,
) -> impl Strategy<Value = (Vec<usize>, Vec<f64>)> {
    shapes.prop_flat_map(|s| {
        let n = numel(&s);
        (Just(s), values(n))
    })
}

/// A shape from `shapes`, values for it and a layout.
pub fn viewed(
    shapes: impl Strategy<Value = Vec<usize>>,
) -> impl Strategy<Value = (Vec<usize>, Vec<f64>, ViewKind)> {
    (with_values(shapes), view_kind()).prop_map(|((s, d), k)| (s, d, k))
}

/// How a test tensor's values are laid out in storage.
#[derive(Clone, Debug)]
pub enum ViewKind {
    /// Row-major, offset 0.
    Contiguous,
    /// A permutation of a contiguous tensor (the permutation sorts `keys`).
    Permuted([u32; 6]),
    /// The last two dimensions transposed (contiguous below rank 2).
    Transposed,
    /// Every `step`-th element along one dimension (`dim % ndim`), from `start`: the
    /// storage holds NaN in between, so reading a skipped element shows.
    Strided {
        dim: usize,
        step: usize,
        start: usize,
    },
    /// A permutation of a strided view.
    PermutedStrided {
        keys: [u32; 6],
        dim: usize,
        step: usize,
        start: usize,
    },
}

/// Any [`ViewKind`], contiguous about a fifth of the time.
pub fn view_kind() -> impl Strategy<Value = ViewKind> {
    let keys = prop::array::uniform6(any::<u32>());
    prop_oneof![
        2 => Just(ViewKind::Contiguous),
        2 => keys.prop_map(ViewKind::Permuted),
        1 => Just(ViewKind::Transposed),
        2 => (any::<usize>(), 2..=3usize, 0..=2usize)
            .prop_map(|(dim, step, start)| ViewKind::Strided { dim, step, start }),
        2 => (keys, any::<usize>(), 2..=3usize, 0..=2usize).prop_map(
            |(keys, dim, step, start)| ViewKind::PermutedStrided { keys, dim, step, start }
        ),
    ]
}

/// A tensor of `shape` whose logical (row-major) values are `data`, laid out as `kind`
/// says. The storage is filled here, so the values are known without the library.
pub fn make_view<T: Element>(data: &[f64], shape: &[usize], kind: &ViewKind) -> Tensor<T> {
    assert_eq!(data.len(), numel(shape));
    let ndim = shape.len();
    let view = match kind {
        _ if ndim == 0 => tensor(data, shape),
        ViewKind::Contiguous => tensor(data, shape),
        ViewKind::Strided { dim, step, start } => strided(data, shape, dim % ndim, *step, *start),
        ViewKind::Transposed if ndim < 2 => tensor(data, shape),
        ViewKind::Transposed => {
            let mut p: Vec<usize> = (0..ndim).collect();
            p.swap(ndim - 2, ndim - 1);
            permuted(data, shape, &p, |d, s| tensor(d, s))
        }
        ViewKind::Permuted(keys) => permuted(data, shape, &perm_from_keys(keys, ndim), |d, s| {
            tensor(d, s)
        }),
        ViewKind::PermutedStrided {
            keys,
            dim,
            step,
            start,
        } => permuted(data, shape, &perm_from_keys(keys, ndim), |d, s| {
            strided(d, s, dim % ndim, *step, *start)
        }),
    };
    assert_eq!(view.shape(), shape, "make_view built the wrong shape");
    view
}

/// `data` stored permuted by `p` (built by `base`), then viewed back through the inverse
/// permutation: logically `data` again, with permuted strides.
fn permuted<T: Element>(
    data: &[f64],
    shape: &[usize],
    p: &[usize],
    base: impl Fn(&[f64], &[usize]) -> Tensor<T>,
) -> Tensor<T> {
    let (pd, ps) = naive_permute(data, shape, p);
    let q: Vec<isize> = inverse_perm(p).iter().map(|&d| d as isize).collect();
    base(&pd, &ps).permute(&q).expect("a permutation")
}

/// `data` placed at every `step`-th position (from `start`) of a NaN-filled buffer along
/// `dim`, then sliced back out.
fn strided<T: Element>(
    data: &[f64],
    shape: &[usize],
    dim: usize,
    step: usize,
    start: usize,
) -> Tensor<T> {
    // An empty view starts at offset 0: slicing an empty tensor at a non-zero start gives
    // a layout whose offset lies past its (empty) storage, which `views.rs` tests on its
    // own (see `slices_of_empty_tensors_stay_readable`); the other tests need not trip on it.
    let start = if numel(shape) == 0 { 0 } else { start };
    let mut big = shape.to_vec();
    big[dim] = start + shape[dim] * step;
    let mut buf = vec![f64::NAN; numel(&big)];
    for (k, i) in indices(shape).enumerate() {
        let mut j = i.clone();
        j[dim] = start + i[dim] * step;
        buf[ravel(&j, &big)] = data[k];
    }
    tensor::<T>(&buf, &big)
        .slice(dim as isize, start as isize, isize::MAX, step)
        .expect("a valid slice")
}

/// A broadcast operand: `out_shape` with some leading dimensions dropped (`drop`) and
/// the dimensions flagged in `ones` set to 1.
pub fn shrink_shape(out_shape: &[usize], drop: usize, ones: &[bool]) -> Vec<usize> {
    let drop = drop.min(out_shape.len());
    out_shape[drop..]
        .iter()
        .zip(&ones[drop..])
        .map(|(&d, &one)| if one { 1 } else { d })
        .collect()
}

/// A broadcast-compatible pair: an output shape of rank 0..=4 and two operand shapes
/// derived from it by [`shrink_shape`].
pub fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape(0..=4).prop_flat_map(|out| {
        let r = out.len();
        (
            Just(out),
            0..=r,
            prop::collection::vec(prop::bool::weighted(0.3), r),
            0..=r,
            prop::collection::vec(prop::bool::weighted(0.3), r),
        )
            .prop_map(|(out, da, oa, db, ob)| {
                (shrink_shape(&out, da, &oa), shrink_shape(&out, db, &ob))
            })
    })
}

/// `n` values in [-2, 2) from a splitmix64 stream seeded by `seed` (drawn by proptest):
/// for tensors too large to draw element by element.
pub fn seeded_values(seed: u64, n: usize) -> Vec<f64> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
        })
        .collect()
}

/// Turns an unexpected library error into a test failure that names the call.
pub trait OrFail<T> {
    /// The value, or a failure naming `what` and the error.
    fn or_fail(self, what: &str) -> Result<T, TestCaseError>;
}

impl<T> OrFail<T> for strata_tensor::Result<T> {
    fn or_fail(self, what: &str) -> Result<T, TestCaseError> {
        self.map_err(|e| TestCaseError::fail(format!("{what}: unexpected error: {e}")))
    }
}
