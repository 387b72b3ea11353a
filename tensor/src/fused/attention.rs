//! Fused scaled dot-product attention and its backward.
//!
//! [`Tensor::sdpa`] computes `softmax(q·kᵀ·scale + mask)·v` for a whole batch of attention
//! problems, one fused pass per problem: the scores are written straight into the buffer
//! that becomes the probabilities `P`, the mask, the causal cut and the softmax are applied
//! to it row by row in place, and `P·v` goes directly into the output. `P` (`[B, L, S]`)
//! is the only intermediate kept for the backward, where [`Tensor::sdpa_backward`] uses
//! `dV = Pᵀ·dO`, `dP = dO·vᵀ`, `dS = P ⊙ (dP − rowsum(dP ⊙ P))` in place,
//! `dQ = dS·k·scale` and `dK = dSᵀ·q·scale` (the derivation is in `attention/kernel.rs`).
//!
//! Operands are read through their strides, never copied. [`Tensor::sdpa_heads`] reads the
//! heads of a multi-head attention straight out of the `[N, L, E]` (or `[L, N, E]`)
//! projections, including one packed `[.., 3E]` query-key-value projection, and writes the
//! output with its heads already merged; its backward writes the gradients in the same
//! layouts, so splitting and merging heads costs nothing in either direction.

mod heads;
mod kernel;

use kernel::{AttentionShape, Dst, Grads, MaskSrc, Mats, Settings, Src};

use crate::handle::layout::{broadcast_shapes, check_shape, numel};
use crate::handle::storage::{Buffer, alloc};
use crate::{Element, Result, Tensor, TensorError};

/// A mask for the attention kernels, broadcastable to the scores `[batch.., L, S]`.
#[derive(Clone, Copy, Debug)]
pub enum SdpaMask<'a, T: Element> {
    /// Nonzero where the key takes part: PyTorch's boolean `attn_mask` of
    /// `scaled_dot_product_attention` (true = attend).
    Keep(&'a Tensor<T>),
    /// Added to the scaled scores: PyTorch's float `attn_mask` (`-inf` masks a key out).
    Additive(&'a Tensor<T>),
}

/// The scalar settings of the attention kernels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SdpaParams {
    /// The factor applied to `q·kᵀ`; PyTorch's default is `1/√E` ([`SdpaParams::new`]).
    pub scale: f64,
    /// Query `i` attends to keys `0..=i` only (the lower triangle, aligned top-left as in
    /// PyTorch, also when `L ≠ S`).
    pub is_causal: bool,
    /// What a query whose every key is masked out gets: zeros, as PyTorch's
    /// `scaled_dot_product_attention` gives (and zero gradients), or NaN, as
    /// `softmax` of a row of `-inf` gives.
    pub zero_masked_rows: bool,
}

impl SdpaParams {
    /// The scale `1/√e` for queries of width `e`, not causal, fully masked rows giving zeros.
    pub fn new(e: usize) -> Self {
        SdpaParams {
            scale: 1.0 / (e as f64).sqrt(),
            is_causal: false,
            zero_masked_rows: true,
        }
    }
}

/// How multi-head attention lays out its projections (see [`Tensor::sdpa_heads`]): each
/// projection is `[N, L, C]` when `batch_first`, `[L, N, C]` otherwise, or `[L, C]` for one
/// unbatched sequence; its `C = num_heads · D` columns hold the heads side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLayout {
    /// The number of heads.
    pub num_heads: usize,
    /// `[N, L, C]` rather than `[L, N, C]`.
    pub batch_first: bool,
}

