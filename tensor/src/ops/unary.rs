//! The unary elementwise ops and activations, each declared once.
//!
//! [`for_each_unary_op!`](crate::for_each_unary_op) is the table: per op its name and
//! parameters, its doc, its cost class, its forward on one element, and its derivative —
//! which value the backward reads (the op's input `x`, its output `y`, only the incoming
//! gradient, or nothing for a zero or absent gradient) and the formula, written in the
//! [`Algebra`] of elementwise arithmetic. This crate expands the table into the `Tensor`
//! methods and, per op, a module `strata_tensor::elementwise::<op>` holding the formula
//! (`derivative`, generic over [`Algebra`]) and its fused kernel (`backward`, one pass over
//! the saved value and the gradient). strata-autograd expands the same table into the `Var`
//! methods, which call those kernels; because the formula is generic, the same text also
//! evaluates on `Var`s, giving a differentiable derivative. Adding a unary op is one entry
//! here.

use crate::engine::par::Cost;
use crate::{Element, Tensor};

/// The arithmetic an elementwise derivative is written in: implemented for the scalar
/// element types (the fused first-order kernels) and, in strata-autograd, for `Var`s (a
/// derivative that is itself differentiable). Masks (`gt0`, `sign`, `within`) are
/// piecewise constant and carry no gradient of their own.
pub trait Algebra: Sized {
    /// `self + o`.
    fn add(&self, o: &Self) -> Self;
    /// `self - o`.
    fn sub(&self, o: &Self) -> Self;
    /// `self · o`.
    fn mul(&self, o: &Self) -> Self;
    /// `self / o`.
    fn div(&self, o: &Self) -> Self;
    /// `-self`.
    fn neg(&self) -> Self;
    /// The constant `v`, of the same kind as `self` (a scalar, or a 0-d var that
    /// broadcasts).
    fn k(&self, v: f64) -> Self;
    /// `e^self`.
    fn exp(&self) -> Self;
    /// `tanh(self)`.
    fn tanh(&self) -> Self;
    /// `erfc(self)`.
    fn erfc(&self) -> Self;
    /// `sin(self)`.
    fn sin(&self) -> Self;
    /// `cos(self)`.
    fn cos(&self) -> Self;
    /// `1 / (1 + e^-self)`.
    fn sigmoid(&self) -> Self;
    /// 1 where `self > 0`, else 0 (0 for NaN).
    fn gt0(&self) -> Self;
    /// -1, 0 or 1 by the sign of `self` (0 for NaN).
    fn sign(&self) -> Self;
    /// 1 where `lo < self < hi` (the open interval), else 0.
    fn inside(&self, lo: f64, hi: f64) -> Self;
    /// `mask · a + (1 − mask) · b` for a 0/1 `mask` (`self`), without evaluating the
    /// unselected side into the result (a NaN there does not leak).
    fn select(&self, a: &Self, b: &Self) -> Self;
    /// `self^e`.
    fn pow(&self, e: &Self) -> Self;
    /// The natural logarithm.
    fn ln(&self) -> Self;
    /// 1 where `self < o`, else 0.
    fn lt(&self, o: &Self) -> Self;
    /// 1 where `self == o`, else 0.
    fn eq(&self, o: &Self) -> Self;

    /// The share of the gradient of `maximum(self, o)` (`max`) or `minimum(self, o)` that
    /// goes to `self`: 1 where it wins (or is NaN), 0 where it loses, ½ on a tie, as in
    /// PyTorch.
    fn share_of(&self, o: &Self, max: bool) -> Self {
        let loses = if max { self.lt(o) } else { o.lt(self) };
        self.eq(o).select(&self.k(0.5), &self.k(1.0).sub(&loses))
    }
}

/// One element, as the fused kernels evaluate a derivative formula (a newtype, so that
/// the formulas' method names never compete with `Float`'s on `T` itself).
#[derive(Clone, Copy)]
pub struct Scalar<T>(pub T);

