//! Multi-head attention on token-major projections: the heads are strided views of the
//! `[N, L, C]` / `[L, N, C]` / `[L, C]` projections, so the kernels read them and write the
//! output and the gradients in place, and splitting or merging heads costs nothing.

use super::kernel::{self, AttentionShape, Dst, Grads, MaskSrc, Mats};
use super::{
    HeadInputs, HeadLayout, SdpaMask, SdpaParams, batch_mats, dropout_src, mask_src, settings, src,
};
use crate::handle::layout::{contiguous_strides, numel};
use crate::handle::storage::{Buffer, alloc};
use crate::{Element, Result, Tensor, TensorError};

/// A token-major projection `[N, L, C]` / `[L, N, C]` / `[L, C]` seen as its parts.
#[derive(Clone, Copy, Debug)]
struct Tokens {
    n: usize,
    len: usize,
    width: usize,
    /// Strides of the batch, position and column dimensions (0 for a missing batch).
    sn: usize,
    sl: usize,
    sc: usize,
    offset: usize,
}

impl Tokens {
    fn of(shape: &[usize], strides: &[usize], offset: usize, batch_first: bool) -> Option<Self> {
        let t = match (shape, strides) {
            (&[a, b, c], &[sa, sb, sc]) if batch_first => (a, b, c, sa, sb, sc),
            (&[a, b, c], &[sa, sb, sc]) => (b, a, c, sb, sa, sc),
            (&[l, c], &[sl, sc]) => (1, l, c, 0, sl, sc),
            _ => return None,
        };
        Some(Tokens {
            n: t.0,
            len: t.1,
            width: t.2,
            sn: t.3,
            sl: t.4,
            sc: t.5,
            offset,
        })
    }

    fn of_tensor<T: Element>(t: &Tensor<T>, batch_first: bool) -> Option<Self> {
        Tokens::of(t.shape(), t.strides(), t.layout().offset(), batch_first)
    }

    /// The `[N·H]` head matrices `[len, head]` of the column block starting at `col0`.
    fn heads(&self, col0: usize, heads: usize, head: usize) -> Mats {
        let mut offsets = Vec::with_capacity(self.n * heads);
        for n in 0..self.n {
            for h in 0..heads {
                offsets.push(self.offset + n * self.sn + (col0 + h * head) * self.sc);
            }
        }
        Mats {
            offsets,
            rs: self.sl,
            cs: self.sc,
        }
    }
}

/// The geometry of a multi-head call: q, k, v as [`Tokens`] with their column offsets.
struct HeadProblem {
    dims: AttentionShape,
    heads: usize,
    head: usize,
    embed: usize,
    q: (Tokens, usize),
    k: (Tokens, usize),
    v: (Tokens, usize),
    /// The shape of the output (and of each separate gradient): q's, with width E.
    out_shape: Vec<usize>,
}

impl HeadProblem {
    fn new<T: Element>(
        op: &'static str,
        inputs: HeadInputs<'_, T>,
        layout: HeadLayout,
    ) -> Result<Self> {
        let h = layout.num_heads;
        let bf = layout.batch_first;
        let bad = |msg: String| TensorError::shape(op, msg);
        let (q, k, v, embed) = match inputs {
            HeadInputs::Packed(t) => {
                let tk = Tokens::of_tensor(t, bf)
                    .filter(|tk| tk.width % 3 == 0)
                    .ok_or_else(|| {
                        bad(format!(
                            "expected a packed projection [.., 3E], got {:?}",
                            t.shape()
                        ))
                    })?;
                let e = tk.width / 3;
                ((tk, 0), (tk, e), (tk, 2 * e), e)
            }
            HeadInputs::Separate(q, k, v) => {
                let shapes = format!(
                    "query {:?}, key {:?}, value {:?}",
                    q.shape(),
                    k.shape(),
                    v.shape()
                );
                let (Some(tq), Some(tk), Some(tv)) = (
                    Tokens::of_tensor(q, bf),
                    Tokens::of_tensor(k, bf),
                    Tokens::of_tensor(v, bf),
                ) else {
                    return Err(bad(format!(
                        "expected projections of equal rank 2 or 3, got {shapes}"
                    )));
                };
                let same_rank = q.ndim() == k.ndim() && k.ndim() == v.ndim();
                if !same_rank
                    || tk.width != tq.width
                    || tv.width != tq.width
                    || tk.n != tq.n
                    || tv.n != tq.n
                    || tk.len != tv.len
                {
                    return Err(bad(format!(
                        "query, key and value must share the batch and the width, key and value the length; got {shapes}"
                    )));
                }
                ((tq, 0), (tk, 0), (tv, 0), tq.width)
            }
        };
        if h == 0 || embed % h != 0 {
            return Err(bad(format!(
                "the width {embed} is not divisible by num_heads = {h}"
            )));
        }
        let head = embed / h;
        let mut out_shape = match inputs {
            HeadInputs::Packed(t) => t.shape().to_vec(),
            HeadInputs::Separate(q, ..) => q.shape().to_vec(),
        };
        *out_shape.last_mut().expect("rank 2 or 3") = embed;
        Ok(HeadProblem {
            dims: AttentionShape {
                b: q.0.n * h,
                l: q.0.len,
                s: k.0.len,
                e: head,
                ev: head,
            },
            heads: h,
            head,
            embed,
            q,
            k,
            v,
            out_shape,
        })
    }