/// The projected queries, keys and values of a multi-head attention.
#[derive(Clone, Copy, Debug)]
pub enum HeadInputs<'a, T: Element> {
    /// One packed projection `[.., 3E]` whose three column blocks are q, k and v
    /// (self-attention: `S = L`). Its backward gives one gradient of the same shape.
    Packed(&'a Tensor<T>),
    /// Separate projections: query `[.., E]` with `L` positions, key and value `[.., E]`
    /// with `S` positions.
    Separate(&'a Tensor<T>, &'a Tensor<T>, &'a Tensor<T>),
}

/// Strides of `shape`'s leading (batch) dimensions broadcast to `batch`, then the offsets
/// of every batch matrix in row-major batch order.
fn batch_mats<T: Element>(t: &Tensor<T>, batch: &[usize]) -> Mats {
    let nd = t.ndim();
    let own = &t.shape()[..nd - 2];
    let lead = batch.len() - own.len();
    let strides: Vec<usize> = (0..batch.len())
        .map(|d| {
            if d < lead || own[d - lead] == 1 {
                0
            } else {
                t.strides()[d - lead]
            }
        })
        .collect();
    Mats {
        offsets: offsets(t.layout().offset(), batch, &strides),
        rs: t.strides()[nd - 2],
        cs: t.strides()[nd - 1],
    }
}

/// `base + Σ index·stride` for every multi-index of `batch`, in row-major order.
fn offsets(base: usize, batch: &[usize], strides: &[usize]) -> Vec<usize> {
    let n = numel(batch);
    let mut out = Vec::with_capacity(n);
    let mut index = vec![0usize; batch.len()];
    let mut offset = base;
    for _ in 0..n {
        out.push(offset);
        for d in (0..batch.len()).rev() {
            index[d] += 1;
            offset += strides[d];
            if index[d] < batch[d] {
                break;
            }
            offset -= index[d] * strides[d];
            index[d] = 0;
        }
    }
    out
}

/// A contiguous `[batch.., rows, cols]` buffer's matrices.
fn dense_mats(batch: usize, rows: usize, cols: usize) -> Mats {
    Mats {
        offsets: (0..batch).map(|b| b * rows * cols).collect(),
        rs: cols,
        cs: 1,
    }
}

/// The batch shape of q, k (and v), the sizes, after checking that they fit.
fn problem<T: Element>(
    op: &'static str,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: Option<&Tensor<T>>,
) -> Result<(Vec<usize>, AttentionShape)> {
    let shapes = || {
        let mut s = format!("query {:?}, key {:?}", q.shape(), k.shape());
        if let Some(v) = v {
            s += &format!(", value {:?}", v.shape());
        }
        s
    };
    if q.ndim() < 2 || k.ndim() < 2 || v.is_some_and(|v| v.ndim() < 2) {
        return Err(TensorError::shape(
            op,
            format!(
                "expected query [.., L, E], key [.., S, E] and value [.., S, Ev], got {}",
                shapes()
            ),
        ));
    }
    let (qn, kn) = (q.ndim(), k.ndim());
    let (l, e) = (q.shape()[qn - 2], q.shape()[qn - 1]);
    let (s, ek) = (k.shape()[kn - 2], k.shape()[kn - 1]);
    let vs = v.map(|v| (v.shape()[v.ndim() - 2], v.shape()[v.ndim() - 1]));
    if ek != e || vs.is_some_and(|(sv, _)| sv != s) {
        return Err(TensorError::shape(
            op,
            format!(
                "query and key must have the same width E and key and value the same length S, got {}",
                shapes()
            ),
        ));
    }
    let mut batch =
        broadcast_shapes(op, &q.shape()[..qn - 2], &k.shape()[..kn - 2]).map_err(|_| {
            TensorError::shape(
                op,
                format!("batch dimensions do not broadcast: {}", shapes()),
            )
        })?;
    if let Some(v) = v {
        batch = broadcast_shapes(op, &batch, &v.shape()[..v.ndim() - 2]).map_err(|_| {
            TensorError::shape(
                op,
                format!("batch dimensions do not broadcast: {}", shapes()),
            )
        })?;
    }
    let ev = vs.map_or(0, |(_, ev)| ev);
    // The scores `[batch.., L, S]` and the outputs `[batch.., L, Ev]` (or `E`) must be
    // countable and allocatable before any kernel indexes them: broadcast batch dimensions
    // of expanded views can ask for more than exists. Counted as f64, the larger element.
    check_shape::<f64>(op, &with_matrix(&batch, l, s))?;
    check_shape::<f64>(op, &with_matrix(&batch, l, ev.max(e)))?;
    let dims = AttentionShape {
        b: numel(&batch),
        l,
        s,
        e,
        ev,
    };
    Ok((batch, dims))
}

/// `[batch.., a, b]`.
fn with_matrix(batch: &[usize], a: usize, b: usize) -> Vec<usize> {
    let mut s = batch.to_vec();
    s.extend([a, b]);
    s
}

/// The mask broadcast to the scores `[batch.., L, S]`.
fn mask_src<'a, T: Element>(
    op: &'static str,
    mask: &'a SdpaMask<'a, T>,
    scores: &[usize],
) -> Result<(Tensor<T>, bool)> {
    let (t, keep) = match mask {
        SdpaMask::Keep(t) => (*t, true),
        SdpaMask::Additive(t) => (*t, false),
    };
    let view = t.broadcast_to(scores).map_err(|_| {
        TensorError::shape(
            op,
            format!(
                "the mask {:?} does not broadcast to the scores {scores:?}",
                t.shape()
            ),
        )
    })?;
    Ok((view, keep))
}