impl<T: Element> Algebra for Scalar<T> {
    #[inline(always)]
    fn add(&self, o: &Self) -> Self {
        Scalar(self.0 + o.0)
    }
    #[inline(always)]
    fn sub(&self, o: &Self) -> Self {
        Scalar(self.0 - o.0)
    }
    #[inline(always)]
    fn mul(&self, o: &Self) -> Self {
        Scalar(self.0 * o.0)
    }
    #[inline(always)]
    fn div(&self, o: &Self) -> Self {
        Scalar(self.0 / o.0)
    }
    #[inline(always)]
    fn neg(&self) -> Self {
        Scalar(-self.0)
    }
    #[inline(always)]
    fn k(&self, v: f64) -> Self {
        Scalar(T::from_f64(v))
    }
    #[inline(always)]
    fn exp(&self) -> Self {
        Scalar(self.0.exp_v())
    }
    #[inline(always)]
    fn tanh(&self) -> Self {
        Scalar(self.0.tanh_v())
    }
    #[inline(always)]
    fn erfc(&self) -> Self {
        Scalar(self.0.erfc_v())
    }
    #[inline(always)]
    fn sin(&self) -> Self {
        Scalar(num_traits::Float::sin(self.0))
    }
    #[inline(always)]
    fn cos(&self) -> Self {
        Scalar(num_traits::Float::cos(self.0))
    }
    #[inline(always)]
    fn sigmoid(&self) -> Self {
        Scalar((T::one() + (-self.0).exp_v()).recip())
    }
    #[inline(always)]
    fn gt0(&self) -> Self {
        Scalar(if self.0 > T::zero() {
            T::one()
        } else {
            T::zero()
        })
    }
    #[inline(always)]
    fn sign(&self) -> Self {
        let x = self.0;
        Scalar(if x > T::zero() {
            T::one()
        } else if x < T::zero() {
            -T::one()
        } else {
            T::zero()
        })
    }
    #[inline(always)]
    fn inside(&self, lo: f64, hi: f64) -> Self {
        let x = self.0;
        Scalar(if x > T::from_f64(lo) && x < T::from_f64(hi) {
            T::one()
        } else {
            T::zero()
        })
    }
    #[inline(always)]
    fn select(&self, a: &Self, b: &Self) -> Self {
        if self.0 != T::zero() { *a } else { *b }
    }
    #[inline(always)]
    fn pow(&self, e: &Self) -> Self {
        Scalar(num_traits::Float::powf(self.0, e.0))
    }
    #[inline(always)]
    fn ln(&self) -> Self {
        Scalar(num_traits::Float::ln(self.0))
    }
    #[inline(always)]
    fn lt(&self, o: &Self) -> Self {
        Scalar(if self.0 < o.0 { T::one() } else { T::zero() })
    }
    #[inline(always)]
    fn eq(&self, o: &Self) -> Self {
        Scalar(if self.0 == o.0 { T::one() } else { T::zero() })
    }
}

