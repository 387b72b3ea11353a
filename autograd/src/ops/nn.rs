//! The fused ops layers build on: softmax, linear, embedding, layer norm, convolution
//! and pooling, each wired to the backward kernel strata-tensor provides. strata-nn's
//! functional layer validates its arguments and calls these.

use strata_tensor::{
    Conv1dParams, Conv2dParams, Dims, Element, IndexTensor, Padding, Pool2dParams, Tensor,
    TensorError,
};

use crate::ops::{decomposed, input_or, tracked};
use crate::taps::{self, TapOp};
use crate::{Result, Var};

impl<T: Element> Var<T> {
    /// Softmax along `dim`, computed stably, like `torch.softmax(x, dim)`.
    ///
    /// # Errors
    /// [`TensorError::Dim`](strata_tensor::TensorError::Dim) for a bad dim.
    pub fn softmax(&self, dim: isize) -> Result<Var<T>> {
        let y = self.value().softmax(dim)?;
        let saved = Var::tracking(&[self]).then(|| y.clone());
        Ok(self
            .unary_op("softmax", y, move |g| {
                let y = saved.as_ref().expect("saved when tracking");
                Ok(y.softmax_backward(g, dim)?)
            })
            .double_backward(move |g, inputs, _| {
                // ∂x = y ⊙ (g − Σ g ⊙ y), with y recomputed from x.
                let y = tracked(inputs, 0).softmax(dim)?;
                let inner = g.mul(&y)?.sum(&[dim], true)?;
                Ok(vec![Some(y.mul(&g.sub(&inner)?)?)])
            }))
    }