/// The dropout multiplier as a contiguous `[batch.., L, S]` tensor.
fn dropout_src<T: Element>(
    op: &'static str,
    dropout: Option<&Tensor<T>>,
    scores: &[usize],
) -> Result<Option<Tensor<T>>> {
    dropout
        .map(|m| {
            if m.shape() != scores {
                return Err(TensorError::shape(
                    op,
                    format!(
                        "the dropout mask must have the scores' shape {scores:?}, got {:?}",
                        m.shape()
                    ),
                ));
            }
            Ok(m.contiguous())
        })
        .transpose()
}

fn settings(params: SdpaParams) -> Settings {
    Settings {
        scale: params.scale,
        is_causal: params.is_causal,
        zero_masked_rows: params.zero_masked_rows,
    }
}

fn src<T: Element>(t: &Tensor<T>, mats: Mats) -> Src<'_, T> {
    Src {
        data: t.storage(),
        mats,
    }
}

impl<T: Element> Tensor<T> {
    /// Scaled dot-product attention, like PyTorch's `F.scaled_dot_product_attention`, fused:
    /// `softmax(q·kᵀ·scale + mask)·v`, with `self` the query.
    ///
    /// `dropout`, when given, multiplies the probabilities before the value product: a
    /// `[batch.., L, S]` tensor of zeros and `1/(1−p)` (the caller draws it). With
    /// `save_probs` the probabilities `P` (`[batch.., L, S]`, before dropout) are returned
    /// for [`sdpa_backward`](Tensor::sdpa_backward); otherwise they only live in per-thread
    /// scratch memory.
    ///
    /// # Shapes
    /// query `[qb.., L, E]`, key `[kb.., S, E]`, value `[vb.., S, Ev]`; the batch dimensions
    /// broadcast to `batch`; the mask broadcasts to `[batch.., L, S]`. Output
    /// `[batch.., L, Ev]`, contiguous.
    ///
    /// ```
    /// use strata_tensor::{SdpaParams, Tensor};
    /// let q = Tensor::<f64>::zeros(&[2, 3, 4]);
    /// let k = Tensor::<f64>::zeros(&[2, 5, 4]);
    /// let v = Tensor::<f64>::ones(&[2, 5, 6]);
    /// let (out, probs) = q.sdpa(&k, &v, None, None, SdpaParams::new(4), true)?;
    /// assert_eq!(out.shape(), &[2, 3, 6]);
    /// assert_eq!(probs.unwrap().to_vec()[0], 0.2); // equal scores: uniform over 5 keys
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the operands, the mask or the dropout multiplier do not
    /// fit together.
    pub fn sdpa(
        &self,
        key: &Tensor<T>,
        value: &Tensor<T>,
        mask: Option<SdpaMask<'_, T>>,
        dropout: Option<&Tensor<T>>,
        params: SdpaParams,
        save_probs: bool,
    ) -> Result<(Tensor<T>, Option<Tensor<T>>)> {
        const OP: &str = "scaled_dot_product_attention";
        let (batch, d) = problem(OP, self, key, Some(value))?;
        let scores = with_matrix(&batch, d.l, d.s);
        let mask = mask
            .as_ref()
            .map(|m| mask_src(OP, m, &scores))
            .transpose()?;
        let dropout = dropout_src(OP, dropout, &scores)?;
        let mut out = alloc::<T>(d.b * d.l * d.ev);
        let mut probs = save_probs.then(|| alloc::<T>(d.b * d.l * d.s));
        kernel::forward(
            d,
            &src(self, batch_mats(self, &batch)),
            &src(key, batch_mats(key, &batch)),
            Some(&src(value, batch_mats(value, &batch))),
            mask.as_ref()
                .map(|(m, keep)| MaskSrc {
                    src: src(m, batch_mats(m, &batch)),
                    keep: *keep,
                })
                .as_ref(),
            dropout.as_ref().and_then(Tensor::as_slice),
            settings(params),
            probs.as_deref_mut(),
            Some(Dst {
                data: &mut out,
                mats: dense_mats(d.b, d.l, d.ev),
            }),
        );
        let out = Tensor::from_contiguous(out, &with_matrix(&batch, d.l, d.ev));
        Ok((out, probs.map(|p| Tensor::from_contiguous(p, &scores))))
    }

