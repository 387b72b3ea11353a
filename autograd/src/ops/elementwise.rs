//! Binary elementwise ops with broadcasting (the gradient summed back to each input's
//! shape), tensor–scalar ops, `where_` and `masked_fill`.

use strata_tensor::{Dims, Element, Tensor};

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

    /// `self + other` with broadcasting, like `torch.add`.
    ///
    /// # Errors
    /// [`TensorError::Broadcast`](strata_tensor::TensorError::Broadcast) when the shapes
    /// do not broadcast.
    pub fn add(&self, other: &Var<T>) -> Result<Var<T>> {
        let value = self.value().add(&other.value())?;
        Ok(self.binary_op(other, "add", value, |g, n| {
            Ok((n[0].then(|| g.clone()), n[1].then(|| g.clone())))
        }))
    }

    /// `self - other` with broadcasting, like `torch.sub`.
    ///
    /// # Errors
    /// As [`add`](Var::add).
    pub fn sub(&self, other: &Var<T>) -> Result<Var<T>> {
        let value = self.value().sub(&other.value())?;
        Ok(self.binary_op(other, "sub", value, |g, n| {
            Ok((n[0].then(|| g.clone()), n[1].then(|| g.neg())))
        }))
    }

    /// `self * other` with broadcasting, like `torch.mul`.
    ///
    /// # Errors
    /// As [`add`](Var::add).
    pub fn mul(&self, other: &Var<T>) -> Result<Var<T>> {
        let (a, b) = (self.value(), other.value());
        let value = a.mul(&b)?;
        let track = Var::tracking(&[self, other]);
        // Save each operand only when the other one needs its gradient.
        let a = (track && other.needs_grad()).then_some(a);
        let b = (track && self.needs_grad()).then_some(b);
        Ok(self.binary_op(other, "mul", value, move |g, n| {
            let ga = match (&b, n[0]) {
                (Some(b), true) => Some(g.mul(b)?),
                _ => None,
            };
            let gb = match (&a, n[1]) {
                (Some(a), true) => Some(g.mul(a)?),
                _ => None,
            };
            Ok((ga, gb))
        }))
    }

    /// `self / other` with broadcasting, like `torch.div`.
    ///
    /// # Errors
    /// As [`add`](Var::add).
    pub fn div(&self, other: &Var<T>) -> Result<Var<T>> {
        let (a, b) = (self.value(), other.value());
        let value = a.div(&b)?;
        let a = other.needs_grad().then_some(a);
        Ok(self.binary_op(other, "div", value, move |g, n| {
            let ga = if n[0] { Some(g.div(&b)?) } else { None };
            let gb = match (&a, n[1]) {
                // -g · a / b², as PyTorch computes it.
                (Some(a), true) => Some(g.mul(a)?.div(&b.square())?.neg()),
                _ => None,
            };
            Ok((ga, gb))
        }))
    }

    /// `self ^ other` with broadcasting, like `torch.pow`. As in PyTorch, the gradient
    /// for the base is 0 where the exponent is 0, and the gradient for the exponent is 0
    /// where the base is 0 and the exponent is non-negative.
    ///
    /// # Errors
    /// As [`add`](Var::add).
    pub fn pow(&self, other: &Var<T>) -> Result<Var<T>> {
        let (a, b) = (self.value(), other.value());
        let value = a.pow(&b)?;
        Ok(self.binary_op(other, "pow", value, move |g, n| {
            let ga = if n[0] {
                let d = a.zip_with(&b, |x, e| {
                    if e == T::zero() {
                        T::zero()
                    } else {
                        e * x.powf(e - T::one())
                    }
                })?;
                Some(g.mul(&d)?)
            } else {
                None
            };
            let gb = if n[1] {
                let d = a.zip_with(&b, |x, e| {
                    if x == T::zero() && e >= T::zero() {
                        T::zero()
                    } else {
                        x.powf(e) * x.ln()
                    }
                })?;
                Some(g.mul(&d)?)
            } else {
                None
            };
            Ok((ga, gb))
        }))
    }

    /// The elementwise maximum with broadcasting, like `torch.maximum`; ties split the
    /// gradient evenly, as in PyTorch.
    ///
    /// # Errors
    /// As [`add`](Var::add).
    pub fn maximum(&self, other: &Var<T>) -> Result<Var<T>> {
        self.extremum(other, "maximum", |a, b| a.maximum(b), |x, y| x < y)
    }

    /// The elementwise minimum with broadcasting, like `torch.minimum`; ties split the
    /// gradient evenly, as in PyTorch.
    ///
    /// # Errors
    /// As [`add`](Var::add).
    pub fn minimum(&self, other: &Var<T>) -> Result<Var<T>> {
        self.extremum(other, "minimum", |a, b| a.minimum(b), |x, y| x > y)
    }

    /// `maximum`/`minimum`: `loses(x, y)` tells when `x` is not chosen over `y`. With
    /// NaN both sides receive the gradient, as PyTorch's rule does.
    fn extremum(
        &self,
        other: &Var<T>,
        op: &'static str,
        forward: fn(&Tensor<T>, &Tensor<T>) -> strata_tensor::Result<Tensor<T>>,
        loses: fn(T, T) -> bool,
    ) -> Result<Var<T>> {
        let (a, b) = (self.value(), other.value());
        let value = forward(&a, &b)?;
        Ok(self.binary_op(other, op, value, move |g, n| {
            let weight = |x: T, y: T| {
                if x == y {
                    T::from_f64(0.5)
                } else if loses(x, y) {
                    T::zero()
                } else {
                    T::one()
                }
            };
            let ga = if n[0] {
                Some(g.mul(&a.zip_with(&b, weight)?)?)
            } else {
                None
            };
            let gb = if n[1] {
                Some(g.mul(&b.zip_with(&a, weight)?)?)
            } else {
                None
            };
            Ok((ga, gb))
        }))
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
