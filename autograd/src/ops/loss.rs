//! The fused loss terms layers' losses build on, each with its backward: binary
//! cross-entropy on probabilities and on logits, and the Kullback–Leibler divergence.
//! Each returns the unreduced, per-element terms; strata-nn validates the arguments and
//! applies the reduction.

use strata_tensor::{Element, Tensor};

use crate::ops::decomposed;
use crate::{Result, Var};

/// `t · w` when a weight is given.
fn weighted<T: Element>(t: Tensor<T>, w: &Option<Tensor<T>>) -> strata_tensor::Result<Tensor<T>> {
    match w {
        Some(w) => t.mul(w),
        None => Ok(t),
    }
}

impl<T: Element> Var<T> {
    /// The terms `-w·(y·log x + (1 - y)·log(1 - x))` of `F.binary_cross_entropy` for
    /// probabilities `self` and targets `target` (same shape; `weight` broadcasts), the
    /// logarithms clamped at -100 as PyTorch does.
    ///
    /// # Errors
    /// When the shapes do not fit.
    pub fn binary_cross_entropy_terms(
        &self,
        target: &Var<T>,
        weight: Option<&Tensor<T>>,
    ) -> Result<Var<T>> {
        let (x, y) = (self.value(), target.value());
        let floor = T::from_f64(-100.0);
        let log_x = x.log().maximum_scalar(floor);
        let log_1mx = x.rsub_scalar(T::one()).log().maximum_scalar(floor);
        let w = weight
            .map(|w| w.broadcast_to(x.shape()))
            .transpose()?
            .map(|w| w.contiguous());
        // -(y·log x + (1 - y)·log(1 - x)) = -(log(1 - x) + y·(log x - log(1 - x)))
        let value = weighted(log_1mx.add(&y.mul(&log_x.sub(&log_1mx)?)?)?.neg(), &w)?;
        let (values, w2) = ([Some(x.clone()), Some(y.clone())], w.clone());
        Ok(Var::from_op(
            "binary_cross_entropy",
            value,
            &[self, target],
            move |g, n| {
                Ok(vec![
                    n.grad(0, || {
                        let d = x.zip_with(&y, |x, y| {
                            (x - y) / (x * (T::one() - x)).max(T::from_f64(1e-12))
                        })?;
                        weighted(d.mul(g)?, &w)
                    })?,
                    n.grad(1, || weighted(log_1mx.sub(&log_x)?.mul(g)?, &w))?,
                ])
            },
        )
        .double_backward(move |g, inputs, _| {
            decomposed(g, inputs, &values, |xs| {
                let (x, y) = (xs[0].clone().expect("given"), xs[1].clone().expect("given"));
                let floor = Var::new(Tensor::scalar(T::from_f64(-100.0)));
                let log_x = x.log().maximum(&floor)?;
                let log_1mx = x.rsub_scalar(T::one()).log().maximum(&floor)?;
                let terms = log_1mx.add(&y.mul(&log_x.sub(&log_1mx)?)?)?.neg();
                weighted_var(terms, &w2)
            })
        }))
    }

