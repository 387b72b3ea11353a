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
use strata_autograd::{AutogradError, GradcheckOptions, Var, gradcheck};
use strata_nn::NnError;
use strata_tensor::{IndexTensor, Tensor};

/// Cases per property (at least 32; the checks are cheap enough for more).
pub const CASES: u32 = 128;

/// Cases for the cheapest properties (pointwise ops on a handful of elements).
pub const CHEAP_CASES: u32 = 256;

/// What a property body returns.
pub type TestResult = std::result::Result<(), TestCaseError>;

/// The number of elements of `shape` (1 for `[]`).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

// ---------------------------------------------------------------------------------------
// Running gradcheck.
// ---------------------------------------------------------------------------------------

/// An [`NnError`] as the [`AutogradError`] gradcheck's closure must return: the wrapped
/// autograd error itself, anything else (a layer refusing its input) as `Invalid`.
pub fn to_autograd(e: NnError) -> AutogradError {
    match e {
        NnError::Autograd(e) => e,
        other => AutogradError::Invalid {
            op: "strata-nn",
            msg: other.to_string(),
        },
    }
}

/// Gradchecks `f` (a closure over strata-nn calls) at `inputs` with PyTorch's tolerances
/// (eps 1e-6, atol 1e-5, rtol 1e-3). The seed of gradcheck's output projection is a hash
/// of the inputs, so each case projects the output with other weights, reproducibly.
pub fn check<F>(f: F, inputs: &[Tensor<f64>]) -> TestResult
where
    F: Fn(&[Var<f64>]) -> strata_nn::Result<Var<f64>>,
{
    let seed = inputs
        .iter()
        .flat_map(Tensor::to_vec)
        .fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
            (h ^ x.to_bits()).wrapping_mul(0x0100_0000_01b3)
        });
    let options = GradcheckOptions {
        seed,
        ..GradcheckOptions::default()
    };
    gradcheck(|v| f(v).map_err(to_autograd), inputs, &options)
        .map_err(|e| TestCaseError::fail(e.to_string()))
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

/// A tensor from test data whose length is known to fit.
pub fn tensor(data: Vec<f64>, shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(data, shape).expect("test data fits its shape")
}

/// An index tensor from test data whose length is known to fit.
pub fn index(data: Vec<i64>, shape: &[usize]) -> IndexTensor {
    IndexTensor::from_vec(data, shape).expect("test indices fit their shape")
}

// ---------------------------------------------------------------------------------------
// Values.
// ---------------------------------------------------------------------------------------

/// Uniform in [-2, 2]: for layers that are smooth everywhere.
pub fn smooth(n: usize) -> BoxedStrategy<Vec<f64>> {
    vec(-2.0..2.0f64, n).boxed()
}

/// `|x|` in [0.1, 2] with either sign: for layers with a kink at 0 (ReLU, LeakyReLU) and
/// for RMSNorm, whose `x / √(x² + ε)` with ε the machine epsilon is a smoothed sign
/// function for one-element groups.
pub fn nonzero(n: usize) -> BoxedStrategy<Vec<f64>> {
    vec(
        (0.1..2.0f64, any::<bool>()).prop_map(|(m, neg)| if neg { -m } else { m }),
        n,
    )
    .boxed()
}

/// In [lo, hi).
pub fn within(n: usize, lo: f64, hi: f64) -> BoxedStrategy<Vec<f64>> {
    vec(lo..hi, n).boxed()
}

/// Pairwise at least 0.05 apart (a shuffled grid of step 0.1, each point moved by less
/// than 0.05, the whole shifted by less than 0.5): for max pooling, whose gradient goes
/// to one element of each window and is arbitrary on ties, and for the normalisations,
/// whose gradient has a pole where a group's variance is zero (any two elements of a
/// group differ by at least 0.05, so its variance is far from zero).
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

/// Lowers the largest dimensions of `s` until it has at most `max_numel` elements.
pub fn fit(s: &mut [usize], max_numel: usize) {
    while numel(s) > max_numel.max(1) {
        let (i, _) = s
            .iter()
            .enumerate()
            .max_by_key(|&(_, &d)| d)
            .expect("a shape with too many elements has a dimension");
        s[i] -= 1;
    }
}

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
