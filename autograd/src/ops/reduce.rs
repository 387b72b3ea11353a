//! Reductions: sum, mean, prod, var/std, amax/amin, max/min with indices, logsumexp.

use strata_tensor::{Dims, Element, IndexTensor, Tensor};

use super::{decomposed, keepdim_shape, linear_unary, resolve, tracked};
use crate::{Result, Var};

impl<T: Element> Var<T> {
    /// The sum over `dims` (all of them when empty), keeping them as size 1 when
    /// `keepdim`, like `torch.sum(x, dims, keepdim)`.
    ///
    /// # Errors
    /// [`TensorError::Dim`](strata_tensor::TensorError::Dim) for a dim out of range or
    /// repeated.
    pub fn sum(&self, dims: &[isize], keepdim: bool) -> Result<Var<T>> {
        let value = self.value().sum(dims, keepdim)?;
        let shape = Dims::from_slice(self.shape());
        let keep = keepdim_shape(&shape, dims);
        Ok(linear_unary!(self, "sum", value, [keep, shape], |g| g
            .reshape(keep.as_slice())?
            .broadcast_to(&shape)?))
    }

    /// The sum of all elements, as a 0-d var.
    pub fn sum_all(&self) -> Var<T> {
        let shape = Dims::from_slice(self.shape());
        linear_unary!(self, "sum", self.value().sum_all(), [shape], |g| g
            .broadcast_to(&shape)?)
    }

    /// The cumulative sum along `dim`, like `torch.cumsum(x, dim)`; its gradient is the
    /// cumulative sum of the output gradient from the other end.
    ///
    /// # Errors
    /// As [`Tensor::cumsum`].
    pub fn cumsum(&self, dim: isize) -> Result<Var<T>> {
        let value = self.value().cumsum(dim)?;
        Ok(self
            .unary_op("cumsum", value, move |g| {
                Ok(Tensor::cumsum_backward(g, dim)?)
            })
            .double_backward(move |g, _, _| Ok(vec![Some(g.cumsum_reverse(dim)?)])))
    }

    /// The cumulative sum from the end of `dim` ([`cumsum`](Var::cumsum)'s adjoint).
    fn cumsum_reverse(&self, dim: isize) -> Result<Var<T>> {
        let value = Tensor::cumsum_backward(&self.value(), dim)?;
        Ok(self
            .unary_op("cumsum_reverse", value, move |g| Ok(g.cumsum(dim)?))
            .double_backward(move |g, _, _| Ok(vec![Some(g.cumsum(dim)?)])))
    }

    /// The mean over `dims` (all when empty), like `torch.mean(x, dims, keepdim)`.
    ///
    /// # Errors
    /// As [`sum`](Var::sum).
    pub fn mean(&self, dims: &[isize], keepdim: bool) -> Result<Var<T>> {
        let value = self.value().mean(dims, keepdim)?;
        let shape = Dims::from_slice(self.shape());
        let keep = keepdim_shape(&shape, dims);
        let count = T::from_f64(
            shape.iter().product::<usize>() as f64 / keep.iter().product::<usize>().max(1) as f64,
        );
        // Divided after the broadcast in the differentiable path, so that an empty input
        // (count 0) sends no 0/0 back to the gradient.
        let (keep2, shape2) = (keep.clone(), shape.clone());
        Ok(self
            .unary_op("mean", value, move |g| {
                Ok(g.div_scalar(count)
                    .reshape(keep.as_slice())?
                    .broadcast_to(&shape)?)
            })
            .double_backward(move |g, _, _| {
                let spread = g.reshape(keep2.as_slice())?.broadcast_to(&shape2)?;
                Ok(vec![Some(spread.div_scalar(count))])
            }))
    }

    /// The mean of all elements, as a 0-d var.
    pub fn mean_all(&self) -> Var<T> {
        let shape = Dims::from_slice(self.shape());
        let count = T::from_f64(self.numel() as f64);
        let shape2 = shape.clone();
        self.unary_op("mean", self.value().mean_all(), move |g| {
            Ok(g.div_scalar(count).broadcast_to(&shape)?)
        })
        .double_backward(move |g, _, _| Ok(vec![Some(g.broadcast_to(&shape2)?.div_scalar(count))]))
    }

