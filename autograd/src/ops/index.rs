//! Indexing and joining: index_select, gather, scatter_add, index_add, cat, stack,
//! split/chunk, pad, repeat, tril/triu.

use std::borrow::Borrow;

use strata_tensor::{Dims, Element, IndexTensor, Tensor};

use super::{linear_unary, pads_along, resolve};
use crate::{Result, Var};

impl<T: Element> Var<T> {
    /// The entries of `index` along `dim`, like `torch.index_select`; repeated indices
    /// accumulate their gradients.
    ///
    /// # Errors
    /// [`TensorError::Index`](strata_tensor::TensorError::Index) for an index out of
    /// range, [`TensorError::Dim`](strata_tensor::TensorError::Dim) for a bad dim.
    pub fn index_select(&self, dim: isize, index: &IndexTensor) -> Result<Var<T>> {
        let value = self.value().index_select(dim, index)?;
        let shape = Dims::from_slice(self.shape());
        let index = index.clone();
        let (index2, shape2) = (index.clone(), shape.clone());
        Ok(self
            .unary_op("index_select", value, move |g| {
                let mut grad = Tensor::zeros(&shape);
                grad.index_add_(dim, &index, g)?;
                Ok(grad)
            })
            .double_backward(move |g, _, _| {
                let zeros = Var::new(Tensor::zeros(&shape2));
                Ok(vec![Some(zeros.index_add(dim, &index2, g)?)])
            }))
    }

    /// `out[i][j] = self[index[i][j]][j]` (for `dim = 0`), like `torch.gather`.
    ///
    /// # Errors
    /// As [`index_select`](Var::index_select), and
    /// [`TensorError::Shape`](strata_tensor::TensorError::Shape) for a mismatched index.
    pub fn gather(&self, dim: isize, index: &IndexTensor) -> Result<Var<T>> {
        let value = self.value().gather(dim, index)?;
        let shape = Dims::from_slice(self.shape());
        let index = index.clone();
        let (index2, shape2) = (index.clone(), shape.clone());
        Ok(self
            .unary_op("gather", value, move |g| {
                let mut grad = Tensor::zeros(&shape);
                grad.scatter_add_(dim, &index, g)?;
                Ok(grad)
            })
            .double_backward(move |g, _, _| {
                let zeros = Var::new(Tensor::zeros(&shape2));
                Ok(vec![Some(zeros.scatter_add(dim, &index2, g)?)])
            }))
    }

    /// `self` with `src` added at the positions `index` names along `dim`, like
    /// `Tensor.scatter_add`. Gradients flow to both `self` and `src`.
    ///
    /// # Errors
    /// As [`gather`](Var::gather).
    pub fn scatter_add(&self, dim: isize, index: &IndexTensor, src: &Var<T>) -> Result<Var<T>> {
        let value = self.value().scatter_add(dim, index, &src.value())?;
        let index = index.clone();
        let src_shape = src.shape().to_vec();
        // `index` may be smaller than `src`; the rest of `src` got nothing.
        let mut pads = Vec::with_capacity(2 * src_shape.len());
        for (s, p) in src_shape.iter().zip(index.shape()).rev() {
            pads.extend([0, (s - p) as isize]);
        }
        let (index2, pads2) = (index.clone(), pads.clone());
        Ok(
            Var::from_op("scatter_add", value, &[self, src], move |g, n| {
                let gs = n.grad(1, || g.gather(dim, &index)?.pad(&pads, T::zero()))?;
                Ok(vec![n[0].then(|| g.clone()), gs])
            })
            .double_backward(move |g, _, n| {
                Ok(vec![
                    n.get(0).then(|| g.clone()),
                    n.grad_var(1, || g.gather(dim, &index2)?.pad(&pads2, T::zero()))?,
                ])
            }),
        )
    }

