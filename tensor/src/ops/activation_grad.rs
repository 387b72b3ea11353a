//! Fused backward kernels of the elementwise activations: each takes the op's input (or
//! output, where cheaper) and the gradient of the output, and returns the gradient of the
//! input in one pass. Formulas are PyTorch's (`aten/src/ATen/native/cpu/Activation.cpp`).

use crate::engine::par::Cost;
use crate::{Element, Result, Tensor};

/// Backward kernels on `(saved, grad)`: name, what `saved` is, cost, body.
macro_rules! backward_ops {
    ($( $(#[$doc:meta])* $name:ident, $cost:ident, |$s:ident, $g:ident| $body:expr; )*) => {
        impl<T: Element> Tensor<T> {
            $(
                $(#[$doc])*
                ///
                /// # Errors
                /// [`TensorError::Shape`](crate::TensorError::Shape) when `grad`'s shape
                /// differs from `self`'s.
                #[doc(hidden)]
                pub fn $name(&self, grad: &Tensor<T>) -> Result<Tensor<T>> {
                    self.check_same_shape(stringify!($name), grad)?;
                    self.zip_map(grad, stringify!($name), Cost::$cost, #[inline(always)] |$s: T, $g: T| $body)
                }
            )*
        }
    };
}

backward_ops! {
    /// Gradient of [`relu`](Tensor::relu) from its output `y`: `grad` where `y > 0`, else 0.
    relu_backward, Cheap, |y, g| if y > T::zero() { g } else { T::zero() };
    /// Gradient of [`sigmoid`](Tensor::sigmoid) from its output `y`: `grad · y · (1 - y)`.
    sigmoid_backward, Cheap, |y, g| g * y * (T::one() - y);
    /// Gradient of [`tanh`](Tensor::tanh) from its output `y`: `grad · (1 - y²)`.
    tanh_backward, Cheap, |y, g| g * (T::one() - y * y);
    /// Gradient of [`gelu`](Tensor::gelu) from its input `x`: `grad · (Φ(x) + x·φ(x))`.
    gelu_backward, Transcendental, |x, g| {
        let half = T::from_f64(0.5);
        let cdf = half * (-x * T::FRAC_1_SQRT_2()).erfc_v();
        let pdf = (-half * x * x).exp_v() * T::from_f64(0.398_942_280_401_432_7); // 1/√(2π)
        g * (cdf + x * pdf)
    };
    /// Gradient of [`gelu_tanh`](Tensor::gelu_tanh) from its input `x`.
    gelu_tanh_backward, Transcendental, |x, g| {
        let half = T::from_f64(0.5);
        let beta = T::from_f64(0.797_884_560_802_865_4); // √(2/π)
        let kappa = T::from_f64(0.044_715);
        let x2 = x * x;
        let t = (beta * (x + kappa * x2 * x)).tanh_v();
        let left = half * (T::one() + t);
        let right = half * x * (T::one() - t * t) * beta * (T::one() + T::from_f64(3.0) * kappa * x2);
        g * (left + right)
    };
    /// Gradient of [`silu`](Tensor::silu) from its input `x`: `grad · s · (1 + x·(1 - s))`
    /// with `s = sigmoid(x)`.
    silu_backward, Transcendental, |x, g| {
        let s = (T::one() + (-x).exp_v()).recip();
        g * s * (T::one() + x * (T::one() - s))
    };
    /// Gradient of [`exp`](Tensor::exp) from its output `y`: `grad · y`.
    exp_backward, Cheap, |y, g| g * y;
    /// Gradient of [`log`](Tensor::log) from its input `x`: `grad / x`.
    log_backward, Cheap, |x, g| g / x;
    /// Gradient of [`log1p`](Tensor::log1p) from its input `x`: `grad / (1 + x)`.
    log1p_backward, Cheap, |x, g| g / (T::one() + x);
    /// Gradient of [`sqrt`](Tensor::sqrt) from its output `y`: `grad / (2y)`.
    sqrt_backward, Cheap, |y, g| g / (y + y);
    /// Gradient of [`rsqrt`](Tensor::rsqrt) from its output `y`: `-grad · y³ / 2`.
    rsqrt_backward, Cheap, |y, g| -T::from_f64(0.5) * g * y * y * y;
    /// Gradient of [`abs`](Tensor::abs) from its input `x`: `grad · sign(x)` (0 at 0).
    abs_backward, Cheap, |x, g| {
        if x > T::zero() { g } else if x < T::zero() { -g } else { T::zero() }
    };
    /// Gradient of [`sin`](Tensor::sin) from its input `x`: `grad · cos(x)`.
    sin_backward, Transcendental, |x, g| g * x.cos();
    /// Gradient of [`cos`](Tensor::cos) from its input `x`: `-grad · sin(x)`.
    cos_backward, Transcendental, |x, g| -g * x.sin();
}

impl<T: Element> Tensor<T> {
    /// Gradient of [`leaky_relu`](Tensor::leaky_relu) from its input `x`: `grad` where
    /// `x > 0`, `negative_slope · grad` elsewhere.
    ///
    /// # Errors
    /// [`TensorError::Shape`](crate::TensorError::Shape) when the shapes differ.
    #[doc(hidden)]
    pub fn leaky_relu_backward(&self, grad: &Tensor<T>, negative_slope: T) -> Result<Tensor<T>> {
        self.check_same_shape("leaky_relu_backward", grad)?;
        self.zip_map(grad, "leaky_relu_backward", Cost::Cheap, move |x, g| {
            if x > T::zero() { g } else { g * negative_slope }
        })
    }

    /// Gradient of [`softplus`](Tensor::softplus) from its input `x`: `grad · sigmoid(βx)`,
    /// or `grad` where `βx > threshold`.
    ///
    /// # Errors
    /// [`TensorError::Shape`](crate::TensorError::Shape) when the shapes differ.
    #[doc(hidden)]
    pub fn softplus_backward(&self, grad: &Tensor<T>, beta: T, threshold: T) -> Result<Tensor<T>> {
        self.check_same_shape("softplus_backward", grad)?;
        self.zip_map(
            grad,
            "softplus_backward",
            Cost::Transcendental,
            move |x, g| {
                let bx = x * beta;
                if bx > threshold {
                    g
                } else {
                    let z = bx.exp_v();
                    g * z / (z + T::one())
                }
            },
        )
    }

    /// Gradient of [`clamp`](Tensor::clamp) from its input `x`: `grad` where
    /// `min <= x <= max`, else 0 (as PyTorch, the bounds themselves pass the gradient).
    ///
    /// # Errors
    /// [`TensorError::Shape`](crate::TensorError::Shape) when the shapes differ.
    #[doc(hidden)]
    pub fn clamp_backward(
        &self,
        grad: &Tensor<T>,
        min: Option<T>,
        max: Option<T>,
    ) -> Result<Tensor<T>> {
        self.check_same_shape("clamp_backward", grad)?;
        let lo = min.unwrap_or(T::neg_infinity());
        let hi = max.unwrap_or(T::infinity());
        self.zip_map(grad, "clamp_backward", Cost::Cheap, move |x, g| {
            if x >= lo && x <= hi { g } else { T::zero() }
        })
    }

    /// Gradient of [`pow_scalar`](Tensor::pow_scalar) from its input `x`:
    /// `grad · e · x^(e - 1)` (zero for `e = 0`, as PyTorch).
    ///
    /// # Errors
    /// [`TensorError::Shape`](crate::TensorError::Shape) when the shapes differ.
    #[doc(hidden)]
    pub fn pow_scalar_backward(&self, grad: &Tensor<T>, exponent: T) -> Result<Tensor<T>> {
        self.check_same_shape("pow_scalar_backward", grad)?;
        if exponent == T::zero() {
            return Ok(Tensor::zeros(self.shape()));
        }
        let d = self.pow_scalar(exponent - T::one());
        d.zip_map(grad, "pow_scalar_backward", Cost::Cheap, move |p, g| {
            g * exponent * p
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::Tensor;

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
                x.gelu_backward(&g).unwrap(),
                numeric(|t| t.gelu(), &xs),
            ),
            (
                "gelu_tanh",
                x.gelu_tanh_backward(&g).unwrap(),
                numeric(|t| t.gelu_tanh(), &xs),
            ),
            (
                "silu",
                x.silu_backward(&g).unwrap(),
                numeric(|t| t.silu(), &xs),
            ),
            (
                "sigmoid",
                x.sigmoid().sigmoid_backward(&g).unwrap(),
                numeric(|t| t.sigmoid(), &xs),
            ),
            (
                "tanh",
                x.tanh().tanh_backward(&g).unwrap(),
                numeric(|t| t.tanh(), &xs),
            ),
            (
                "softplus",
                x.softplus_backward(&g, 2.0, 20.0).unwrap(),
                numeric(|t| t.softplus(2.0, 20.0), &xs),
            ),
            (
                "leaky",
                x.leaky_relu_backward(&g, 0.1).unwrap(),
                numeric(|t| t.leaky_relu(0.1), &xs),
            ),
            (
                "sin",
                x.sin_backward(&g).unwrap(),
                numeric(|t| t.sin(), &xs),
            ),
            (
                "cos",
                x.cos_backward(&g).unwrap(),
                numeric(|t| t.cos(), &xs),
            ),
            (
                "abs",
                x.abs_backward(&g).unwrap(),
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
        let d = pos.sqrt().sqrt_backward(&g3).unwrap().to_vec();
        assert!((d[2] - 0.25).abs() < 1e-15); // d sqrt(x)/dx = 1 / (2 sqrt(x)) = 1/4 at 4
        let d = pos.log_backward(&g3).unwrap().to_vec();
        assert!((d[2] - 0.25).abs() < 1e-15);
        let d = pos.rsqrt().rsqrt_backward(&g3).unwrap().to_vec();
        assert!((d[2] + 0.0625).abs() < 1e-15); // -1/2 · 4^(-3/2)
        assert!(x.relu_backward(&Tensor::ones(&[2])).is_err());
    }
}
