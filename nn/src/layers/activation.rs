//! Activations as layers: each is also a method on `Var` (`x.relu()`) and a function in
//! [`functional`](crate::functional).

use strata_autograd::Var;
use strata_tensor::Element;

use crate::{Forward, Module, Result, StateKind};

macro_rules! unit_activations {
    ($( $(#[$doc:meta])* $name:ident => $method:ident; )*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name;

        impl<T: Element> Module<T> for $name {
            fn visit_state(&self, _f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {}
        }

        impl<T: Element> Forward<T> for $name {
            fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
                Ok(x.$method())
            }
        }
    )*};
}

unit_activations! {
    /// `max(x, 0)`, like `nn.ReLU`.
    ReLU => relu;
    /// `1 / (1 + e^-x)`, like `nn.Sigmoid`.
    Sigmoid => sigmoid;
    /// `tanh(x)`, like `nn.Tanh`.
    Tanh => tanh;
    /// `x · sigmoid(x)`, like `nn.SiLU`.
    SiLU => silu;
    /// The input unchanged, like `nn.Identity`.
    Identity => clone;
}

/// `x` for positive `x`, else `negative_slope · x`, like `nn.LeakyReLU` (PyTorch's default
/// slope 0.01 is [`LeakyReLU::default`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeakyReLU {
    /// The slope for negative inputs.
    pub negative_slope: f64,
}

/// GELU, like `nn.GELU(approximate)`: the exact erf form (the default), or the tanh
/// approximation when `tanh` is true.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GELU {
    /// Use the tanh approximation (`approximate="tanh"`).
    pub tanh: bool,
}

/// Layers with a field or two and no state.
macro_rules! stateless_impls {
    ($( $name:ident => |$s:ident, $x:ident| $body:expr; )*) => {$(
        impl<T: Element> Module<T> for $name {
            fn visit_state(&self, _f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {}
        }

        impl<T: Element> Forward<T> for $name {
            fn forward(&self, $x: &Var<T>) -> Result<Var<T>> {
                let $s = self;
                Ok($body)
            }
        }
    )*};
}

stateless_impls! {
    LeakyReLU => |s, x| x.leaky_relu(T::from_f64(s.negative_slope));
    GELU => |s, x| if s.tanh { x.gelu_tanh() } else { x.gelu() };
    Softmax => |s, x| x.softmax(s.dim)?;
    LogSoftmax => |s, x| x.log_softmax(s.dim)?;
}

impl Default for LeakyReLU {
    fn default() -> Self {
        LeakyReLU {
            negative_slope: 0.01,
        }
    }
}

impl Default for GELU {
    /// The exact (erf) form, PyTorch's default.
    fn default() -> Self {
        GELU { tanh: false }
    }
}

/// Softmax along `dim`, like `nn.Softmax(dim)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Softmax {
    /// The dimension that sums to one.
    pub dim: isize,
}

/// Log-softmax along `dim`, like `nn.LogSoftmax(dim)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogSoftmax {
    /// The dimension normalised.
    pub dim: isize,
}
