//! Elementwise binary ops with broadcasting, comparisons, selection by mask, and the
//! arithmetic operators.

use crate::engine::par::Cost;
use crate::{Element, Result, Tensor};

#[inline(always)]
fn mask<T: Element>(c: bool) -> T {
    if c { T::one() } else { T::zero() }
}

/// The table of broadcasting binary ops: calls `$callback! { … }` with one entry per op,
///
/// ```text
/// /// doc
/// name, Cost, |a, b| forward, kind;
/// ```
///
/// where `kind` is `sum` (both gradients are `g`), `difference` (`g` and `-g`),
/// `pointwise(|a, b, g| ∂a, |a, b, g| ∂b)` (formulas in [`Algebra`](crate::elementwise::Algebra)
/// over the broadcast inputs and the output gradient) or `nograd` (comparisons: no `Var`
/// method). The gradients are summed back to each input's shape. strata-tensor expands it
/// into the `Tensor` methods and `elementwise::<op>` modules (`da`, `db`, `backward`),
/// strata-autograd into the `Var` methods.
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_binary_op {
    ($callback:path) => {
        $callback! {
            /// `a + b` with broadcasting, like `torch.add`.
            add, Cheap, |a, b| a + b, sum;
            /// `a - b` with broadcasting, like `torch.sub`.
            sub, Cheap, |a, b| a - b, difference;
            /// `a * b` with broadcasting, like `torch.mul`.
            mul, Cheap, |a, b| a * b, pointwise(|a, b, g| g.mul(b), |a, b, g| g.mul(a));
            /// `a / b` with broadcasting (IEEE: `x / 0` is ±inf or NaN), like `torch.div`.
            div, Cheap, |a, b| a / b,
                // ∂b = -g·a / b², as PyTorch computes it.
                pointwise(|a, b, g| g.div(b), |a, b, g| g.mul(a).div(&b.mul(b)).neg());
            /// `a^b` with broadcasting, like `torch.pow`. As in PyTorch, the gradient for the
            /// base is 0 where the exponent is 0, and the gradient for the exponent is 0 where
            /// the base is 0 and the exponent is non-negative.
            pow, Transcendental, |a, b| a.powf(b),
                pointwise(
                    |a, b, g| {
                        let zero = b.k(0.0);
                        let d = b.mul(&a.pow(&b.sub(&b.k(1.0))));
                        b.eq(&zero).select(&zero, &g.mul(&d))
                    },
                    |a, b, g| {
                        let zero = a.k(0.0);
                        let at_zero = a.eq(&zero).mul(&b.k(1.0).sub(&b.lt(&zero)));
                        at_zero.select(&zero, &g.mul(&a.pow(b).mul(&a.ln())))
                    }
                );
            /// The larger of `a` and `b`, NaN if either is NaN, like `torch.maximum`; ties
            /// split the gradient evenly, as in PyTorch.
            maximum, Cheap, |a, b| if a > b || a.is_nan() { a } else { b },
                pointwise(|a, b, g| g.mul(&a.share_of(b, true)), |a, b, g| g.mul(&b.share_of(a, true)));
            /// The smaller of `a` and `b`, NaN if either is NaN, like `torch.minimum`; ties
            /// split the gradient evenly, as in PyTorch.
            minimum, Cheap, |a, b| if a < b || a.is_nan() { a } else { b },
                pointwise(|a, b, g| g.mul(&a.share_of(b, false)), |a, b, g| g.mul(&b.share_of(a, false)));
            /// 1 where `a == b`, else 0, like `torch.eq` (as a 0/1 mask of the element type).
            eq, Cheap, |a, b| mask(a == b), nograd;
            /// 1 where `a != b` (and where either is NaN), else 0, like `torch.ne`.
            ne, Cheap, |a, b| mask(a != b), nograd;
            /// 1 where `a < b`, else 0, like `torch.lt`.
            lt, Cheap, |a, b| mask(a < b), nograd;
            /// 1 where `a <= b`, else 0, like `torch.le`.
            le, Cheap, |a, b| mask(a <= b), nograd;
            /// 1 where `a > b`, else 0, like `torch.gt`.
            gt, Cheap, |a, b| mask(a > b), nograd;
            /// 1 where `a >= b`, else 0, like `torch.ge`.
            ge, Cheap, |a, b| mask(a >= b), nograd;
        }
    };
}

