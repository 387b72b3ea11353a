//! The differentiable fused scaled dot-product attention.
//!
//! Each op runs strata-tensor's fused kernel forward and records one node whose backward is
//! the kernel's hand-written backward. The only intermediate saved is the probabilities
//! `P` (`[B, L, S]`), plus the dropout multiplier when there is one; without a tracked input
//! `P` is never materialised as a tensor.

use strata_tensor::{Element, HeadInputs, HeadLayout, SdpaMask, SdpaParams, Tensor};

use crate::ops::decomposed;
use crate::{Result, Var};

impl<T: Element> Var<T> {
    /// Scaled dot-product attention with `self` as the query, like
    /// `F.scaled_dot_product_attention`: `softmax(q·kᵀ·scale + mask) · v`, fused into one
    /// op (see [`Tensor::sdpa`]). `dropout`, when given, is the multiplier (zeros and
    /// `1/(1−p)`, shape `[batch.., L, S]`) applied to the probabilities.
    ///
    /// ```
    /// use strata_autograd::Var;
    /// use strata_tensor::{SdpaParams, Tensor};
    ///
    /// let q = Var::parameter(Tensor::<f64>::ones(&[2, 3, 4]));
    /// let kv = Var::new(Tensor::ones(&[2, 5, 4]));
    /// let out = q.scaled_dot_product_attention(&kv, &kv, None, None, SdpaParams::new(4))?;
    /// assert_eq!(out.shape(), &[2, 3, 4]);
    /// out.sum_all().backward()?;
    /// assert_eq!(q.grad().unwrap().shape(), &[2, 3, 4]);
    /// # Ok::<(), strata_autograd::AutogradError>(())
    /// ```
    ///
    /// # Errors
    /// As [`Tensor::sdpa`].
    pub fn scaled_dot_product_attention(
        &self,
        key: &Var<T>,
        value: &Var<T>,
        mask: Option<SdpaMask<'_, T>>,
        dropout: Option<&Tensor<T>>,
        params: SdpaParams,
    ) -> Result<Var<T>> {
        let inputs = [self, key, value];
        let (q, k, v) = (self.value(), key.value(), value.value());
        let tracking = Var::tracking(&inputs);
        let (out, probs) = q.sdpa(&k, &v, mask, dropout, params, tracking)?;
        let dropout = dropout.filter(|_| tracking).cloned();
        // The output's storage is kept alive by the graph anyway (whatever consumes it
        // saves it); holding it here costs nothing and saves a pass in the backward.
        let output = tracking.then(|| out.clone());
        let (owned, dropout2) = (OwnedMask::of(mask), dropout.clone());
        let values = [Some(q.clone()), Some(k.clone()), Some(v.clone())];
        Ok(Var::from_op(
            "scaled_dot_product_attention",
            out,
            &inputs,
            move |g, needs| {
                let probs = probs.as_ref().expect("saved when tracking");
                let needs = [needs[0], needs[1], needs[2]];
                let output = output.as_ref().expect("saved when tracking");
                let grads = Tensor::sdpa_backward(
                    g,
                    &q,
                    &k,
                    &v,
                    output,
                    probs,
                    dropout.as_ref(),
                    params,
                    needs,
                )?;
                Ok(grads.into_iter().collect())
            },
        )
        .double_backward(move |g, inputs, _| {
            decomposed(g, inputs, &values, |xs| {
                let [q, k, v] = [&xs[0], &xs[1], &xs[2]].map(|x| x.clone().expect("given"));
                sdpa_decomposed(&q, &k, &v, owned.as_ref(), dropout2.as_ref(), params)
            })
        }))
    }

    /// The attention probabilities `softmax(q·kᵀ·scale + mask)` with `self` as the query,
    /// `[batch.., L, S]`: what `nn.MultiheadAttention` returns as its weights. One fused op
    /// (see [`Tensor::sdpa_probs`]).
    ///
    /// # Errors
    /// As [`Tensor::sdpa_probs`].
    pub fn attention_probs(
        &self,
        key: &Var<T>,
        mask: Option<SdpaMask<'_, T>>,
        params: SdpaParams,
    ) -> Result<Var<T>> {
        let (q, k) = (self.value(), key.value());
        let probs = q.sdpa_probs(&k, mask, params)?;
        let saved = Var::tracking(&[self, key]).then(|| probs.clone());
        let owned = OwnedMask::of(mask);
        let values = [Some(q.clone()), Some(k.clone())];
        Ok(
            Var::from_op("attention_probs", probs, &[self, key], move |g, needs| {
                let probs = saved.as_ref().expect("saved when tracking");
                let grads =
                    Tensor::sdpa_probs_backward(g, &q, &k, probs, params, [needs[0], needs[1]])?;
                Ok(grads.into_iter().collect())
            })
            .double_backward(move |g, inputs, _| {
                decomposed(g, inputs, &values, |xs| {
                    let (q, k) = (xs[0].clone().expect("given"), xs[1].clone().expect("given"));
                    probs_decomposed(&q, &k, owned.as_ref(), params)
                })
            }),
        )
    }