    /// The product over `dims`, like `torch.prod`. The gradient is exact with zeros in
    /// the input (each element's gradient is the product of the others).
    ///
    /// # Errors
    /// As [`sum`](Var::sum).
    pub fn prod(&self, dims: &[isize], keepdim: bool) -> Result<Var<T>> {
        let x = self.value();
        let value = x.prod(dims, keepdim)?;
        let keep = keepdim_shape(x.shape(), dims);
        let dims = dims.to_vec();
        let (dims2, x2) = (dims.clone(), x.clone());
        Ok(self
            .unary_op("prod", value, move |g| {
                let others = product_of_others(&x, &dims)?;
                Ok(others.mul(&g.reshape(keep.as_slice())?)?)
            })
            .double_backward(move |g, inputs, _| {
                // The product as a chain of multiplications, exact with zeros.
                decomposed(g, inputs, &[Some(x2.clone())], |xs| {
                    let x = xs[0].clone().expect("the input is given");
                    prod_by_products(&x, &dims2, keepdim)
                })
            }))
    }

    /// The variance over `dims`, like `torch.var(x, dims, unbiased, keepdim)` (dividing by
    /// `N - 1` when `unbiased`).
    ///
    /// # Errors
    /// As [`sum`](Var::sum).
    pub fn var(&self, dims: &[isize], unbiased: bool, keepdim: bool) -> Result<Var<T>> {
        let x = self.value();
        let value = x.var(dims, unbiased, keepdim)?;
        let keep = keepdim_shape(x.shape(), dims);
        let dims = dims.to_vec();
        let (dims2, keep2) = (dims.clone(), keep.clone());
        Ok(self
            .unary_op("var", value, move |g| {
                var_backward(&x, &g.reshape(keep.as_slice())?, &dims, unbiased)
            })
            .double_backward(move |g, inputs, _| {
                let x = tracked(inputs, 0);
                Ok(vec![Some(var_backward_var(
                    &x,
                    &g.reshape(keep2.as_slice())?,
                    &dims2,
                    unbiased,
                )?)])
            }))
    }

    /// The standard deviation over `dims`, like `torch.std(x, dims, unbiased, keepdim)`;
    /// the gradient is 0 where the deviation is 0, as in PyTorch.
    ///
    /// # Errors
    /// As [`sum`](Var::sum).
    pub fn std(&self, dims: &[isize], unbiased: bool, keepdim: bool) -> Result<Var<T>> {
        let x = self.value();
        let value = x.std(dims, unbiased, keepdim)?;
        let keep = keepdim_shape(x.shape(), dims);
        let out = value.reshape(keep.as_slice())?;
        let dims = dims.to_vec();
        let (dims2, keep2) = (dims.clone(), keep.clone());
        let zero_spread = out.eq_scalar(T::zero());
        Ok(self
            .unary_op("std", value, move |g| {
                let gv = g.reshape(keep.as_slice())?.zip_with(&out, |g, s| {
                    if s == T::zero() {
                        T::zero()
                    } else {
                        g / (s + s)
                    }
                })?;
                var_backward(&x, &gv, &dims, unbiased)
            })
            .double_backward(move |g, inputs, _| {
                let x = tracked(inputs, 0);
                let s = x.std(&dims2, unbiased, true)?;
                let zero = Var::new(Tensor::scalar(T::zero()));
                // A safe denominator where the spread is zero, so that no infinity enters
                // the graph (where_ would route 0·∞ = NaN into it).
                let one = Var::new(Tensor::scalar(T::one()));
                let s = Var::where_(&zero_spread, &one, &s)?;
                let gv = Var::where_(
                    &zero_spread,
                    &zero,
                    &g.reshape(keep2.as_slice())?.div(&s.add(&s)?)?,
                )?;
                Ok(vec![Some(var_backward_var(&x, &gv, &dims2, unbiased)?)])
            }))
    }

    /// The maximum over `dims`, like `torch.amax`; ties share the gradient evenly.
    ///
    /// # Errors
    /// As [`sum`](Var::sum).
    pub fn amax(&self, dims: &[isize], keepdim: bool) -> Result<Var<T>> {
        let value = self.value().amax(dims, keepdim)?;
        self.extreme_values("amax", value, dims)
    }

    /// The minimum over `dims`, like `torch.amin`; ties share the gradient evenly.
    ///
    /// # Errors
    /// As [`sum`](Var::sum).
    pub fn amin(&self, dims: &[isize], keepdim: bool) -> Result<Var<T>> {
        let value = self.value().amin(dims, keepdim)?;
        self.extreme_values("amin", value, dims)
    }

