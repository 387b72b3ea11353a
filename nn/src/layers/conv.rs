//! `Conv1d` and `Conv2d`.

use strata_autograd::Var;
use strata_tensor::rand::Rng;
use strata_tensor::{Conv1dParams, Conv2dParams, Element, Padding};

use crate::error::{config_error, input_error};
use crate::init::default_layer_init;
use crate::{Forward, Module, Result, StateKind};

/// Checks channel counts, groups and the settings, as `nn.Conv2d.__init__` does.
fn check_config(
    layer: &'static str,
    (cin, cout): (usize, usize),
    kernel: &[usize],
    (stride, dilation, groups): (&[usize], &[usize], usize),
    same: bool,
) -> Result<()> {
    let fail = |msg: String| Err(config_error(layer, msg));
    if groups == 0 {
        return fail("groups must be a positive integer".into());
    }
    if !cin.is_multiple_of(groups) || !cout.is_multiple_of(groups) {
        return fail(format!(
            "in_channels ({cin}) and out_channels ({cout}) must be divisible by groups ({groups})"
        ));
    }
    if kernel.contains(&0) || stride.contains(&0) || dilation.contains(&0) {
        return fail(format!(
            "kernel {kernel:?}, stride {stride:?} and dilation {dilation:?} must be positive"
        ));
    }
    if same && stride.iter().any(|&s| s != 1) {
        return fail("padding=\"same\" is not supported for strided convolutions".into());
    }
    Ok(())
}

/// A 2-d convolution layer, like `nn.Conv2d(in, out, kernel_size, stride, padding,
/// dilation, groups, bias)`: weight `[out, in/groups, kh, kw]`, bias `[out]`, initialised
/// as PyTorch does (uniform in `±1/√fan_in`). Input `[N, C, H, W]` or `[C, H, W]`. Its
/// settings are the kernel's own [`Conv2dParams`].
///
/// ```
/// use strata_nn::{Conv2d, Conv2dParams, Padding};
/// let mut rng = strata_tensor::seeded_rng(0);
/// let params = Conv2dParams::default().stride(2).padding(1);
/// let conv = Conv2d::<f32>::with_params(3, 8, [3, 3], params, true, &mut rng)?;
/// assert_eq!(conv.params().padding, Padding::Explicit([1, 1]));
/// # Ok::<(), strata_nn::NnError>(())
/// ```
pub struct Conv2d<T: Element = f32> {
    /// `[out_channels, in_channels / groups, kh, kw]`.
    pub weight: Var<T>,
    /// `[out_channels]`, when the layer has a bias.
    pub bias: Option<Var<T>>,
    params: Conv2dParams,
    in_channels: usize,
}

impl<T: Element> Conv2d<T> {
    /// A square `kernel` with the default config (`nn.Conv2d(in, out, kernel)`).
    ///
    /// # Errors
    /// As [`with_params`](Conv2d::with_params).
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        rng: &mut R,
    ) -> Result<Self> {
        Self::with_params(
            in_channels,
            out_channels,
            [kernel, kernel],
            Conv2dParams::default(),
            true,
            rng,
        )
    }

    /// A layer with a (height, width) kernel, the given settings, and a bias when `bias`.
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) when the channels are not divisible by
    /// the groups, a size is zero, or `Same` padding meets a stride above 1.
    pub fn with_params<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel: [usize; 2],
        params: Conv2dParams,
        bias: bool,
        rng: &mut R,
    ) -> Result<Self> {
        let settings = (&params.stride[..], &params.dilation[..], params.groups);
        let same = params.padding == Padding::Same;
        check_config(
            "Conv2d",
            (in_channels, out_channels),
            &kernel,
            settings,
            same,
        )?;
        let shape = [
            out_channels,
            in_channels / params.groups,
            kernel[0],
            kernel[1],
        ];
        let (weight, bias) = default_layer_init(&shape, bias, rng);
        Ok(Conv2d {
            weight,
            bias,
            params,
            in_channels,
        })
    }

    /// The settings.
    pub fn params(&self) -> Conv2dParams {
        self.params
    }

    /// `relu(self.forward(x))` as one op ([`Var::conv2d_relu`]): the bias and the clamp
    /// are applied as the convolution stores its output, with the values and gradients
    /// of the two.
    ///
    /// ```
    /// use strata_nn::{Conv2d, Forward};
    /// let mut rng = strata_tensor::seeded_rng(0);
    /// let conv = Conv2d::<f32>::new(3, 8, 3, &mut rng)?;
    /// let x = strata_autograd::Var::new(strata_tensor::Tensor::randn(&[2, 3, 8, 8], &mut rng));
    /// let y = conv.forward_relu(&x)?;
    /// assert_eq!(y.value().to_vec(), conv.forward(&x)?.relu().value().to_vec());
    /// # Ok::<(), strata_nn::NnError>(())
    /// ```
    ///
    /// # Errors
    /// As [`forward`](Forward::forward).
    pub fn forward_relu(&self, x: &Var<T>) -> Result<Var<T>> {
        self.check_input(x)?;
        Ok(x.conv2d_relu(&self.weight, self.bias.as_ref(), self.params)?)
    }

    /// Checks that `x` is `[N, C, H, W]` or `[C, H, W]` with this layer's `C`.
    fn check_input(&self, x: &Var<T>) -> Result<()> {
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
        Ok(())
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
        self.check_input(x)?;
        Ok(x.conv2d(&self.weight, self.bias.as_ref(), self.params)?)
    }
}

/// A 1-d convolution layer, like `nn.Conv1d(in, out, kernel_size, ...)`: weight
/// `[out, in/groups, k]`, bias `[out]`. Input `[N, C, L]` or `[C, L]`. Its settings are
/// the kernel's own [`Conv1dParams`].
pub struct Conv1d<T: Element = f32> {
    /// `[out_channels, in_channels / groups, k]`.
    pub weight: Var<T>,
    /// `[out_channels]`, when the layer has a bias.
    pub bias: Option<Var<T>>,
    params: Conv1dParams,
    in_channels: usize,
}

impl<T: Element> Conv1d<T> {
    /// The default config (`nn.Conv1d(in, out, kernel)`).
    ///
    /// # Errors
    /// As [`with_params`](Conv1d::with_params).
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        rng: &mut R,
    ) -> Result<Self> {
        Self::with_params(
            in_channels,
            out_channels,
            kernel,
            Conv1dParams::default(),
            true,
            rng,
        )
    }

    /// A layer with the given settings, and a bias when `bias`.
    ///
    /// # Errors
    /// As [`Conv2d::with_params`].
    pub fn with_params<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        params: Conv1dParams,
        bias: bool,
        rng: &mut R,
    ) -> Result<Self> {
        let settings = (&[params.stride][..], &[params.dilation][..], params.groups);
        let same = params.padding == Padding::Same;
        check_config(
            "Conv1d",
            (in_channels, out_channels),
            &[kernel],
            settings,
            same,
        )?;
        let shape = [out_channels, in_channels / params.groups, kernel];
        let (weight, bias) = default_layer_init(&shape, bias, rng);
        Ok(Conv1d {
            weight,
            bias,
            params,
            in_channels,
        })
    }

    /// The settings.
    pub fn params(&self) -> Conv1dParams {
        self.params
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
        Ok(x.conv1d(&self.weight, self.bias.as_ref(), self.params)?)
    }
}