    /// Multi-head attention between projections in token-major layout, with `self` the
    /// projected query: the heads are read in place and the output `[.., E]` comes out with
    /// its heads merged (see [`Tensor::sdpa_heads`]); the gradients come back in the
    /// projections' own layouts.
    ///
    /// # Errors
    /// As [`Tensor::sdpa_heads`].
    pub fn multi_head_attention(
        &self,
        key: &Var<T>,
        value: &Var<T>,
        layout: HeadLayout,
        mask: Option<SdpaMask<'_, T>>,
        dropout: Option<&Tensor<T>>,
        params: SdpaParams,
    ) -> Result<Var<T>> {
        let inputs = [self, key, value];
        let (q, k, v) = (self.value(), key.value(), value.value());
        let tracking = Var::tracking(&inputs);
        let (out, probs) = Tensor::sdpa_heads(
            HeadInputs::Separate(&q, &k, &v),
            layout,
            mask,
            dropout,
            params,
            tracking,
        )?;
        let dropout = dropout.filter(|_| tracking).cloned();
        let output = tracking.then(|| out.clone());
        let (owned, dropout2) = (OwnedMask::of(mask), dropout.clone());
        let values = [Some(q.clone()), Some(k.clone()), Some(v.clone())];
        Ok(
            Var::from_op("multi_head_attention", out, &inputs, move |g, needs| {
                let probs = probs.as_ref().expect("saved when tracking");
                Ok(Tensor::sdpa_heads_backward(
                    g,
                    HeadInputs::Separate(&q, &k, &v),
                    layout,
                    output.as_ref().expect("saved when tracking"),
                    probs,
                    dropout.as_ref(),
                    params,
                    [needs[0], needs[1], needs[2]],
                )?)
            })
            .double_backward(move |g, inputs, _| {
                decomposed(g, inputs, &values, |xs| {
                    let [q, k, v] = [&xs[0], &xs[1], &xs[2]].map(|x| x.clone().expect("given"));
                    heads_decomposed(
                        (&q, &k, &v),
                        layout,
                        owned.as_ref(),
                        dropout2.as_ref(),
                        params,
                    )
                })
            }),
        )
    }

    /// Multi-head self-attention on one packed projection `[.., 3E]` (`self`), whose column
    /// blocks are the queries, keys and values: the layout `nn.MultiheadAttention`'s
    /// `in_proj_weight` produces. The gradient is one tensor of the packed shape, written
    /// by the kernel directly, so the packed projection's backward needs no splitting or
    /// concatenation (see [`Tensor::sdpa_heads`]).
    ///
    /// # Errors
    /// As [`Tensor::sdpa_heads`].
    pub fn packed_multi_head_attention(
        &self,
        layout: HeadLayout,
        mask: Option<SdpaMask<'_, T>>,
        dropout: Option<&Tensor<T>>,
        params: SdpaParams,
    ) -> Result<Var<T>> {
        let qkv = self.value();
        let tracking = Var::tracking(&[self]);
        let (out, probs) = Tensor::sdpa_heads(
            HeadInputs::Packed(&qkv),
            layout,
            mask,
            dropout,
            params,
            tracking,
        )?;
        let dropout = dropout.filter(|_| tracking).cloned();
        let output = tracking.then(|| out.clone());
        let (owned, dropout2) = (OwnedMask::of(mask), dropout.clone());
        let values = [Some(qkv.clone())];
        Ok(
            Var::from_op("packed_multi_head_attention", out, &[self], move |g, _| {
                let probs = probs.as_ref().expect("saved when tracking");
                Ok(Tensor::sdpa_heads_backward(
                    g,
                    HeadInputs::Packed(&qkv),
                    layout,
                    output.as_ref().expect("saved when tracking"),
                    probs,
                    dropout.as_ref(),
                    params,
                    [true; 3],
                )?)
            })
            .double_backward(move |g, inputs, _| {
                decomposed(g, inputs, &values, |xs| {
                    let qkv = xs[0].clone().expect("given");
                    let e = qkv.shape()[qkv.ndim() - 1] / 3;
                    let part = |i: usize| qkv.narrow(-1, i * e, e);
                    let (q, k, v) = (part(0)?, part(1)?, part(2)?);
                    heads_decomposed(
                        (&q, &k, &v),
                        layout,
                        owned.as_ref(),
                        dropout2.as_ref(),
                        params,
                    )
                })
            }),
        )
    }
}

/// A mask the differentiable backward keeps (the forward borrows it).
#[derive(Clone)]
enum OwnedMask<T: Element> {
    Keep(Tensor<T>),
    Additive(Tensor<T>),
}

impl<T: Element> OwnedMask<T> {
    fn of(mask: Option<SdpaMask<'_, T>>) -> Option<Self> {
        mask.map(|m| match m {
            SdpaMask::Keep(t) => OwnedMask::Keep(t.clone()),
            SdpaMask::Additive(t) => OwnedMask::Additive(t.clone()),
        })
    }
}

