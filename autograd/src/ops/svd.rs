//! The singular value decomposition on vars, with PyTorch's backward (`svd_backward` of
//! `torch.linalg.svd`, real case), written once with var ops: the first-order backward
//! runs it on constants, the differentiable one on the decomposition of the input
//! recomputed as vars, so that every order is the same formula.
//!
//! `U`, `S` and `Vh` are three ops of one input: the backward is linear in their three
//! gradients, so each op contributes its own part.

use std::sync::Arc;

use strata_tensor::{Element, Tensor};

use crate::ops::input_or;
use crate::{Result, Var, no_grad};

/// Which factor of the decomposition an op outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Factor {
    U,
    S,
    Vh,
}

impl Factor {
    fn op(self) -> &'static str {
        match self {
            Factor::U => "svd_u",
            Factor::S => "svd_s",
            Factor::Vh => "svd_vh",
        }
    }
}

impl<T: Element> Var<T> {
    /// The reduced singular value decomposition `(U, S, Vh)` of each matrix in the last two
    /// dimensions, like `torch.linalg.svd(A, full_matrices=False)` (see
    /// [`Tensor::svd`]). Differentiable to any order; as in PyTorch, the gradients through
    /// `U` and `Vh` are defined for functions that do not depend on the sign of the
    /// singular vectors, and are infinite where singular values repeat.
    ///
    /// ```
    /// use strata_autograd::Var;
    /// use strata_tensor::Tensor;
    ///
    /// let a = Var::parameter(Tensor::from_vec(vec![3.0f64, 0.0, 0.0, -2.0], &[2, 2])?);
    /// let (_u, s, _vh) = a.svd()?;
    /// s.sum(&[], false)?.backward()?; // the nuclear norm: its gradient is U·Vh
    /// assert_eq!(a.grad().unwrap().to_vec(), vec![1.0, 0.0, 0.0, -1.0]);
    /// # Ok::<(), strata_autograd::AutogradError>(())
    /// ```
    ///
    /// # Errors
    /// As [`Tensor::svd`].
    pub fn svd(&self) -> Result<(Var<T>, Var<T>, Var<T>)> {
        let (u, s, vh) = self.value().svd()?;
        let parts = Arc::new((u.clone(), s.clone(), vh.clone()));
        Ok((
            self.svd_factor(Factor::U, u, &parts),
            self.svd_factor(Factor::S, s, &parts),
            self.svd_factor(Factor::Vh, vh, &parts),
        ))
    }

    /// The singular values, `[…, min(m, n)]` in descending order, like
    /// `torch.linalg.svdvals` (see [`Tensor::svdvals`]); the gradient is
    /// `U·diag(g)·Vh`, differentiable to any order.
    ///
    /// # Errors
    /// As [`Tensor::svd`].
    pub fn svdvals(&self) -> Result<Var<T>> {
        let (u, s, vh) = self.value().svd()?;
        let parts = Arc::new((u, s.clone(), vh));
        Ok(self.svd_factor(Factor::S, s, &parts))
    }

    /// The op of one factor of the decomposition `parts` of `self`.
    fn svd_factor(
        &self,
        factor: Factor,
        value: Tensor<T>,
        parts: &Arc<(Tensor<T>, Tensor<T>, Tensor<T>)>,
    ) -> Var<T> {
        let parts = parts.clone();
        let x = self.value();
        self.unary_op(factor.op(), value, move |g| {
            let (u, s, vh) = &*parts;
            let (u, s, vh) = (
                Var::new(u.clone()),
                Var::new(s.clone()),
                Var::new(vh.clone()),
            );
            no_grad(|| svd_backward(&u, &s, &vh, factor, &Var::new(g.clone()))).map(|v| v.value())
        })
        .double_backward(move |g, inputs, _| {
            let a = input_or(inputs, 0, &x);
            let (u, s, vh) = a.svd()?;
            Ok(vec![Some(svd_backward(&u, &s, &vh, factor, g)?)])
        })
    }
}

/// The gradient of `A` from the gradient `g` of one factor of `A = U·diag(S)·Vh`
/// (PyTorch's `svd_backward`, real case, reduced decomposition).
fn svd_backward<T: Element>(
    u: &Var<T>,
    s: &Var<T>,
    vh: &Var<T>,
    factor: Factor,
    g: &Var<T>,
) -> Result<Var<T>> {
    let nd = u.ndim();
    let (m, k, n) = (u.shape()[nd - 2], s.shape()[nd - 2], vh.shape()[nd - 1]);
    if k == 0 {
        let mut shape = u.shape().to_vec();
        shape[nd - 1] = n;
        return Ok(Var::new(Tensor::zeros(&shape)));
    }
    let mt = |x: &Var<T>| x.transpose(-2, -1);
    let skew = |x: Var<T>| -> Result<Var<T>> { x.sub(&mt(&x)?) };
    let s_row = s.unsqueeze(-2)?;
    let s_col = s.unsqueeze(-1)?;
    let s2 = s.square();
    // E_jk = S_k² − S_j², 1 on the diagonal (where the skew parts are 0).
    let e = s2
        .unsqueeze(-2)?
        .sub(&s2.unsqueeze(-1)?)?
        .add(&Var::new(Tensor::eye(k, k)?))?;
    let v = mt(vh)?;
    match factor {
        // U·diag(gS)·Vh.
        Factor::S => u.mul(&g.unsqueeze(-2)?)?.matmul(vh),
        Factor::U => {
            let inner = skew(mt(u)?.matmul(g)?)?.div(&e)?.mul(&s_row)?;
            let mut ga = u.matmul(&inner)?;
            if m > k {
                // (I − U·Uᴴ)·gU·S⁻¹: the part of gU outside U's columns.
                let gu_sinv = g.div(&s_row)?;
                ga = ga
                    .add(&gu_sinv)?
                    .sub(&u.matmul(&mt(u)?.matmul(&gu_sinv)?)?)?;
            }
            ga.matmul(vh)
        }
        Factor::Vh => {
            let gv = mt(g)?;
            let inner = s_col.mul(&skew(mt(&v)?.matmul(&gv)?)?.div(&e)?)?;
            let mut ga = inner.matmul(vh)?;
            if n > k {
                // S⁻¹·gVh·(I − V·Vᴴ): the part of gVh outside Vh's rows.
                let sinv_gvh = g.div(&s_col)?;
                ga = ga.add(&sinv_gvh)?.sub(&sinv_gvh.matmul(&v)?.matmul(vh)?)?;
            }
            u.matmul(&ga)
        }
    }
}