    fn extreme_values(&self, op: &'static str, value: Tensor<T>, dims: &[isize]) -> Result<Var<T>> {
        let x = self.value();
        let keep = keepdim_shape(x.shape(), dims);
        let out = value.reshape(keep.as_slice())?;
        let mask = x.eq(&out)?;
        let count = mask.sum(dims, true)?;
        let (mask2, count2, keep2) = (mask.clone(), count.clone(), keep.clone());
        Ok(self
            .unary_op(op, value, move |g| {
                Ok(mask.mul(&g.reshape(keep.as_slice())?.div(&count)?)?)
            })
            .double_backward(move |g, _, _| {
                let share = g
                    .reshape(keep2.as_slice())?
                    .div(&Var::new(count2.clone()))?;
                Ok(vec![Some(Var::new(mask2.clone()).mul(&share)?)])
            }))
    }

    /// The maximum along `dim` and its (first) index, like `torch.max(x, dim, keepdim)`;
    /// the gradient goes to that index only.
    ///
    /// # Errors
    /// [`TensorError::Dim`](strata_tensor::TensorError::Dim) for a bad dim.
    pub fn max_dim(&self, dim: isize, keepdim: bool) -> Result<(Var<T>, IndexTensor)> {
        let (value, index) = self.value().max_dim(dim, keepdim)?;
        Ok((self.indexed_extreme("max_dim", value, &index, dim)?, index))
    }

    /// The minimum along `dim` and its (first) index, like `torch.min(x, dim, keepdim)`.
    ///
    /// # Errors
    /// As [`max_dim`](Var::max_dim).
    pub fn min_dim(&self, dim: isize, keepdim: bool) -> Result<(Var<T>, IndexTensor)> {
        let (value, index) = self.value().min_dim(dim, keepdim)?;
        Ok((self.indexed_extreme("min_dim", value, &index, dim)?, index))
    }

    fn indexed_extreme(
        &self,
        op: &'static str,
        value: Tensor<T>,
        index: &IndexTensor,
        dim: isize,
    ) -> Result<Var<T>> {
        let shape = Dims::from_slice(self.shape());
        let keep = keepdim_shape(&shape, &[dim]);
        let index = index.reshape(&keep)?;
        let (index2, shape2, keep2) = (index.clone(), shape.clone(), keep.clone());
        Ok(self
            .unary_op(op, value, move |g| {
                if shape.is_empty() {
                    return Ok(g.clone());
                }
                let mut grad = Tensor::zeros(&shape);
                grad.scatter_add_(dim, &index, &g.reshape(keep.as_slice())?)?;
                Ok(grad)
            })
            .double_backward(move |g, _, _| {
                if shape2.is_empty() {
                    return Ok(vec![Some(g.clone())]);
                }
                let zeros = Var::new(Tensor::zeros(&shape2));
                let grad = zeros.scatter_add(dim, &index2, &g.reshape(keep2.as_slice())?)?;
                Ok(vec![Some(grad)])
            }))
    }

    /// `log(sum(exp(x)))` over `dims`, computed stably, like `torch.logsumexp`.
    ///
    /// # Errors
    /// As [`sum`](Var::sum).
    pub fn logsumexp(&self, dims: &[isize], keepdim: bool) -> Result<Var<T>> {
        let x = self.value();
        let value = x.logsumexp(dims, keepdim)?;
        let keep = keepdim_shape(x.shape(), dims);
        let out = value.reshape(keep.as_slice())?;
        let dims2 = dims.to_vec();
        let keep2 = keep.clone();
        Ok(self
            .unary_op("logsumexp", value, move |g| {
                let w = x.zip_with(&out, |x, m| (x - m).exp())?;
                Ok(w.mul(&g.reshape(keep.as_slice())?)?)
            })
            .double_backward(move |g, inputs, _| {
                let x = tracked(inputs, 0);
                let w = x.sub(&x.logsumexp(&dims2, true)?)?.exp();
                Ok(vec![Some(w.mul(&g.reshape(keep2.as_slice())?)?)])
            }))
    }
}

