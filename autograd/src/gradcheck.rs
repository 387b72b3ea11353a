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
    /// PyTorch's `fast_mode`: instead of every element of every input, check the
    /// derivative along one random direction of all inputs at once (`vᵀ·J·u` for random
    /// `u` and `v`), two evaluations in all. A wrong Jacobian is still caught with
    /// probability one; for large layers and second-order checks.
    pub fast: bool,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
            seed: 0,
            fast: false,
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
    /// In fast mode, the analytic directional derivative differs from the numerical one.
    #[error(
        "gradcheck (fast mode): along a random direction the analytic derivative is \
         {analytic:e}, the numerical {numerical:e} (|difference| {difference:.3e} > \
         atol + rtol·|numerical| = {bound:.3e})"
    )]
    DirectionalMismatch {
        /// `Σ_i ⟨∂f/∂x_i, u_i⟩` from backward.
        analytic: f64,
        /// The central difference along `u`.
        numerical: f64,
        /// `|analytic - numerical|`.
        difference: f64,
        /// The tolerance it exceeded.
        bound: f64,
    },
    /// The differentiable backward (`create_graph`) gives another gradient than the
    /// first-order one.
    #[error(
        "gradgradcheck: input {input}, element {index:?}: the first-order backward gives \
         {first_order:e}, the differentiable one {graph:e}"
    )]
    GraphMismatch {
        /// Which input.
        input: usize,
        /// The element's multi-index.
        index: Vec<usize>,
        /// The first-order backward's value.
        first_order: f64,
        /// The differentiable backward's value.
        graph: f64,
    },
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

    if options.fast {
        let directions: Vec<Tensor<f64>> = vars
            .iter()
            .map(|v| Tensor::<f64>::randn(v.shape(), &mut rng))
            .collect();
        let mut analytic = 0.0;
        for (v, u) in vars.iter().zip(&directions) {
            if let Some(g) = v.grad() {
                analytic += g
                    .mul(u)
                    .map_err(AutogradError::from)?
                    .sum_all()
                    .item()
                    .map_err(AutogradError::from)?;
            }
        }
        let at = |delta: f64| -> crate::Result<f64> {
            let args = vars
                .iter()
                .zip(&directions)
                .map(|(v, u)| Ok(Var::new(v.value().add(&u.mul_scalar(delta))?)))
                .collect::<crate::Result<Vec<_>>>()?;
            no_grad(|| project(&f(&args)?))
        };
        let numerical = (at(options.eps)? - at(-options.eps)?) / (2.0 * options.eps);
        let difference = (analytic - numerical).abs();
        let bound = options.atol + options.rtol * numerical.abs();
        if difference > bound || difference.is_nan() {
            return Err(GradcheckError::DirectionalMismatch {
                analytic,
                numerical,
                difference,
                bound,
            });
        }
        return Ok(());
    }

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

/// The second-order check, like `torch.autograd.gradcheck.gradgradcheck`: the first-order
/// backward of `f` with a random output weight `u`, computed with `create_graph`, is
/// itself gradchecked as a function of the inputs *and* `u`. So every op's differentiable
/// backward (the path `create_graph` walks) is checked against central differences of the
/// first-order one. Inputs the output does not depend on are skipped.
///
/// ```
/// use strata_autograd::{GradcheckOptions, gradgradcheck};
/// use strata_tensor::Tensor;
///
/// let x = Tensor::from_vec(vec![0.5f64, -1.0, 2.0], &[3])?;
/// gradgradcheck(|v| Ok(v[0].tanh().mul(&v[0])?), &[x], &GradcheckOptions::default())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`gradcheck`]; an op without a differentiable backward fails with
/// [`AutogradError::NoDoubleBackward`].
pub fn gradgradcheck<F>(
    f: F,
    inputs: &[Tensor<f64>],
    options: &GradcheckOptions,
) -> Result<(), GradcheckError>
where
    F: Fn(&[Var<f64>]) -> crate::Result<Var<f64>>,
{
    gradgradcheck_dyn(&f, inputs, options)
}