    /// `self` with the slices of `source` added at the entries `index` names along `dim`,
    /// like `Tensor.index_add`.
    ///
    /// # Errors
    /// As [`index_select`](Var::index_select).
    pub fn index_add(&self, dim: isize, index: &IndexTensor, source: &Var<T>) -> Result<Var<T>> {
        let value = self.value().index_add(dim, index, &source.value())?;
        let index = index.clone();
        let index2 = index.clone();
        Ok(
            Var::from_op("index_add", value, &[self, source], move |g, n| {
                let gs = n.grad(1, || g.index_select(dim, &index))?;
                Ok(vec![n[0].then(|| g.clone()), gs])
            })
            .double_backward(move |g, _, n| {
                Ok(vec![
                    n.get(0).then(|| g.clone()),
                    n.grad_var(1, || g.index_select(dim, &index2))?,
                ])
            }),
        )
    }

    /// The vars joined along `dim`, like `torch.cat`.
    ///
    /// # Errors
    /// As [`Tensor::cat`].
    pub fn cat<B: Borrow<Var<T>>>(vars: &[B], dim: isize) -> Result<Var<T>> {
        let values: Vec<Tensor<T>> = vars.iter().map(|v| v.borrow().value()).collect();
        let value = Tensor::cat(&values, dim)?;
        let shapes: Vec<Vec<usize>> = values.iter().map(|t| t.shape().to_vec()).collect();
        let out_nd = value.ndim();
        let d = resolve(dim, out_nd);
        let inputs: Vec<&Var<T>> = vars.iter().map(Borrow::borrow).collect();
        let shapes2 = shapes.clone();
        Ok(Var::from_op("cat", value, &inputs, move |g, n| {
            let mut offset = 0;
            let mut grads = Vec::with_capacity(shapes.len());
            for (shape, need) in shapes.iter().zip(n.iter()) {
                // As in PyTorch, 1-d empty inputs took no part.
                if shape.as_slice() == [0] && out_nd != 1 {
                    grads.push(need.then(|| Tensor::zeros(&[0])));
                    continue;
                }
                let len = shape[d];
                grads.push(if need {
                    Some(g.narrow(d as isize, offset, len)?)
                } else {
                    None
                });
                offset += len;
            }
            Ok(grads)
        })
        .double_backward(move |g, _, n| {
            let mut offset = 0;
            let mut grads = Vec::with_capacity(shapes2.len());
            for (shape, need) in shapes2.iter().zip(n.iter()) {
                if shape.as_slice() == [0] && out_nd != 1 {
                    grads.push(need.then(|| Var::new(Tensor::zeros(&[0]))));
                    continue;
                }
                let len = shape[d];
                grads.push(if need {
                    Some(g.narrow(d as isize, offset, len)?)
                } else {
                    None
                });
                offset += len;
            }
            Ok(grads)
        }))
    }

    /// The vars stacked along a new dimension `dim`, like `torch.stack`.
    ///
    /// # Errors
    /// As [`Tensor::stack`].
    pub fn stack<B: Borrow<Var<T>>>(vars: &[B], dim: isize) -> Result<Var<T>> {
        let values: Vec<Tensor<T>> = vars.iter().map(|v| v.borrow().value()).collect();
        let value = Tensor::stack(&values, dim)?;
        let d = resolve(dim, value.ndim()) as isize;
        let inputs: Vec<&Var<T>> = vars.iter().map(Borrow::borrow).collect();
        Ok(Var::from_op("stack", value, &inputs, move |g, n| {
            n.iter()
                .enumerate()
                .map(|(i, need)| {
                    Ok(if need {
                        Some(g.select(d, i as isize)?)
                    } else {
                        None
                    })
                })
                .collect()
        })
        .double_backward(move |g, _, n| {
            n.iter()
                .enumerate()
                .map(|(i, need)| need.then(|| g.select(d, i as isize)).transpose())
                .collect()
        }))
    }

    /// Pieces of `split_size` along `dim` (the last may be smaller), like `torch.split`.
    ///
    /// # Errors
    /// As [`Tensor::split`].
    pub fn split(&self, split_size: usize, dim: isize) -> Result<Vec<Var<T>>> {
        let pieces = self.value().split(split_size, dim)?;
        self.pieces(pieces, dim)
    }