/// `∂var/∂x · g = g · 2(x - mean) / (N - ddof)`, with `g` at the keepdim shape.
fn var_backward<T: Element>(
    x: &Tensor<T>,
    g: &Tensor<T>,
    dims: &[isize],
    unbiased: bool,
) -> Result<Tensor<T>> {
    let keep = keepdim_shape(x.shape(), dims);
    let n = x.numel() as f64 / keep.iter().product::<usize>().max(1) as f64;
    let denom = T::from_f64(n - if unbiased { 1.0 } else { 0.0 });
    let centred = x.sub(&x.mean(dims, true)?)?;
    let scale = g.mul_scalar(T::from_f64(2.0)).div_scalar(denom);
    Ok(centred.mul(&scale)?)
}

/// [`var_backward`] with differentiable ops.
fn var_backward_var<T: Element>(
    x: &Var<T>,
    g: &Var<T>,
    dims: &[isize],
    unbiased: bool,
) -> Result<Var<T>> {
    let keep = keepdim_shape(x.shape(), dims);
    let n = x.numel() as f64 / keep.iter().product::<usize>().max(1) as f64;
    let denom = T::from_f64(n - if unbiased { 1.0 } else { 0.0 });
    let centred = x.sub(&x.mean(dims, true)?)?;
    let scale = g.mul_scalar(T::from_f64(2.0)).div_scalar(denom);
    centred.mul(&scale)
}

/// The product over `dims` as a chain of multiplications (exact with zeros, and
/// differentiable to any order), for [`Var::prod`]'s differentiable backward.
fn prod_by_products<T: Element>(x: &Var<T>, dims: &[isize], keepdim: bool) -> Result<Var<T>> {
    let nd = x.ndim();
    if nd == 0 {
        return Ok(x.clone());
    }
    let reduced: Vec<usize> = if dims.is_empty() {
        (0..nd).collect()
    } else {
        dims.iter().map(|&d| resolve(d, nd)).collect()
    };
    let kept: Vec<usize> = (0..nd).filter(|d| !reduced.contains(d)).collect();
    let mut perm = kept.clone();
    perm.extend(reduced.iter().copied());
    let perm_i: Vec<isize> = perm.iter().map(|&d| d as isize).collect();
    let rows: usize = kept.iter().map(|&d| x.shape()[d]).product();
    let group: usize = reduced.iter().map(|&d| x.shape()[d]).product();
    let moved = x
        .permute(&perm_i)?
        .reshape([rows as isize, group as isize])?;
    let mut acc = Var::new(Tensor::ones(&[rows]));
    for k in 0..group {
        acc = acc.mul(&moved.select(1, k as isize)?)?;
    }
    let shape: Vec<usize> = if keepdim {
        keepdim_shape(x.shape(), dims)
    } else {
        kept.iter().map(|&d| x.shape()[d]).collect()
    };
    acc.reshape(shape.as_slice())
}

/// For every element of `x`, the product of the other elements of its reduction group
/// over `dims` (exact with zeros, by prefix and suffix products).
fn product_of_others<T: Element>(x: &Tensor<T>, dims: &[isize]) -> Result<Tensor<T>> {
    let nd = x.ndim();
    if nd == 0 {
        return Ok(Tensor::ones(&[]));
    }
    let reduced: Vec<usize> = if dims.is_empty() {
        (0..nd).collect()
    } else {
        dims.iter().map(|&d| resolve(d, nd)).collect()
    };
    // Kept dims first, reduced dims last: each row of the result is one group.
    let mut perm: Vec<usize> = (0..nd).filter(|d| !reduced.contains(d)).collect();
    perm.extend(reduced.iter().copied());
    let perm_i: Vec<isize> = perm.iter().map(|&d| d as isize).collect();
    let moved = x.permute(&perm_i)?.contiguous();
    let group: usize = reduced.iter().map(|&d| x.shape()[d]).product();
    let data = moved.to_vec();
    let mut out = vec![T::zero(); data.len()];
    if group > 0 {
        for (row, o) in data.chunks(group).zip(out.chunks_mut(group)) {
            let mut acc = T::one();
            for (o, &v) in o.iter_mut().zip(row) {
                *o = acc;
                acc *= v;
            }
            let mut acc = T::one();
            for (o, &v) in o.iter_mut().zip(row).rev() {
                *o *= acc;
                acc *= v;
            }
        }
    }
    let mut inverse = vec![0isize; nd];
    for (k, &p) in perm.iter().enumerate() {
        inverse[p] = k as isize;
    }
    Ok(Tensor::from_vec(out, moved.shape())?.permute(&inverse)?)
}
