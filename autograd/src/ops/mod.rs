//! The differentiable ops on [`Var`]: each forward beside its backward rule.
//!
//! Every op computes its value with strata-tensor, then records a node through
//! [`Var::from_op`] only when an input requires grad; its closure saves just what the
//! backward needs.

mod algebra;
mod attention;
mod conv_transpose;
mod elementwise;
mod index;
mod linalg;
mod loss;
pub(crate) mod nn;
mod norm;
mod overload;
mod rearrange;
mod recurrent;
mod reduce;
mod scan;
mod sorting;
mod svd;
mod unary;
mod view;

pub use conv_transpose::ConvTransposeParams;
pub use rearrange::einsum;
pub use recurrent::RecurrentParams;

use strata_tensor::{Element, Tensor};

use crate::{Result, Var};

/// Records a one-input op whose backward is a linear map of the output gradient written
/// once, `|g| expr`: the same text runs on tensors for the first-order backward and on vars
/// for the differentiable one (the ops it uses exist under the same names on both). The
/// listed captures are cloned for the second closure.
macro_rules! linear_unary {
    ($self:expr, $op:expr, $value:expr, [$($cap:ident),*], |$g:ident| $body:expr) => {{
        let first = {
            $(let $cap = $cap.clone();)*
            move |$g: &strata_tensor::Tensor<_>| -> crate::Result<strata_tensor::Tensor<_>> {
                Ok($body)
            }
        };
        let second = move |$g: &crate::Var<_>,
                           _: &[Option<crate::Var<_>>],
                           _: crate::Needs<'_>|
              -> crate::Result<Vec<Option<crate::Var<_>>>> { Ok(vec![Some($body)]) };
        $self.unary_op($op, $value, first).double_backward(second)
    }};
}
pub(crate) use linear_unary;

impl<T: Element> Var<T> {
    /// Records a one-input op whose backward maps the output gradient to the input's.
    pub(crate) fn unary_op<F>(&self, op: &'static str, value: Tensor<T>, backward: F) -> Var<T>
    where
        F: Fn(&Tensor<T>) -> Result<Tensor<T>> + Send + Sync + 'static,
    {
        Var::from_op(op, value, &[self], move |g, _| Ok(vec![Some(backward(g)?)]))
    }
}

/// Input `i` of a node in a differentiable backward: the op's tracked input (a node
/// exists only when some input is tracked, and single-input ops call this for input 0).
pub(crate) fn tracked<T: Element>(inputs: &[Option<Var<T>>], i: usize) -> Var<T> {
    inputs[i]
        .clone()
        .expect("a differentiable backward reads a tracked input")
}

/// Input `i` of a node in a differentiable backward, or the constant `value` when it is
/// not tracked.
pub(crate) fn input_or<T: Element>(
    inputs: &[Option<Var<T>>],
    i: usize,
    value: &Tensor<T>,
) -> Var<T> {
    inputs[i].clone().unwrap_or_else(|| Var::new(value.clone()))
}

/// The differentiable backward of a fused op, by decomposition: `forward` recomputes the
/// op from its inputs (`xs`: each input's var when tracked, else the constant `values[i]`)
/// with ops that have differentiable backwards, and the gradient of that recomputation
/// weighted by `g`, taken with `create_graph`, is the op's backward as a graph. The fused
/// kernel stays the first-order path; this one is only walked for higher orders.
pub(crate) fn decomposed<T: Element>(
    g: &Var<T>,
    inputs: &[Option<Var<T>>],
    values: &[Option<Tensor<T>>],
    forward: impl FnOnce(&[Option<Var<T>>]) -> Result<Var<T>>,
) -> Result<Vec<Option<Var<T>>>> {
    let xs: Vec<Option<Var<T>>> = inputs
        .iter()
        .zip(values)
        .map(|(i, v)| i.clone().or_else(|| v.clone().map(Var::new)))
        .collect();
    let y = forward(&xs)?;
    let tracked: Vec<Var<T>> = inputs.iter().flatten().cloned().collect();
    if tracked.is_empty() || !y.needs_grad() {
        return Ok(vec![None; inputs.len()]);
    }
    let options = crate::GradOptions {
        create_graph: true,
        allow_unused: true,
        ..crate::GradOptions::default()
    };
    let mut grads =
        crate::grad(&[y], &tracked, Some(std::slice::from_ref(g)), options)?.into_iter();
    Ok(inputs
        .iter()
        .map(|i| {
            if i.is_some() {
                grads.next().flatten()
            } else {
                None
            }
        })
        .collect())
}

/// Resolves a possibly negative `dim` against `ndim` dimensions (the forward op has
/// already validated it). A 0-d tensor accepts 0 and -1 as PyTorch does.
pub(crate) fn resolve(dim: isize, ndim: usize) -> usize {
    let n = ndim.max(1) as isize;
    (if dim < 0 { dim + n } else { dim }) as usize
}

/// The shape of a reduction over `dims` of `shape` with `keepdim = true` (empty `dims`
/// reduce everything).
pub(crate) fn keepdim_shape(shape: &[usize], dims: &[isize]) -> Vec<usize> {
    let mut out = shape.to_vec();
    if dims.is_empty() {
        out.iter_mut().for_each(|s| *s = 1);
    } else if !shape.is_empty() {
        for &d in dims {
            out[resolve(d, shape.len())] = 1;
        }
    }
    out
}

/// A zero-padding of `before` and `after` along dimension `d` of an `nd`-d tensor, as
/// `pad`'s argument (F.pad pairs start from the last dimension).
pub(crate) fn pads_along(nd: usize, d: usize, before: usize, after: usize) -> Vec<isize> {
    let mut pads = vec![0isize; 2 * (nd - d)];
    let k = nd - 1 - d;
    pads[2 * k] = before as isize;
    pads[2 * k + 1] = after as isize;
    pads
}