/// The attention probabilities `softmax(q·kᵀ·scale + mask)` as differentiable ops (the
/// decomposition behind the fused kernels' differentiable backward): batch dimensions
/// broadcast; a query whose every key is masked out gets zeros when `zero_masked_rows`.
fn probs_decomposed<T: Element>(
    q: &Var<T>,
    k: &Var<T>,
    mask: Option<&OwnedMask<T>>,
    params: SdpaParams,
) -> Result<Var<T>> {
    let mut scores = q
        .matmul(&k.transpose(-1, -2)?)?
        .mul_scalar(T::from_f64(params.scale));
    let (l, s) = (
        scores.shape()[scores.ndim() - 2],
        scores.shape()[scores.ndim() - 1],
    );
    if params.is_causal {
        let mut above = Tensor::<T>::zeros(&[l, s]);
        for i in 0..l {
            for j in (i + 1).min(s)..s {
                above.as_mut_slice()[i * s + j] = T::one();
            }
        }
        scores = scores.masked_fill(&above, T::neg_infinity())?;
    }
    // A mask may broadcast the scores to more batch dimensions than q and k have.
    if let Some(OwnedMask::Keep(m) | OwnedMask::Additive(m)) = mask {
        let full = strata_tensor::broadcast_shapes("attention", scores.shape(), m.shape())?;
        if full != scores.shape() {
            scores = scores.broadcast_to(&full)?;
        }
    }
    match mask {
        Some(OwnedMask::Keep(m)) => {
            scores = scores.masked_fill(&m.eq_scalar(T::zero()), T::neg_infinity())?;
        }
        Some(OwnedMask::Additive(m)) => scores = scores.add(&Var::new(m.clone()))?,
        None => {}
    }
    // Rows masked out entirely: a finite stand-in before the softmax (so no NaN enters
    // the graph), zeros after it.
    let empty = scores
        .value()
        .amax(&[-1], true)?
        .eq_scalar(T::neg_infinity())
        .broadcast_to(scores.shape())?
        .contiguous();
    let zero = Var::new(Tensor::scalar(T::zero()));
    let scores = Var::where_(&empty, &zero, &scores)?;
    let p = scores.softmax(-1)?;
    if params.zero_masked_rows {
        Var::where_(&empty, &zero, &p)
    } else {
        let nan = Var::new(Tensor::scalar(T::nan()));
        Var::where_(&empty, &nan, &p)
    }
}

/// `(P ⊙ dropout)·v` with `P` from [`probs_decomposed`].
fn sdpa_decomposed<T: Element>(
    q: &Var<T>,
    k: &Var<T>,
    v: &Var<T>,
    mask: Option<&OwnedMask<T>>,
    dropout: Option<&Tensor<T>>,
    params: SdpaParams,
) -> Result<Var<T>> {
    let mut p = probs_decomposed(q, k, mask, params)?;
    if let Some(d) = dropout {
        p = p.mul(&Var::new(d.clone()))?;
    }
    p.matmul(v)
}

/// A projection `[N, L, E]` (batch first), `[L, N, E]` or `[L, E]` as heads `[N, H, L, D]`.
fn split_heads<T: Element>(x: &Var<T>, layout: HeadLayout) -> Result<Var<T>> {
    let h = layout.num_heads as isize;
    match (x.ndim(), layout.batch_first) {
        (2, _) => x
            .reshape([x.shape()[0] as isize, h, -1])?
            .permute(&[1, 0, 2])?
            .unsqueeze(0),
        (_, true) => {
            let (n, l) = (x.shape()[0] as isize, x.shape()[1] as isize);
            x.reshape([n, l, h, -1])?.permute(&[0, 2, 1, 3])
        }
        (_, false) => {
            let (l, n) = (x.shape()[0] as isize, x.shape()[1] as isize);
            x.reshape([l, n, h, -1])?.permute(&[1, 2, 0, 3])
        }
    }
}

/// Heads `[N, H, L, D]` merged back into the layout of `like` (`[N, L, E]`, `[L, N, E]`
/// or `[L, E]`).
fn merge_heads<T: Element>(x: &Var<T>, like: &[usize], layout: HeadLayout) -> Result<Var<T>> {
    match (like.len(), layout.batch_first) {
        (2, _) => x
            .squeeze(0)?
            .permute(&[1, 0, 2])?
            .reshape([like[0] as isize, -1]),
        (_, true) => x
            .permute(&[0, 2, 1, 3])?
            .reshape([like[0] as isize, like[1] as isize, -1]),
        (_, false) => x
            .permute(&[2, 0, 1, 3])?
            .reshape([like[0] as isize, like[1] as isize, -1]),
    }
}

/// Multi-head attention on separate projections as differentiable ops.
fn heads_decomposed<T: Element>(
    (q, k, v): (&Var<T>, &Var<T>, &Var<T>),
    layout: HeadLayout,
    mask: Option<&OwnedMask<T>>,
    dropout: Option<&Tensor<T>>,
    params: SdpaParams,
) -> Result<Var<T>> {
    let (qh, kh, vh) = (
        split_heads(q, layout)?,
        split_heads(k, layout)?,
        split_heads(v, layout)?,
    );
    let out = sdpa_decomposed(&qh, &kh, &vh, mask, dropout, params)?;
    merge_heads(&out, q.shape(), layout)
}