    /// Pieces of the given sizes along `dim`, like `torch.split(x, sizes, dim)`.
    ///
    /// # Errors
    /// As [`Tensor::split_with_sizes`].
    pub fn split_with_sizes(&self, sizes: &[usize], dim: isize) -> Result<Vec<Var<T>>> {
        let pieces = self.value().split_with_sizes(sizes, dim)?;
        self.pieces(pieces, dim)
    }

    /// `chunks` pieces of nearly equal size along `dim`, like `torch.chunk`.
    ///
    /// # Errors
    /// As [`Tensor::chunk`].
    pub fn chunk(&self, chunks: usize, dim: isize) -> Result<Vec<Var<T>>> {
        let pieces = self.value().chunk(chunks, dim)?;
        self.pieces(pieces, dim)
    }

    /// Records each consecutive piece along `dim` as a narrow of `self`.
    fn pieces(&self, pieces: Vec<Tensor<T>>, dim: isize) -> Result<Vec<Var<T>>> {
        let shape = Dims::from_slice(self.shape());
        let nd = shape.len();
        let d = resolve(dim, nd);
        let total = shape.get(d).copied().unwrap_or(1);
        let mut start = 0;
        let mut out = Vec::with_capacity(pieces.len());
        for piece in pieces {
            let len = piece.shape().get(d).copied().unwrap_or(1);
            let after = total - start - len;
            let before = start;
            let pads = pads_along(nd, d, before, after);
            out.push(linear_unary!(self, "split", piece, [pads], |g| g.pad(&pads, T::zero())?));
            start += len;
        }
        Ok(out)
    }

    /// Padded with `value`, like `F.pad(x, pads, value=value)` (pairs from the last
    /// dimension; negative amounts crop).
    ///
    /// # Errors
    /// As [`Tensor::pad`].
    pub fn pad(&self, pads: &[isize], value: T) -> Result<Var<T>> {
        let out = self.value().pad(pads, value)?;
        let back: Vec<isize> = pads.iter().map(|p| -p).collect();
        Ok(linear_unary!(self, "pad", out, [back], |g| g.pad(&back, T::zero())?))
    }

    /// Tiled along each dimension, like `Tensor.repeat`; the gradient sums the tiles.
    ///
    /// # Errors
    /// As [`Tensor::repeat`].
    pub fn repeat(&self, repeats: &[usize]) -> Result<Var<T>> {
        let value = self.value().repeat(repeats)?;
        let shape = Dims::from_slice(self.shape());
        let lead = repeats.len() - shape.len();
        let padded = std::iter::repeat_n(1, lead).chain(shape.iter().copied());
        let interleaved: Vec<usize> = repeats
            .iter()
            .zip(padded)
            .flat_map(|(&r, s)| [r, s])
            .collect();
        let tile_dims: Vec<isize> = (0..repeats.len()).map(|k| 2 * k as isize).collect();
        Ok(linear_unary!(
            self,
            "repeat",
            value,
            [interleaved, tile_dims, shape],
            |g| {
                let g = g.reshape(interleaved.as_slice())?;
                let g = if tile_dims.is_empty() {
                    g
                } else {
                    g.sum(&tile_dims, false)?
                };
                g.reshape(shape.as_slice())?
            }
        ))
    }

    /// The lower triangle of the last two dimensions, like `torch.tril`.
    ///
    /// # Errors
    /// As [`Tensor::tril`].
    pub fn tril(&self, diagonal: isize) -> Result<Var<T>> {
        let value = self.value().tril(diagonal)?;
        Ok(linear_unary!(self, "tril", value, [], |g| g.tril(diagonal)?))
    }

    /// The upper triangle of the last two dimensions, like `torch.triu`.
    ///
    /// # Errors
    /// As [`Tensor::triu`].
    pub fn triu(&self, diagonal: isize) -> Result<Var<T>> {
        let value = self.value().triu(diagonal)?;
        Ok(linear_unary!(self, "triu", value, [], |g| g.triu(diagonal)?))
    }
}