/// Expands the table into `Tensor` methods and the `elementwise::<op>` modules.
macro_rules! define_binary_ops {
    ($(
        $(#[$doc:meta])*
        $name:ident, $cost:ident, |$a:ident, $b:ident| $fwd:expr, $kind:ident $( ( $($formula:tt)* ) )? ;
    )*) => {
        impl<T: Element> Tensor<T> {
            $(
                $(#[$doc])*
                ///
                /// # Errors
                /// [`TensorError::Broadcast`](crate::TensorError::Broadcast) when the shapes
                /// do not broadcast.
                pub fn $name(&self, other: &Tensor<T>) -> Result<Tensor<T>> {
                    self.zip_map(other, stringify!($name), Cost::$cost, #[inline(always)] |$a: T, $b: T| $fwd)
                }
            )*
        }

        /// Per binary op, its derivatives: the formulas and their fused kernel (see
        /// [`for_each_binary_op!`](crate::for_each_binary_op)).
        pub mod generated {
            #![allow(unused_imports)]
            use crate::ops::unary::{Algebra, Scalar};
            use crate::{Element, Result, Tensor};
            $(
                define_binary_ops!(@module $name, $kind $( ( $($formula)* ) )?);
            )*
        }
    };
    (@module $name:ident, sum) => {
        define_binary_ops!(@linear $name, "Both gradients are `g`, summed to each input's shape.", false);
    };
    (@module $name:ident, difference) => {
        define_binary_ops!(@linear $name, "The gradients `g` and `-g`, summed to each input's shape.", true);
    };
    (@linear $name:ident, $doc:literal, $negate:expr) => {
        #[doc = concat!("The derivatives of `", stringify!($name), "`.")]
        pub mod $name {
            use super::*;
            #[doc = $doc]
            ///
            /// # Errors
            /// When `g` does not reduce to the shapes.
            pub fn backward<T: Element>(
                g: &Tensor<T>,
                (a_shape, b_shape): (&[usize], &[usize]),
                needs: [bool; 2],
            ) -> Result<(Option<Tensor<T>>, Option<Tensor<T>>)> {
                let ga = needs[0].then(|| g.sum_to_shape(a_shape)).transpose()?;
                let gb = needs[1].then(|| g.sum_to_shape(b_shape)).transpose()?;
                let gb = if $negate { gb.map(|t| t.neg()) } else { gb };
                Ok((ga, gb))
            }
        }
    };
    (@module $name:ident, pointwise (|$a1:ident, $b1:ident, $g1:ident| $da:expr, |$a2:ident, $b2:ident, $g2:ident| $db:expr $(,)?)) => {
        #[doc = concat!("The derivatives of `", stringify!($name), "`.")]
        pub mod $name {
            use super::*;
            /// The gradient for `a` at one broadcast position.
            #[inline(always)]
            #[allow(unused_variables)]
            pub fn da<N: Algebra>($a1: &N, $b1: &N, $g1: &N) -> N {
                $da
            }
            /// The gradient for `b` at one broadcast position.
            #[inline(always)]
            #[allow(unused_variables)]
            pub fn db<N: Algebra>($a2: &N, $b2: &N, $g2: &N) -> N {
                $db
            }
            /// The fused kernel: [`da`] and [`db`] in one pass each over the broadcast
            /// inputs and `g`, summed back to the inputs' shapes.
            ///
            /// # Errors
            /// When the shapes do not broadcast to `g`'s.
            pub fn backward<T: Element>(
                a: &Tensor<T>,
                b: &Tensor<T>,
                g: &Tensor<T>,
                needs: [bool; 2],
            ) -> Result<(Option<Tensor<T>>, Option<Tensor<T>>)> {
                let op = concat!(stringify!($name), "_backward");
                let ga = if needs[0] {
                    let full = Tensor::zip3_map(a, b, g, op, |a, b, g| da(&Scalar(a), &Scalar(b), &Scalar(g)).0)?;
                    Some(full.sum_to_shape(a.shape())?)
                } else {
                    None
                };
                let gb = if needs[1] {
                    let full = Tensor::zip3_map(a, b, g, op, |a, b, g| db(&Scalar(a), &Scalar(b), &Scalar(g)).0)?;
                    Some(full.sum_to_shape(b.shape())?)
                } else {
                    None
                };
                Ok((ga, gb))
            }
        }
    };
    (@module $name:ident, nograd) => {};
}

for_each_binary_op!(define_binary_ops);

macro_rules! compare_scalar_ops {
    ($( $(#[$doc:meta])* $name:ident, |$a:ident, $b:ident| $body:expr; )*) => {
        impl<T: Element> Tensor<T> {
            $(
                $(#[$doc])*
                pub fn $name(&self, value: T) -> Tensor<T> {
                    self.map_cost(Cost::Cheap, move |$a: T| { let $b = value; $body })
                }
            )*
        }
    };
}

compare_scalar_ops! {
    /// 1 where `x == value`, else 0, like `torch.eq(x, value)`.
    eq_scalar, |a, b| mask(a == b);
    /// 1 where `x != value`, else 0.
    ne_scalar, |a, b| mask(a != b);
    /// 1 where `x < value`, else 0.
    lt_scalar, |a, b| mask(a < b);
    /// 1 where `x <= value`, else 0.
    le_scalar, |a, b| mask(a <= b);
    /// 1 where `x > value`, else 0.
    gt_scalar, |a, b| mask(a > b);
    /// 1 where `x >= value`, else 0.
    ge_scalar, |a, b| mask(a >= b);
}

impl<T: Element> Tensor<T> {
    /// `on_true` where `condition` is non-zero, `on_false` elsewhere, all three broadcast
    /// together, like `torch.where(condition, on_true, on_false)`. Masks are tensors of the
    /// element type; any non-zero value (NaN included) counts as true, as in PyTorch's
    /// conversion to bool.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![-1.0f32, 2.0, -3.0], &[3])?;
    /// let y = Tensor::where_(&x.gt_scalar(0.0), &x, &Tensor::scalar(0.0))?;
    /// assert_eq!(y.to_vec(), vec![0.0, 2.0, 0.0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Broadcast`](crate::TensorError::Broadcast) when the shapes do not
    /// broadcast.
    pub fn where_(
        condition: &Tensor<T>,
        on_true: &Tensor<T>,
        on_false: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        Tensor::zip3_map(condition, on_true, on_false, "where", |c, a, b| {
            if c != T::zero() { a } else { b }
        })
    }

    /// Whether `|a - b| <= atol + rtol · |b|` for every broadcast pair, like
    /// `torch.allclose(a, b, rtol, atol)` (PyTorch's defaults are `rtol = 1e-5`,
    /// `atol = 1e-8`); NaN is never close to anything.
    ///
    /// # Errors
    /// [`TensorError::Broadcast`](crate::TensorError::Broadcast) when the shapes do not
    /// broadcast.
    pub fn allclose(&self, other: &Tensor<T>, rtol: f64, atol: f64) -> Result<bool> {
        let (rtol, atol) = (T::from_f64(rtol), T::from_f64(atol));
        let far = self.zip_map(other, "allclose", Cost::Cheap, move |a, b| {
            let close = a == b || (a - b).abs() <= atol + rtol * b.abs();
            if close { T::zero() } else { T::one() }
        })?;
        Ok(far.sum_all().item()? == T::zero())
    }

    /// `value` where `mask` is non-zero, `self` elsewhere, like `Tensor.masked_fill`. The
    /// mask broadcasts to `self`'s shape (the result keeps `self`'s shape).
    ///
    /// # Errors
    /// [`TensorError::Broadcast`](crate::TensorError::Broadcast) when `mask` does not
    /// broadcast to `self`'s shape.
    pub fn masked_fill(&self, mask: &Tensor<T>, value: T) -> Result<Tensor<T>> {
        let mask = mask
            .broadcast_to(self.shape())
            .map_err(|_| crate::TensorError::Broadcast {
                op: "masked_fill",
                lhs: self.shape().to_vec(),
                rhs: mask.shape().to_vec(),
            })?;
        self.zip_map(&mask, "masked_fill", Cost::Cheap, move |x, m| {
            if m != T::zero() { value } else { x }
        })
    }
}

/// Operator overloads for tensor–tensor arithmetic. They panic where the methods return an
/// error (shapes that do not broadcast), with the same message; use the methods
/// (`a.add(&b)?`) to handle that case.
macro_rules! tensor_operators {
    ($($trait:ident, $fn:ident, $method:ident);*) => {$(
        impl<T: Element> std::ops::$trait<&Tensor<T>> for &Tensor<T> {
            type Output = Tensor<T>;
            /// # Panics
            /// When the shapes do not broadcast (the message is the method's error).
            #[track_caller]
            fn $fn(self, rhs: &Tensor<T>) -> Tensor<T> {
                self.$method(rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl<T: Element> std::ops::$trait<Tensor<T>> for Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $fn(self, rhs: Tensor<T>) -> Tensor<T> {
                std::ops::$trait::$fn(&self, &rhs)
            }
        }
        impl<T: Element> std::ops::$trait<&Tensor<T>> for Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $fn(self, rhs: &Tensor<T>) -> Tensor<T> {
                std::ops::$trait::$fn(&self, rhs)
            }
        }
        impl<T: Element> std::ops::$trait<Tensor<T>> for &Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $fn(self, rhs: Tensor<T>) -> Tensor<T> {
                std::ops::$trait::$fn(self, &rhs)
            }
        }
    )*};
}

tensor_operators!(Add, add, add; Sub, sub, sub; Mul, mul, mul; Div, div, div);

/// Operators between a tensor and a number of its element type (these cannot fail).
macro_rules! scalar_operators {
    ($($t:ty),*) => {$(
        impl std::ops::Add<$t> for &Tensor<$t> {
            type Output = Tensor<$t>;
            fn add(self, rhs: $t) -> Tensor<$t> { self.add_scalar(rhs) }
        }
        impl std::ops::Sub<$t> for &Tensor<$t> {
            type Output = Tensor<$t>;
            fn sub(self, rhs: $t) -> Tensor<$t> { self.sub_scalar(rhs) }
        }
        impl std::ops::Mul<$t> for &Tensor<$t> {
            type Output = Tensor<$t>;
            fn mul(self, rhs: $t) -> Tensor<$t> { self.mul_scalar(rhs) }
        }
        impl std::ops::Div<$t> for &Tensor<$t> {
            type Output = Tensor<$t>;
            fn div(self, rhs: $t) -> Tensor<$t> { self.div_scalar(rhs) }
        }
        impl std::ops::Add<$t> for Tensor<$t> {
            type Output = Tensor<$t>;
            fn add(self, rhs: $t) -> Tensor<$t> { self.add_scalar(rhs) }
        }
        impl std::ops::Sub<$t> for Tensor<$t> {
            type Output = Tensor<$t>;
            fn sub(self, rhs: $t) -> Tensor<$t> { self.sub_scalar(rhs) }
        }
        impl std::ops::Mul<$t> for Tensor<$t> {
            type Output = Tensor<$t>;
            fn mul(self, rhs: $t) -> Tensor<$t> { self.mul_scalar(rhs) }
        }
        impl std::ops::Div<$t> for Tensor<$t> {
            type Output = Tensor<$t>;
            fn div(self, rhs: $t) -> Tensor<$t> { self.div_scalar(rhs) }
        }
        impl std::ops::Add<&Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            fn add(self, rhs: &Tensor<$t>) -> Tensor<$t> { rhs.add_scalar(self) }
        }
        impl std::ops::Sub<&Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            fn sub(self, rhs: &Tensor<$t>) -> Tensor<$t> { rhs.rsub_scalar(self) }
        }
        impl std::ops::Mul<&Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            fn mul(self, rhs: &Tensor<$t>) -> Tensor<$t> { rhs.mul_scalar(self) }
        }
        impl std::ops::Div<&Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            fn div(self, rhs: &Tensor<$t>) -> Tensor<$t> { rhs.map_cost(Cost::Cheap, move |x| self / x) }
        }
    )*};
}

scalar_operators!(f32, f64);

impl<T: Element> std::ops::Neg for &Tensor<T> {
    type Output = Tensor<T>;
    fn neg(self) -> Tensor<T> {
        Tensor::neg(self)
    }
}

impl<T: Element> std::ops::Neg for Tensor<T> {
    type Output = Tensor<T>;
    fn neg(self) -> Tensor<T> {
        Tensor::neg(&self)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Tensor, TensorError};

    fn t(data: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(data, shape).unwrap()
    }

    #[test]
    fn broadcasting_add_by_hand() {
        let a = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        let col = t(&[10., 20.], &[2, 1]);
        let row = t(&[100., 200., 300.], &[3]);
        assert_eq!((&a + &col).to_vec(), vec![11., 12., 13., 24., 25., 26.]);
        assert_eq!(
            (&a + &row).to_vec(),
            vec![101., 202., 303., 104., 205., 306.]
        );
        assert_eq!((&col + &row).shape(), &[2, 3]);
        assert_eq!(
            (&col * &row).to_vec(),
            vec![1000., 2000., 3000., 2000., 4000., 6000.]
        );
        assert_eq!((&a - 1.0).to_vec(), vec![0., 1., 2., 3., 4., 5.]);
        assert_eq!((2.0 - &a).to_vec(), vec![1., 0., -1., -2., -3., -4.]);
        assert_eq!((6.0 / &t(&[2., 3.], &[2])).to_vec(), vec![3., 2.]);
        assert_eq!((-&row).to_vec(), vec![-100., -200., -300.]);
    }

    #[test]
    fn broadcast_errors_name_the_op_and_shapes() {
        let a = Tensor::<f32>::zeros(&[2, 3]);
        let b = Tensor::<f32>::zeros(&[4]);
        let e = a.mul(&b).unwrap_err();
        assert!(matches!(e, TensorError::Broadcast { op: "mul", .. }));
        assert_eq!(
            e.to_string(),
            "mul: shapes [2, 3] and [4] cannot be broadcast together"
        );
        let r = std::panic::catch_unwind(|| &a + &b);
        assert!(r.is_err());
    }

    #[test]
    fn nan_semantics_of_maximum_and_comparisons() {
        let a = t(&[f32::NAN, 1.0, 3.0], &[3]);
        let b = t(&[0.0, f32::NAN, 2.0], &[3]);
        let m = a.maximum(&b).unwrap().to_vec();
        assert!(m[0].is_nan() && m[1].is_nan());
        assert_eq!(m[2], 3.0);
        let m = a.minimum(&b).unwrap().to_vec();
        assert!(m[0].is_nan() && m[1].is_nan());
        assert_eq!(m[2], 2.0);
        assert_eq!(a.eq(&a).unwrap().to_vec(), vec![0., 1., 1.]);
        assert_eq!(a.ne(&a).unwrap().to_vec(), vec![1., 0., 0.]);
        assert_eq!(a.gt(&b).unwrap().to_vec(), vec![0., 0., 1.]);
        assert_eq!(b.le_scalar(1.0).to_vec(), vec![1., 0., 0.]);
    }

    #[test]
    fn where_and_masked_fill() {
        let x = t(&[1., 2., 3., 4.], &[2, 2]);
        let m = t(&[1., 0.], &[2]);
        assert_eq!(
            x.masked_fill(&m, -1.0).unwrap().to_vec(),
            vec![-1., 2., -1., 4.]
        );
        let w = Tensor::where_(&t(&[0., 1.], &[2, 1]), &x, &Tensor::scalar(9.0)).unwrap();
        assert_eq!(w.to_vec(), vec![9., 9., 3., 4.]);
        assert!(x.masked_fill(&Tensor::zeros(&[3]), 0.0).is_err());
        assert!(x.allclose(&x.add_scalar(1e-7), 1e-5, 1e-8).unwrap());
        assert!(!x.allclose(&x.add_scalar(1e-3), 1e-5, 1e-8).unwrap());
        assert!(
            !t(&[f32::NAN], &[1])
                .allclose(&t(&[f32::NAN], &[1]), 1.0, 1.0)
                .unwrap()
        );
        // a mask of a larger shape cannot change the result's shape
        assert!(m.masked_fill(&x, 0.0).is_err());
    }

    #[test]
    fn strided_operands() {
        // a transposed view plus a broadcast row
        let a = t(&[1., 2., 3., 4., 5., 6.], &[2, 3])
            .transpose(0, 1)
            .unwrap();
        let b = t(&[10., 20.], &[2]);
        assert_eq!(
            a.add(&b).unwrap().to_vec(),
            vec![11., 24., 12., 25., 13., 26.]
        );
        let s = Tensor::<f32>::arange(0.0, 10.0, 1.0)
            .unwrap()
            .slice(0, 0, 10, 3)
            .unwrap();
        assert_eq!(s.mul(&s).unwrap().to_vec(), vec![0., 9., 36., 81.]);
    }
}
