//! The fused kernels layers build on: softmax, convolution and pooling, each with the
//! backward kernel strata-tensor provides.

use strata_tensor::{Conv1dParams, Conv2dParams, Dims, Element, IndexTensor, Pool2dParams, Tensor};

use crate::{Result, Var};

impl<T: Element> Var<T> {
    /// Softmax along `dim`, computed stably, like `torch.softmax(x, dim)`.
    ///
    /// # Errors
    /// [`TensorError::Dim`](strata_tensor::TensorError::Dim) for a bad dim.
    pub fn softmax(&self, dim: isize) -> Result<Var<T>> {
        let y = self.value().softmax(dim)?;
        let saved = Var::tracking(&[self]).then(|| y.clone());
        Ok(self.unary_op("softmax", y, move |g| {
            let y = saved.as_ref().expect("saved when tracking");
            Ok(y.softmax_backward(g, dim)?)
        }))
    }

    /// Log-softmax along `dim`, like `torch.log_softmax(x, dim)`.
    ///
    /// # Errors
    /// As [`softmax`](Var::softmax).
    pub fn log_softmax(&self, dim: isize) -> Result<Var<T>> {
        let y = self.value().log_softmax(dim)?;
        let saved = Var::tracking(&[self]).then(|| y.clone());
        Ok(self.unary_op("log_softmax", y, move |g| {
            let y = saved.as_ref().expect("saved when tracking");
            Ok(y.log_softmax_backward(g, dim)?)
        }))
    }

    /// 2-d convolution (cross-correlation) of an input `[N, C, H, W]` (or `[C, H, W]`) with
    /// a weight `[O, C/groups, kh, kw]` and optional bias `[O]`, like `F.conv2d`.
    ///
    /// # Errors
    /// As [`Tensor::conv2d`].
    pub fn conv2d(
        &self,
        weight: &Var<T>,
        bias: Option<&Var<T>>,
        params: Conv2dParams,
    ) -> Result<Var<T>> {
        let (x, w) = (self.value(), weight.value());
        let b = bias.map(Var::value);
        let value = x.conv2d(&w, b.as_ref(), params)?;
        let channel = usize::from(x.ndim() == 4);
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        Ok(Var::from_op("conv2d", value, &inputs, move |g, n| {
            let gx = if n[0] {
                Some(Tensor::conv2d_backward_input(g, &w, x.shape(), params)?)
            } else {
                None
            };
            let gw = if n[1] {
                Some(Tensor::conv2d_backward_weight(g, &x, w.shape(), params)?)
            } else {
                None
            };
            let mut grads = vec![gx, gw];
            if n.len() == 3 {
                grads.push(if n[2] {
                    Some(bias_grad(g, channel)?)
                } else {
                    None
                });
            }
            Ok(grads)
        }))
    }

    /// 1-d convolution of an input `[N, C, L]` (or `[C, L]`) with a weight
    /// `[O, C/groups, k]` and optional bias `[O]`, like `F.conv1d`.
    ///
    /// # Errors
    /// As [`Tensor::conv1d`].
    pub fn conv1d(
        &self,
        weight: &Var<T>,
        bias: Option<&Var<T>>,
        params: Conv1dParams,
    ) -> Result<Var<T>> {
        let (x, w) = (self.value(), weight.value());
        let b = bias.map(Var::value);
        let value = x.conv1d(&w, b.as_ref(), params)?;
        let channel = usize::from(x.ndim() == 3);
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        Ok(Var::from_op("conv1d", value, &inputs, move |g, n| {
            let gx = if n[0] {
                Some(Tensor::conv1d_backward_input(g, &w, x.shape(), params)?)
            } else {
                None
            };
            let gw = if n[1] {
                Some(Tensor::conv1d_backward_weight(g, &x, w.shape(), params)?)
            } else {
                None
            };
            let mut grads = vec![gx, gw];
            if n.len() == 3 {
                grads.push(if n[2] {
                    Some(bias_grad(g, channel)?)
                } else {
                    None
                });
            }
            Ok(grads)
        }))
    }

    /// 2-d max pooling over `[N, C, H, W]` (or `[C, H, W]`), like `F.max_pool2d`; the
    /// gradient goes to each window's (first) maximum.
    ///
    /// # Errors
    /// As [`Tensor::max_pool2d`].
    pub fn max_pool2d(&self, params: Pool2dParams) -> Result<Var<T>> {
        Ok(self.max_pool2d_with_indices(params)?.0)
    }

    /// [`max_pool2d`](Var::max_pool2d) and the flat index of each maximum within its
    /// plane, like `F.max_pool2d(..., return_indices=True)`.
    ///
    /// # Errors
    /// As [`Tensor::max_pool2d`].
    pub fn max_pool2d_with_indices(&self, params: Pool2dParams) -> Result<(Var<T>, IndexTensor)> {
        let (value, index) = self.value().max_pool2d(params)?;
        let shape = Dims::from_slice(self.shape());
        let saved = index.clone();
        let out = self.unary_op("max_pool2d", value, move |g| {
            Ok(Tensor::max_pool2d_backward(g, &saved, &shape)?)
        });
        Ok((out, index))
    }

    /// 2-d average pooling, like `F.avg_pool2d` (with `ceil_mode`, `count_include_pad`
    /// and `divisor_override` from `params`).
    ///
    /// # Errors
    /// As [`Tensor::avg_pool2d`].
    pub fn avg_pool2d(&self, params: Pool2dParams) -> Result<Var<T>> {
        let value = self.value().avg_pool2d(params)?;
        let shape = Dims::from_slice(self.shape());
        Ok(self.unary_op("avg_pool2d", value, move |g| {
            Ok(Tensor::avg_pool2d_backward(g, &shape, params)?)
        }))
    }

    /// Adaptive average pooling to `output_size` `[h, w]`, like
    /// `F.adaptive_avg_pool2d`.
    ///
    /// # Errors
    /// As [`Tensor::adaptive_avg_pool2d`].
    pub fn adaptive_avg_pool2d(&self, output_size: [usize; 2]) -> Result<Var<T>> {
        let value = self.value().adaptive_avg_pool2d(output_size)?;
        let shape = Dims::from_slice(self.shape());
        Ok(self.unary_op("adaptive_avg_pool2d", value, move |g| {
            Ok(Tensor::adaptive_avg_pool2d_backward(g, &shape)?)
        }))
    }
}

/// The bias gradient of a convolution: `g` summed over every dimension but the
/// channels (`channel`: 1 for batched outputs, 0 for unbatched ones).
fn bias_grad<T: Element>(g: &Tensor<T>, channel: usize) -> Result<Tensor<T>> {
    let dims: Vec<isize> = (0..g.ndim())
        .filter(|&d| d != channel)
        .map(|d| d as isize)
        .collect();
    Ok(g.sum(&dims, false)?)
}