/// The table of unary elementwise ops: calls `$callback! { … }` with one entry per op,
///
/// ```text
/// /// doc
/// name(param: Type, …), Cost, |x| forward, kind(|s, g| derivative);
/// ```
///
/// where `kind` is `input` or `output` (the derivative reads the op's input or output as
/// `s`), `grad_only(|g| …)` (it reads neither), `zero` (piecewise constant: zero
/// gradient) or `nograd` (no gradient at all: no `Var` method). Forward bodies may use
/// this crate's private math (`exp_v`, …); derivative formulas use only [`Algebra`] and
/// the parameters, so that they also evaluate on `Var`s. Parameters are `Copy` scalars
/// or options of them.
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_unary_op {
    ($callback:path) => {
        $callback! {
            /// `-x`, like `torch.neg`.
            neg(), Cheap, |x| -x, grad_only(|g| g.neg());
            /// `|x|`, like `torch.abs` (gradient `sign(x)`, 0 at 0, as PyTorch).
            abs(), Cheap, |x| x.abs(), input(|x, g| g.mul(&x.sign()));
            /// `e^x`, like `torch.exp`.
            exp(), Transcendental, |x| x.exp_v(), output(|y, g| g.mul(y));
            /// `e^x - 1`, accurate near 0, like `torch.expm1`.
            expm1(), Transcendental, |x| x.exp_m1(), output(|y, g| g.mul(&y.add(&y.k(1.0))));
            /// Natural logarithm, like `torch.log` (`-inf` at 0, NaN below).
            log(), Transcendental, |x| x.ln(), input(|x, g| g.div(x));
            /// `ln(1 + x)`, accurate near 0, like `torch.log1p`.
            log1p(), Transcendental, |x| x.ln_1p(), input(|x, g| g.div(&x.k(1.0).add(x)));
            /// Square root, like `torch.sqrt`.
            sqrt(), Cheap, |x| x.sqrt(), output(|y, g| g.div(&y.add(y)));
            /// `1 / sqrt(x)`, like `torch.rsqrt`.
            rsqrt(), Cheap, |x| x.sqrt().recip(),
                output(|y, g| y.k(-0.5).mul(g).mul(y).mul(y).mul(y));
            /// `1 / x`, like `torch.reciprocal`.
            recip(), Cheap, |x| x.recip(), output(|y, g| g.neg().mul(y).mul(y));
            /// `x * x`, like `torch.square`.
            square(), Cheap, |x| x * x, input(|x, g| g.mul(&x.add(x)));
            /// The error function, like `torch.erf`.
            erf(), Transcendental, |x| x.erf(),
                // ∂ = 2/√π · e^(-x²)
                input(|x, g| g.mul(&x.mul(x).neg().exp()).mul(&x.k(std::f64::consts::FRAC_2_SQRT_PI)));
            /// The complementary error function `1 - erf(x)`, like `torch.erfc`.
            erfc(), Transcendental, |x| x.erfc_v(),
                input(|x, g| g.mul(&x.mul(x).neg().exp()).mul(&x.k(-std::f64::consts::FRAC_2_SQRT_PI)));
            /// Sine, like `torch.sin`.
            sin(), Transcendental, |x| x.sin(), input(|x, g| g.mul(&x.cos()));
            /// Cosine, like `torch.cos`.
            cos(), Transcendental, |x| x.cos(), input(|x, g| g.neg().mul(&x.sin()));
            /// Hyperbolic tangent, like `torch.tanh`.
            tanh(), Transcendental, |x| x.tanh_v(), output(|y, g| g.mul(&y.k(1.0).sub(&y.mul(y))));
            /// `1 / (1 + e^-x)`, like `torch.sigmoid`.
            sigmoid(), Transcendental, |x| (T::one() + (-x).exp_v()).recip(),
                output(|y, g| g.mul(y).mul(&y.k(1.0).sub(y)));
            /// `max(x, 0)`, like `torch.relu` (NaN stays NaN; gradient 0 at 0, as PyTorch).
            relu(), Cheap, |x| if x < T::zero() { T::zero() } else { x },
                output(|y, g| g.mul(&y.gt0()));
            /// The exact GELU `x/2 · (1 + erf(x/√2))`, like `F.gelu(x)` (computed as
            /// `x/2 · erfc(-x/√2)`, which keeps its accuracy in the negative tail).
            gelu(), Transcendental, |x| {
                let half = T::from_f64(0.5);
                half * x * (-x * T::FRAC_1_SQRT_2()).erfc_v()
            },
            // ∂ = Φ(x) + x·φ(x)
            input(|x, g| {
                let half = x.k(0.5);
                let cdf = half.mul(&x.neg().mul(&x.k(std::f64::consts::FRAC_1_SQRT_2)).erfc());
                // φ(x) = e^(-x²/2) / √(2π)
                let pdf = half.neg().mul(x).mul(x).exp().mul(&x.k(0.398_942_280_401_432_7));
                g.mul(&cdf.add(&x.mul(&pdf)))
            });
            /// The tanh approximation of GELU, like `F.gelu(x, approximate="tanh")`.
            gelu_tanh(), Transcendental, |x| {
                let half = T::from_f64(0.5);
                let k = T::from_f64(0.797_884_560_802_865_4); // sqrt(2 / pi)
                let c = T::from_f64(0.044_715);
                half * x * (T::one() + (k * (x + c * x * x * x)).tanh_v())
            },
            input(|x, g| {
                let (half, one) = (x.k(0.5), x.k(1.0));
                let beta = x.k(0.797_884_560_802_865_4); // √(2/π)
                let kappa = x.k(0.044_715);
                let x2 = x.mul(x);
                let t = beta.mul(&x.add(&kappa.mul(&x2).mul(x))).tanh();
                let left = half.mul(&one.add(&t));
                let slope = one.add(&x.k(3.0).mul(&kappa).mul(&x2));
                let right = half.mul(x).mul(&one.sub(&t.mul(&t))).mul(&beta).mul(&slope);
                g.mul(&left.add(&right))
            });
            /// `x · sigmoid(x)`, like `F.silu`.
            silu(), Transcendental, |x| x / (T::one() + (-x).exp_v()),
            // ∂ = s · (1 + x·(1 − s)), s = sigmoid(x)
            input(|x, g| {
                let s = x.sigmoid();
                let one = x.k(1.0);
                g.mul(&s).mul(&one.add(&x.mul(&one.sub(&s))))
            });
            /// `x` where positive, `negative_slope · x` elsewhere, like
            /// `F.leaky_relu(x, negative_slope)` (PyTorch's default slope is 0.01).
            leaky_relu(negative_slope: T), Cheap,
                |x| if x > T::zero() { x } else { x * negative_slope },
                input(|x, g| {
                    let slope = g.mul(&g.k(Element::to_f64(negative_slope)));
                    x.gt0().select(g, &slope)
                });
            /// `ln(1 + e^(βx)) / β`, reverting to `x` where `βx > threshold`, like
            /// `F.softplus(x, beta, threshold)` (PyTorch's defaults: β = 1, threshold = 20).
            softplus(beta: T, threshold: T), Transcendental,
                |x| {
                    let bx = x * beta;
                    if bx > threshold { x } else { bx.exp().ln_1p() / beta }
                },
                // ∂ = sigmoid(βx) = z / (z + 1), z = e^(βx), or 1 above the threshold.
                input(|x, g| {
                    let bx = x.mul(&x.k(Element::to_f64(beta)));
                    let z = bx.exp();
                    let smooth = g.mul(&z).div(&z.add(&z.k(1.0)));
                    bx.sub(&bx.k(Element::to_f64(threshold))).gt0().select(g, &smooth)
                });
            /// Values limited to `[min, max]`, like `torch.clamp`; either bound may be
            /// `None`. NaN stays NaN; when `min > max` every value becomes `max`, as in
            /// PyTorch. The gradient passes where `min < x < max`: 0 exactly at a bound,
            /// as in PyTorch 2.x.
            clamp(min: Option<T>, max: Option<T>), Cheap,
                |x| {
                    let lo = min.unwrap_or(T::neg_infinity());
                    let hi = max.unwrap_or(T::infinity());
                    let y = if x < lo { lo } else { x };
                    if y > hi { hi } else { y }
                },
                input(|x, g| {
                    let lo = min.map_or(f64::NEG_INFINITY, Element::to_f64);
                    let hi = max.map_or(f64::INFINITY, Element::to_f64);
                    g.mul(&x.inside(lo, hi))
                });
            /// -1, 0 or 1 by the sign of `x` (0 for NaN), like `torch.sign`; zero gradient.
            sign(), Cheap, |x| {
                let pos = if x > T::zero() { T::one() } else { T::zero() };
                let neg = if x < T::zero() { T::one() } else { T::zero() };
                pos - neg
            }, zero;
            /// Rounds down, like `torch.floor`; zero gradient.
            floor(), Cheap, |x| x.floor(), zero;
            /// Rounds up, like `torch.ceil`; zero gradient.
            ceil(), Cheap, |x| x.ceil(), zero;
            /// Rounds half to even, like `torch.round`; zero gradient.
            round(), Cheap, |x| {
                let r = x.round();
                // Rust rounds ties away from zero; PyTorch (and IEEE) round them to even.
                if (x - x.trunc()).abs() == T::from_f64(0.5) {
                    T::from_f64(2.0) * (x / T::from_f64(2.0)).round()
                } else {
                    r
                }
            }, zero;
            /// 1 where `x` is NaN, 0 elsewhere, like `torch.isnan`.
            isnan(), Cheap, |x| if x.is_nan() { T::one() } else { T::zero() }, nograd;
            /// 1 where `x` is infinite, 0 elsewhere, like `torch.isinf`.
            isinf(), Cheap, |x| if x.is_infinite() { T::one() } else { T::zero() }, nograd;
            /// 1 where `x` is finite, 0 elsewhere, like `torch.isfinite`.
            isfinite(), Cheap, |x| if x.is_finite() { T::one() } else { T::zero() }, nograd;
        }
    };
}

