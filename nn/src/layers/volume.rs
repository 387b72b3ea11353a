//! Volumetric layers: `Conv3d`, `MaxPool3d`, `AvgPool3d`. Each runs the 2-d kernel on the
//! (height, width) planes of every depth tap at once (the batch and the output depths
//! merged into one batch) and combines the taps along depth: a sum for the convolution, a
//! maximum or a mean for the pools. All pieces are differentiable ops, so both derivative
//! orders follow.

use strata_autograd::Var;
use strata_tensor::rand::Rng;
use strata_tensor::{Conv2dParams, Element, IndexTensor, Padding, Pool2dParams};

use crate::error::{config_error, input_error};
use crate::init::default_layer_init;
use crate::{Forward, Module, Result, StateKind};

/// The depth geometry of a 3-d window: output depth and, per tap, the padded-input depth
/// index of each output position.
fn depth_taps(
    layer: &'static str,
    depth: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Result<(usize, Vec<Vec<usize>>)> {
    let (Some(span), Some(padded)) = (
        dilation
            .checked_mul(kernel.saturating_sub(1))
            .and_then(|s| s.checked_add(1)),
        padding.checked_mul(2).and_then(|p| p.checked_add(depth)),
    ) else {
        return Err(input_error(
            layer,
            format!(
                "the kernel's extent (dilation {dilation}, kernel {kernel}) or the padded \
                 depth (padding {padding}) overflows"
            ),
        ));
    };
    if padded < span {
        return Err(input_error(
            layer,
            format!(
                "a depth of {depth} (padded {padded}) is smaller than the kernel's extent {span}"
            ),
        ));
    }
    let out = (padded - span) / stride + 1;
    let taps = (0..kernel)
        .map(|a| (0..out).map(|z| z * stride + a * dilation).collect())
        .collect();
    Ok((out, taps))
}

/// `x` `[N, C, D, H, W]` → the planes at `depths` of the padded input, as `[N·len, C, H, W]`.
fn planes<T: Element>(x: &Var<T>, depths: &[usize]) -> Result<Var<T>> {
    let s = x.shape().to_vec();
    let picked = x.index_select(2, &IndexTensor::from_indices(depths))?;
    Ok(picked
        .permute(&[0, 2, 1, 3, 4])?
        .reshape(&[s[0] * depths.len(), s[1], s[3], s[4]][..])?)
}

/// `[N·len, O, H, W]` back to `[N, O, len, H, W]`.
fn unplane<T: Element>(y: &Var<T>, n: usize, len: usize) -> Result<Var<T>> {
    let s = y.shape().to_vec();
    Ok(y.reshape(&[n, len, s[1], s[2], s[3]][..])?
        .permute(&[0, 2, 1, 3, 4])?)
}

/// A 5-d (or unbatched 4-d) input made 5-d, and whether it was unbatched.
fn batched5<T: Element>(layer: &'static str, x: &Var<T>) -> Result<(Var<T>, bool)> {
    match x.ndim() {
        5 => Ok((x.clone(), false)),
        4 => Ok((x.unsqueeze(0)?, true)),
        _ => Err(input_error(
            layer,
            format!(
                "expected [N, C, D, H, W] or [C, D, H, W], got {:?}",
                x.shape()
            ),
        )),
    }
}

/// The settings of a [`Conv3d`], PyTorch's defaults by [`Default`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3dParams {
    /// (depth, height, width) stride.
    pub stride: [usize; 3],
    /// Zero padding on both sides of each dimension.
    pub padding: [usize; 3],
    /// Spacing between kernel taps.
    pub dilation: [usize; 3],
    /// Independent channel groups.
    pub groups: usize,
}

impl Default for Conv3dParams {
    fn default() -> Self {
        Conv3dParams {
            stride: [1; 3],
            padding: [0; 3],
            dilation: [1; 3],
            groups: 1,
        }
    }
}

/// A 3-d convolution, like `nn.Conv3d(in, out, kernel, stride, padding, dilation, groups,
/// bias)`: weight `[out, in/groups, kd, kh, kw]` initialised as PyTorch does; input
/// `[N, C, D, H, W]` or `[C, D, H, W]`.
pub struct Conv3d<T: Element = f32> {
    /// `[out_channels, in_channels / groups, kd, kh, kw]`.
    pub weight: Var<T>,
    /// `[out_channels]`, when the layer has a bias.
    pub bias: Option<Var<T>>,
    params: Conv3dParams,
}