    /// The gradients of [`sdpa`](Tensor::sdpa) with respect to query, key and value, given
    /// the output gradient, the operands, the forward's output, the saved probabilities and
    /// the dropout multiplier of the forward. Only the gradients whose `needs` flag is set are computed; each has
    /// its operand's shape (summed over batch dimensions the operand was broadcast along).
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the shapes do not describe the same attention.
    #[allow(clippy::too_many_arguments)]
    #[doc(hidden)]
    pub fn sdpa_backward(
        grad: &Tensor<T>,
        query: &Tensor<T>,
        key: &Tensor<T>,
        value: &Tensor<T>,
        output: &Tensor<T>,
        probs: &Tensor<T>,
        dropout: Option<&Tensor<T>>,
        params: SdpaParams,
        needs: [bool; 3],
    ) -> Result<[Option<Tensor<T>>; 3]> {
        const OP: &str = "scaled_dot_product_attention_backward";
        let (batch, d) = problem(OP, query, key, Some(value))?;
        let scores = with_matrix(&batch, d.l, d.s);
        let out_shape = with_matrix(&batch, d.l, d.ev);
        if grad.shape() != out_shape || output.shape() != out_shape || probs.shape() != scores {
            return Err(TensorError::shape(
                OP,
                format!(
                    "expected the gradient and output {out_shape:?} and probabilities {scores:?}, \
                     got {:?}, {:?} and {:?}",
                    grad.shape(),
                    output.shape(),
                    probs.shape()
                ),
            ));
        }
        let dropout = dropout_src(OP, dropout, &scores)?;
        let probs = probs.contiguous();
        let shapes = [
            with_matrix(&batch, d.l, d.e),
            with_matrix(&batch, d.s, d.e),
            with_matrix(&batch, d.s, d.ev),
        ];
        let mut bufs: Vec<Buffer<T>> = shapes
            .iter()
            .zip(needs)
            .map(|(s, n)| if n { alloc(numel(s)) } else { Buffer::new() })
            .collect();
        let mut slots = bufs.iter_mut();
        let mut grads = Grads {
            buffers: Vec::new(),
            dq: None,
            dk: None,
            dv: None,
        };
        let dense = [
            dense_mats(d.b, d.l, d.e),
            dense_mats(d.b, d.s, d.e),
            dense_mats(d.b, d.s, d.ev),
        ];
        for (i, m) in dense.into_iter().enumerate() {
            let buf = slots.next().expect("three buffers");
            if needs[i] {
                let slot = Some((grads.buffers.len(), m));
                grads.buffers.push(buf.as_mut_slice());
                match i {
                    0 => grads.dq = slot,
                    1 => grads.dk = slot,
                    _ => grads.dv = slot,
                }
            }
        }
        kernel::backward(
            d,
            &src(grad, batch_mats(grad, &batch)),
            &src(query, batch_mats(query, &batch)),
            &src(key, batch_mats(key, &batch)),
            Some(&src(value, batch_mats(value, &batch))),
            Some(&src(output, batch_mats(output, &batch))),
            probs.as_slice().expect("contiguous"),
            dropout.as_ref().and_then(Tensor::as_slice),
            settings(params),
            grads,
        );
        let operands = [query, key, value];
        let mut result: [Option<Tensor<T>>; 3] = [None, None, None];
        for (i, buf) in bufs.into_iter().enumerate() {
            if needs[i] {
                let g = Tensor::from_contiguous(buf, &shapes[i]);
                result[i] = Some(g.sum_to_shape(operands[i].shape())?);
            }
        }
        Ok(result)
    }

