//! Matrix products.

use strata_tensor::{Element, Tensor};

use crate::{Result, Var};

impl<T: Element> Var<T> {
    /// The matrix product with PyTorch's rules (`torch.matmul`): 1-d·1-d is a dot
    /// product, a 1-d operand is promoted to a matrix and the added dimension removed
    /// again, and batch dimensions broadcast. Gradients are summed back over broadcast
    /// batch dimensions.
    ///
    /// # Errors
    /// [`TensorError::Matmul`](strata_tensor::TensorError::Matmul) when the inner sizes
    /// differ or the batch dimensions do not broadcast.
    pub fn matmul(&self, other: &Var<T>) -> Result<Var<T>> {
        let (a, b) = (self.value(), other.value());
        let value = a.matmul(&b)?;
        let track = Var::tracking(&[self, other]);
        // Keep each operand only when the other one needs its gradient.
        let a = (track && other.needs_grad()).then_some(a);
        let b = (track && self.needs_grad()).then_some(b);
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        let (a2, b2, sa2, sb2) = (a.clone(), b.clone(), sa.clone(), sb.clone());
        Ok(Var::from_op("matmul", value, &[self, other], move |g, n| {
            let ga = match (&b, n[0]) {
                (Some(b), true) => Some(grad_lhs(g, b, &sa)?),
                _ => None,
            };
            let gb = match (&a, n[1]) {
                (Some(a), true) => Some(grad_rhs(g, a, &sb)?),
                _ => None,
            };
            Ok(vec![ga, gb])
        })
        .double_backward(move |g, inputs, n| {
            // The other operand as a var when tracked (so its gradient flows), else the
            // value kept for this gradient.
            let operand = |i: usize, kept: &Option<Tensor<T>>| {
                inputs[i].clone().or_else(|| kept.clone().map(Var::new))
            };
            let ga = match (operand(1, &b2), n.get(0)) {
                (Some(b), true) => Some(grad_lhs_var(g, &b, &sa2)?),
                _ => None,
            };
            let gb = match (operand(0, &a2), n.get(1)) {
                (Some(a), true) => Some(grad_rhs_var(g, &a, &sb2)?),
                _ => None,
            };
            Ok(vec![ga, gb])
        }))
    }
}

/// `∂(a·b)/∂a` applied to `g`: `g · bᵀ`, summed to `a`'s shape.
/// The gradients of `a @ b` with respect to `a` (given `b`) and `b` (given `a`), written
/// once for tensors (the first-order backward) and vars (the differentiable one).
macro_rules! matmul_grads {
    ($lhs:ident, $rhs:ident, $ty:ident) => {
        fn $lhs<T: Element>(g: &$ty<T>, b: &$ty<T>, sa: &[usize]) -> Result<$ty<T>> {
            Ok(match (sa.len(), b.ndim()) {
                (1, 1) => b.mul(g)?,
                // a [k] was promoted to [1, k]; the output lost that row.
                (1, _) => g
                    .unsqueeze(-2)?
                    .matmul(&b.transpose(-1, -2)?)?
                    .sum_to_shape(&[1, sa[0]])?
                    .reshape(sa)?,
                // b [k] was promoted to [k, 1]; the output lost that column.
                (_, 1) => g
                    .unsqueeze(-1)?
                    .matmul(&b.unsqueeze(0)?)?
                    .sum_to_shape(sa)?,
                _ => g.matmul(&b.transpose(-1, -2)?)?.sum_to_shape(sa)?,
            })
        }

        /// `∂(a·b)/∂b` applied to `g`: `aᵀ · g`, summed to `b`'s shape. A 2-d `b` shared by a
        /// batch of `a`s takes one GEMM over the folded batch instead of a batch of GEMMs.
        fn $rhs<T: Element>(g: &$ty<T>, a: &$ty<T>, sb: &[usize]) -> Result<$ty<T>> {
            Ok(match (a.ndim(), sb.len()) {
                (1, 1) => a.mul(g)?,
                (1, _) => a
                    .unsqueeze(-1)?
                    .matmul(&g.unsqueeze(-2)?)?
                    .sum_to_shape(sb)?,
                (_, 1) => a
                    .transpose(-1, -2)?
                    .matmul(&g.unsqueeze(-1)?)?
                    .sum_to_shape(&[sb[0], 1])?
                    .reshape(sb)?,
                (na, 2) if na > 2 => {
                    let k = a.shape()[na - 1];
                    let n = sb[1];
                    a.reshape([-1, k as isize])?
                        .t()?
                        .matmul(&g.reshape([-1, n as isize])?)?
                }
                _ => a.transpose(-1, -2)?.matmul(g)?.sum_to_shape(sb)?,
            })
        }
    };
}

matmul_grads!(grad_lhs, grad_rhs, Tensor);
matmul_grads!(grad_lhs_var, grad_rhs_var, Var);
