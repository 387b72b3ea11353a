//! Binary elementwise ops with broadcasting, expanded from strata-tensor's table
//! [`for_each_binary_op!`](strata_tensor::for_each_binary_op) (each op's forward is the
//! `Tensor` method, its backward the fused kernel `elementwise::<op>::backward`, the
//! gradients summed back to each input's shape); tensor–scalar ops, `where_` and
//! `masked_fill`.

use strata_tensor::{Dims, Element, Tensor, elementwise};

use crate::ops::{input_or, linear_unary, tracked};
use crate::{Result, Var};

type PairGrads<T> = (Option<Tensor<T>>, Option<Tensor<T>>);

impl<T: Element> Var<T> {
    /// Records a broadcasting binary op: `backward(g, needs)` returns the gradients at the
    /// output's shape, which are then summed to each input's shape.
    fn binary_op<F>(
        &self,
        other: &Var<T>,
        op: &'static str,
        value: Tensor<T>,
        backward: F,
    ) -> Var<T>
    where
        F: Fn(&Tensor<T>, [bool; 2]) -> Result<PairGrads<T>> + Send + Sync + 'static,
    {
        let (sa, sb) = (
            Dims::from_slice(self.shape()),
            Dims::from_slice(other.shape()),
        );
        Var::from_op(op, value, &[self, other], move |g, needs| {
            let (ga, gb) = backward(g, [needs[0], needs[1]])?;
            let ga = ga.map(|t| t.sum_to_shape(&sa)).transpose()?;
            let gb = gb.map(|t| t.sum_to_shape(&sb)).transpose()?;
            Ok(vec![ga, gb])
        })
    }

    /// `self + value`, like `x + 1.0`.
    pub fn add_scalar(&self, value: T) -> Var<T> {
        linear_unary!(
            self,
            "add_scalar",
            self.value().add_scalar(value),
            [],
            |g| g.clone()
        )
    }

    /// `self - value`.
    pub fn sub_scalar(&self, value: T) -> Var<T> {
        linear_unary!(
            self,
            "sub_scalar",
            self.value().sub_scalar(value),
            [],
            |g| g.clone()
        )
    }

    /// `value - self`, like `1.0 - x`.
    pub fn rsub_scalar(&self, value: T) -> Var<T> {
        linear_unary!(
            self,
            "rsub_scalar",
            self.value().rsub_scalar(value),
            [],
            |g| g.neg()
        )
    }

    /// `self * value`.
    pub fn mul_scalar(&self, value: T) -> Var<T> {
        linear_unary!(
            self,
            "mul_scalar",
            self.value().mul_scalar(value),
            [],
            |g| g.mul_scalar(value)
        )
    }

    /// `self / value`.
    pub fn div_scalar(&self, value: T) -> Var<T> {
        linear_unary!(
            self,
            "div_scalar",
            self.value().div_scalar(value),
            [],
            |g| g.div_scalar(value)
        )
    }

    /// `self ^ exponent`, like `torch.pow(x, 2.0)`; the gradient is 0 for exponent 0.
    pub fn pow_scalar(&self, exponent: T) -> Var<T> {
        let x = self.value();
        let value = x.pow_scalar(exponent);
        self.unary_op("pow_scalar", value, move |g| {
            Ok(x.pow_scalar_backward(g, exponent)?)
        })
        .double_backward(move |g, inputs, _| {
            if exponent == T::zero() {
                return Ok(vec![Some(Var::new(Tensor::zeros(g.shape())))]);
            }
            let x = tracked(inputs, 0);
            let d = x.pow_scalar(exponent - T::one()).mul_scalar(exponent);
            Ok(vec![Some(g.mul(&d)?)])
        })
    }

    /// `on_true` where `condition` is non-zero, else `on_false`, all three broadcast
    /// together, like `torch.where(condition, on_true, on_false)`.
    ///
    /// # Errors
    /// [`TensorError::Broadcast`](strata_tensor::TensorError::Broadcast) when the shapes
    /// do not broadcast.
    pub fn where_(condition: &Tensor<T>, on_true: &Var<T>, on_false: &Var<T>) -> Result<Var<T>> {
        let value = Tensor::where_(condition, &on_true.value(), &on_false.value())?;
        let cond = condition.clone();
        let cond2 = condition.clone();
        let (sa, sb) = (on_true.shape().to_vec(), on_false.shape().to_vec());
        Ok(on_true
            .binary_op(on_false, "where", value, move |g, n| {
                let zero = Tensor::scalar(T::zero());
                let ga = if n[0] {
                    Some(Tensor::where_(&cond, g, &zero)?)
                } else {
                    None
                };
                let gb = if n[1] {
                    Some(Tensor::where_(&cond, &zero, g)?)
                } else {
                    None
                };
                Ok((ga, gb))
            })
            .double_backward(move |g, _, n| {
                let zero = Var::new(Tensor::scalar(T::zero()));
                Ok(vec![
                    n.grad_var(0, || Var::where_(&cond2, g, &zero)?.sum_to_shape(&sa))?,
                    n.grad_var(1, || Var::where_(&cond2, &zero, g)?.sum_to_shape(&sb))?,
                ])
            }))
    }