/// Expands the table into `Tensor` methods and the `elementwise::<op>` modules.
macro_rules! define_unary_ops {
    ($(
        $(#[$doc:meta])*
        $name:ident ( $($p:ident : $pt:ty),* ), $cost:ident, |$x:ident| $fwd:expr,
        $kind:ident $( ( $($formula:tt)* ) )? ;
    )*) => {
        impl<T: Element> Tensor<T> {
            $(
                $(#[$doc])*
                pub fn $name(&self $(, $p: $pt)*) -> Tensor<T> {
                    self.map_cost(Cost::$cost, #[inline(always)] move |$x: T| $fwd)
                }
            )*
        }

        /// Per unary op, its derivative: the formula and its fused kernel (see
        /// [`for_each_unary_op!`](crate::for_each_unary_op)).
        pub mod generated {
            #![allow(unused_imports)]
            use super::{Algebra, Scalar};
            use crate::engine::par::Cost;
            use crate::{Element, Result, Tensor};
            $(
                define_unary_ops!(@module $name ( $($p : $pt),* ), $cost, $kind $( ( $($formula)* ) )?);
            )*
        }
    };
    (@module $name:ident ( $($p:ident : $pt:ty),* ), $cost:ident, input (|$s:ident, $g:ident| $body:expr)) => {
        define_unary_ops!(@saved $name ( $($p : $pt),* ), $cost, |$s, $g| $body);
    };
    (@module $name:ident ( $($p:ident : $pt:ty),* ), $cost:ident, output (|$s:ident, $g:ident| $body:expr)) => {
        define_unary_ops!(@saved $name ( $($p : $pt),* ), $cost, |$s, $g| $body);
    };
    (@module $name:ident ( $($p:ident : $pt:ty),* ), $cost:ident, grad_only (|$g:ident| $body:expr)) => {
        #[doc = concat!("The derivative of `", stringify!($name), "`.")]
        pub mod $name {
            use super::*;
            /// The derivative applied to the incoming gradient `g`.
            #[inline(always)]
            pub fn derivative<N: Algebra>($g: &N) -> N {
                $body
            }
            /// The derivative applied to the gradient tensor.
            pub fn backward<T: Element>(g: &Tensor<T>) -> Tensor<T> {
                g.map_cost(Cost::Cheap, #[inline(always)] |g: T| {
                    derivative(&Scalar(g)).0
                })
            }
        }
    };
    (@module $name:ident ( $($p:ident : $pt:ty),* ), $cost:ident, zero) => {};
    (@module $name:ident ( $($p:ident : $pt:ty),* ), $cost:ident, nograd) => {};
    (@saved $name:ident ( $($p:ident : $pt:ty),* ), $cost:ident, |$s:ident, $g:ident| $body:expr) => {
        #[doc = concat!("The derivative of `", stringify!($name), "`.")]
        pub mod $name {
            use super::*;
            /// The derivative applied to the incoming gradient `g`, from the saved value
            /// `s` (the op's input or output, as the table says).
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            pub fn derivative<N: Algebra, T: Element>($s: &N, $g: &N $(, $p: $pt)*) -> N {
                $body
            }
            /// The fused kernel: [`derivative`] in one pass over the saved value `saved`
            /// and the gradient `grad`.
            ///
            /// # Errors
            /// [`TensorError::Shape`](crate::TensorError::Shape) when the shapes differ.
            pub fn backward<T: Element>(saved: &Tensor<T>, grad: &Tensor<T> $(, $p: $pt)*) -> Result<Tensor<T>> {
                let op = concat!(stringify!($name), "_backward");
                saved.check_same_shape(op, grad)?;
                saved.zip_map(grad, op, Cost::$cost, #[inline(always)] move |s: T, g: T| {
                    derivative::<Scalar<T>, T>(&Scalar(s), &Scalar(g) $(, $p)*).0
                })
            }
        }
    };
}

for_each_unary_op!(define_unary_ops);

#[cfg(test)]
mod tests {
    use crate::Tensor;

    fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()) || (x.is_nan() && y.is_nan()),
                "index {i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn activations_match_torch() {
        // Values printed by PyTorch 2.15 for x = torch.tensor([-2., -.5, 0., 1., 3.], dtype=torch.float64).
        let x = Tensor::<f64>::from_vec(vec![-2.0, -0.5, 0.0, 1.0, 3.0], &[5]).unwrap();
        // torch.nn.functional.gelu(torch.tensor([-2., -.5, 0., 1., 3.], dtype=torch.float64))
        close(
            &x.gelu().to_vec(),
            &[
                -0.04550026389635842,
                -0.15426876936299344,
                0.0,
                0.841344746068543,
                2.99595030590511,
            ],
            1e-14,
        );
        // F.gelu(x, approximate="tanh")
        close(
            &x.gelu_tanh().to_vec(),
            &[
                -0.04540230591222494,
                -0.15428599017485606,
                0.0,
                0.8411919906082768,
                2.996362607918227,
            ],
            1e-14,
        );
        close(
            &x.silu().to_vec(),
            &[
                -0.2384058440442351,
                -0.1887703343990727,
                0.0,
                0.7310585786300049,
                2.8577223804672998,
            ],
            1e-14,
        );
        close(&x.relu().to_vec(), &[0.0, 0.0, 0.0, 1.0, 3.0], 0.0);
        close(
            &x.leaky_relu(0.1).to_vec(),
            &[-0.2, -0.05, 0.0, 1.0, 3.0],
            1e-15,
        );
        // F.softplus(x, beta=2, threshold=5): 3*2 > 5 falls back to x
        close(
            &x.softplus(2.0, 5.0).to_vec(),
            &[
                0.009074963958904869,
                0.15663084375911143,
                0.34657359027997264,
                1.0634640055214863,
                3.0,
            ],
            1e-14,
        );
        close(&x.sign().to_vec(), &[-1.0, -1.0, 0.0, 1.0, 1.0], 0.0);
    }

    #[test]
    fn f32_activations_close_to_f64() {
        let xs: Vec<f64> = (-400..=400).map(|i| i as f64 * 0.025).collect();
        let x64 = Tensor::<f64>::from_vec(xs.clone(), &[xs.len()]).unwrap();
        let x32 = x64.cast::<f32>();
        for (name, a, b) in [
            ("exp", x32.exp(), x64.exp()),
            ("tanh", x32.tanh(), x64.tanh()),
            ("sigmoid", x32.sigmoid(), x64.sigmoid()),
            ("gelu", x32.gelu(), x64.gelu()),
            ("gelu_tanh", x32.gelu_tanh(), x64.gelu_tanh()),
            ("silu", x32.silu(), x64.silu()),
        ] {
            let a: Vec<f64> = a.cast::<f64>().to_vec();
            for (i, (p, q)) in a.iter().zip(b.to_vec()).enumerate() {
                assert!(
                    (p - q).abs() <= 2e-6 * (1.0 + q.abs()),
                    "{name}({}) = {p}, want {q}",
                    xs[i]
                );
            }
        }
    }

    #[test]
    fn nan_and_edge_semantics() {
        let x = Tensor::<f32>::from_vec(vec![f32::NAN, -1.0, 2.0], &[3]).unwrap();
        let c = x.clamp(Some(0.0), Some(1.0)).to_vec();
        assert!(c[0].is_nan());
        assert_eq!(&c[1..], &[0.0, 1.0]);
        // min > max: everything becomes max (PyTorch)
        assert_eq!(&x.clamp(Some(2.0), Some(1.0)).to_vec()[1..], &[1.0, 1.0]);
        assert!(x.relu().to_vec()[0].is_nan());
        assert_eq!(x.sign().to_vec()[0], 0.0);
        assert_eq!(x.isnan().to_vec(), vec![1.0, 0.0, 0.0]);
        let r = Tensor::<f32>::from_vec(vec![0.5, 1.5, 2.5, -0.5, -2.5, 2.6], &[6]).unwrap();
        assert_eq!(r.round().to_vec(), vec![0.0, 2.0, 2.0, -0.0, -2.0, 3.0]);
        assert_eq!(
            Tensor::<f32>::from_vec(vec![4.0], &[1])
                .unwrap()
                .pow_scalar(-0.5)
                .to_vec(),
            vec![0.5]
        );
    }
}

