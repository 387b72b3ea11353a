//! Scaled dot-product attention as a function (`F.scaled_dot_product_attention`), and the
//! masks attention takes. `MultiheadAttention` (in the layers) is built on it.

use strata_autograd::Var;
use strata_tensor::rand::Rng;
use strata_tensor::{Element, SdpaMask, SdpaParams, Tensor, broadcast_shapes};

use crate::Result;
use crate::error::{config_error, input_error};

/// An attention mask as PyTorch takes it: boolean or additive.
///
/// A boolean mask is held as a tensor of `T` whose nonzero elements are `true`. **What
/// `true` means depends on the API, exactly as in PyTorch:** for
/// [`scaled_dot_product_attention`] `true` means the key *takes part* in the attention;
/// for [`MultiheadAttention`](crate::MultiheadAttention) (and the transformer layers) `true` means the key is *not
/// allowed* (masked out). An additive mask is added to the attention scores in both
/// (`-inf` masks a key out, `0` leaves it alone).
///
/// ```
/// use strata_nn::AttnMask;
/// use strata_tensor::Tensor;
///
/// // For MultiheadAttention: the last key of each sequence is padding.
/// let padding = AttnMask::Bool(Tensor::<f32>::from_vec(vec![0., 0., 1.], &[1, 3])?);
/// assert_eq!(padding.shape(), &[1, 3]);
/// # Ok::<(), strata_tensor::TensorError>(())
/// ```
#[derive(Clone, Debug)]
pub enum AttnMask<T: Element = f32> {
    /// A boolean mask: nonzero is `true` (see the type's docs for what `true` means).
    Bool(Tensor<T>),
    /// Added to the attention scores.
    Additive(Tensor<T>),
}

impl<T: Element> AttnMask<T> {
    /// The mask's values.
    pub fn tensor(&self) -> &Tensor<T> {
        match self {
            AttnMask::Bool(t) | AttnMask::Additive(t) => t,
        }
    }

    /// The mask's shape.
    pub fn shape(&self) -> &[usize] {
        self.tensor().shape()
    }

    /// The causal mask of `size` positions in additive form, `-inf` above the diagonal and
    /// `0` elsewhere, like `nn.Transformer.generate_square_subsequent_mask(size)`.
    pub fn square_subsequent(size: usize) -> Self {
        let data = (0..size * size)
            .map(|k| {
                if k % size.max(1) > k / size.max(1) {
                    T::neg_infinity()
                } else {
                    T::zero()
                }
            })
            .collect();
        AttnMask::Additive(Tensor::from_vec(data, &[size, size]).expect("size² values"))
    }

    /// The mask with `MultiheadAttention`'s convention (boolean `true` = masked out) in
    /// additive form, as PyTorch's `_canonical_mask` makes it.
    pub(crate) fn blocking_additive(&self) -> Tensor<T> {
        match self {
            AttnMask::Bool(t) => t.map(|x| {
                if x != T::zero() {
                    T::neg_infinity()
                } else {
                    T::zero()
                }
            }),
            AttnMask::Additive(t) => t.clone(),
        }
    }

    /// The mask for the kernels with sdpa's convention (boolean `true` = takes part).
    fn as_sdpa(&self) -> SdpaMask<'_, T> {
        match self {
            AttnMask::Bool(t) => SdpaMask::Keep(t),
            AttnMask::Additive(t) => SdpaMask::Additive(t),
        }
    }
}

/// The optional arguments of [`scaled_dot_product_attention`], with PyTorch's defaults
/// (no mask, no dropout, not causal, scale `1/√E`).
#[derive(Clone, Copy, Debug)]
pub struct SdpaOptions<'a, T: Element> {
    /// A mask broadcastable to `[.., L, S]`; boolean `true` = the key takes part.
    pub attn_mask: Option<&'a AttnMask<T>>,
    /// The probability of dropping an attention weight (applied whenever positive, as the
    /// functional form in PyTorch does; pass 0 in evaluation).
    pub dropout_p: f64,
    /// Query `i` attends to keys `0..=i` only (top-left aligned; not together with a mask).
    pub is_causal: bool,
    /// The factor applied to `q·kᵀ`; `None` is `1/√E`.
    pub scale: Option<f64>,
}

impl<T: Element> Default for SdpaOptions<'_, T> {
    fn default() -> Self {
        SdpaOptions {
            attn_mask: None,
            dropout_p: 0.0,
            is_causal: false,
            scale: None,
        }
    }
}

