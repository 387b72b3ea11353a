//! Functional gradients, like `torch.autograd.grad` and `torch.autograd.functional`:
//! [`grad`] returns gradients instead of accumulating them into `.grad`, optionally as vars
//! with graphs of their own (`create_graph`), which makes higher-order derivatives a
//! composition: [`vjp`], [`jvp`] (by the double-vjp trick) and [`hessian_vector_product`].

use strata_tensor::{Element, Tensor};

use crate::backward::{Sink, seed_for, walk_tensors, walk_vars};
use crate::{AutogradError, Result, Var};

/// How [`grad`] walks: PyTorch's `retain_graph`, `create_graph` and `allow_unused`
/// (all off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GradOptions {
    /// Keep the graph for another walk (implied by `create_graph`).
    pub retain_graph: bool,
    /// Compute the gradients with differentiable ops, so they can be differentiated
    /// again.
    pub create_graph: bool,
    /// Give `None` for an input the outputs do not depend on, instead of an error.
    pub allow_unused: bool,
}

/// The gradients of `outputs` (weighted by `grad_outputs`, or one for one-element
/// outputs) with respect to `inputs`, like `torch.autograd.grad`: one entry per input,
/// `.grad` left alone. With `create_graph` each gradient is a var with a graph of its own.
///
/// ```
/// use strata_autograd::{GradOptions, Var, grad};
/// use strata_tensor::Tensor;
///
/// // u(x) = sin(x); u' = cos(x), u'' = -sin(x), the second derivative of a PINN's loss.
/// let x = Var::parameter(Tensor::from_vec(vec![0.5f64, 1.0], &[2])?);
/// let u = x.sin();
/// let with_graph = GradOptions { create_graph: true, ..GradOptions::default() };
/// let ones = Var::new(Tensor::ones(&[2]));
/// let du = grad(&[u], &[x.clone()], Some(&[ones.clone()]), with_graph)?[0].clone().unwrap();
/// let d2u = grad(&[du], &[x.clone()], Some(&[ones]), GradOptions::default())?[0].clone().unwrap();
/// for (got, x) in d2u.to_vec().iter().zip([0.5f64, 1.0]) {
///     assert!((got + x.sin()).abs() < 1e-12);
/// }
/// # Ok::<(), strata_autograd::AutogradError>(())
/// ```
///
/// # Errors
/// [`AutogradError::NoGraph`] when an output or an input does not require grad,
/// [`AutogradError::GradShape`] / [`AutogradError::NonScalarOutput`] for missing or
/// mis-shaped `grad_outputs`, [`AutogradError::UnusedInput`] for an input the outputs do
/// not depend on (unless `allow_unused`), [`AutogradError::NoDoubleBackward`] with
/// `create_graph` through an op without a differentiable backward.
pub fn grad<T: Element>(
    outputs: &[Var<T>],
    inputs: &[Var<T>],
    grad_outputs: Option<&[Var<T>]>,
    options: GradOptions,
) -> Result<Vec<Option<Var<T>>>> {
    if let Some(g) = grad_outputs
        && g.len() != outputs.len()
    {
        return Err(AutogradError::Invalid {
            op: "grad",
            msg: format!("{} grad_outputs for {} outputs", g.len(), outputs.len()),
        });
    }
    if outputs.iter().any(|o| !o.needs_grad()) || inputs.iter().any(|i| !i.needs_grad()) {
        return Err(AutogradError::NoGraph);
    }
    let seed = |k: usize| -> Result<Tensor<T>> {
        seed_for(&outputs[k], grad_outputs.map(|g| g[k].value()).as_ref())
    };
    let grads: Vec<Option<Var<T>>> = if options.create_graph {
        let seeds = (0..outputs.len())
            .map(|k| match grad_outputs {
                Some(g) => {
                    seed(k)?;
                    Ok(g[k].clone())
                }
                None => Ok(Var::new(seed(k)?)),
            })
            .collect::<Result<Vec<_>>>()?;
        walk_vars(outputs, seeds, Sink::Capture(inputs))?
    } else {
        let seeds = (0..outputs.len()).map(seed).collect::<Result<Vec<_>>>()?;
        walk_tensors(outputs, seeds, options.retain_graph, Sink::Capture(inputs))?
            .into_iter()
            .map(|g| g.map(Var::new))
            .collect()
    };
    if !options.allow_unused
        && let Some(index) = grads.iter().position(Option::is_none)
    {
        return Err(AutogradError::UnusedInput { index });
    }
    Ok(grads)
}

/// A function's outputs and a product of its Jacobian (one per input for [`vjp`], one per
/// output for [`jvp`]).
pub type Products<T> = (Vec<Var<T>>, Vec<Var<T>>);

