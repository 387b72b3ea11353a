//! Operator overloads on `&Var` for convenience. Binary var–var operators panic with the
//! same message the `Result`-returning method would give (use [`Var::add`] and friends to
//! handle shape errors); var–scalar operators cannot fail.

use std::ops::{Add, Div, Mul, Neg, Sub};

use strata_tensor::Element;

use crate::Var;

macro_rules! var_var {
    ($($trait:ident $method:ident),*) => {$(
        impl<T: Element> $trait<&Var<T>> for &Var<T> {
            type Output = Var<T>;
            /// # Panics
            /// When the shapes do not broadcast, with the error's message.
            fn $method(self, rhs: &Var<T>) -> Var<T> {
                Var::$method(self, rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl<T: Element> $trait<Var<T>> for Var<T> {
            type Output = Var<T>;
            /// # Panics
            /// When the shapes do not broadcast, with the error's message.
            fn $method(self, rhs: Var<T>) -> Var<T> {
                Var::$method(&self, &rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
    )*};
}

var_var!(Add add, Sub sub, Mul mul, Div div);

macro_rules! var_scalar {
    ($($t:ty),*) => {$(
        impl Add<$t> for &Var<$t> {
            type Output = Var<$t>;
            fn add(self, rhs: $t) -> Var<$t> { self.add_scalar(rhs) }
        }
        impl Sub<$t> for &Var<$t> {
            type Output = Var<$t>;
            fn sub(self, rhs: $t) -> Var<$t> { self.sub_scalar(rhs) }
        }
        impl Mul<$t> for &Var<$t> {
            type Output = Var<$t>;
            fn mul(self, rhs: $t) -> Var<$t> { self.mul_scalar(rhs) }
        }
        impl Div<$t> for &Var<$t> {
            type Output = Var<$t>;
            fn div(self, rhs: $t) -> Var<$t> { self.div_scalar(rhs) }
        }
        impl Add<&Var<$t>> for $t {
            type Output = Var<$t>;
            fn add(self, rhs: &Var<$t>) -> Var<$t> { rhs.add_scalar(self) }
        }
        impl Sub<&Var<$t>> for $t {
            type Output = Var<$t>;
            fn sub(self, rhs: &Var<$t>) -> Var<$t> { rhs.rsub_scalar(self) }
        }
        impl Mul<&Var<$t>> for $t {
            type Output = Var<$t>;
            fn mul(self, rhs: &Var<$t>) -> Var<$t> { rhs.mul_scalar(self) }
        }
    )*};
}

var_scalar!(f32, f64);

impl<T: Element> Neg for &Var<T> {
    type Output = Var<T>;
    fn neg(self) -> Var<T> {
        Var::neg(self)
    }
}

impl<T: Element> Neg for Var<T> {
    type Output = Var<T>;
    fn neg(self) -> Var<T> {
        Var::neg(&self)
    }
}
