//! Pooling layers and `Flatten`.

use strata_autograd::Var;
use strata_tensor::{Element, Pool2dParams};

use crate::{Forward, Module, Result, StateKind};

/// 2-d max pooling, like `nn.MaxPool2d(kernel_size, stride, padding, dilation, ceil_mode)`.
///
/// ```
/// use strata_nn::{Forward, MaxPool2d};
/// use strata_autograd::Var;
/// use strata_tensor::Tensor;
///
/// let pool = MaxPool2d::new(2); // stride defaults to the kernel size
/// let y = pool.forward(&Var::new(Tensor::<f32>::zeros(&[1, 3, 32, 32])))?;
/// assert_eq!(y.shape(), &[1, 3, 16, 16]);
/// # Ok::<(), strata_nn::NnError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2d {
    /// The window settings (`stride`, `padding`, `dilation`, `ceil_mode` are used).
    pub params: Pool2dParams,
}

impl MaxPool2d {
    /// A square window, stride = kernel, no padding.
    pub fn new(kernel: usize) -> Self {
        MaxPool2d {
            params: Pool2dParams::new(kernel),
        }
    }

    /// Around explicit settings.
    pub fn with_params(params: Pool2dParams) -> Self {
        MaxPool2d { params }
    }
}

/// 2-d average pooling, like `nn.AvgPool2d(kernel_size, stride, padding, ceil_mode,
/// count_include_pad, divisor_override)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPool2d {
    /// The window settings.
    pub params: Pool2dParams,
}

impl AvgPool2d {
    /// A square window, stride = kernel, no padding.
    pub fn new(kernel: usize) -> Self {
        AvgPool2d {
            params: Pool2dParams::new(kernel),
        }
    }

    /// Around explicit settings.
    pub fn with_params(params: Pool2dParams) -> Self {
        AvgPool2d { params }
    }
}

/// Average pooling to a fixed output size, like `nn.AdaptiveAvgPool2d(output_size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdaptiveAvgPool2d {
    /// (height, width) of the output.
    pub output_size: [usize; 2],
}

/// Dimensions `start_dim..=end_dim` merged, like `nn.Flatten(start_dim=1, end_dim=-1)`
/// ([`Flatten::default`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flatten {
    /// First dimension merged.
    pub start_dim: isize,
    /// Last dimension merged.
    pub end_dim: isize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten {
            start_dim: 1,
            end_dim: -1,
        }
    }
}

macro_rules! stateless {
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

stateless! {
    MaxPool2d => |s, x| x.max_pool2d(s.params)?;
    AvgPool2d => |s, x| x.avg_pool2d(s.params)?;
    AdaptiveAvgPool2d => |s, x| x.adaptive_avg_pool2d(s.output_size)?;
    Flatten => |s, x| x.flatten(s.start_dim, s.end_dim)?;
}