/// Scaled dot-product attention, like `F.scaled_dot_product_attention(query, key, value,
/// attn_mask, dropout_p, is_causal, scale)`: `softmax(q·kᵀ·scale + mask) · v`, as one fused
/// op whose backward saves only the attention probabilities.
///
/// A query whose every key is masked out gets a zero output and zero gradients, as
/// PyTorch 2.x's `scaled_dot_product_attention` gives on the CPU (its math path uses a
/// "safe" softmax); `softmax` itself would give NaN there.
///
/// # Shapes
/// query `[.., L, E]`, key `[.., S, E]`, value `[.., S, Ev]` (the batch dimensions
/// broadcast); `attn_mask` broadcastable to `[.., L, S]`. Output `[.., L, Ev]`.
///
/// ```
/// use strata_nn::{AttnMask, SdpaOptions, functional};
/// use strata_autograd::Var;
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let mut rng = seeded_rng(0);
/// let q = Var::new(Tensor::<f32>::randn(&[2, 4, 3, 8], &mut rng));
/// let kv = Var::new(Tensor::<f32>::randn(&[2, 4, 5, 8], &mut rng));
/// let options = SdpaOptions { is_causal: true, ..SdpaOptions::default() };
/// let out = functional::scaled_dot_product_attention(&q, &kv, &kv, &options, &mut rng)?;
/// assert_eq!(out.shape(), &[2, 4, 3, 8]);
/// # Ok::<(), strata_nn::NnError>(())
/// ```
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the shapes do not fit together or a mask
/// is given with `is_causal`; [`NnError::Config`](crate::NnError::Config) for a dropout
/// probability outside `[0, 1]`.
pub fn scaled_dot_product_attention<T: Element, R: Rng + ?Sized>(
    query: &Var<T>,
    key: &Var<T>,
    value: &Var<T>,
    options: &SdpaOptions<'_, T>,
    rng: &mut R,
) -> Result<Var<T>> {
    const LAYER: &str = "scaled_dot_product_attention";
    let batch = check_sdpa_shapes(query, key, value)?;
    if options.is_causal && options.attn_mask.is_some() {
        return Err(input_error(
            LAYER,
            "an explicit attn_mask should not be set when is_causal = true",
        ));
    }
    let (l, e) = (
        query.shape()[query.ndim() - 2],
        query.shape()[query.ndim() - 1],
    );
    let s = key.shape()[key.ndim() - 2];
    let mut scores = batch;
    scores.extend([l, s]);
    if let Some(m) = options.attn_mask
        && m.tensor().broadcast_to(&scores).is_err()
    {
        return Err(input_error(
            LAYER,
            format!(
                "the attn_mask {:?} does not broadcast to the attention scores {scores:?}",
                m.shape()
            ),
        ));
    }
    let dropout = dropout_multiplier(LAYER, options.dropout_p, &scores, rng)?;
    let params = SdpaParams {
        scale: options.scale.unwrap_or(1.0 / (e as f64).sqrt()),
        is_causal: options.is_causal,
        zero_masked_rows: true,
    };
    Ok(query.scaled_dot_product_attention(
        key,
        value,
        options.attn_mask.map(AttnMask::as_sdpa),
        dropout.as_ref(),
        params,
    )?)
}

/// The broadcast batch shape of sdpa's operands, after checking their shapes.
fn check_sdpa_shapes<T: Element>(q: &Var<T>, k: &Var<T>, v: &Var<T>) -> Result<Vec<usize>> {
    let err = || {
        input_error(
            "scaled_dot_product_attention",
            format!(
                "expected query [.., L, E], key [.., S, E] and value [.., S, Ev] with \
                 broadcastable batch dimensions, got query {:?}, key {:?}, value {:?}",
                q.shape(),
                k.shape(),
                v.shape()
            ),
        )
    };
    if q.ndim() < 2 || k.ndim() < 2 || v.ndim() < 2 {
        return Err(err());
    }
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    let (qn, kn, vn) = (qs.len(), ks.len(), vs.len());
    if qs[qn - 1] != ks[kn - 1] || ks[kn - 2] != vs[vn - 2] {
        return Err(err());
    }
    let batch = broadcast_shapes("sdpa", &qs[..qn - 2], &ks[..kn - 2]).map_err(|_| err())?;
    broadcast_shapes("sdpa", &batch, &vs[..vn - 2]).map_err(|_| err())
}

/// A dropout multiplier for attention weights of shape `scores`: zeros with probability
/// `p`, `1/(1−p)` elsewhere; `None` when `p` is 0.
pub(crate) fn dropout_multiplier<T: Element, R: Rng + ?Sized>(
    layer: &'static str,
    p: f64,
    scores: &[usize],
    rng: &mut R,
) -> Result<Option<Tensor<T>>> {
    if !(0.0..=1.0).contains(&p) {
        return Err(config_error(
            layer,
            format!("dropout probability has to be between 0 and 1, but got {p}"),
        ));
    }
    if p == 0.0 {
        return Ok(None);
    }
    if p == 1.0 {
        return Ok(Some(Tensor::zeros(scores)));
    }
    let keep = strata_autograd::replayable(|| Tensor::<T>::bernoulli(scores, 1.0 - p, rng))?;
    Ok(Some(keep.mul_scalar(T::from_f64(1.0 / (1.0 - p)))))
}