    fn mats(&self, (t, col0): (Tokens, usize)) -> Mats {
        t.heads(col0, self.heads, self.head)
    }

    /// The scores' shape `[N, H, L, S]`.
    fn scores(&self) -> Vec<usize> {
        vec![self.q.0.n, self.heads, self.dims.l, self.dims.s]
    }

    /// The heads of a contiguous tensor of shape `shape` (output or gradient).
    fn dense_heads(&self, shape: &[usize], col0: usize, batch_first: bool) -> Mats {
        let t = Tokens::of(shape, &contiguous_strides(shape), 0, batch_first).expect("rank 2 or 3");
        t.heads(col0, self.heads, self.head)
    }
}

impl<T: Element> Tensor<T> {
    /// Multi-head scaled dot-product attention on token-major projections: the heads are
    /// read in place (head `h` is columns `h·D..(h+1)·D`, `D = E / num_heads`) and the
    /// output `[.., E]` (q's layout) comes out with its heads merged, as `nn.MultiheadAttention`
    /// computes between its in- and out-projections.
    ///
    /// # Shapes
    /// Each projection is `[N, L, C]` (batch first), `[L, N, C]`, or `[L, C]` unbatched
    /// (N = 1). The mask broadcasts to, the dropout multiplier is, and the saved
    /// probabilities are `[N, num_heads, L, S]`.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the projections, the mask or the dropout multiplier do not
    /// fit, or `E` is not divisible by `num_heads`.
    pub fn sdpa_heads(
        inputs: HeadInputs<'_, T>,
        layout: HeadLayout,
        mask: Option<SdpaMask<'_, T>>,
        dropout: Option<&Tensor<T>>,
        params: SdpaParams,
        save_probs: bool,
    ) -> Result<(Tensor<T>, Option<Tensor<T>>)> {
        const OP: &str = "multi_head_attention";
        let p = HeadProblem::new(OP, inputs, layout)?;
        let d = p.dims;
        let scores = p.scores();
        let batch = &scores[..2];
        let mask = mask
            .as_ref()
            .map(|m| mask_src(OP, m, &scores))
            .transpose()?;
        let dropout = dropout_src(OP, dropout, &scores)?;
        let (qt, kt, vt) = match inputs {
            HeadInputs::Packed(t) => (t, t, t),
            HeadInputs::Separate(q, k, v) => (q, k, v),
        };
        let mut out = alloc::<T>(numel(&p.out_shape));
        let mut probs = save_probs.then(|| alloc::<T>(numel(&scores)));
        kernel::forward(
            d,
            &src(qt, p.mats(p.q)),
            &src(kt, p.mats(p.k)),
            Some(&src(vt, p.mats(p.v))),
            mask.as_ref()
                .map(|(m, keep)| MaskSrc {
                    src: src(m, batch_mats(m, batch)),
                    keep: *keep,
                })
                .as_ref(),
            dropout.as_ref().and_then(Tensor::as_slice),
            settings(params),
            probs.as_deref_mut(),
            Some(Dst {
                mats: p.dense_heads(&p.out_shape, 0, layout.batch_first),
                data: &mut out,
            }),
        );
        Ok((
            Tensor::from_contiguous(out, &p.out_shape),
            probs.map(|pr| Tensor::from_contiguous(pr, &scores)),
        ))
    }