impl<T: Element> Conv3d<T> {
    /// A layer with PyTorch's initialisation drawn from `rng`.
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) when the groups do not divide the
    /// channels, or a kernel size, stride or dilation is 0.
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel: [usize; 3],
        params: Conv3dParams,
        bias: bool,
        rng: &mut R,
    ) -> Result<Self> {
        let g = params.groups;
        if g == 0 || !in_channels.is_multiple_of(g) || !out_channels.is_multiple_of(g) {
            return Err(config_error(
                "Conv3d",
                format!(
                    "in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({g})"
                ),
            ));
        }
        if kernel.contains(&0) || params.stride.contains(&0) || params.dilation.contains(&0) {
            return Err(config_error(
                "Conv3d",
                "kernel sizes, strides and dilations must be positive",
            ));
        }
        let shape = [
            out_channels,
            in_channels / g,
            kernel[0],
            kernel[1],
            kernel[2],
        ];
        let (weight, bias) = default_layer_init(&shape, bias, rng);
        Ok(Conv3d {
            weight,
            bias,
            params,
        })
    }

    /// The stride, padding, dilation and groups.
    pub fn params(&self) -> Conv3dParams {
        self.params
    }
}

impl<T: Element> Module<T> for Conv3d<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        f("weight", &self.weight, StateKind::Parameter);
        if let Some(b) = &self.bias {
            f("bias", b, StateKind::Parameter);
        }
    }
}

impl<T: Element> Forward<T> for Conv3d<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        conv3d(x, &self.weight, self.bias.as_ref(), self.params)
    }
}

/// 3-d convolution of `[N, C, D, H, W]` (or `[C, D, H, W]`) with a weight
/// `[O, C/groups, kd, kh, kw]` and optional bias `[O]`, like `F.conv3d`: the 2-d
/// convolution of every depth tap's planes, summed over the taps.
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the input, weight, bias or settings do
/// not fit.
pub fn conv3d<T: Element>(
    x: &Var<T>,
    weight: &Var<T>,
    bias: Option<&Var<T>>,
    p: Conv3dParams,
) -> Result<Var<T>> {
    const LAYER: &str = "conv3d";
    let (x, unbatched) = batched5(LAYER, x)?;
    let w = weight.shape().to_vec();
    let ok = w.len() == 5
        && p.groups > 0
        && x.shape()[1] == w[1] * p.groups
        && w[0].is_multiple_of(p.groups)
        && bias.is_none_or(|b| b.shape() == [w[0]])
        && !p.stride.contains(&0)
        && !p.dilation.contains(&0)
        && w[2] > 0;
    if !ok {
        return Err(input_error(
            LAYER,
            format!(
                "expected input [N, C, D, H, W], weight [O, C/groups, kd, kh, kw] with groups = {} and bias [O], positive strides and dilations; got input {:?}, weight {w:?}, bias {:?}",
                p.groups,
                x.shape(),
                bias.map(|b| b.shape().to_vec())
            ),
        ));
    }
    let n = x.shape()[0];
    let padded = x.pad(
        &[0, 0, 0, 0, p.padding[0] as isize, p.padding[0] as isize],
        T::zero(),
    )?;
    let (depth, taps) = depth_taps(
        LAYER,
        x.shape()[2],
        w[2],
        p.stride[0],
        p.padding[0],
        p.dilation[0],
    )?;
    let conv = Conv2dParams {
        stride: [p.stride[1], p.stride[2]],
        padding: Padding::Explicit([p.padding[1], p.padding[2]]),
        dilation: [p.dilation[1], p.dilation[2]],
        groups: p.groups,
    };
    let mut total: Option<Var<T>> = None;
    for (a, depths) in taps.iter().enumerate() {
        let wa = weight.select(2, a as isize)?;
        let y = planes(&padded, depths)?.conv2d(&wa, None, conv)?;
        total = Some(match total {
            Some(t) => t.add(&y)?,
            None => y,
        });
    }
    let y = unplane(&total.expect("a kernel has taps"), n, depth)?;
    let y = match bias {
        Some(b) => y.add(&b.reshape(&[w[0], 1, 1, 1][..])?)?,
        None => y,
    };
    Ok(if unbatched { y.squeeze(0)? } else { y })
}

/// The window settings of the 3-d pools (`ceil_mode` off), PyTorch's defaults by
/// [`Pool3dParams::new`]: stride = kernel, no padding, dilation 1, padded zeros counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool3dParams {
    /// (depth, height, width) window.
    pub kernel: [usize; 3],
    /// Step between windows.
    pub stride: [usize; 3],
    /// Implicit padding (at most half the kernel).
    pub padding: [usize; 3],
    /// Spacing between taps (max pooling only).
    pub dilation: [usize; 3],
    /// Average pooling: count padded zeros in the divisor.
    pub count_include_pad: bool,
}