/// The vector–Jacobian product of `f` at `inputs` with `v` (one per output), like
/// `torch.autograd.functional.vjp`: `f`'s outputs and `vᵀ·J` per input (zeros for an
/// input the outputs do not depend on). With `create_graph` the products are
/// differentiable in `inputs` and `v`.
///
/// # Errors
/// Those of `f` and of [`grad`].
pub fn vjp<T: Element>(
    f: impl FnOnce(&[Var<T>]) -> Result<Vec<Var<T>>>,
    inputs: &[Tensor<T>],
    v: &[Var<T>],
    create_graph: bool,
) -> Result<Products<T>> {
    let xs: Vec<Var<T>> = inputs.iter().map(|t| Var::parameter(t.clone())).collect();
    let outputs = f(&xs)?;
    let options = GradOptions {
        create_graph,
        allow_unused: true,
        ..GradOptions::default()
    };
    let grads = grad(&outputs, &xs, Some(v), options)?;
    let grads = grads
        .into_iter()
        .zip(&xs)
        .map(|(g, x)| g.unwrap_or_else(|| Var::new(Tensor::zeros(x.shape()))))
        .collect();
    Ok((outputs, grads))
}

/// The Jacobian–vector product of `f` at `inputs` with tangents `v` (one per input), like
/// `torch.autograd.functional.jvp`, computed by the double-vjp trick: `g(u) = Jᵀ·u` is
/// linear in `u`, so the vjp of `g` with `v` is `J·v`. Returns `f`'s outputs and `J·v` per
/// output.
///
/// # Errors
/// Those of `f` and of [`grad`] (every op on the way needs a differentiable backward).
pub fn jvp<T: Element>(
    f: impl FnOnce(&[Var<T>]) -> Result<Vec<Var<T>>>,
    inputs: &[Tensor<T>],
    v: &[Var<T>],
) -> Result<Products<T>> {
    let xs: Vec<Var<T>> = inputs.iter().map(|t| Var::parameter(t.clone())).collect();
    let outputs = f(&xs)?;
    // Dummy cotangents: g(u) = Jᵀ·u, built with a graph so it can be differentiated in u.
    let us: Vec<Var<T>> = outputs
        .iter()
        .map(|o| Var::parameter(Tensor::zeros(o.shape())))
        .collect();
    let with_graph = GradOptions {
        create_graph: true,
        allow_unused: true,
        ..GradOptions::default()
    };
    // Keep the inputs whose gradient depends on u, each with its tangent.
    let (g, tangents): (Vec<Var<T>>, Vec<Var<T>>) = grad(&outputs, &xs, Some(&us), with_graph)?
        .into_iter()
        .zip(v)
        .filter_map(|(g, t)| g.filter(Var::needs_grad).map(|g| (g, t.clone())))
        .unzip();
    let jv = if g.is_empty() {
        vec![None; us.len()]
    } else {
        let options = GradOptions {
            allow_unused: true,
            ..GradOptions::default()
        };
        grad(&g, &us, Some(&tangents), options)?
    };
    let jv = jv
        .into_iter()
        .zip(&outputs)
        .map(|(g, o)| g.unwrap_or_else(|| Var::new(Tensor::zeros(o.shape()))))
        .collect();
    Ok((outputs, jv))
}

/// The Hessian–vector product `H·v` of a scalar function `f` at `inputs` (`v` one per
/// input), like `torch.autograd.functional.hvp`: the gradient of `∇f · v`. Returns `f`'s
/// value and `H·v` per input.
///
/// ```
/// use strata_autograd::{Var, hessian_vector_product};
/// use strata_tensor::Tensor;
///
/// // f(x) = Σ x³: H = diag(6x), so H·v = 6·x·v.
/// let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2])?;
/// let v = Var::new(Tensor::from_vec(vec![1.0, 0.5], &[2])?);
/// let (_, hv) = hessian_vector_product(|x| Ok(x[0].pow_scalar(3.0).sum_all()), &[x], &[v])?;
/// assert_eq!(hv[0].to_vec(), vec![6.0, 6.0]);
/// # Ok::<(), strata_autograd::AutogradError>(())
/// ```
///
/// # Errors
/// [`AutogradError::NonScalarOutput`] when `f` is not one-element; those of [`grad`].
pub fn hessian_vector_product<T: Element>(
    f: impl FnOnce(&[Var<T>]) -> Result<Var<T>>,
    inputs: &[Tensor<T>],
    v: &[Var<T>],
) -> Result<(Var<T>, Vec<Var<T>>)> {
    let xs: Vec<Var<T>> = inputs.iter().map(|t| Var::parameter(t.clone())).collect();
    let y = f(&xs)?;
    let with_graph = GradOptions {
        create_graph: true,
        allow_unused: true,
        ..GradOptions::default()
    };
    let g = grad(std::slice::from_ref(&y), &xs, None, with_graph)?;
    // ∇f · v, summed over the inputs that got a gradient with a graph.
    let mut dot: Option<Var<T>> = None;
    for (g, v) in g.iter().zip(v) {
        if let Some(g) = g.as_ref().filter(|g| g.needs_grad()) {
            let term = g.mul(v)?.sum_all();
            dot = Some(match dot {
                None => term,
                Some(acc) => acc.add(&term)?,
            });
        }
    }
    let hv = match dot {
        Some(dot) => {
            let options = GradOptions {
                allow_unused: true,
                ..GradOptions::default()
            };
            grad(&[dot], &xs, None, options)?
        }
        None => vec![None; xs.len()],
    };
    let hv = hv
        .into_iter()
        .zip(&xs)
        .map(|(g, x)| g.unwrap_or_else(|| Var::new(Tensor::zeros(x.shape()))))
        .collect();
    Ok((y, hv))
}
