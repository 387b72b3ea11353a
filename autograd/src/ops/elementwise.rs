//! Binary elementwise ops with broadcasting, expanded from strata-tensor's table
//! [`for_each_binary_op!`](strata_tensor::for_each_binary_op) (each op's forward is the
//! `Tensor` method, its backward the fused kernel `elementwise::<op>::backward`, the
//! gradients summed back to each input's shape); tensor–scalar ops, `where_` and
//! `masked_fill`.

use strata_tensor::{Dims, Element, Tensor, elementwise};

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
        self.unary_op("add_scalar", self.value().add_scalar(value), |g| {
            Ok(g.clone())
        })
    }

    /// `self - value`.
    pub fn sub_scalar(&self, value: T) -> Var<T> {
        self.unary_op("sub_scalar", self.value().sub_scalar(value), |g| {
            Ok(g.clone())
        })
    }

    /// `value - self`, like `1.0 - x`.
    pub fn rsub_scalar(&self, value: T) -> Var<T> {
        self.unary_op("rsub_scalar", self.value().rsub_scalar(value), |g| {
            Ok(g.neg())
        })
    }

    /// `self * value`.
    pub fn mul_scalar(&self, value: T) -> Var<T> {
        self.unary_op("mul_scalar", self.value().mul_scalar(value), move |g| {
            Ok(g.mul_scalar(value))
        })
    }

    /// `self / value`.
    pub fn div_scalar(&self, value: T) -> Var<T> {
        self.unary_op("div_scalar", self.value().div_scalar(value), move |g| {
            Ok(g.div_scalar(value))
        })
    }

    /// `self ^ exponent`, like `torch.pow(x, 2.0)`; the gradient is 0 for exponent 0.
    pub fn pow_scalar(&self, exponent: T) -> Var<T> {
        let x = self.value();
        let value = x.pow_scalar(exponent);
        self.unary_op("pow_scalar", value, move |g| {
            Ok(x.pow_scalar_backward(g, exponent)?)
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
        Ok(on_true.binary_op(on_false, "where", value, move |g, n| {
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
        Ok(self.unary_op("masked_fill", out, move |g| {
            Ok(g.masked_fill(&mask, T::zero())?)
        }))
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
            Ok(Var::from_op(stringify!($name), value, &[self, other], move |g, n| {
                let (ga, gb) = elementwise::$name::backward(g, (&sa, &sb), [n[0], n[1]])?;
                Ok(vec![ga, gb])
            }))
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
            Ok(Var::from_op(stringify!($name), value, &[self, other], move |g, n| {
                let (ga, gb) = elementwise::$name::backward(&a, &b, g, [n[0], n[1]])?;
                Ok(vec![ga, gb])
            }))
        }
    };
    (@method $(#[$doc:meta])* $name:ident, nograd) => {};
}

strata_tensor::for_each_binary_op!(define_var_binary_ops);