    /// The backward of [`sdpa_heads`](Tensor::sdpa_heads): for packed inputs one gradient
    /// of the packed projection's shape (`needs` is ignored), for separate inputs the
    /// gradients of query, key and value whose `needs` flag is set, each contiguous in its
    /// projection's shape. `grad` and `output` (the forward's) have the output's shape, in
    /// any layout.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the shapes do not describe the same attention.
    #[allow(clippy::too_many_arguments)]
    #[doc(hidden)]
    pub fn sdpa_heads_backward(
        grad: &Tensor<T>,
        inputs: HeadInputs<'_, T>,
        layout: HeadLayout,
        output: &Tensor<T>,
        probs: &Tensor<T>,
        dropout: Option<&Tensor<T>>,
        params: SdpaParams,
        needs: [bool; 3],
    ) -> Result<Vec<Option<Tensor<T>>>> {
        const OP: &str = "multi_head_attention_backward";
        let p = HeadProblem::new(OP, inputs, layout)?;
        let scores = p.scores();
        if grad.shape() != p.out_shape || output.shape() != p.out_shape || probs.shape() != scores {
            return Err(TensorError::shape(
                OP,
                format!(
                    "expected the gradient and output {:?} and probabilities {scores:?}, got \
                     {:?}, {:?} and {:?}",
                    p.out_shape,
                    grad.shape(),
                    output.shape(),
                    probs.shape()
                ),
            ));
        }
        let dropout = dropout_src(OP, dropout, &scores)?;
        let probs = probs.contiguous();
        let gt = Tokens::of_tensor(grad, layout.batch_first).expect("checked shape");
        let grad_src = src(grad, gt.heads(0, p.heads, p.head));
        let ot = Tokens::of_tensor(output, layout.batch_first).expect("checked shape");
        let out_src = src(output, ot.heads(0, p.heads, p.head));
        let bf = layout.batch_first;
        let run = |qt: &Tensor<T>, kt: &Tensor<T>, vt: &Tensor<T>, grads: Grads<'_, T>| {
            kernel::backward(
                p.dims,
                &grad_src,
                &src(qt, p.mats(p.q)),
                &src(kt, p.mats(p.k)),
                Some(&src(vt, p.mats(p.v))),
                Some(&out_src),
                probs.as_slice().expect("contiguous"),
                dropout.as_ref().and_then(Tensor::as_slice),
                settings(params),
                grads,
            );
        };
        match inputs {
            HeadInputs::Packed(t) => {
                let shape = t.shape().to_vec();
                let mut buf = alloc::<T>(numel(&shape));
                let e = p.embed;
                let grads = Grads {
                    dq: Some((0, p.dense_heads(&shape, 0, bf))),
                    dk: Some((0, p.dense_heads(&shape, e, bf))),
                    dv: Some((0, p.dense_heads(&shape, 2 * e, bf))),
                    buffers: vec![&mut buf],
                };
                run(t, t, t, grads);
                Ok(vec![Some(Tensor::from_contiguous(buf, &shape))])
            }
            HeadInputs::Separate(q, k, v) => {
                let shapes = [q.shape().to_vec(), k.shape().to_vec(), v.shape().to_vec()];
                let mut bufs: Vec<Buffer<T>> = shapes
                    .iter()
                    .zip(needs)
                    .map(|(s, n)| if n { alloc(numel(s)) } else { Buffer::new() })
                    .collect();
                let mut grads = Grads {
                    buffers: Vec::new(),
                    dq: None,
                    dk: None,
                    dv: None,
                };
                for (i, buf) in bufs.iter_mut().enumerate() {
                    if needs[i] {
                        let slot = Some((grads.buffers.len(), p.dense_heads(&shapes[i], 0, bf)));
                        grads.buffers.push(buf.as_mut_slice());
                        match i {
                            0 => grads.dq = slot,
                            1 => grads.dk = slot,
                            _ => grads.dv = slot,
                        }
                    }
                }
                run(q, k, v, grads);
                Ok(bufs
                    .into_iter()
                    .zip(shapes)
                    .zip(needs)
                    .map(|((buf, shape), n)| n.then(|| Tensor::from_contiguous(buf, &shape)))
                    .collect())
            }
        }
    }
}
