//! Shared test helpers of the strata workspace (a dev-only crate, not published): the
//! proptest value strategies that keep gradient checks away from kinks and poles, the
//! gradcheck runner that turns a mismatch into a proptest failure, small constructors, and
//! naive reference kernels written from the definitions (never calling the library).
//!
//! Each crate's `tests/common` keeps only what is its own (case counts, the view layouts
//! autograd draws, the layer shapes nn draws) and re-exports the rest from here.
#![allow(clippy::missing_panics_doc)]
#![forbid(unsafe_code)]

pub mod fuzz;
pub mod reference;
mod values;

pub use values::*;

use proptest::test_runner::TestCaseError;
use strata_autograd::{AutogradError, GradcheckOptions, Var, gradcheck, gradgradcheck};
use strata_tensor::{IndexTensor, Tensor};

/// What a property body returns.
pub type TestResult = std::result::Result<(), TestCaseError>;

/// The number of elements of `shape` (1 for `[]`).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Resolves a possibly negative dimension against `ndim` (PyTorch: a 0-d tensor takes 0
/// and -1).
pub fn resolve(dim: isize, ndim: usize) -> usize {
    let n = ndim.max(1) as isize;
    (if dim < 0 { dim + n } else { dim }) as usize
}

// ---------------------------------------------------------------------------------------
// Row-major index arithmetic, for references written index by index.
// ---------------------------------------------------------------------------------------

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// The multi-index of row-major position `flat` in `shape`.
pub fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = flat % shape[d];
        flat /= shape[d];
    }
    idx
}

/// The row-major position of multi-index `idx` in `shape`.
pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// Every multi-index of `shape`, in row-major order.
pub fn indices(shape: &[usize]) -> impl Iterator<Item = Vec<usize>> + '_ {
    (0..numel(shape)).map(move |k| unravel(k, shape))
}

/// The NumPy broadcast of two shapes, or `None`.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let x = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let y = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            match (x, y) {
                _ if x == y => Some(x),
                (1, _) => Some(y),
                (_, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// The source position in `shape` (right-aligned, size-1 dimensions repeated) of output
/// index `o` of a broadcast to a larger shape.
pub fn broadcast_source(o: &[usize], shape: &[usize]) -> usize {
    let lead = o.len() - shape.len();
    let i: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(k, &d)| if d == 1 { 0 } else { o[k + lead] })
        .collect();
    ravel(&i, shape)
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

/// A tensor from test data whose length is known to fit.
pub fn tensor(data: Vec<f64>, shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(data, shape).expect("test data fits its shape")
}

/// An index tensor from test data whose length is known to fit.
pub fn index(data: Vec<i64>, shape: &[usize]) -> IndexTensor {
    IndexTensor::from_vec(data, shape).expect("test indices fit their shape")
}

/// Gradchecks `f` at `inputs` with PyTorch's tolerances (eps 1e-6, atol 1e-5, rtol 1e-3).
pub fn check<F>(f: F, inputs: &[Tensor<f64>]) -> TestResult
where
    F: Fn(&[Var<f64>]) -> strata_autograd::Result<Var<f64>>,
{
    check_with(f, inputs, GradcheckOptions::default())
}

/// [`check`] for a closure that fails with another error type (a layer refusing its
/// input): the failure becomes the case's message.
pub fn check_any<F, E>(f: F, inputs: &[Tensor<f64>]) -> TestResult
where
    F: Fn(&[Var<f64>]) -> Result<Var<f64>, E>,
    E: std::fmt::Display,
{
    check_with(f, inputs, GradcheckOptions::default())
}

/// [`check_any`] with other options: the first-order check ([`gradcheck`]) and the
/// second-order one ([`gradgradcheck`]: the differentiable backward that `create_graph`
/// walks, checked against central differences of the first-order backward). The seed of
/// the output projection is replaced by a hash of the inputs, so each case projects with
/// other weights, reproducibly.
pub fn check_with<F, E>(f: F, inputs: &[Tensor<f64>], options: GradcheckOptions) -> TestResult
where
    F: Fn(&[Var<f64>]) -> Result<Var<f64>, E>,
    E: std::fmt::Display,
{
    let seed = inputs
        .iter()
        .flat_map(Tensor::to_vec)
        .fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
            (h ^ x.to_bits()).wrapping_mul(0x0100_0000_01b3)
        });
    let f = |v: &[Var<f64>]| {
        f(v).map_err(|e| AutogradError::Invalid {
            op: "gradcheck closure",
            msg: e.to_string(),
        })
    };
    let options = GradcheckOptions { seed, ..options };
    gradcheck(f, inputs, &options).map_err(|e| TestCaseError::fail(e.to_string()))?;
    // The second order along a random direction (PyTorch's fast mode): every element would
    // cost two create_graph backwards each, minutes for a transformer layer.
    let second = GradcheckOptions {
        fast: true,
        ..options
    };
    gradgradcheck(f, inputs, &second).map_err(|e| TestCaseError::fail(format!("second order: {e}")))
}
