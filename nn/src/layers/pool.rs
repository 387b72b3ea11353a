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

/// The window settings of the 1-d pools, PyTorch's defaults by [`Pool1dParams::new`]
/// (stride = kernel, no padding, dilation 1, floor mode, padded zeros counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool1dParams {
    /// Window size.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Implicit padding on both sides (at most half the kernel).
    pub padding: usize,
    /// Spacing between window taps (max pooling only).
    pub dilation: usize,
    /// Round the output size up.
    pub ceil_mode: bool,
    /// Average pooling: count padded zeros in the divisor.
    pub count_include_pad: bool,
}

impl Pool1dParams {
    /// A window of `kernel`, stride = kernel.
    pub fn new(kernel: usize) -> Self {
        Pool1dParams {
            kernel,
            stride: kernel,
            padding: 0,
            dilation: 1,
            ceil_mode: false,
            count_include_pad: true,
        }
    }

    /// The 2-d settings of a height-1 window.
    fn as_2d(self) -> Pool2dParams {
        Pool2dParams {
            kernel: [1, self.kernel],
            stride: [1, self.stride],
            padding: [0, self.padding],
            dilation: [1, self.dilation],
            ceil_mode: self.ceil_mode,
            count_include_pad: self.count_include_pad,
            divisor_override: None,
        }
    }
}

/// 1-d max pooling of `[N, C, L]` or `[C, L]`, like `nn.MaxPool1d` (the 2-d kernel on a
/// height of 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool1d {
    /// The window settings.
    pub params: Pool1dParams,
}

/// 1-d average pooling of `[N, C, L]` or `[C, L]`, like `nn.AvgPool1d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPool1d {
    /// The window settings.
    pub params: Pool1dParams,
}

/// Max pooling to a fixed output size, like `nn.AdaptiveMaxPool2d(output_size)`: output
/// cell `i` of a dimension of `n` covers `floor(i·n/out) .. ceil((i+1)·n/out)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdaptiveMaxPool2d {
    /// (height, width) of the output.
    pub output_size: [usize; 2],
}

/// Runs a 2-d pool on `x` (`[N, C, L]` or `[C, L]`) viewed with a height of 1.
fn pool_1d<T: Element>(
    layer: &'static str,
    x: &Var<T>,
    pool: impl Fn(&Var<T>) -> strata_autograd::Result<Var<T>>,
) -> Result<Var<T>> {
    if !(x.ndim() == 2 || x.ndim() == 3) {
        return Err(crate::error::input_error(
            layer,
            format!("expected [N, C, L] or [C, L], got {:?}", x.shape()),
        ));
    }
    Ok(pool(&x.unsqueeze(-2)?)?.squeeze(-2)?)
}

fn adaptive_max_pool2d<T: Element>(x: &Var<T>, out: [usize; 2]) -> Result<Var<T>> {
    const LAYER: &str = "AdaptiveMaxPool2d";
    let nd = x.ndim();
    if !(nd == 3 || nd == 4) || out.contains(&0) || x.shape()[nd - 2..].contains(&0) {
        return Err(crate::error::input_error(
            LAYER,
            format!(
                "expected a non-empty [N, C, H, W] or [C, H, W] and a positive output size, got {:?} and {out:?}",
                x.shape()
            ),
        ));
    }
    let (h, w) = (x.shape()[nd - 2], x.shape()[nd - 1]);
    let window = |i: usize, n: usize, o: usize| (i * n / o, ((i + 1) * n).div_ceil(o));
    let mut rows = Vec::with_capacity(out[0]);
    for i in 0..out[0] {
        let (h0, h1) = window(i, h, out[0]);
        let band = x.narrow(-2, h0, h1 - h0)?;
        let mut cells = Vec::with_capacity(out[1]);
        for j in 0..out[1] {
            let (w0, w1) = window(j, w, out[1]);
            cells.push(band.narrow(-1, w0, w1 - w0)?.amax(&[-2, -1], false)?);
        }
        rows.push(Var::stack(&cells, -1)?);
    }
    Ok(Var::stack(&rows, -2)?)
}

stateless! {
    MaxPool1d => |s, x| pool_1d("MaxPool1d", x, |v| v.max_pool2d(s.params.as_2d()))?;
    AvgPool1d => |s, x| pool_1d("AvgPool1d", x, |v| v.avg_pool2d(s.params.as_2d()))?;
    AdaptiveMaxPool2d => |s, x| adaptive_max_pool2d(x, s.output_size)?;
}
