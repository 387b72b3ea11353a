//! Unary elementwise ops and activations.

use strata_tensor::{Element, Tensor};

use crate::Var;

/// Ops whose gradient is computed from their output `y` by a strata-tensor kernel.
macro_rules! from_output {
    ($( $(#[$doc:meta])* $name:ident => $grad:ident; )*) => {
        impl<T: Element> Var<T> {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> Var<T> {
                    let y = self.value().$name();
                    let saved = Var::tracking(&[self]).then(|| y.clone());
                    self.unary_op(stringify!($name), y, move |g| {
                        let y = saved.as_ref().expect("saved when tracking");
                        Ok(y.$grad(g)?)
                    })
                }
            )*
        }
    };
}

/// Ops whose gradient is computed from their input `x` by a strata-tensor kernel.
macro_rules! from_input {
    ($( $(#[$doc:meta])* $name:ident => $grad:ident; )*) => {
        impl<T: Element> Var<T> {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> Var<T> {
                    let x = self.value();
                    let y = x.$name();
                    self.unary_op(stringify!($name), y, move |g| Ok(x.$grad(g)?))
                }
            )*
        }
    };
}

from_output! {
    /// `e^x`, like `torch.exp`.
    exp => exp_backward;
    /// Square root, like `torch.sqrt`.
    sqrt => sqrt_backward;
    /// `1 / sqrt(x)`, like `torch.rsqrt`.
    rsqrt => rsqrt_backward;
    /// `max(x, 0)`, like `torch.relu` (gradient 0 at 0, as PyTorch).
    relu => relu_backward;
    /// The logistic sigmoid, like `torch.sigmoid`.
    sigmoid => sigmoid_backward;
    /// Hyperbolic tangent, like `torch.tanh`.
    tanh => tanh_backward;
}

from_input! {
    /// The exact (erf) GELU, like `F.gelu(x)`.
    gelu => gelu_backward;
    /// The tanh approximation of GELU, like `F.gelu(x, approximate="tanh")`.
    gelu_tanh => gelu_tanh_backward;
    /// `x · sigmoid(x)`, like `F.silu`.
    silu => silu_backward;
    /// Natural logarithm, like `torch.log`.
    log => log_backward;
    /// `ln(1 + x)`, like `torch.log1p`.
    log1p => log1p_backward;
    /// `|x|`, like `torch.abs` (gradient 0 at 0, as PyTorch).
    abs => abs_backward;
    /// Sine, like `torch.sin`.
    sin => sin_backward;
    /// Cosine, like `torch.cos`.
    cos => cos_backward;
}

/// Piecewise-constant ops: their gradient is zero everywhere, as in PyTorch.
macro_rules! zero_grad_ops {
    ($( $(#[$doc:meta])* $name:ident; )*) => {
        impl<T: Element> Var<T> {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> Var<T> {
                    self.unary_op(stringify!($name), self.value().$name(), |g| {
                        Ok(Tensor::zeros(g.shape()))
                    })
                }
            )*
        }
    };
}

zero_grad_ops! {
    /// The sign (-1, 0 or 1), like `torch.sign`; zero gradient.
    sign;
    /// Rounded down, like `torch.floor`; zero gradient.
    floor;
    /// Rounded up, like `torch.ceil`; zero gradient.
    ceil;
    /// Rounded half to even, like `torch.round`; zero gradient.
    round;
}

impl<T: Element> Var<T> {
    /// `-x`.
    pub fn neg(&self) -> Var<T> {
        self.unary_op("neg", self.value().neg(), |g| Ok(g.neg()))
    }

    /// `x²`, like `torch.square`.
    pub fn square(&self) -> Var<T> {
        let x = self.value();
        let y = x.square();
        self.unary_op(
            "square",
            y,
            move |g| Ok(g.zip_with(&x, |g, x| g * (x + x))?),
        )
    }

    /// `1 / x`, like `torch.reciprocal`.
    pub fn recip(&self) -> Var<T> {
        let y = self.value().recip();
        let saved = Var::tracking(&[self]).then(|| y.clone());
        self.unary_op("recip", y, move |g| {
            let y = saved.as_ref().expect("saved when tracking");
            Ok(g.zip_with(y, |g, y| -g * y * y)?)
        })
    }

    /// `e^x - 1`, like `torch.expm1`.
    pub fn expm1(&self) -> Var<T> {
        let y = self.value().expm1();
        let saved = Var::tracking(&[self]).then(|| y.clone());
        self.unary_op("expm1", y, move |g| {
            let y = saved.as_ref().expect("saved when tracking");
            Ok(g.zip_with(y, |g, y| g * (y + T::one()))?)
        })
    }

    /// `x` for `x > 0`, else `negative_slope · x`, like `F.leaky_relu` (PyTorch's default
    /// slope is 0.01).
    pub fn leaky_relu(&self, negative_slope: T) -> Var<T> {
        let x = self.value();
        let y = x.leaky_relu(negative_slope);
        self.unary_op("leaky_relu", y, move |g| {
            Ok(x.leaky_relu_backward(g, negative_slope)?)
        })
    }

    /// `ln(1 + e^(beta·x)) / beta`, linear above `threshold`, like
    /// `F.softplus(x, beta, threshold)` (PyTorch's defaults are 1 and 20).
    pub fn softplus(&self, beta: T, threshold: T) -> Var<T> {
        let x = self.value();
        let y = x.softplus(beta, threshold);
        self.unary_op("softplus", y, move |g| {
            Ok(x.softplus_backward(g, beta, threshold)?)
        })
    }

    /// Clamped into `[min, max]` (either bound optional), like `torch.clamp`; the gradient
    /// passes where `min <= x <= max`, as in PyTorch.
    pub fn clamp(&self, min: Option<T>, max: Option<T>) -> Var<T> {
        let x = self.value();
        let y = x.clamp(min, max);
        self.unary_op("clamp", y, move |g| Ok(x.clamp_backward(g, min, max)?))
    }
}
