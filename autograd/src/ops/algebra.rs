//! The elementwise [`Algebra`] on vars: the derivative formulas of strata-tensor's op
//! tables, evaluated with recorded ops, give each elementwise op a differentiable backward
//! (its `create_graph` path) from the same text as its fused first-order kernel.
//!
//! A formula only ever combines values of one broadcast shape and 0-d constants, so the
//! arithmetic here cannot meet incompatible shapes; a failure would be a bug in a formula,
//! and panics naming it.

use strata_tensor::elementwise::{Algebra, Scalar};
use strata_tensor::{Element, Tensor};

use crate::Var;

fn formula<T: Element>(r: crate::Result<Var<T>>) -> Var<T> {
    r.unwrap_or_else(|e| panic!("an elementwise derivative formula failed: {e}"))
}

/// A piecewise-constant mask computed from the value (no gradient flows through it).
fn mask<T: Element>(x: &Var<T>, f: impl Fn(Scalar<T>) -> Scalar<T> + Sync + Send) -> Var<T> {
    Var::new(x.value().map(move |v| f(Scalar(v)).0))
}

impl<T: Element> Algebra for Var<T> {
    fn add(&self, o: &Self) -> Self {
        formula(Var::add(self, o))
    }
    fn sub(&self, o: &Self) -> Self {
        formula(Var::sub(self, o))
    }
    fn mul(&self, o: &Self) -> Self {
        formula(Var::mul(self, o))
    }
    fn div(&self, o: &Self) -> Self {
        formula(Var::div(self, o))
    }
    fn neg(&self) -> Self {
        Var::neg(self)
    }
    fn k(&self, v: f64) -> Self {
        Var::new(Tensor::scalar(T::from_f64(v)))
    }
    fn exp(&self) -> Self {
        Var::exp(self)
    }
    fn tanh(&self) -> Self {
        Var::tanh(self)
    }
    fn erfc(&self) -> Self {
        Var::erfc(self)
    }
    fn sin(&self) -> Self {
        Var::sin(self)
    }
    fn cos(&self) -> Self {
        Var::cos(self)
    }
    fn sigmoid(&self) -> Self {
        Var::sigmoid(self)
    }
    fn gt0(&self) -> Self {
        mask(self, |x| x.gt0())
    }
    fn sign(&self) -> Self {
        mask(self, |x| x.sign())
    }
    fn inside(&self, lo: f64, hi: f64) -> Self {
        mask(self, move |x| x.inside(lo, hi))
    }
    fn select(&self, a: &Self, b: &Self) -> Self {
        // where_ routes each element's gradient to the chosen side only.
        formula(Var::where_(&self.value(), a, b))
    }
    fn pow(&self, e: &Self) -> Self {
        formula(Var::pow(self, e))
    }
    fn ln(&self) -> Self {
        Var::log(self)
    }
    fn lt(&self, o: &Self) -> Self {
        Var::new(
            self.value()
                .lt(&o.value())
                .unwrap_or_else(|e| panic!("an elementwise derivative formula failed: {e}")),
        )
    }
    fn eq(&self, o: &Self) -> Self {
        Var::new(
            self.value()
                .eq(&o.value())
                .unwrap_or_else(|e| panic!("an elementwise derivative formula failed: {e}")),
        )
    }
}
