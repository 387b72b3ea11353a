//! `Conv1d` and `Conv2d`.

use strata_autograd::Var;
use strata_tensor::rand::Rng;
use strata_tensor::{Conv1dParams, Conv2dParams, Element};

use crate::error::{config_error, input_error};
use crate::init::default_layer_init;
use crate::{Forward, Module, Result, StateKind};

/// Zero padding of a convolution, like the `padding` argument of `nn.Conv2d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// The same padding on both sides of each spatial dimension, (height, width) for
    /// Conv2d (Conv1d uses the second entry).
    Explicit([usize; 2]),
    /// No padding (`padding="valid"`).
    Valid,
    /// Enough padding that the output has the input's size (`padding="same"`, stride 1
    /// only); an odd total puts the extra zero at the end, as PyTorch does.
    Same,
}

/// The settings of a convolution layer besides its channel counts and kernel; the
/// defaults are PyTorch's (stride 1, no padding, dilation 1, one group, with bias).
///
/// ```
/// use strata_nn::{ConvConfig, Padding};
/// let c = ConvConfig::default().stride(2).padding(Padding::Explicit([1, 1]));
/// assert_eq!(c.stride, [2, 2]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvConfig {
    /// Stride, (height, width).
    pub stride: [usize; 2],
    /// Padding.
    pub padding: Padding,
    /// Dilation, (height, width).
    pub dilation: [usize; 2],
    /// Groups.
    pub groups: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
}

impl Default for ConvConfig {
    fn default() -> Self {
        ConvConfig {
            stride: [1, 1],
            padding: Padding::Explicit([0, 0]),
            dilation: [1, 1],
            groups: 1,
            bias: true,
        }
    }
}

impl ConvConfig {
    /// The same stride in every dimension.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    /// The padding.
    pub fn padding(mut self, p: Padding) -> Self {
        self.padding = p;
        self
    }
    /// The same dilation in every dimension.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }
    /// The number of groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    /// With or without bias.
    pub fn bias(mut self, b: bool) -> Self {
        self.bias = b;
        self
    }
}

/// Checks channel counts, groups and the config, as `nn.Conv2d.__init__` does.
fn check_config(
    layer: &'static str,
    cin: usize,
    cout: usize,
    kernel: &[usize],
    c: &ConvConfig,
) -> Result<()> {
    let fail = |msg: String| Err(config_error(layer, msg));
    if c.groups == 0 {
        return fail("groups must be a positive integer".into());
    }
    if !cin.is_multiple_of(c.groups) || !cout.is_multiple_of(c.groups) {
        return fail(format!(
            "in_channels ({cin}) and out_channels ({cout}) must be divisible by groups ({})",
            c.groups
        ));
    }
    if kernel.contains(&0) || c.stride.contains(&0) || c.dilation.contains(&0) {
        return fail(format!(
            "kernel {kernel:?}, stride {:?} and dilation {:?} must be positive",
            c.stride, c.dilation
        ));
    }
    if c.padding == Padding::Same && c.stride.iter().any(|&s| s != 1) {
        return fail("padding=\"same\" is not supported for strided convolutions".into());
    }
    Ok(())
}

/// The symmetric padding of a spatial dimension, and the extra zeros at its end that
/// `Same` needs when the total is odd.
fn resolve_padding(p: Padding, axis: usize, kernel: usize, dilation: usize) -> (usize, usize) {
    match p {
        Padding::Explicit(pads) => (pads[axis], 0),
        Padding::Valid => (0, 0),
        Padding::Same => {
            let total = dilation * (kernel - 1);
            (total / 2, total - 2 * (total / 2))
        }
    }
}

/// A 2-d convolution layer, like `nn.Conv2d(in, out, kernel_size, stride, padding,
/// dilation, groups, bias)`: weight `[out, in/groups, kh, kw]`, bias `[out]`, initialised
/// as PyTorch does (uniform in `±1/√fan_in`). Input `[N, C, H, W]` or `[C, H, W]`.
pub struct Conv2d<T: Element = f32> {
    /// `[out_channels, in_channels / groups, kh, kw]`.
    pub weight: Var<T>,
    /// `[out_channels]`, when the layer has a bias.
    pub bias: Option<Var<T>>,
    config: ConvConfig,
    in_channels: usize,
}

