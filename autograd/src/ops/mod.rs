//! The differentiable ops on [`Var`]: each forward beside its backward rule.
//!
//! Every op computes its value with strata-tensor, then records a node through
//! [`Var::from_op`] only when an input requires grad; its closure saves just what the
//! backward needs.

mod attention;
mod elementwise;
mod index;
mod linalg;
mod loss;
mod nn;
mod overload;
mod recurrent;
mod reduce;
mod unary;
mod view;

pub use recurrent::RecurrentParams;

use strata_tensor::{Element, Tensor};

use crate::{Result, Var};

impl<T: Element> Var<T> {
    /// Records a one-input op whose backward maps the output gradient to the input's.
    pub(crate) fn unary_op<F>(&self, op: &'static str, value: Tensor<T>, backward: F) -> Var<T>
    where
        F: Fn(&Tensor<T>) -> Result<Tensor<T>> + Send + Sync + 'static,
    {
        Var::from_op(op, value, &[self], move |g, _| Ok(vec![Some(backward(g)?)]))
    }
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

/// `g` zero-padded by `before` and `after` along dimension `d` of an `nd`-d tensor.
pub(crate) fn pad_along<T: Element>(
    g: &Tensor<T>,
    nd: usize,
    d: usize,
    before: usize,
    after: usize,
) -> Result<Tensor<T>> {
    // F.pad pairs start from the last dimension.
    let mut pads = vec![0isize; 2 * (nd - d)];
    let k = nd - 1 - d;
    pads[2 * k] = before as isize;
    pads[2 * k + 1] = after as isize;
    Ok(g.pad(&pads, T::zero())?)
}
