//! Elementwise unary ops, activations, and tensor–scalar arithmetic.

use crate::engine::par::Cost;
use crate::{Element, Tensor};

/// The unary ops: name, cost class, body, PyTorch equivalent. Each becomes a method that
/// returns a new contiguous tensor and cannot fail.
macro_rules! unary_ops {
    ($( $(#[$doc:meta])* $name:ident, $cost:ident, |$x:ident| $body:expr; )*) => {
        impl<T: Element> Tensor<T> {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> Tensor<T> {
                    self.map_cost(Cost::$cost, #[inline(always)] |$x: T| $body)
                }
            )*
        }
    };
}

unary_ops! {
    /// `-x`, like `torch.neg`.
    neg, Cheap, |x| -x;
    /// `|x|`, like `torch.abs`.
    abs, Cheap, |x| x.abs();
    /// `e^x`, like `torch.exp`.
    exp, Transcendental, |x| x.exp_v();
    /// `e^x - 1`, accurate near 0, like `torch.expm1`.
    expm1, Transcendental, |x| x.exp_m1();
    /// Natural logarithm, like `torch.log` (`-inf` at 0, NaN below).
    log, Transcendental, |x| x.ln();
    /// `ln(1 + x)`, accurate near 0, like `torch.log1p`.
    log1p, Transcendental, |x| x.ln_1p();
    /// Square root, like `torch.sqrt`.
    sqrt, Cheap, |x| x.sqrt();
    /// `1 / sqrt(x)`, like `torch.rsqrt`.
    rsqrt, Cheap, |x| x.sqrt().recip();
    /// `1 / x`, like `torch.reciprocal`.
    recip, Cheap, |x| x.recip();
    /// `x * x`, like `torch.square`.
    square, Cheap, |x| x * x;
    /// Sine, like `torch.sin`.
    sin, Transcendental, |x| x.sin();
    /// Cosine, like `torch.cos`.
    cos, Transcendental, |x| x.cos();
    /// Hyperbolic tangent, like `torch.tanh`.
    tanh, Transcendental, |x| x.tanh_v();
    /// `1 / (1 + e^-x)`, like `torch.sigmoid`.
    sigmoid, Transcendental, |x| (T::one() + (-x).exp_v()).recip();
    /// `max(x, 0)`, like `torch.relu` (NaN stays NaN).
    relu, Cheap, |x| if x < T::zero() { T::zero() } else { x };
    /// The exact GELU `x/2 · (1 + erf(x/√2))`, like `F.gelu(x)` (computed as
    /// `x/2 · erfc(-x/√2)`, which keeps its accuracy in the negative tail).
    gelu, Transcendental, |x| {
        let half = T::from_f64(0.5);
        half * x * (-x * T::FRAC_1_SQRT_2()).erfc_v()
    };
    /// The tanh approximation of GELU, like `F.gelu(x, approximate="tanh")`.
    gelu_tanh, Transcendental, |x| {
        let half = T::from_f64(0.5);
        let k = T::from_f64(0.797_884_560_802_865_4); // sqrt(2 / pi)
        let c = T::from_f64(0.044_715);
        half * x * (T::one() + (k * (x + c * x * x * x)).tanh_v())
    };
    /// `x · sigmoid(x)`, like `F.silu`.
    silu, Transcendental, |x| x / (T::one() + (-x).exp_v());
    /// -1, 0 or 1 by the sign of `x` (0 for NaN), like `torch.sign`.
    sign, Cheap, |x| {
        let pos = if x > T::zero() { T::one() } else { T::zero() };
        let neg = if x < T::zero() { T::one() } else { T::zero() };
        pos - neg
    };
    /// Rounds down, like `torch.floor`.
    floor, Cheap, |x| x.floor();
    /// Rounds up, like `torch.ceil`.
    ceil, Cheap, |x| x.ceil();
    /// Rounds half to even, like `torch.round`.
    round, Cheap, |x| {
        let r = x.round();
        // Rust rounds ties away from zero; PyTorch (and IEEE) round them to even.
        if (x - x.trunc()).abs() == T::from_f64(0.5) { T::from_f64(2.0) * (x / T::from_f64(2.0)).round() } else { r }
    };
    /// 1 where `x` is NaN, 0 elsewhere, like `torch.isnan`.
    isnan, Cheap, |x| if x.is_nan() { T::one() } else { T::zero() };
    /// 1 where `x` is infinite, 0 elsewhere, like `torch.isinf`.
    isinf, Cheap, |x| if x.is_infinite() { T::one() } else { T::zero() };
    /// 1 where `x` is finite, 0 elsewhere, like `torch.isfinite`.
    isfinite, Cheap, |x| if x.is_finite() { T::one() } else { T::zero() };
}

impl<T: Element> Tensor<T> {
    /// `x` where positive, `negative_slope · x` elsewhere, like
    /// `F.leaky_relu(x, negative_slope)` (PyTorch's default slope is 0.01).
    pub fn leaky_relu(&self, negative_slope: T) -> Tensor<T> {
        self.map_cost(Cost::Cheap, |x| {
            if x > T::zero() { x } else { x * negative_slope }
        })
    }

    /// `ln(1 + e^(βx)) / β`, reverting to `x` where `βx > threshold`, like
    /// `F.softplus(x, beta, threshold)` (PyTorch's defaults: β = 1, threshold = 20).
    pub fn softplus(&self, beta: T, threshold: T) -> Tensor<T> {
        self.map_cost(Cost::Transcendental, |x| {
            let bx = x * beta;
            if bx > threshold {
                x
            } else {
                bx.exp().ln_1p() / beta
            }
        })
    }

    /// Values limited to `[min, max]`, like `torch.clamp`; either bound may be `None`.
    /// NaN stays NaN; when `min > max` every value becomes `max`, as in PyTorch.
    pub fn clamp(&self, min: Option<T>, max: Option<T>) -> Tensor<T> {
        let lo = min.unwrap_or(T::neg_infinity());
        let hi = max.unwrap_or(T::infinity());
        self.map_cost(Cost::Cheap, move |x| {
            let y = if x < lo { lo } else { x };
            if y > hi { hi } else { y }
        })
    }

    /// `x^exponent`, like `torch.pow(x, exponent)` with a number exponent. The exponents
    /// PyTorch special-cases (±0.5, ±1, ±2, 3) are computed the same way
    /// (`sqrt`, `x * x`, ...), so results match it to the bit there.
    pub fn pow_scalar(&self, exponent: T) -> Tensor<T> {
        let e = exponent.to_f64();
        if e == 2.0 {
            self.map_cost(Cost::Cheap, |x| x * x)
        } else if e == 3.0 {
            self.map_cost(Cost::Cheap, |x| x * x * x)
        } else if e == 0.5 {
            self.map_cost(Cost::Cheap, |x| x.sqrt())
        } else if e == -0.5 {
            self.map_cost(Cost::Cheap, |x| x.sqrt().recip())
        } else if e == 1.0 {
            self.map_cost(Cost::Cheap, |x| x)
        } else if e == -1.0 {
            self.map_cost(Cost::Cheap, |x| x.recip())
        } else if e == -2.0 {
            self.map_cost(Cost::Cheap, |x| (x * x).recip())
        } else {
            self.map_cost(Cost::Transcendental, move |x| x.powf(exponent))
        }
    }

    /// `x + value` for every element.
    pub fn add_scalar(&self, value: T) -> Tensor<T> {
        self.map_cost(Cost::Cheap, move |x| x + value)
    }

    /// `x - value` for every element.
    pub fn sub_scalar(&self, value: T) -> Tensor<T> {
        self.map_cost(Cost::Cheap, move |x| x - value)
    }

    /// `x * value` for every element.
    pub fn mul_scalar(&self, value: T) -> Tensor<T> {
        self.map_cost(Cost::Cheap, move |x| x * value)
    }

    /// `x / value` for every element.
    pub fn div_scalar(&self, value: T) -> Tensor<T> {
        self.map_cost(Cost::Cheap, move |x| x / value)
    }

    /// `value - x` for every element, like `torch.rsub`.
    pub fn rsub_scalar(&self, value: T) -> Tensor<T> {
        self.map_cost(Cost::Cheap, move |x| value - x)
    }

    /// `max(x, value)` for every element (NaN propagates), like `torch.clamp_min`.
    pub fn maximum_scalar(&self, value: T) -> Tensor<T> {
        self.map_cost(Cost::Cheap, move |x| if x < value { value } else { x })
    }

    /// `min(x, value)` for every element (NaN propagates), like `torch.clamp_max`.
    pub fn minimum_scalar(&self, value: T) -> Tensor<T> {
        self.map_cost(Cost::Cheap, move |x| if x > value { value } else { x })
    }
}

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