fn gradgradcheck_dyn(
    f: &CheckedFn<'_>,
    inputs: &[Tensor<f64>],
    options: &GradcheckOptions,
) -> Result<(), GradcheckError> {
    // The output's shape, for the weight u.
    let probe: Vec<Var<f64>> = inputs.iter().map(|t| Var::parameter(t.clone())).collect();
    let out_shape = f(&probe)?.shape().to_vec();
    let mut rng = seeded_rng(options.seed ^ 0x9e37_79b9_7f4a_7c15);
    let u = Tensor::<f64>::randn(&out_shape, &mut rng);
    let n = inputs.len();
    // The differentiable backward must give the first-order backward's values: compare
    // the two walks at the point itself before differentiating the first.
    {
        let xs: Vec<Var<f64>> = inputs.iter().map(|t| Var::parameter(t.clone())).collect();
        let y = f(&xs)?;
        if y.needs_grad() {
            let uv = Var::new(u.clone());
            let plain = crate::GradOptions {
                allow_unused: true,
                ..crate::GradOptions::default()
            };
            let graph = crate::GradOptions {
                create_graph: true,
                ..plain
            };
            let first = crate::grad(
                std::slice::from_ref(&y),
                &xs,
                Some(std::slice::from_ref(&uv)),
                crate::GradOptions {
                    retain_graph: true,
                    ..plain
                },
            )?;
            let second = crate::grad(&[y], &xs, Some(&[uv]), graph)?;
            for (i, (a, b)) in first.iter().zip(&second).enumerate() {
                let (a, b) = match (a, b) {
                    (Some(a), Some(b)) => (a.to_vec(), b.to_vec()),
                    (None, None) => continue,
                    (a, b) => {
                        let (a, b) = (a.as_ref().map(Var::to_vec), b.as_ref().map(Var::to_vec));
                        let zero = |v: &Option<Vec<f64>>| {
                            v.as_ref().is_none_or(|v| v.iter().all(|&x| x == 0.0))
                        };
                        if zero(&a) && zero(&b) {
                            continue;
                        }
                        (a.unwrap_or_default(), b.unwrap_or_default())
                    }
                };
                for (j, (&x, &z)) in a.iter().zip(&b).enumerate() {
                    let difference = (x - z).abs();
                    let bound = options.atol + options.rtol * x.abs();
                    if difference > bound || (x.is_nan() != z.is_nan()) {
                        return Err(GradcheckError::GraphMismatch {
                            input: i,
                            index: unravel(j, inputs[i].shape()),
                            first_order: x,
                            graph: z,
                        });
                    }
                }
            }
        }
    }
    // Grad mode on inside: gradcheck evaluates its perturbed inputs under no_grad, but
    // the first-order backward has to be taken there too.
    let first_order = |v: &[Var<f64>]| -> crate::Result<Var<f64>> {
        crate::enable_grad(|| first_order_backward(f, v, n))
    };
    let mut all: Vec<Tensor<f64>> = inputs.to_vec();
    all.push(u);
    gradcheck_dyn(&first_order, &all, options)
}

/// `concat_i ∂(u · f(x))/∂x_i` for `v = [x…, u]`, with `create_graph`.
fn first_order_backward(f: &CheckedFn<'_>, v: &[Var<f64>], n: usize) -> crate::Result<Var<f64>> {
    {
        // The perturbed evaluations pass constants; the backward needs tracked inputs.
        let xs: Vec<Var<f64>> = v[..n]
            .iter()
            .map(|x| {
                if x.needs_grad() {
                    x.clone()
                } else {
                    Var::parameter(x.value())
                }
            })
            .collect();
        let (xs, u) = (&xs[..], &v[n]);
        let y = f(xs)?;
        if !y.needs_grad() {
            return Ok(Var::new(Tensor::zeros(&[1])));
        }
        let opts = crate::GradOptions {
            create_graph: true,
            allow_unused: true,
            ..crate::GradOptions::default()
        };
        let grads = crate::grad(&[y], xs, Some(std::slice::from_ref(u)), opts)?;
        let flat: Vec<Var<f64>> = grads
            .into_iter()
            .flatten()
            .map(|g| g.reshape([-1]))
            .collect::<crate::Result<_>>()?;
        if flat.is_empty() {
            return Ok(Var::new(Tensor::zeros(&[1])));
        }
        let refs: Vec<&Var<f64>> = flat.iter().collect();
        Var::cat(&refs, 0)
    }
}

fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        index[d] = flat % shape[d];
        flat /= shape[d];
    }
    index
}
