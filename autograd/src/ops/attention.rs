//! The differentiable fused scaled dot-product attention.
//!
//! Each op runs strata-tensor's fused kernel forward and records one node whose backward is
//! the kernel's hand-written backward. The only intermediate saved is the probabilities
//! `P` (`[B, L, S]`), plus the dropout multiplier when there is one; without a tracked input
//! `P` is never materialised as a tensor.

use strata_tensor::{Element, HeadInputs, HeadLayout, SdpaMask, SdpaParams, Tensor};

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
        ))
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
        Ok(Var::from_op(
            "attention_probs",
            probs,
            &[self, key],
            move |g, needs| {
                let probs = saved.as_ref().expect("saved when tracking");
                let grads =
                    Tensor::sdpa_probs_backward(g, &q, &k, probs, params, [needs[0], needs[1]])?;
                Ok(grads.into_iter().collect())
            },
        ))
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
        Ok(Var::from_op(
            "multi_head_attention",
            out,
            &inputs,
            move |g, needs| {
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
            },
        ))
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
        Ok(Var::from_op(
            "packed_multi_head_attention",
            out,
            &[self],
            move |g, _| {
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
            },
        ))
    }
}