    /// Log-softmax along `dim`, like `torch.log_softmax(x, dim)`.
    ///
    /// # Errors
    /// As [`softmax`](Var::softmax).
    pub fn log_softmax(&self, dim: isize) -> Result<Var<T>> {
        let y = self.value().log_softmax(dim)?;
        let saved = Var::tracking(&[self]).then(|| y.clone());
        Ok(self
            .unary_op("log_softmax", y, move |g| {
                let y = saved.as_ref().expect("saved when tracking");
                Ok(y.log_softmax_backward(g, dim)?)
            })
            .double_backward(move |g, inputs, _| {
                // ∂x = g − e^y ⊙ Σ g, with y recomputed from x.
                let y = tracked(inputs, 0).log_softmax(dim)?;
                Ok(vec![Some(g.sub(&y.exp().mul(&g.sum(&[dim], true)?)?)?)])
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
        if let Some((padded, explicit)) = self.padded_for_same(weight, params)? {
            return padded.conv2d(weight, bias, explicit);
        }
        let (x, w) = (self.value(), weight.value());
        let b = bias.map(Var::value);
        let value = x.conv2d(&w, b.as_ref(), params)?;
        let channel = usize::from(x.ndim() == 4);
        let inputs = [Some(self), Some(weight), bias];
        let (x2, w2, x_tap) = (x.clone(), w.clone(), x.clone());
        let y = Var::from_op_with("conv2d", value, &inputs, move |g, n| {
            conv2d_grads(g, (&x, &w), params, channel, n)
        })
        .double_backward(move |g, inputs, n| {
            let (x, w) = (input_or(inputs, 0, &x2), input_or(inputs, 1, &w2));
            Ok(vec![
                n.grad_var(0, || conv2d_input_grad(g, &w, x.shape(), params))?,
                n.grad_var(1, || conv2d_weight_grad(g, &x, w.shape(), params))?,
                n.grad_var(2, || bias_grad_var(g, channel))?,
            ])
        });
        let op = || TapOp::Conv2d {
            input: x_tap,
            params,
        };
        taps::record(op, &[Some(weight), bias], &y);
        Ok(y)
    }

    /// `relu(conv2d(x, w, b))`: [`conv2d`](Var::conv2d) then [`relu`](Var::relu) as one
    /// op, the bias and the clamp applied as the convolution's product stores its result
    /// (no pass over the output of its own, and no pre-activation kept for the backward,
    /// which reads the output). strata-nn's `Conv2d::forward_relu` uses it.
    ///
    /// While [per-sample taps](crate::tap_parameters) are open it is the two ops, so that
    /// the taps see the convolution's own output gradient.
    ///
    /// ```
    /// use strata_autograd::Var;
    /// use strata_tensor::{Conv2dParams, Tensor};
    /// let x = Var::new(Tensor::from_vec(vec![1.0f64, -2.0], &[1, 1, 1, 2])?);
    /// let w = Var::parameter(Tensor::from_vec(vec![1.0, -1.0], &[2, 1, 1, 1])?);
    /// let y = x.conv2d_relu(&w, None, Conv2dParams::default())?;
    /// assert_eq!(y.value().to_vec(), vec![1.0, 0.0, 0.0, 2.0]);
    /// y.sum_all().backward()?;
    /// // Each output channel's gradient sums the inputs where it was positive.
    /// assert_eq!(w.grad().unwrap().to_vec(), vec![1.0, -2.0]);
    /// # Ok::<(), strata_autograd::AutogradError>(())
    /// ```
    ///
    /// # Errors
    /// As [`Tensor::conv2d`].
    pub fn conv2d_relu(
        &self,
        weight: &Var<T>,
        bias: Option<&Var<T>>,
        params: Conv2dParams,
    ) -> Result<Var<T>> {
        if taps::any_open() {
            return Ok(self.conv2d(weight, bias, params)?.relu());
        }
        if let Some((padded, explicit)) = self.padded_for_same(weight, params)? {
            return padded.conv2d_relu(weight, bias, explicit);
        }
        let (x, w, b) = (self.value(), weight.value(), bias.map(Var::value));
        let y = x.conv2d_relu(&w, b.as_ref(), params)?;
        let channel = usize::from(x.ndim() == 4);
        let inputs = [Some(self), Some(weight), bias];
        let tracked: Vec<&Var<T>> = inputs.iter().flatten().copied().collect();
        let saved = Var::tracking(&tracked).then(|| y.clone());
        let values = [Some(x.clone()), Some(w.clone()), b];
        Ok(Var::from_op_with("conv2d_relu", y, &inputs, move |g, n| {
            let y = saved.as_ref().expect("saved when tracking");
            let gz = strata_tensor::elementwise::relu::backward(y, g)?;
            conv2d_grads(&gz, (&x, &w), params, channel, n)
        })
        .double_backward(move |g, inputs, _| {
            decomposed(g, inputs, &values, |xs| {
                let (x, w) = (
                    xs[0].as_ref().expect("given"),
                    xs[1].as_ref().expect("given"),
                );
                Ok(x.conv2d(w, xs[2].as_ref(), params)?.relu())
            })
        }))
    }

    /// With `Same` padding of an odd total, the input padded at its end (a differentiable
    /// op) and the symmetric settings the convolution then runs with; `None` otherwise.
    fn padded_for_same(
        &self,
        weight: &Var<T>,
        params: Conv2dParams,
    ) -> Result<Option<(Var<T>, Conv2dParams)>> {
        if let (Padding::Same, &[_, _, kh, kw]) = (params.padding, weight.shape()) {
            let (explicit, [eh, ew]) = params.resolve([kh, kw]);
            if eh + ew > 0 && params.stride == [1, 1] {
                let padded = self.pad(&[0, ew as isize, 0, eh as isize], T::zero())?;
                return Ok(Some((padded, explicit)));
            }
        }
        Ok(None)
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
        if let (Padding::Same, &[_, _, k]) = (params.padding, weight.shape()) {
            let ([p], [extra]) = params.padding.resolve([k], [params.dilation]);
            if extra > 0 && params.stride == 1 {
                let padded = self.pad(&[0, extra as isize], T::zero())?;
                let explicit = Conv1dParams {
                    padding: Padding::Explicit([p]),
                    ..params
                };
                return padded.conv1d(weight, bias, explicit);
            }
        }
        let (x, w) = (self.value(), weight.value());
        let b = bias.map(Var::value);
        let value = x.conv1d(&w, b.as_ref(), params)?;
        let channel = usize::from(x.ndim() == 3);
        let inputs = [Some(self), Some(weight), bias];
        let (x2, w2, b2, x_tap) = (x.clone(), w.clone(), b.clone(), x.clone());
        let y = Var::from_op_with("conv1d", value, &inputs, move |g, n| {
            Ok(vec![
                n.grad(0, || {
                    Tensor::conv1d_backward_input(g, &w, x.shape(), params)
                })?,
                n.grad(1, || {
                    Tensor::conv1d_backward_weight(g, &x, w.shape(), params)
                })?,
                n.grad(2, || bias_grad(g, channel))?,
            ])
        })
        .double_backward(move |g, inputs, _| {
            // As the 2-d convolution over a height of 1.
            decomposed(
                g,
                inputs,
                &[Some(x2.clone()), Some(w2.clone()), b2.clone()],
                |xs| {
                    let (x, w) = (xs[0].clone().expect("given"), xs[1].clone().expect("given"));
                    x.unsqueeze(-2)?
                        .conv2d(&w.unsqueeze(-2)?, xs[2].as_ref(), params.to_2d())?
                        .squeeze(-2)
                },
            )
        });
        let op = || TapOp::Conv1d {
            input: x_tap,
            params,
        };
        taps::record(op, &[Some(weight), bias], &y);
        Ok(y)
    }

    /// `x·Wᵀ + b` for `x` `[*, in]`, `weight` `[out, in]` and an optional `bias` `[out]`,
    /// like `F.linear`.
    ///
    /// One fused op: the forward is one GEMM (batch dimensions folded into rows) plus the
    /// bias, and the backward computes `∂x = g·W`, `∂W = gᵀ·x` (already `[out, in]`, no
    /// transposed copy) and `∂b = Σ g` directly.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the weight is not 2-d, `x` does not end in `in`, or the
    /// bias is not `[out]`.
    pub fn linear(&self, weight: &Var<T>, bias: Option<&Var<T>>) -> Result<Var<T>> {
        let shape_error = |msg: String| TensorError::shape("linear", msg);
        let &[out_f, in_f] = weight.shape() else {
            return Err(shape_error(format!(
                "the weight must be [out, in], got {:?}",
                weight.shape()
            ))
            .into());
        };
        if self.shape().last() != Some(&in_f) {
            return Err(shape_error(format!(
                "the input {:?} must end in {in_f} features",
                self.shape()
            ))
            .into());
        }
        if let Some(b) = bias
            && b.shape() != [out_f]
        {
            return Err(
                shape_error(format!("the bias must be [{out_f}], got {:?}", b.shape())).into(),
            );
        }
        let x_shape = self.shape().to_vec();
        let mut y_shape = x_shape.clone();
        *y_shape.last_mut().expect("checked non-empty") = out_f;
        let rows = self.numel() / in_f.max(1);
        let x2 = self.value().reshape([rows as isize, in_f as isize])?;
        let w = weight.value();
        // The bias is added as the product stores its result.
        let y2 = x2.linear(&w, bias.map(Var::value).as_ref())?;
        let y = y2.reshape(y_shape.as_slice())?;
        let inputs = [Some(self), Some(weight), bias];
        let (w_val, x_val, x_shape2) = (w.clone(), x2.clone(), x_shape.clone());
        let (x_tap, x_shape_tap) = (x2.clone(), x_shape.clone());
        let y = Var::from_op_with("linear", y, &inputs, move |g, n| {
            let g2 = g.reshape([rows as isize, out_f as isize])?;
            Ok(vec![
                n.grad(0, || g2.matmul(&w)?.reshape(x_shape.as_slice()))?,
                n.grad(1, || g2.t()?.matmul(&x2))?,
                n.grad(2, || g2.sum(&[0], false))?,
            ])
        })
        .double_backward(move |g, inputs, n| {
            let g2 = g.reshape([rows as isize, out_f as isize])?;
            let w = input_or(inputs, 1, &w_val);
            let x = match &inputs[0] {
                Some(x) => x.reshape([rows as isize, in_f as isize])?,
                None => Var::new(x_val.clone()),
            };
            Ok(vec![
                n.grad_var(0, || g2.matmul(&w)?.reshape(x_shape2.as_slice()))?,
                n.grad_var(1, || g2.t()?.matmul(&x))?,
                n.grad_var(2, || g2.sum(&[0], false))?,
            ])
        });
        let input = || TapOp::Linear {
            input: x_tap.reshape(x_shape_tap.as_slice()).expect("same size"),
        };
        taps::record(input, &[Some(weight), bias], &y);
        Ok(y)
    }

    /// `relu(x·Wᵀ + b)`: [`linear`](Var::linear) then [`relu`](Var::relu) as one op, the
    /// bias and the clamp applied as the product stores its result (no pass over the
    /// output of its own, and no pre-activation kept for the backward, which reads the
    /// output). A transformer's feed-forward block uses it.
    ///
    /// While [per-sample taps](crate::tap_parameters) are open it is the two ops, so that
    /// the taps see the linear layer's own output gradient.
    ///
    /// ```
    /// use strata_autograd::Var;
    /// use strata_tensor::Tensor;
    /// let x = Var::new(Tensor::from_vec(vec![1.0f64, 2.0], &[1, 2])?);
    /// let w = Var::parameter(Tensor::from_vec(vec![1.0, 1.0, 1.0, -1.0], &[2, 2])?);
    /// let y = x.linear_relu(&w, None)?;
    /// assert_eq!(y.value().to_vec(), vec![3.0, 0.0]);
    /// y.sum_all().backward()?;
    /// assert_eq!(w.grad().unwrap().to_vec(), vec![1.0, 2.0, 0.0, 0.0]);
    /// # Ok::<(), strata_autograd::AutogradError>(())
    /// ```
    ///
    /// # Errors
    /// As [`linear`](Var::linear).
    pub fn linear_relu(&self, weight: &Var<T>, bias: Option<&Var<T>>) -> Result<Var<T>> {
        if taps::any_open() {
            return Ok(self.linear(weight, bias)?.relu());
        }
        let (x, w, b) = (self.value(), weight.value(), bias.map(Var::value));
        let y = x.linear_relu(&w, b.as_ref())?;
        let in_f = w.shape()[1];
        let out_f = w.shape()[0];
        let rows = x.numel() / in_f.max(1);
        let x_shape = x.shape().to_vec();
        let x2 = x.reshape([rows as isize, in_f as isize])?;
        let inputs = [Some(self), Some(weight), bias];
        let tracked: Vec<&Var<T>> = inputs.iter().flatten().copied().collect();
        let saved = Var::tracking(&tracked).then(|| y.clone());
        let values = [Some(x), Some(w.clone()), b];
        Ok(Var::from_op_with("linear_relu", y, &inputs, move |g, n| {
            let y = saved.as_ref().expect("saved when tracking");
            let gz = strata_tensor::elementwise::relu::backward(y, g)?;
            let g2 = gz.reshape([rows as isize, out_f as isize])?;
            Ok(vec![
                n.grad(0, || g2.matmul(&w)?.reshape(x_shape.as_slice()))?,
                n.grad(1, || g2.t()?.matmul(&x2))?,
                n.grad(2, || g2.sum(&[0], false))?,
            ])
        })
        .double_backward(move |g, inputs, _| {
            decomposed(g, inputs, &values, |xs| {
                let (x, w) = (
                    xs[0].as_ref().expect("given"),
                    xs[1].as_ref().expect("given"),
                );
                Ok(x.linear(w, xs[2].as_ref())?.relu())
            })
        }))
    }

    /// The rows of `weight` `[num, dim]` at `indices`, like `F.embedding`: shape
    /// `indices.shape() + [dim]`; the `padding_idx` row gets no gradient.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the weight is not 2-d, [`TensorError::Index`] for an
    /// index out of range.
    pub fn embedding(
        indices: &IndexTensor,
        weight: &Var<T>,
        padding_idx: Option<usize>,
    ) -> Result<Var<T>> {
        let &[num, dim] = weight.shape() else {
            return Err(TensorError::shape(
                "embedding",
                format!("the weight must be 2-d, got {:?}", weight.shape()),
            )
            .into());
        };
        if padding_idx.is_some_and(|p| p >= num) {
            return Err(TensorError::invalid(
                "embedding",
                "padding_idx must be within num_embeddings",
            )
            .into());
        }
        let flat = indices.reshape(&[indices.numel()])?;
        let mut out_shape = indices.shape().to_vec();
        out_shape.push(dim);
        let value = weight
            .value()
            .index_select(0, &flat)?
            .reshape(out_shape.as_slice())?;
        let flat2 = flat.clone();
        let y = Var::from_op("embedding", value, &[weight], move |g, _| {
            let rows = g.reshape([-1, dim as isize])?;
            let mut grad = Tensor::zeros(&[num, dim]);
            grad.index_add_(0, &flat, &rows)?;
            if let Some(p) = padding_idx {
                grad.as_mut_slice()[p * dim..(p + 1) * dim].fill(T::zero());
            }
            Ok(vec![Some(grad)])
        })
        .double_backward(move |g, _, _| {
            let rows = g.reshape([-1, dim as isize])?;
            let grad = Var::new(Tensor::zeros(&[num, dim])).index_add(0, &flat2, &rows)?;
            let grad = match padding_idx {
                Some(p) => {
                    let mut keep = Tensor::ones(&[num, 1]);
                    keep.as_mut_slice()[p] = T::zero();
                    grad.mul(&Var::new(keep))?
                }
                None => grad,
            };
            Ok(vec![Some(grad)])
        });
        let op = || TapOp::Embedding {
            indices: indices.clone(),
            padding_idx,
        };
        taps::record(op, &[Some(weight)], &y);
        Ok(y)
    }

    /// Layer normalisation over the trailing `d` elements of each row, like
    /// `F.layer_norm`: `(x − mean) / √(var + eps) · weight + bias` with the biased variance;
    /// `weight` and `bias` (optional) have `d` elements, in any shape.
    ///
    /// # Errors
    /// As [`Tensor::layer_norm`].
    pub fn layer_norm(
        &self,
        d: usize,
        weight: Option<&Var<T>>,
        bias: Option<&Var<T>>,
        eps: f64,
    ) -> Result<Var<T>> {
        let xv = self.value();
        let (w, b) = (weight.map(Var::value), bias.map(Var::value));
        let (y, stats) = xv.layer_norm(d, w.as_ref(), b.as_ref(), eps)?;
        let pshape = weight
            .or(bias)
            .map(|p| p.shape().to_vec())
            .unwrap_or_default();
        let inputs = [Some(self), weight, bias];
        let values = [Some(xv.clone()), w.clone(), b.clone()];
        let graph = move |g: &Var<T>, inputs: &[Option<Var<T>>], _: crate::Needs<'_>| {
            // Mean and biased variance over each row of d, as differentiable ops.
            decomposed(g, inputs, &values, |xs| {
                let x = xs[0].clone().expect("given");
                let shape = x.shape().to_vec();
                let rows = x.reshape([-1, d as isize])?;
                let centred = rows.sub(&rows.mean(&[1], true)?)?;
                let var = centred.square().mean(&[1], true)?;
                let mut y = centred.div(&var.add_scalar(T::from_f64(eps)).sqrt())?;
                if let Some(w) = &xs[1] {
                    y = y.mul(&w.reshape([d as isize])?)?;
                }
                if let Some(b) = &xs[2] {
                    y = y.add(&b.reshape([d as isize])?)?;
                }
                y.reshape(shape.as_slice())
            })
        };
        let x_tap = xv.clone();
        let y = Var::from_op_with("layer_norm", y, &inputs, move |g, n| {
            let params_needed = n.get(1) || n.get(2);
            let (gx, pg) = xv.layer_norm_backward(g, &stats, w.as_ref(), params_needed)?;
            let (gw, gb) = match pg {
                Some((gw, gb)) => (
                    Some(gw.reshape(pshape.as_slice())?),
                    Some(gb.reshape(pshape.as_slice())?),
                ),
                None => (None, None),
            };
            Ok(vec![
                n.get(0).then_some(gx),
                gw.filter(|_| n.get(1)),
                gb.filter(|_| n.get(2)),
            ])
        })
        .double_backward(graph);
        let op = || TapOp::LayerNorm {
            input: x_tap,
            d,
            eps,
        };
        taps::record(op, &[weight, bias], &y);
        Ok(y)
    }

    /// 2-d max pooling over `[N, C, H, W]` (or `[C, H, W]`), like `F.max_pool2d`; the
    /// gradient goes to each window's (first) maximum.
    ///
    /// # Errors
    /// As [`Tensor::max_pool2d`].
    pub fn max_pool2d(&self, params: Pool2dParams) -> Result<Var<T>> {
        let (value, index) = self.value().max_pool2d(params)?;
        Ok(self.max_pool2d_node(value, std::sync::Arc::new(index)))
    }

    /// [`max_pool2d`](Var::max_pool2d) and the flat index of each maximum within its
    /// plane, like `F.max_pool2d(..., return_indices=True)`.
    ///
    /// # Errors
    /// As [`Tensor::max_pool2d`].
    pub fn max_pool2d_with_indices(&self, params: Pool2dParams) -> Result<(Var<T>, IndexTensor)> {
        let (value, index) = self.value().max_pool2d(params)?;
        let saved = std::sync::Arc::new(index.clone());
        Ok((self.max_pool2d_node(value, saved), index))
    }

    /// The node of a max pooling whose output is `value` and argmaxes `index`, shared by
    /// its backward and double backward (a training step's indices are megabytes: they
    /// are not copied for each).
    fn max_pool2d_node(&self, value: Tensor<T>, index: std::sync::Arc<IndexTensor>) -> Var<T> {
        let shape = Dims::from_slice(self.shape());
        let (saved2, shape2) = (index.clone(), shape.clone());
        self.unary_op("max_pool2d", value, move |g| {
            Ok(Tensor::max_pool2d_backward(g, &index, &shape)?)
        })
        .double_backward(move |g, _, _| Ok(vec![Some(max_pool_scatter(g, &saved2, &shape2)?)]))
    }

    /// 2-d average pooling, like `F.avg_pool2d` (with `ceil_mode`, `count_include_pad`
    /// and `divisor_override` from `params`).
    ///
    /// # Errors
    /// As [`Tensor::avg_pool2d`].
    pub fn avg_pool2d(&self, params: Pool2dParams) -> Result<Var<T>> {
        let value = self.value().avg_pool2d(params)?;
        let shape = Dims::from_slice(self.shape());
        let shape2 = shape.clone();
        Ok(self
            .unary_op("avg_pool2d", value, move |g| {
                Ok(Tensor::avg_pool2d_backward(g, &shape, params)?)
            })
            .double_backward(move |g, _, _| Ok(vec![Some(g.avg_pool2d_adjoint(&shape2, params)?)])))
    }

    /// Adaptive average pooling to `output_size` `[h, w]`, like
    /// `F.adaptive_avg_pool2d`.
    ///
    /// # Errors
    /// As [`Tensor::adaptive_avg_pool2d`].
    pub fn adaptive_avg_pool2d(&self, output_size: [usize; 2]) -> Result<Var<T>> {
        let value = self.value().adaptive_avg_pool2d(output_size)?;
        let shape = Dims::from_slice(self.shape());
        let shape2 = shape.clone();
        Ok(self
            .unary_op("adaptive_avg_pool2d", value, move |g| {
                Ok(Tensor::adaptive_avg_pool2d_backward(g, &shape)?)
            })
            .double_backward(move |g, _, _| {
                Ok(vec![Some(g.adaptive_avg_pool2d_adjoint(&shape2)?)])
            }))
    }

    /// The adjoint of [`avg_pool2d`](Var::avg_pool2d) (its backward as an op of its own,
    /// whose backward is the pooling again), for differentiable backwards.
    fn avg_pool2d_adjoint(&self, input_shape: &[usize], params: Pool2dParams) -> Result<Var<T>> {
        let value = Tensor::avg_pool2d_backward(&self.value(), input_shape, params)?;
        Ok(self
            .unary_op("avg_pool2d_backward", value, move |h| {
                Ok(h.avg_pool2d(params)?)
            })
            .double_backward(move |h, _, _| Ok(vec![Some(h.avg_pool2d(params)?)])))
    }

    /// The adjoint of [`adaptive_avg_pool2d`](Var::adaptive_avg_pool2d).
    fn adaptive_avg_pool2d_adjoint(&self, input_shape: &[usize]) -> Result<Var<T>> {
        let value = Tensor::adaptive_avg_pool2d_backward(&self.value(), input_shape)?;
        let out = [self.shape()[self.ndim() - 2], self.shape()[self.ndim() - 1]];
        Ok(self
            .unary_op("adaptive_avg_pool2d_backward", value, move |h| {
                Ok(h.adaptive_avg_pool2d(out)?)
            })
            .double_backward(move |h, _, _| Ok(vec![Some(h.adaptive_avg_pool2d(out)?)])))
    }
}

/// [`bias_grad`] on vars.
fn bias_grad_var<T: Element>(g: &Var<T>, channel: usize) -> Result<Var<T>> {
    let dims: Vec<isize> = (0..g.ndim())
        .filter(|&d| d != channel)
        .map(|d| d as isize)
        .collect();
    g.sum(&dims, false)
}

/// The input gradient of a 2-d convolution as a differentiable op: `C_wᵀ g`, bilinear in
/// `g` and `w`. Its backward with `h` (shaped like the input): `C_w h` for `g` (the
/// convolution of `h`), and the weight gradient of that convolution for `w`.
pub(crate) fn conv2d_input_grad<T: Element>(
    g: &Var<T>,
    w: &Var<T>,
    x_shape: &[usize],
    params: Conv2dParams,
) -> Result<Var<T>> {
    let value = Tensor::conv2d_backward_input(&g.value(), &w.value(), x_shape, params)?;
    let (gv, wv) = (g.value(), w.value());
    let (gv2, wv2) = (gv.clone(), wv.clone());
    Ok(
        Var::from_op("conv2d_backward_input", value, &[g, w], move |h, n| {
            Ok(vec![
                n.grad(0, || h.conv2d(&wv, None, params))?,
                n.grad(1, || {
                    Tensor::conv2d_backward_weight(&gv, h, wv.shape(), params)
                })?,
            ])
        })
        .double_backward(move |h, inputs, n| {
            let (g, w) = (input_or(inputs, 0, &gv2), input_or(inputs, 1, &wv2));
            Ok(vec![
                n.grad_var(0, || h.conv2d(&w, None, params))?,
                n.grad_var(1, || conv2d_weight_grad(&g, h, w.shape(), params))?,
            ])
        }),
    )
}

/// The weight gradient of a 2-d convolution as a differentiable op, bilinear in `g` and
/// `x`. Its backward with `k` (shaped like the weight): the convolution of `x` with `k`
/// for `g`, and the input gradient of that convolution for `x`.
fn conv2d_weight_grad<T: Element>(
    g: &Var<T>,
    x: &Var<T>,
    w_shape: &[usize],
    params: Conv2dParams,
) -> Result<Var<T>> {
    let value = Tensor::conv2d_backward_weight(&g.value(), &x.value(), w_shape, params)?;
    let (gv, xv) = (g.value(), x.value());
    let (gv2, xv2) = (gv.clone(), xv.clone());
    Ok(
        Var::from_op("conv2d_backward_weight", value, &[g, x], move |k, n| {
            Ok(vec![
                n.grad(0, || xv.conv2d(k, None, params))?,
                n.grad(1, || {
                    Tensor::conv2d_backward_input(&gv, k, xv.shape(), params)
                })?,
            ])
        })
        .double_backward(move |k, inputs, n| {
            let (g, x) = (input_or(inputs, 0, &gv2), input_or(inputs, 1, &xv2));
            Ok(vec![
                n.grad_var(0, || x.conv2d(k, None, params))?,
                n.grad_var(1, || conv2d_input_grad(&g, k, x.shape(), params))?,
            ])
        }),
    )
}

/// The backward of max pooling as a differentiable op: `g` scattered to the positions
/// `indices` name in planes of `input_shape` (a window without any input element, index
/// -1, sends nothing). Its own backward gathers at the same positions.
fn max_pool_scatter<T: Element>(
    g: &Var<T>,
    indices: &IndexTensor,
    input_shape: &[usize],
) -> Result<Var<T>> {
    let nd = input_shape.len();
    let (h, w) = (input_shape[nd - 2], input_shape[nd - 1]);
    let planes: usize = input_shape[..nd - 2].iter().product();
    let per_plane = g.numel() / planes.max(1);
    let idx: Vec<i64> = indices.as_slice().to_vec();
    let valid = Tensor::from_vec(
        idx.iter()
            .map(|&i| if i < 0 { T::zero() } else { T::one() })
            .collect(),
        g.shape(),
    )?;
    let idx = IndexTensor::from_vec(
        idx.iter().map(|&i| i.max(0)).collect(),
        &[planes, per_plane],
    )?;
    let rows = g
        .mul(&Var::new(valid))?
        .reshape([planes as isize, per_plane as isize])?;
    let zeros = Var::new(Tensor::zeros(&[planes, h * w]));
    zeros.scatter_add(1, &idx, &rows)?.reshape(input_shape)
}

/// The gradients of a 2-d convolution's input, weight and bias (the one at dim `channel`
/// of `g`) for its output gradient `g`, those that `n` asks for.
fn conv2d_grads<T: Element>(
    g: &Tensor<T>,
    (x, w): (&Tensor<T>, &Tensor<T>),
    params: Conv2dParams,
    channel: usize,
    n: crate::Needs<'_>,
) -> Result<crate::InputGrads<T>> {
    Ok(vec![
        n.grad(0, || Tensor::conv2d_backward_input(g, w, x.shape(), params))?,
        n.grad(1, || {
            Tensor::conv2d_backward_weight(g, x, w.shape(), params)
        })?,
        n.grad(2, || bias_grad(g, channel))?,
    ])
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
