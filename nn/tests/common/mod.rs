//! Shared helpers for the gradcheck property tests of strata-nn: running
//! [`gradcheck`] on closures that call strata-nn (whose errors are [`NnError`]s), value
//! strategies that keep away from the points where a layer or loss is not
//! differentiable, and comparisons that turn into proptest failures.
//!
//! "Away" always means far beyond gradcheck's step of 1e-6: the central difference must
//! never straddle a kink, and second and third derivatives must stay moderate so that the
//! O(eps²) error of the central difference stays below the tolerance.
#![allow(dead_code)]

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use strata_autograd::Var;
use strata_tensor::Tensor;
pub use strata_testing::{
    TestResult, distinct, fit, index, nonzero, numel, smooth, tensor, within,
};

/// Cases per property (at least 32; the checks are cheap enough for more).
pub const CASES: u32 = 128;

/// Cases for the cheapest properties (pointwise ops on a handful of elements).
pub const CHEAP_CASES: u32 = 256;

// ---------------------------------------------------------------------------------------
// Running gradcheck.
// ---------------------------------------------------------------------------------------

/// Gradchecks `f`, a closure over strata-nn calls, with PyTorch's tolerances (see
/// [`strata_testing::check_any`]).
pub fn check<F>(f: F, inputs: &[Tensor<f64>]) -> TestResult
where
    F: Fn(&[Var<f64>]) -> strata_nn::Result<Var<f64>>,
{
    strata_testing::check_any(f, inputs)
}

/// A strata-nn result as a test result: an error fails the case with its message.
pub fn ok<T>(r: strata_nn::Result<T>) -> std::result::Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(e.to_string()))
}

/// Backpropagates `Σ proj ⊙ y` (with `proj` a fixed pseudo-random tensor of `y`'s shape)
/// and returns the gradient of each of `vars`, zeros where none arrived.
pub fn grads(
    y: &Var<f64>,
    vars: &[&Var<f64>],
) -> std::result::Result<Vec<Tensor<f64>>, TestCaseError> {
    let proj = Tensor::<f64>::randn(y.shape(), &mut strata_tensor::seeded_rng(7));
    for v in vars {
        v.zero_grad();
    }
    if y.needs_grad() {
        y.backward_with(&proj)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    Ok(vars
        .iter()
        .map(|v| v.grad().unwrap_or_else(|| Tensor::zeros(v.shape())))
        .collect())
}

/// Fails unless `got` and `want` have the same shape and agree to 1e-12 (relative to
/// their size); `what` names the comparison.
pub fn assert_close(got: &Tensor<f64>, want: &Tensor<f64>, what: &str) -> TestResult {
    prop_assert_eq!(got.shape(), want.shape(), "{}: shapes differ", what);
    for (i, (g, w)) in got.to_vec().iter().zip(want.to_vec()).enumerate() {
        prop_assert!(
            (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
            "{}: element {} is {} but should be {}",
            what,
            i,
            g,
            w
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Values.
// ---------------------------------------------------------------------------------------

/// A shape of rank in `ranks`, each dimension in 1..=`max_dim`, shrunk to at most
/// `max_numel` elements: gradcheck costs two forward passes per input element.
pub fn shape(
    ranks: std::ops::RangeInclusive<usize>,
    max_dim: usize,
    max_numel: usize,
) -> BoxedStrategy<Vec<usize>> {
    ranks
        .prop_flat_map(move |r| vec(1..=max_dim, r))
        .prop_map(move |mut s| {
            fit(&mut s, max_numel);
            s
        })
        .boxed()
}

/// A shape from `shape` and `values(numel)` to fill it.
pub fn shaped(
    shape: BoxedStrategy<Vec<usize>>,
    values: fn(usize) -> BoxedStrategy<Vec<f64>>,
) -> BoxedStrategy<Tensor<f64>> {
    shape
        .prop_flat_map(move |s| {
            let n = numel(&s);
            (Just(s), values(n))
        })
        .prop_map(|(s, data)| tensor(data, &s))
        .boxed()
}

/// A tensor of a fixed `shape` filled by `values`.
pub fn filled(
    shape: Vec<usize>,
    values: fn(usize) -> BoxedStrategy<Vec<f64>>,
) -> BoxedStrategy<Tensor<f64>> {
    shaped(Just(shape).boxed(), values)
}

/// A tensor of `shape` filled by `values` when `present`.
pub fn optional(
    present: bool,
    shape: Vec<usize>,
    values: fn(usize) -> BoxedStrategy<Vec<f64>>,
) -> BoxedStrategy<Option<Tensor<f64>>> {
    if present {
        filled(shape, values).prop_map(Some).boxed()
    } else {
        Just(None).boxed()
    }
}