    /// The terms of `F.binary_cross_entropy_with_logits` for logits `self` and targets
    /// `target`, computed stably as `(1 - y)·x + (1 + (p - 1)·y)·softplus(-x)` with `p`
    /// the positive-class weight (`pos_weight`), times `weight` (both broadcast).
    ///
    /// # Errors
    /// When the shapes do not fit.
    pub fn binary_cross_entropy_with_logits_terms(
        &self,
        target: &Var<T>,
        weight: Option<&Tensor<T>>,
        pos_weight: Option<&Tensor<T>>,
    ) -> Result<Var<T>> {
        let (x, y) = (self.value(), target.value());
        let shape = x.shape().to_vec();
        let w = weight
            .map(|w| w.broadcast_to(&shape))
            .transpose()?
            .map(|w| w.contiguous());
        let p = pos_weight
            .map(|p| p.broadcast_to(&shape))
            .transpose()?
            .map(|p| p.contiguous());
        // softplus(-x) = log1p(e^-|x|) + max(-x, 0), without overflow.
        let sp = x.map(|v| (-v.abs()).exp().ln_1p() + (-v).max(T::zero()));
        // 1 + (p - 1)·y
        let lw = match &p {
            Some(p) => p.sub_scalar(T::one()).mul(&y)?.add_scalar(T::one()),
            None => Tensor::ones(&shape),
        };
        let value = weighted(y.rsub_scalar(T::one()).mul(&x)?.add(&lw.mul(&sp)?)?, &w)?;
        let op = "binary_cross_entropy_with_logits";
        let (values, w2, p2) = ([Some(x.clone()), Some(y.clone())], w.clone(), p.clone());
        Ok(Var::from_op(op, value, &[self, target], move |g, n| {
            Ok(vec![
                // ∂/∂x = (1 - y) - lw·σ(-x) = lw·σ(x) - (lw - 1 + y)
                n.grad(0, || {
                    let d = lw
                        .mul(&x.sigmoid())?
                        .sub(&lw.sub_scalar(T::one()).add(&y)?)?;
                    weighted(d.mul(g)?, &w)
                })?,
                // ∂/∂y = -x + (p - 1)·softplus(-x)
                n.grad(1, || {
                    let d = match &p {
                        Some(p) => p.sub_scalar(T::one()).mul(&sp)?.sub(&x)?,
                        None => x.neg(),
                    };
                    weighted(d.mul(g)?, &w)
                })?,
            ])
        })
        .double_backward(move |g, inputs, _| {
            decomposed(g, inputs, &values, |xs| {
                let (x, y) = (xs[0].clone().expect("given"), xs[1].clone().expect("given"));
                // softplus(-x) = max(-x, 0) + log1p(e^-|x|)
                let sp = x.neg().relu().add(&x.abs().neg().exp().log1p())?;
                let lw = match &p2 {
                    Some(p) => y
                        .mul(&Var::new(p.sub_scalar(T::one())))?
                        .add_scalar(T::one()),
                    None => Var::new(Tensor::ones(x.shape())),
                };
                let terms = y.rsub_scalar(T::one()).mul(&x)?.add(&lw.mul(&sp)?)?;
                weighted_var(terms, &w2)
            })
        }))
    }

    /// The terms `target·(log target - self)` of `F.kl_div` for log-probabilities `self`
    /// (0 where the target is 0); with `log_target` the target is given as
    /// log-probabilities: `e^t·(t - self)`.
    ///
    /// # Errors
    /// When the shapes do not fit.
    pub fn kl_div_terms(&self, target: &Var<T>, log_target: bool) -> Result<Var<T>> {
        let (x, t) = (self.value(), target.value());
        let value = if log_target {
            t.exp().mul(&t.sub(&x)?)?
        } else {
            t.zip_with(&x, |t, x| {
                if t == T::zero() {
                    T::zero() - t * x
                } else {
                    t * (t.ln() - x)
                }
            })?
        };
        let values = [Some(x.clone()), Some(t.clone())];
        Ok(Var::from_op("kl_div", value, &[self, target], move |g, n| {
            Ok(vec![
                n.grad(0, || {
                    let d = if log_target { t.exp().neg() } else { t.neg() };
                    d.mul(g)
                })?,
                n.grad(1, || {
                    let d = if log_target {
                        t.exp().mul(&t.sub(&x)?.add_scalar(T::one()))?
                    } else {
                        // xlogy's gradient log t + t/t, which PyTorch evaluates to NaN at
                        // t = 0.
                        t.zip_with(&x, |t, x| {
                            let one = if t == T::zero() { T::nan() } else { T::one() };
                            t.ln() + one - x
                        })?
                    };
                    d.mul(g)
                })?,
            ])
        })
        .double_backward(move |g, inputs, _| {
            decomposed(g, inputs, &values, |xs| {
                let (x, t) = (xs[0].clone().expect("given"), xs[1].clone().expect("given"));
                if log_target {
                    return t.exp().mul(&t.sub(&x)?);
                }
                // xlogy: a zero target gives a zero term (a safe log there keeps NaN out
                // of the graph).
                let zero_t = t.value().eq_scalar(T::zero());
                let one = Var::new(Tensor::scalar(T::one()));
                let safe = Var::where_(&zero_t, &one, &t)?;
                let terms = t.mul(&safe.log().sub(&x)?)?;
                let zero = Var::new(Tensor::scalar(T::zero()));
                Var::where_(&zero_t, &zero.sub(&t.mul(&x)?)?, &terms)
            })
        }))
    }
}

/// [`weighted`] on vars.
fn weighted_var<T: Element>(t: Var<T>, w: &Option<Tensor<T>>) -> Result<Var<T>> {
    match w {
        Some(w) => t.mul(&Var::new(w.clone())),
        None => Ok(t),
    }
}