    /// `value` where `mask` is non-zero, `self` elsewhere, like `Tensor.masked_fill`; no
    /// gradient flows through the filled positions.
    ///
    /// # Errors
    /// [`TensorError::Broadcast`](strata_tensor::TensorError::Broadcast) when `mask` does
    /// not broadcast to `self`'s shape.
    pub fn masked_fill(&self, mask: &Tensor<T>, value: T) -> Result<Var<T>> {
        let out = self.value().masked_fill(mask, value)?;
        let mask = mask.clone();
        Ok(linear_unary!(self, "masked_fill", out, [mask], |g| g
            .masked_fill(&mask, T::zero())?))
    }
}

macro_rules! define_var_binary_ops {
    ($(
        $(#[$doc:meta])*
        $name:ident, $cost:ident, |$a:ident, $b:ident| $fwd:expr, $kind:ident $( ( $($formula:tt)* ) )? ;
    )*) => {
        impl<T: Element> Var<T> {
            $(
                define_var_binary_ops!(@method $(#[$doc])* $name, $kind);
            )*
        }
    };
    (@method $(#[$doc:meta])* $name:ident, sum) => {
        define_var_binary_ops!(@linear $(#[$doc])* $name);
    };
    (@method $(#[$doc:meta])* $name:ident, difference) => {
        define_var_binary_ops!(@linear $(#[$doc])* $name);
    };
    (@linear $(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// # Errors
        /// [`TensorError::Broadcast`](strata_tensor::TensorError::Broadcast) when the
        /// shapes do not broadcast.
        pub fn $name(&self, other: &Var<T>) -> Result<Var<T>> {
            let value = self.value().$name(&other.value())?;
            let (sa, sb) = (Dims::from_slice(self.shape()), Dims::from_slice(other.shape()));
            let negate = stringify!($name) == "sub";
            let (sa2, sb2) = (sa.clone(), sb.clone());
            let y = Var::from_op(stringify!($name), value, &[self, other], move |g, n| {
                let (ga, gb) = elementwise::$name::backward(g, (&sa, &sb), [n[0], n[1]])?;
                Ok(vec![ga, gb])
            })
            .double_backward(move |g, _, n| {
                let gb = if negate { g.neg() } else { g.clone() };
                Ok(vec![
                    n.get(0).then(|| g.sum_to_shape(&sa2)).transpose()?,
                    n.get(1).then(|| gb.sum_to_shape(&sb2)).transpose()?,
                ])
            });
            tap_binary(self, other, &y, |_| crate::taps::TapOp::Add { sign: 1.0 });
            Ok(y)
        }
    };
    (@method $(#[$doc:meta])* $name:ident, pointwise) => {
        $(#[$doc])*
        ///
        /// # Errors
        /// [`TensorError::Broadcast`](strata_tensor::TensorError::Broadcast) when the
        /// shapes do not broadcast.
        pub fn $name(&self, other: &Var<T>) -> Result<Var<T>> {
            let (a, b) = (self.value(), other.value());
            let value = a.$name(&b)?;
            let (a2, b2) = (a.clone(), b.clone());
            let y = Var::from_op(stringify!($name), value, &[self, other], move |g, n| {
                let (ga, gb) = elementwise::$name::backward(&a, &b, g, [n[0], n[1]])?;
                Ok(vec![ga, gb])
            })
            .double_backward(move |g, inputs, n| {
                let (a, b) = (input_or(inputs, 0, &a2), input_or(inputs, 1, &b2));
                Ok(vec![
                    n.get(0).then(|| elementwise::$name::da(&a, &b, g).sum_to_shape(a.shape())).transpose()?,
                    n.get(1).then(|| elementwise::$name::db(&a, &b, g).sum_to_shape(b.shape())).transpose()?,
                ])
            });
            if stringify!($name) == "mul" {
                tap_binary(self, other, &y, |other| crate::taps::TapOp::Mul { other: other.value() });
            }
            Ok(y)
        }
    };
    (@method $(#[$doc:meta])* $name:ident, nograd) => {};
}

strata_tensor::for_each_binary_op!(define_var_binary_ops);

/// Taps a binary op with one watched operand (a parameter added or multiplied into a
/// per-sample value); `op` gets the other operand. With both operands watched the call is
/// left untapped (a product of parameters has no per-sample split).
fn tap_binary<T: Element>(
    a: &Var<T>,
    b: &Var<T>,
    y: &Var<T>,
    op: impl FnOnce(&Var<T>) -> crate::taps::TapOp<T>,
) {
    if !crate::taps::any_open() {
        return;
    }
    let (wa, wb) = (crate::taps::is_watched(a), crate::taps::is_watched(b));
    match (wa, wb) {
        (true, false) => crate::taps::record(|| op(b), &[Some(a)], y),
        (false, true) => {
            let op = match op(a) {
                // `other − p`: p enters with the minus sign.
                crate::taps::TapOp::Add { .. } if y.op_name() == Some("sub") => {
                    crate::taps::TapOp::Add { sign: -1.0 }
                }
                other => other,
            };
            crate::taps::record(|| op, &[Some(b)], y)
        }
        _ => {}
    }
}