impl<T: Element> Conv2d<T> {
    /// A square `kernel` with the default config (`nn.Conv2d(in, out, kernel)`).
    ///
    /// # Errors
    /// As [`with_config`](Conv2d::with_config).
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        rng: &mut R,
    ) -> Result<Self> {
        Self::with_config(
            in_channels,
            out_channels,
            [kernel, kernel],
            ConvConfig::default(),
            rng,
        )
    }

    /// A layer with a (height, width) kernel and the given config.
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) when the channels are not divisible by
    /// the groups, a size is zero, or `Same` padding meets a stride above 1.
    pub fn with_config<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel: [usize; 2],
        config: ConvConfig,
        rng: &mut R,
    ) -> Result<Self> {
        check_config("Conv2d", in_channels, out_channels, &kernel, &config)?;
        let shape = [
            out_channels,
            in_channels / config.groups,
            kernel[0],
            kernel[1],
        ];
        let (weight, bias) = default_layer_init(&shape, config.bias, rng);
        Ok(Conv2d {
            weight,
            bias,
            config,
            in_channels,
        })
    }

    /// The config.
    pub fn config(&self) -> ConvConfig {
        self.config
    }
}

impl<T: Element> Module<T> for Conv2d<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        f("weight", &self.weight, StateKind::Parameter);
        if let Some(b) = &self.bias {
            f("bias", b, StateKind::Parameter);
        }
    }
}

impl<T: Element> Forward<T> for Conv2d<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let s = x.shape();
        let channels = match s.len() {
            4 => s[1],
            3 => s[0],
            _ => usize::MAX,
        };
        if channels != self.in_channels {
            return Err(input_error(
                "Conv2d",
                format!(
                    "expected input [N, C, H, W] or [C, H, W] with C = {}, got {s:?}",
                    self.in_channels
                ),
            ));
        }
        let k = &self.weight.shape()[2..];
        let c = &self.config;
        let (ph, eh) = resolve_padding(c.padding, 0, k[0], c.dilation[0]);
        let (pw, ew) = resolve_padding(c.padding, 1, k[1], c.dilation[1]);
        let x = if eh + ew > 0 {
            x.pad(&[0, ew as isize, 0, eh as isize], T::zero())?
        } else {
            x.clone()
        };
        let params = Conv2dParams {
            stride: c.stride,
            padding: [ph, pw],
            dilation: c.dilation,
            groups: c.groups,
        };
        Ok(x.conv2d(&self.weight, self.bias.as_ref(), params)?)
    }
}

/// A 1-d convolution layer, like `nn.Conv1d(in, out, kernel_size, ...)`: weight
/// `[out, in/groups, k]`, bias `[out]`. Input `[N, C, L]` or `[C, L]`. The config's
/// second entries (`stride[1]`, `dilation[1]`, `Explicit([_, p])`) apply.
pub struct Conv1d<T: Element = f32> {
    /// `[out_channels, in_channels / groups, k]`.
    pub weight: Var<T>,
    /// `[out_channels]`, when the layer has a bias.
    pub bias: Option<Var<T>>,
    config: ConvConfig,
    in_channels: usize,
}

impl<T: Element> Conv1d<T> {
    /// The default config (`nn.Conv1d(in, out, kernel)`).
    ///
    /// # Errors
    /// As [`with_config`](Conv1d::with_config).
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        rng: &mut R,
    ) -> Result<Self> {
        Self::with_config(
            in_channels,
            out_channels,
            kernel,
            ConvConfig::default(),
            rng,
        )
    }

    /// A layer with the given config (`ConvConfig::stride(s)` etc. set both entries).
    ///
    /// # Errors
    /// As [`Conv2d::with_config`].
    pub fn with_config<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        config: ConvConfig,
        rng: &mut R,
    ) -> Result<Self> {
        let mut config = config;
        config.stride[0] = 1;
        config.dilation[0] = 1;
        check_config("Conv1d", in_channels, out_channels, &[kernel], &config)?;
        let shape = [out_channels, in_channels / config.groups, kernel];
        let (weight, bias) = default_layer_init(&shape, config.bias, rng);
        Ok(Conv1d {
            weight,
            bias,
            config,
            in_channels,
        })
    }
}

impl<T: Element> Module<T> for Conv1d<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        f("weight", &self.weight, StateKind::Parameter);
        if let Some(b) = &self.bias {
            f("bias", b, StateKind::Parameter);
        }
    }
}

impl<T: Element> Forward<T> for Conv1d<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let s = x.shape();
        let channels = match s.len() {
            3 => s[1],
            2 => s[0],
            _ => usize::MAX,
        };
        if channels != self.in_channels {
            return Err(input_error(
                "Conv1d",
                format!(
                    "expected input [N, C, L] or [C, L] with C = {}, got {s:?}",
                    self.in_channels
                ),
            ));
        }
        let c = &self.config;
        let k = self.weight.shape()[2];
        let (p, extra) = resolve_padding(c.padding, 1, k, c.dilation[1]);
        let x = if extra > 0 {
            x.pad(&[0, extra as isize], T::zero())?
        } else {
            x.clone()
        };
        let params = Conv1dParams {
            stride: c.stride[1],
            padding: p,
            dilation: c.dilation[1],
            groups: c.groups,
        };
        Ok(x.conv1d(&self.weight, self.bias.as_ref(), params)?)
    }
}