    /// The attention probabilities alone, `softmax(q·kᵀ·scale + mask)` with `self` the
    /// query: `[batch.., L, S]`. What multi-head attention returns as its weights.
    ///
    /// # Errors
    /// As [`sdpa`](Tensor::sdpa).
    pub fn sdpa_probs(
        &self,
        key: &Tensor<T>,
        mask: Option<SdpaMask<'_, T>>,
        params: SdpaParams,
    ) -> Result<Tensor<T>> {
        const OP: &str = "attention_probs";
        let (batch, d) = problem(OP, self, key, None)?;
        let scores = with_matrix(&batch, d.l, d.s);
        let mask = mask
            .as_ref()
            .map(|m| mask_src(OP, m, &scores))
            .transpose()?;
        let mut probs = alloc::<T>(d.b * d.l * d.s);
        kernel::forward(
            d,
            &src(self, batch_mats(self, &batch)),
            &src(key, batch_mats(key, &batch)),
            None,
            mask.as_ref()
                .map(|(m, keep)| MaskSrc {
                    src: src(m, batch_mats(m, &batch)),
                    keep: *keep,
                })
                .as_ref(),
            None,
            settings(params),
            Some(&mut probs),
            None,
        );
        Ok(Tensor::from_contiguous(probs, &scores))
    }

    /// The gradients of [`sdpa_probs`](Tensor::sdpa_probs) with respect to query and key,
    /// given the gradient of the probabilities and the probabilities themselves.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the shapes do not describe the same attention.
    #[doc(hidden)]
    pub fn sdpa_probs_backward(
        grad: &Tensor<T>,
        query: &Tensor<T>,
        key: &Tensor<T>,
        probs: &Tensor<T>,
        params: SdpaParams,
        needs: [bool; 2],
    ) -> Result<[Option<Tensor<T>>; 2]> {
        const OP: &str = "attention_probs_backward";
        let (batch, d) = problem(OP, query, key, None)?;
        let scores = with_matrix(&batch, d.l, d.s);
        if grad.shape() != scores || probs.shape() != scores {
            return Err(TensorError::shape(
                OP,
                format!(
                    "expected the gradient and the probabilities to be {scores:?}, got {:?} and {:?}",
                    grad.shape(),
                    probs.shape()
                ),
            ));
        }
        let probs = probs.contiguous();
        let shapes = [with_matrix(&batch, d.l, d.e), with_matrix(&batch, d.s, d.e)];
        let mut dq = if needs[0] {
            alloc(numel(&shapes[0]))
        } else {
            Buffer::new()
        };
        let mut dk = if needs[1] {
            alloc(numel(&shapes[1]))
        } else {
            Buffer::new()
        };
        let mut grads = Grads {
            buffers: Vec::new(),
            dq: None,
            dk: None,
            dv: None,
        };
        if needs[0] {
            grads.dq = Some((0, dense_mats(d.b, d.l, d.e)));
            grads.buffers.push(&mut dq);
        }
        if needs[1] {
            grads.dk = Some((grads.buffers.len(), dense_mats(d.b, d.s, d.e)));
            grads.buffers.push(&mut dk);
        }
        kernel::backward(
            d,
            &src(grad, batch_mats(grad, &batch)),
            &src(query, batch_mats(query, &batch)),
            &src(key, batch_mats(key, &batch)),
            None,
            None,
            probs.as_slice().expect("contiguous"),
            None,
            settings(params),
            grads,
        );
        let finish = |buf: Buffer<T>, shape: &[usize], operand: &Tensor<T>| {
            Tensor::from_contiguous(buf, shape).sum_to_shape(operand.shape())
        };
        Ok([
            needs[0]
                .then(|| finish(dq, &shapes[0], query))
                .transpose()?,
            needs[1].then(|| finish(dk, &shapes[1], key)).transpose()?,
        ])
    }
}

#[cfg(test)]
mod tests;
