//! Helpers of strata-privacy's tests: the single-sample reference for per-sample
//! gradients, and comparisons that report the first mismatch.
#![allow(dead_code)]

use std::ops::Range;

use proptest::test_runner::TestCaseError;
use strata_autograd::Var;
use strata_nn::Module;
use strata_privacy::{GradSampler, LossReduction, NormMethod};
use strata_tensor::Tensor;
pub use strata_testing::TestResult;

/// A result as a test result: an error fails the case with its message.
pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(e.to_string()))
}

/// Fails unless `got` and `want` agree elementwise within `tol·(1 + |want|)`, naming the
/// first index that does not.
pub fn close(what: &str, got: &[f64], want: &[f64], tol: f64) -> TestResult {
    if got.len() != want.len() {
        return Err(TestCaseError::fail(format!(
            "{what}: {} values, expected {}",
            got.len(),
            want.len()
        )));
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g.is_nan() || (g - w).abs() > tol * (1.0 + w.abs()) {
            return Err(TestCaseError::fail(format!(
                "{what}: index {i}: got {g}, expected {w} (tolerance {tol})"
            )));
        }
    }
    Ok(())
}

/// Checks the per-sample gradients of `model`'s parameters on a batch of `batch`
/// samples against single-sample backward passes: `loss(range)` runs the model on the
/// samples in `range` and returns the sum of their losses. Also checks the norms (ghost,
/// materialised and automatic) against the norms of the per-sample gradients, and the
/// weighted sum against `Σ cₙ gₙ`.
pub fn check_per_sample<M: Module<f64> + ?Sized>(
    model: &M,
    batch: usize,
    batch_first: bool,
    loss: &dyn Fn(Range<usize>) -> strata_nn::Result<Var<f64>>,
) -> TestResult {
    let sampler = ok(GradSampler::new(model))?
        .loss_reduction(LossReduction::Sum)
        .batch_first(batch_first);
    let captured = ok(sampler.capture(batch, || loss(0..batch)))?;
    let params = sampler.parameters();
    let per: Vec<Tensor<f64>> = ok(captured.per_sample_grads())?;
    for n in 0..batch {
        model.zero_grad();
        ok(ok(loss(n..n + 1))?.backward())?;
        for ((name, p), g) in params.iter().zip(&per) {
            let want = p.grad().unwrap_or_else(|| Tensor::zeros(p.shape()));
            let got = ok(g.narrow(0, n, 1))?;
            close(
                &format!("{name}, sample {n}"),
                &got.to_vec(),
                &want.to_vec(),
                1e-8,
            )?;
        }
    }
    let c: Vec<f64> = (0..batch).map(|n| 0.5 + 0.37 * n as f64).collect();
    for (i, ((name, _), g)) in params.iter().zip(&per).enumerate() {
        let flat = ok(g.reshape([batch as isize, -1]))?;
        let want: Vec<f64> = ok(flat.square().sum(&[1], false))?.to_vec();
        for method in [NormMethod::Ghost, NormMethod::Materialize, NormMethod::Auto] {
            let got = ok(captured.norms_sq(i, method))?;
            close(&format!("{name}: norms ({method:?})"), &got, &want, 1e-8)?;
        }
        let weights = ok(Tensor::from_vec(c.clone(), &[batch, 1]))?;
        let want = ok(ok(flat.mul(&weights))?.sum(&[0], false))?;
        let got = ok(captured.weighted_sum(i, &c))?;
        close(
            &format!("{name}: weighted sum"),
            &got.to_vec(),
            &want.to_vec(),
            1e-8,
        )?;
    }
    Ok(())
}

/// `Σ y ⊙ r` over the samples in `range` of `y`'s batch (dimension `dim`), with `r` a
/// fixed pseudo-random tensor of the full batch's shape: a loss whose samples all differ.
pub fn projected(
    y: &Var<f64>,
    r: &Tensor<f64>,
    dim: usize,
    range: Range<usize>,
) -> strata_nn::Result<Var<f64>> {
    let r = r.narrow(dim as isize, range.start, range.len())?;
    Ok(y.mul(&Var::new(r))?.sum_all())
}
