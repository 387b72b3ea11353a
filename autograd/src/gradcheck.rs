//! Numerical gradient checking: analytic gradients against central differences in f64.

use strata_tensor::{Tensor, seeded_rng};

use crate::{AutogradError, Var, no_grad};

/// Tolerances and step of [`gradcheck`]; the defaults are PyTorch's
/// (`torch.autograd.gradcheck`: eps 1e-6, atol 1e-5, rtol 1e-3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradcheckOptions {
    /// The central-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (of the numerical value).
    pub rtol: f64,
    /// Seed of the random weights that reduce a non-scalar output to a scalar.
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
            seed: 0,
        }
    }
}

/// Why [`gradcheck`] failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GradcheckError {
    /// The function or its backward returned an error.
    #[error(transparent)]
    Autograd(#[from] AutogradError),
    /// An analytic gradient differs from the numerical one.
    #[error(
        "gradcheck: input {input} (shape {shape:?}), element {index:?}: analytic {analytic:e}, \
         numerical {numerical:e} (|difference| {difference:.3e} > atol + rtol·|numerical| = {bound:.3e})"
    )]
    Mismatch {
        /// Which input.
        input: usize,
        /// Its shape.
        shape: Vec<usize>,
        /// The element's multi-index.
        index: Vec<usize>,
        /// The gradient backward computed.
        analytic: f64,
        /// The central difference.
        numerical: f64,
        /// `|analytic - numerical|`.
        difference: f64,
        /// The tolerance it exceeded.
        bound: f64,
    },
}

/// Checks the gradients of `f` at `inputs` against central differences, like
/// `torch.autograd.gradcheck`.
///
/// Each input becomes a parameter; a non-scalar output `y` is reduced to `Σ r ⊙ y` with
/// fixed random weights `r` (so every output element is checked at once, with
/// probability one of catching a wrong Jacobian). Returns the first element whose
/// analytic and numerical gradients differ by more than `atol + rtol · |numerical|`.
///
/// ```
/// use strata_autograd::{GradcheckOptions, Var, gradcheck};
/// use strata_tensor::Tensor;
///
/// let x = Tensor::from_vec(vec![0.5f64, -1.0, 2.0], &[3])?;
/// gradcheck(|v| Ok(v[0].tanh().mul(&v[0])?), &[x], &GradcheckOptions::default())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`GradcheckError::Mismatch`] naming the input, the element and both values, or the
/// error `f` returned.
pub fn gradcheck<F>(
    f: F,
    inputs: &[Tensor<f64>],
    options: &GradcheckOptions,
) -> Result<(), GradcheckError>
where
    F: Fn(&[Var<f64>]) -> crate::Result<Var<f64>>,
{
    gradcheck_dyn(&f, inputs, options)
}

/// The function under check.
type CheckedFn<'a> = dyn Fn(&[Var<f64>]) -> crate::Result<Var<f64>> + 'a;

/// [`gradcheck`]'s body, compiled once rather than once per closure.
fn gradcheck_dyn(
    f: &CheckedFn<'_>,
    inputs: &[Tensor<f64>],
    options: &GradcheckOptions,
) -> Result<(), GradcheckError> {
    let vars: Vec<Var<f64>> = inputs
        .iter()
        .map(|t| Var::parameter(t.contiguous()))
        .collect();
    let out = f(&vars)?;
    let mut rng = seeded_rng(options.seed);
    let weights = Tensor::<f64>::randn(out.shape(), &mut rng);
    if out.needs_grad() {
        out.backward_with(&weights)?;
    }
    let project =
        |y: &Var<f64>| -> crate::Result<f64> { Ok(y.value().mul(&weights)?.sum_all().item()?) };

    for (i, input) in vars.iter().enumerate() {
        let analytic = input
            .grad()
            .unwrap_or_else(|| Tensor::zeros(input.shape()))
            .to_vec();
        let base = input.to_vec();
        for (j, &a) in analytic.iter().enumerate() {
            let at = |delta: f64| -> crate::Result<f64> {
                let mut moved = base.clone();
                moved[j] += delta;
                let mut args: Vec<Var<f64>> = vars.iter().map(Var::detach).collect();
                args[i] = Var::new(Tensor::from_vec(moved, input.shape())?);
                no_grad(|| project(&f(&args)?))
            };
            let numerical = (at(options.eps)? - at(-options.eps)?) / (2.0 * options.eps);
            let difference = (a - numerical).abs();
            let bound = options.atol + options.rtol * numerical.abs();
            if difference > bound || difference.is_nan() {
                return Err(GradcheckError::Mismatch {
                    input: i,
                    shape: input.shape().to_vec(),
                    index: unravel(j, input.shape()),
                    analytic: a,
                    numerical,
                    difference,
                    bound,
                });
            }
        }
    }
    Ok(())
}

fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        index[d] = flat % shape[d];
        flat /= shape[d];
    }
    index
}