#[cfg(test)]
mod derivative_tests {
    use crate::Tensor;
    use crate::ops::unary::generated as d;

    /// Central differences of an elementwise function, in f64.
    fn numeric(f: impl Fn(&Tensor<f64>) -> Tensor<f64>, x: &[f64]) -> Vec<f64> {
        let eps = 1e-6;
        x.iter()
            .map(|&v| {
                let p = f(&Tensor::scalar(v + eps)).item().unwrap();
                let m = f(&Tensor::scalar(v - eps)).item().unwrap();
                (p - m) / (2.0 * eps)
            })
            .collect()
    }

    #[test]
    fn activation_gradients_match_central_differences() {
        let xs = [-3.1, -1.2, -0.3, 0.4, 1.7, 2.9];
        let x = Tensor::<f64>::from_slice(&xs, &[6]).unwrap();
        let g = Tensor::<f64>::ones(&[6]);
        let cases: Vec<(&str, Tensor<f64>, Vec<f64>)> = vec![
            (
                "gelu",
                d::gelu::backward(&x, &g).unwrap(),
                numeric(|t| t.gelu(), &xs),
            ),
            (
                "gelu_tanh",
                d::gelu_tanh::backward(&x, &g).unwrap(),
                numeric(|t| t.gelu_tanh(), &xs),
            ),
            (
                "silu",
                d::silu::backward(&x, &g).unwrap(),
                numeric(|t| t.silu(), &xs),
            ),
            (
                "sigmoid",
                d::sigmoid::backward(&x.sigmoid(), &g).unwrap(),
                numeric(|t| t.sigmoid(), &xs),
            ),
            (
                "tanh",
                d::tanh::backward(&x.tanh(), &g).unwrap(),
                numeric(|t| t.tanh(), &xs),
            ),
            (
                "softplus",
                d::softplus::backward(&x, &g, 2.0, 20.0).unwrap(),
                numeric(|t| t.softplus(2.0, 20.0), &xs),
            ),
            (
                "leaky",
                d::leaky_relu::backward(&x, &g, 0.1).unwrap(),
                numeric(|t| t.leaky_relu(0.1), &xs),
            ),
            (
                "sin",
                d::sin::backward(&x, &g).unwrap(),
                numeric(|t| t.sin(), &xs),
            ),
            (
                "cos",
                d::cos::backward(&x, &g).unwrap(),
                numeric(|t| t.cos(), &xs),
            ),
            (
                "abs",
                d::abs::backward(&x, &g).unwrap(),
                numeric(|t| t.abs(), &xs),
            ),
            (
                "pow3",
                x.pow_scalar_backward(&g, 3.0).unwrap(),
                numeric(|t| t.pow_scalar(3.0), &xs),
            ),
        ];
        for (name, got, want) in cases {
            for (i, (a, b)) in got.to_vec().iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-6 * (1.0 + b.abs()),
                    "{name}'({}) = {a}, want {b}",
                    xs[i]
                );
            }
        }
        let pos = Tensor::<f64>::from_slice(&[0.3, 1.7, 4.0], &[3]).unwrap();
        let g3 = Tensor::<f64>::ones(&[3]);
        let d = d::sqrt::backward(&pos.sqrt(), &g3).unwrap().to_vec();
        assert!((d[2] - 0.25).abs() < 1e-15); // d sqrt(x)/dx = 1 / (2 sqrt(x)) = 1/4 at 4
        let d = d::log::backward(&pos, &g3).unwrap().to_vec();
        assert!((d[2] - 0.25).abs() < 1e-15);
        let d = d::rsqrt::backward(&pos.rsqrt(), &g3).unwrap().to_vec();
        assert!((d[2] + 0.0625).abs() < 1e-15); // -1/2 · 4^(-3/2)
        assert!(d::relu::backward(&x, &Tensor::ones(&[2])).is_err());
    }
}
