//! Transposed convolutions (`F.conv_transpose1d`, `F.conv_transpose2d`): the adjoint of a
//! convolution, i.e. its input gradient taken as an op of its own, which strata-autograd
//! already differentiates to every order.

use strata_tensor::{Conv2dParams, Element, Padding, TensorError};

use crate::ops::nn::conv2d_input_grad;
use crate::{Result, Var};

const OP: &str = "conv_transpose2d";

/// The settings of a transposed convolution, PyTorch's defaults by [`Default`] (stride 1,
/// no padding or output padding, dilation 1, one group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTransposeParams<const D: usize> {
    /// The stride of the convolution this one transposes (the upsampling factor).
    pub stride: [usize; D],
    /// Its padding (removed from the output's borders).
    pub padding: [usize; D],
    /// Extra size added to one side of the output, to pick among the sizes a strided
    /// convolution maps to the same input size; below the stride or the dilation.
    pub output_padding: [usize; D],
    /// Spacing between kernel taps.
    pub dilation: [usize; D],
    /// Independent groups of input and output channels.
    pub groups: usize,
}

impl<const D: usize> Default for ConvTransposeParams<D> {
    fn default() -> Self {
        ConvTransposeParams {
            stride: [1; D],
            padding: [0; D],
            output_padding: [0; D],
            dilation: [1; D],
            groups: 1,
        }
    }
}

impl<T: Element> Var<T> {
    /// Transposed 2-d convolution of `[N, C_in, H, W]` (or `[C_in, H, W]`) with a weight
    /// `[C_in, C_out/groups, kh, kw]` and optional bias `[C_out]`, like
    /// `F.conv_transpose2d`: output size `(H - 1)·stride - 2·padding + dilation·(kh - 1) +
    /// output_padding + 1`.
    ///
    /// # Errors
    /// [`TensorError::Shape`] or [`TensorError::Invalid`] when the input, weight, bias or
    /// settings do not fit (an output padding not below the stride or the dilation, a
    /// stride or dilation of 0, channels that the groups do not divide, an empty output).
    pub fn conv_transpose2d(
        &self,
        weight: &Var<T>,
        bias: Option<&Var<T>>,
        params: ConvTransposeParams<2>,
    ) -> Result<Var<T>> {
        let unbatched = self.ndim() == 3;
        let (xs, ws) = (self.shape(), weight.shape());
        let (&[n, cin, h, w], &[wcin, cout_g, kh, kw]) = (
            &*if unbatched {
                [&[1][..], xs].concat()
            } else {
                xs.to_vec()
            },
            ws,
        ) else {
            return Err(TensorError::shape(
                OP,
                format!(
                    "expected input [N, C_in, H, W] or [C_in, H, W] and weight [C_in, C_out/groups, kh, kw], got {xs:?} and {ws:?}"
                ),
            )
            .into());
        };
        let g = params.groups;
        if g == 0 || cin != wcin || !cin.is_multiple_of(g) {
            return Err(TensorError::shape(
                OP,
                format!(
                    "the input's {cin} channels must match the weight's first dimension ({wcin}) and be divisible by groups = {g}"
                ),
            )
            .into());
        }
        let mut out = [0usize; 2];
        for (d, (size, k)) in [(h, kh), (w, kw)].into_iter().enumerate() {
            let (s, p, op, dl) = (
                params.stride[d],
                params.padding[d],
                params.output_padding[d],
                params.dilation[d],
            );
            if s == 0 || dl == 0 {
                return Err(
                    TensorError::invalid(OP, "stride and dilation must be positive").into(),
                );
            }
            if op >= s && op >= dl {
                return Err(TensorError::invalid(
                    OP,
                    format!("output padding {op} must be smaller than either the stride ({s}) or the dilation ({dl})"),
                )
                .into());
            }
            let full = (size.max(1) as u128 - 1) * s as u128
                + dl as u128 * (k.max(1) as u128 - 1)
                + op as u128
                + 1;
            let o = full.checked_sub(2 * p as u128).filter(|&o| o > 0 && size > 0).ok_or_else(|| {
                TensorError::invalid(
                    OP,
                    format!("input size {size}, kernel {k}, stride {s}, padding {p}: the output would be empty"),
                )
            })?;
            out[d] = usize::try_from(o)
                .map_err(|_| TensorError::invalid(OP, "the output is too large"))?;
        }
        let cout = cout_g * g;
        if let Some(b) = bias
            && b.shape() != [cout]
        {
            return Err(TensorError::shape(
                OP,
                format!("bias must be [{cout}], got {:?}", b.shape()),
            )
            .into());
        }
        let conv = Conv2dParams {
            stride: params.stride,
            padding: Padding::Explicit(params.padding),
            dilation: params.dilation,
            groups: g,
        };
        let x = if unbatched {
            self.unsqueeze(0)?
        } else {
            self.clone()
        };
        // An output padding of a stride or more (allowed below the dilation) makes the
        // convolution of the output size produce floor(op / stride) more positions than
        // the input has: those read zeros.
        let extra = [0, 1].map(|d| params.output_padding[d] / params.stride[d]);
        let x = if extra == [0, 0] {
            x
        } else {
            x.pad(&[0, extra[1] as isize, 0, extra[0] as isize], T::zero())?
        };
        let y = conv2d_input_grad(&x, weight, &[n, cout, out[0], out[1]], conv)?;
        let y = match bias {
            Some(b) => y.add(&b.reshape(&[cout, 1, 1][..])?)?,
            None => y,
        };
        if unbatched { y.squeeze(0) } else { Ok(y) }
    }

    /// Transposed 1-d convolution of `[N, C_in, L]` (or `[C_in, L]`) with a weight
    /// `[C_in, C_out/groups, k]`, like `F.conv_transpose1d` (the 2-d one on a height of 1).
    ///
    /// # Errors
    /// As [`conv_transpose2d`](Var::conv_transpose2d).
    pub fn conv_transpose1d(
        &self,
        weight: &Var<T>,
        bias: Option<&Var<T>>,
        params: ConvTransposeParams<1>,
    ) -> Result<Var<T>> {
        if !(self.ndim() == 2 || self.ndim() == 3) || weight.ndim() != 3 {
            return Err(TensorError::shape(
                "conv_transpose1d",
                format!(
                    "expected input [N, C_in, L] or [C_in, L] and weight [C_in, C_out/groups, k], got {:?} and {:?}",
                    self.shape(),
                    weight.shape()
                ),
            )
            .into());
        }
        let two = ConvTransposeParams {
            stride: [1, params.stride[0]],
            padding: [0, params.padding[0]],
            output_padding: [0, params.output_padding[0]],
            dilation: [1, params.dilation[0]],
            groups: params.groups,
        };
        self.unsqueeze(-2)?
            .conv_transpose2d(&weight.unsqueeze(-2)?, bias, two)?
            .squeeze(-2)
    }
}