impl Pool3dParams {
    /// A cubic window of `kernel`, stride = kernel.
    pub fn new(kernel: usize) -> Self {
        Pool3dParams {
            kernel: [kernel; 3],
            stride: [kernel; 3],
            padding: [0; 3],
            dilation: [1; 3],
            count_include_pad: true,
        }
    }

    fn plane(self) -> Pool2dParams {
        Pool2dParams {
            kernel: [self.kernel[1], self.kernel[2]],
            stride: [self.stride[1], self.stride[2]],
            padding: [self.padding[1], self.padding[2]],
            dilation: [self.dilation[1], self.dilation[2]],
            ceil_mode: false,
            count_include_pad: self.count_include_pad,
            divisor_override: None,
        }
    }

    fn check(self, layer: &'static str) -> Result<()> {
        let ok = (0..3).all(|d| {
            self.kernel[d] > 0
                && self.stride[d] > 0
                && self.dilation[d] > 0
                && self.padding[d] <= self.kernel[d] / 2
        });
        if !ok {
            return Err(input_error(
                layer,
                format!(
                    "kernel, stride and dilation must be positive and padding at most half the kernel, got {self:?}"
                ),
            ));
        }
        Ok(())
    }
}

/// 3-d max pooling, like `nn.MaxPool3d(kernel, stride, padding, dilation)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool3d {
    /// The window settings.
    pub params: Pool3dParams,
}

/// 3-d average pooling, like `nn.AvgPool3d(kernel, stride, padding,
/// count_include_pad=...)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPool3d {
    /// The window settings (`dilation` unused).
    pub params: Pool3dParams,
}

/// The pooled planes of every depth tap, `[N, C, D', H', W']` each.
fn pooled_taps<T: Element>(
    layer: &'static str,
    x: &Var<T>,
    p: Pool3dParams,
    fill: T,
    dilation: usize,
    pool: impl Fn(&Var<T>) -> strata_autograd::Result<Var<T>>,
) -> Result<(Vec<Var<T>>, bool)> {
    p.check(layer)?;
    let (x, unbatched) = batched5(layer, x)?;
    let n = x.shape()[0];
    let padded = x.pad(
        &[0, 0, 0, 0, p.padding[0] as isize, p.padding[0] as isize],
        fill,
    )?;
    let (depth, taps) = depth_taps(
        layer,
        x.shape()[2],
        p.kernel[0],
        p.stride[0],
        p.padding[0],
        dilation,
    )?;
    let out = taps
        .iter()
        .map(|depths| unplane(&pool(&planes(&padded, depths)?)?, n, depth))
        .collect::<Result<Vec<_>>>()?;
    Ok((out, unbatched))
}

impl<T: Element> Module<T> for MaxPool3d {
    fn visit_state(&self, _: &mut dyn FnMut(&str, &Var<T>, StateKind)) {}
}

impl<T: Element> Forward<T> for MaxPool3d {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let p = self.params;
        let (taps, unbatched) =
            pooled_taps("MaxPool3d", x, p, T::neg_infinity(), p.dilation[0], |v| {
                v.max_pool2d(p.plane())
            })?;
        let y = Var::stack(&taps, 0)?.amax(&[0], false)?;
        Ok(if unbatched { y.squeeze(0)? } else { y })
    }
}

impl<T: Element> Module<T> for AvgPool3d {
    fn visit_state(&self, _: &mut dyn FnMut(&str, &Var<T>, StateKind)) {}
}

impl<T: Element> Forward<T> for AvgPool3d {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let p = self.params;
        let depth = x
            .shape()
            .get(x.ndim().wrapping_sub(3))
            .copied()
            .unwrap_or(0);
        let (taps, unbatched) =
            pooled_taps("AvgPool3d", x, p, T::zero(), 1, |v| v.avg_pool2d(p.plane()))?;
        let mut sum = taps[0].clone();
        for t in &taps[1..] {
            sum = sum.add(t)?;
        }
        // The divisor along depth: the whole window, or only the taps inside the input.
        let out_depth = sum.shape()[2];
        let counts: Vec<T> = (0..out_depth)
            .map(|z| {
                let count = if p.count_include_pad {
                    p.kernel[0]
                } else {
                    (0..p.kernel[0])
                        .filter(|a| {
                            let at = z * p.stride[0] + a;
                            at >= p.padding[0] && at < p.padding[0] + depth
                        })
                        .count()
                };
                T::from_f64(count.max(1) as f64)
            })
            .collect();
        let divisor = strata_tensor::Tensor::from_vec(counts, &[1, 1, out_depth, 1, 1])?;
        let y = sum.div(&Var::new(divisor))?;
        Ok(if unbatched { y.squeeze(0)? } else { y })
    }
}
