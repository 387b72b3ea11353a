//! Attention: scaled dot-product attention and `MultiheadAttention`.
//!
//! Both run on strata-tensor's fused attention kernel: the scores, the mask, the softmax
//! and the value product are one op with a hand-written backward that saves only the
//! attention probabilities. `MultiheadAttention` reads its heads straight out of the
//! in-projection (one packed `[.., 3E]` GEMM for self-attention) and gets its output back
//! with the heads merged, so splitting and merging heads copies nothing.

use std::sync::Mutex;

use strata_autograd::Var;
use strata_tensor::rand::Rng;
use strata_tensor::rand::rngs::StdRng;
use strata_tensor::{Element, HeadLayout, SdpaMask, SdpaParams, Tensor, seeded_rng};

use crate::error::{config_error, input_error};
use crate::functional::{AttnMask, dropout_multiplier};
use crate::init::{default_layer_init, xavier_uniform_};
use crate::{Linear, Module, Result, StateKind, functional, visit_child};

/// The settings of a [`MultiheadAttention`]; [`MhaConfig::new`] gives PyTorch's defaults
/// (no dropout, with biases, `[L, N, E]` inputs). Keys and values have `embed_dim`
/// features (PyTorch's `kdim`/`vdim` are not supported), and there is no `add_bias_kv` or
/// `add_zero_attn`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MhaConfig {
    /// The model width `E`.
    pub embed_dim: usize,
    /// The number of heads; `E` must be divisible by it.
    pub num_heads: usize,
    /// Dropout probability on the attention weights in train mode (0).
    pub dropout: f64,
    /// Biases in the in- and out-projections (true).
    pub bias: bool,
    /// Inputs and outputs are `[N, L, E]` rather than `[L, N, E]` (false).
    pub batch_first: bool,
    /// Seed of the RNG that draws the dropout masks (0).
    pub seed: u64,
}

impl MhaConfig {
    /// `embed_dim` and `num_heads`, the rest PyTorch's defaults.
    pub fn new(embed_dim: usize, num_heads: usize) -> Self {
        MhaConfig {
            embed_dim,
            num_heads,
            dropout: 0.0,
            bias: true,
            batch_first: false,
            seed: 0,
        }
    }

    /// The attention-weight dropout probability.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// Whether the projections have biases.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Whether inputs are `[N, L, E]`.
    pub fn batch_first(mut self, batch_first: bool) -> Self {
        self.batch_first = batch_first;
        self
    }

    /// The dropout RNG's seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// The optional arguments of [`MultiheadAttention::forward`], with PyTorch's defaults
/// (`need_weights` and `average_attn_weights` true, no masks, not causal).
///
/// **Boolean masks here mean `true` = NOT allowed to attend** (PyTorch's
/// `nn.MultiheadAttention` convention, the opposite of
/// [`scaled_dot_product_attention`](functional::scaled_dot_product_attention)'s).
#[derive(Clone, Copy, Debug)]
pub struct MhaForward<'a, T: Element> {
    /// `[N, S]` (or `[S]` unbatched): boolean `true` marks a padding key to ignore, or an
    /// additive mask.
    pub key_padding_mask: Option<&'a AttnMask<T>>,
    /// Also return the attention weights (true).
    pub need_weights: bool,
    /// `[L, S]` or `[N·num_heads, L, S]`: boolean `true` = not allowed, or additive.
    pub attn_mask: Option<&'a AttnMask<T>>,
    /// Average the returned weights over the heads (true).
    pub average_attn_weights: bool,
    /// A hint that `attn_mask` is the causal mask (it must then be given, as in PyTorch).
    pub is_causal: bool,
}

impl<T: Element> Default for MhaForward<'_, T> {
    fn default() -> Self {
        MhaForward {
            key_padding_mask: None,
            need_weights: true,
            attn_mask: None,
            average_attn_weights: true,
            is_causal: false,
        }
    }
}

/// Multi-head attention, like `nn.MultiheadAttention(embed_dim, num_heads, dropout, bias,
/// batch_first=...)`, with PyTorch's parameters and initialisation: `in_proj_weight`
/// `[3E, E]` (Xavier uniform), `in_proj_bias` `[3E]` (zeros), `out_proj.weight` `[E, E]`
/// (a Linear's kaiming-uniform init) and `out_proj.bias` `[E]` (zeros).
///
/// ```
/// use strata_nn::{MhaConfig, MhaForward, Module, MultiheadAttention};
/// use strata_autograd::Var;
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let mut rng = seeded_rng(0);
/// let mha = MultiheadAttention::<f32>::new(MhaConfig::new(16, 4).batch_first(true), &mut rng)?;
/// let x = Var::new(Tensor::randn(&[2, 5, 16], &mut rng));
/// let (y, weights) = mha.forward(&x, &x, &x, &MhaForward::default())?;
/// assert_eq!(y.shape(), &[2, 5, 16]);
/// assert_eq!(weights.unwrap().shape(), &[2, 5, 5]); // averaged over the heads
/// assert_eq!(mha.state_dict().keys().next(), Some("in_proj_weight"));
/// # Ok::<(), strata_nn::NnError>(())
/// ```
pub struct MultiheadAttention<T: Element = f32> {
    /// `[3E, E]`: the query, key and value projections stacked.
    pub in_proj_weight: Var<T>,
    /// `[3E]`, when the layer has biases.
    pub in_proj_bias: Option<Var<T>>,
    /// The output projection `E → E`.
    pub out_proj: Linear<T>,
    config: MhaConfig,
    training: bool,
    rng: Mutex<StdRng>,
}

impl<T: Element> MultiheadAttention<T> {
    /// A layer initialised as PyTorch does, drawing from `rng` in PyTorch's order
    /// (`out_proj`, then `in_proj_weight`).
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) when `embed_dim` is not a positive
    /// multiple of `num_heads` or the dropout probability is outside `[0, 1]`.
    pub fn new<R: Rng + ?Sized>(config: MhaConfig, rng: &mut R) -> Result<Self> {
        const LAYER: &str = "MultiheadAttention";
        let (e, h) = (config.embed_dim, config.num_heads);
        if e == 0 || h == 0 {
            return Err(config_error(
                LAYER,
                format!("embed_dim and num_heads must be greater than 0, got {e} and {h}"),
            ));
        }
        if e % h != 0 {
            return Err(config_error(
                LAYER,
                format!("embed_dim ({e}) must be divisible by num_heads ({h})"),
            ));
        }
        if !(0.0..=1.0).contains(&config.dropout) {
            return Err(config_error(
                LAYER,
                format!(
                    "dropout probability has to be between 0 and 1, but got {}",
                    config.dropout
                ),
            ));
        }
        let (weight, bias) = default_layer_init(&[e, e], config.bias, rng);
        let out_bias = bias.map(|_| Var::parameter(Tensor::zeros(&[e])));
        let out_proj = Linear::from_parameters(weight, out_bias)?;
        let in_proj_weight = Var::parameter(Tensor::zeros(&[3 * e, e]));
        xavier_uniform_(&in_proj_weight, 1.0, rng)?;
        Ok(MultiheadAttention {
            in_proj_weight,
            in_proj_bias: config.bias.then(|| Var::parameter(Tensor::zeros(&[3 * e]))),
            out_proj,
            config,
            training: true,
            rng: Mutex::new(seeded_rng(config.seed)),
        })
    }

    /// The settings the layer was built with.
    pub fn config(&self) -> &MhaConfig {
        &self.config
    }

    /// Whether the layer is in train mode (attention dropout active).
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Attends from `query` to `key`/`value`, like `mha(query, key, value,
    /// key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal)`.
    /// Returns the output and, with `need_weights`, the attention weights (after dropout,
    /// as PyTorch returns them).
    ///
    /// When `query`, `key` and `value` are the same var (self-attention), the three
    /// projections are one packed GEMM, as in PyTorch. With `need_weights = false` the
    /// attention is one fused op; with `need_weights = true` the probabilities are a fused
    /// op of their own (so they can be returned and differentiated) followed by a batched
    /// product, and a query whose every key is masked gives NaN, as PyTorch's
    /// softmax-based weights path does (zeros with `need_weights = false`, as its sdpa
    /// path does).
    ///
    /// # Shapes
    /// query `[L, N, E]` (`[N, L, E]` with `batch_first`, `[L, E]` unbatched), key and
    /// value `[S, N, E]` (likewise). Output like the query; weights `[N, L, S]` averaged
    /// over heads or `[N, num_heads, L, S]` (unbatched: without `N`).
    ///
    /// # Errors
    /// [`NnError::Input`](crate::NnError::Input) naming the shapes when the inputs or masks
    /// do not fit, or `is_causal` is given without `attn_mask`.
    pub fn forward(
        &self,
        query: &Var<T>,
        key: &Var<T>,
        value: &Var<T>,
        options: &MhaForward<'_, T>,
    ) -> Result<(Var<T>, Option<Var<T>>)> {
        let g = self.geometry(query, key, value, options)?;
        let mask = self.merged_mask(&g, options)?;
        let e = self.config.embed_dim;
        let layout = HeadLayout {
            num_heads: self.config.num_heads,
            batch_first: self.config.batch_first,
        };
        let self_attention = query.id() == key.id() && key.id() == value.id();
        let p = if self.training {
            self.config.dropout
        } else {
            0.0
        };
        let mut params = SdpaParams::new(e / self.config.num_heads);
        let mask_ref = mask.as_ref().map(|m| SdpaMask::Additive(m));
        let (attn, weights) = if options.need_weights {
            let (q, k, v) = if self_attention {
                let qkv =
                    functional::linear(query, &self.in_proj_weight, self.in_proj_bias.as_ref())?;
                (
                    qkv.narrow(-1, 0, e)?,
                    qkv.narrow(-1, e, e)?,
                    qkv.narrow(-1, 2 * e, e)?,
                )
            } else {
                self.separate_projections(query, key, value)?
            };
            params.zero_masked_rows = false;
            let (qh, kh, vh) = (self.split(&q)?, self.split(&k)?, self.split(&v)?);
            let probs = qh.attention_probs(&kh, mask_ref, params)?;
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            let probs = functional::dropout(&probs, p, p > 0.0, &mut *rng)?;
            let attn = self.merge(&probs.matmul(&vh)?, g.batched)?;
            let weights = if options.average_attn_weights {
                probs.mean(&[1], false)?
            } else {
                probs
            };
            let weights = if g.batched {
                weights
            } else {
                weights.squeeze(0)?
            };
            (attn, Some(weights))
        } else {
            let scores = [g.n, self.config.num_heads, g.l, g.s];
            let dropout = {
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                dropout_multiplier("MultiheadAttention", p, &scores, &mut *rng)?
            };
            params.is_causal = g.causal;
            let attn = if self_attention {
                let qkv =
                    functional::linear(query, &self.in_proj_weight, self.in_proj_bias.as_ref())?;
                qkv.packed_multi_head_attention(layout, mask_ref, dropout.as_ref(), params)?
            } else {
                let (q, k, v) = self.separate_projections(query, key, value)?;
                q.multi_head_attention(&k, &v, layout, mask_ref, dropout.as_ref(), params)?
            };
            (attn, None)
        };
        let out = functional::linear(&attn, &self.out_proj.weight, self.out_proj.bias.as_ref())?;
        Ok((out, weights))
    }

    /// Attention over projected keys and values kept in `cache`, for incremental
    /// decoding: the query is projected, and `new_kv` (when given) is projected into keys
    /// and values appended to the cache, so each step projects only its new tokens
    /// (self-attention: the new tokens; cross-attention: the memory, once). The result is
    /// exactly [`forward`](MultiheadAttention::forward) of the same query over all cached
    /// positions with the same masks (`options.attn_mask` `[L, S]` over all `S` cached
    /// positions, `key_padding_mask` `[N, S]`); no weights are returned. Attention dropout
    /// is not applied, so a layer in train mode with dropout is refused.
    ///
    /// # Errors
    /// [`NnError::Input`](crate::NnError::Input) when the shapes or masks do not fit, the
    /// cache is empty and `new_kv` is `None`, or dropout would apply.
    pub fn forward_cached(
        &self,
        query: &Var<T>,
        new_kv: Option<&Var<T>>,
        cache: &mut KvCache<T>,
        options: &MhaForward<'_, T>,
    ) -> Result<Var<T>> {
        const LAYER: &str = "MultiheadAttention";
        if self.training && self.config.dropout > 0.0 {
            return Err(input_error(
                LAYER,
                "cached attention applies no dropout: call eval() first",
            ));
        }
        let e = self.config.embed_dim;
        let project = |x: &Var<T>, i: usize| -> Result<Var<T>> {
            let w = self.in_proj_weight.narrow(0, i * e, e)?;
            let b = self
                .in_proj_bias
                .as_ref()
                .map(|b| b.narrow(0, i * e, e))
                .transpose()?;
            functional::linear(x, &w, b.as_ref())
        };
        let seq_dim: isize = if query.ndim() == 3 && self.config.batch_first {
            1
        } else {
            0
        };
        if let Some(x) = new_kv {
            let (k, v) = (project(x, 1)?, project(x, 2)?);
            let (k, v) = match (cache.keys.take(), cache.values.take()) {
                (Some(ok), Some(ov)) => {
                    (Var::cat(&[ok, k], seq_dim)?, Var::cat(&[ov, v], seq_dim)?)
                }
                _ => (k, v),
            };
            cache.keys = Some(k);
            cache.values = Some(v);
        }
        let (Some(k), Some(v)) = (&cache.keys, &cache.values) else {
            return Err(input_error(
                LAYER,
                "the cache is empty and no keys were given",
            ));
        };
        let g = self.geometry(query, k, v, options)?;
        let mask = self.merged_mask(&g, options)?;
        let layout = HeadLayout {
            num_heads: self.config.num_heads,
            batch_first: self.config.batch_first,
        };
        let mut params = SdpaParams::new(e / self.config.num_heads);
        params.is_causal = g.causal;
        let mask_ref = mask.as_ref().map(|m| SdpaMask::Additive(m));
        let q = project(query, 0)?;
        let attn = q.multi_head_attention(k, v, layout, mask_ref, None, params)?;
        functional::linear(&attn, &self.out_proj.weight, self.out_proj.bias.as_ref())
    }

    /// The query, key and value projections through the three row blocks of
    /// `in_proj_weight` (and `in_proj_bias`).
    fn separate_projections(
        &self,
        query: &Var<T>,
        key: &Var<T>,
        value: &Var<T>,
    ) -> Result<(Var<T>, Var<T>, Var<T>)> {
        let e = self.config.embed_dim;
        let project = |x: &Var<T>, i: usize| -> Result<Var<T>> {
            let w = self.in_proj_weight.narrow(0, i * e, e)?;
            let b = self
                .in_proj_bias
                .as_ref()
                .map(|b| b.narrow(0, i * e, e))
                .transpose()?;
            functional::linear(x, &w, b.as_ref())
        };
        Ok((project(query, 0)?, project(key, 1)?, project(value, 2)?))
    }

    /// A token-major projection `[.., E]` seen as `[N, H, len, D]` (a view).
    fn split(&self, x: &Var<T>) -> Result<Var<T>> {
        let (h, d) = (
            self.config.num_heads,
            self.config.embed_dim / self.config.num_heads,
        );
        let s = x.shape().to_vec();
        Ok(match (s.as_slice(), self.config.batch_first) {
            (&[l, _], _) => x.reshape([1, l, h, d])?.permute(&[0, 2, 1, 3])?,
            (&[n, l, _], true) => x.reshape([n, l, h, d])?.permute(&[0, 2, 1, 3])?,
            (&[l, n, _], false) => x.reshape([l, n, h, d])?.permute(&[1, 2, 0, 3])?,
            _ => unreachable!("checked rank 2 or 3"),
        })
    }

    /// `[N, H, L, D]` back to the token-major layout `[.., E]`.
    fn merge(&self, x: &Var<T>, batched: bool) -> Result<Var<T>> {
        let (n, l, e) = (x.shape()[0], x.shape()[2], self.config.embed_dim);
        Ok(match (batched, self.config.batch_first) {
            (false, _) => x.permute(&[0, 2, 1, 3])?.reshape([l, e])?,
            (true, true) => x.permute(&[0, 2, 1, 3])?.reshape([n, l, e])?,
            (true, false) => x.permute(&[2, 0, 1, 3])?.reshape([l, n, e])?,
        })
    }
}

/// Projected keys and values of the positions attended so far, for
/// [`MultiheadAttention::forward_cached`]; starts empty.
#[derive(Clone, Default)]
pub struct KvCache<T: Element = f32> {
    keys: Option<Var<T>>,
    values: Option<Var<T>>,
}

impl<T: Element> KvCache<T> {
    /// An empty cache.
    pub fn new() -> Self {
        KvCache {
            keys: None,
            values: None,
        }
    }

    /// The number of cached positions, given the layer's layout (`batch_first`).
    pub fn len(&self, batch_first: bool) -> usize {
        self.keys.as_ref().map_or(0, |k| {
            let s = k.shape();
            if s.len() == 3 && batch_first {
                s[1]
            } else {
                s[0]
            }
        })
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.keys.is_none()
    }
}

/// The sizes of one forward call, after checking the inputs.
struct Geometry {
    batched: bool,
    n: usize,
    l: usize,
    s: usize,
    /// Use the causal cut instead of the masks (PyTorch's `is_causal` hint honoured).
    causal: bool,
}

impl<T: Element> MultiheadAttention<T> {
    fn geometry(
        &self,
        query: &Var<T>,
        key: &Var<T>,
        value: &Var<T>,
        options: &MhaForward<'_, T>,
    ) -> Result<Geometry> {
        const LAYER: &str = "MultiheadAttention";
        let e = self.config.embed_dim;
        let (qs, ks, vs) = (query.shape(), key.shape(), value.shape());
        let batched = qs.len() == 3;
        let layout = if !batched {
            "[L, E] (unbatched)"
        } else if self.config.batch_first {
            "[N, L, E]"
        } else {
            "[L, N, E]"
        };
        let ok = (qs.len() == 2 || batched)
            && ks.len() == qs.len()
            && ks == vs
            && qs[qs.len() - 1] == e
            && ks[ks.len() - 1] == e;
        let (n, l, s) = match (batched, self.config.batch_first) {
            _ if !ok => (0, 0, 0),
            (false, _) => (1, qs[0], ks[0]),
            (true, true) => (qs[0], qs[1], ks[1]),
            (true, false) => (qs[1], qs[0], ks[0]),
        };
        let same_batch = !ok
            || !batched
            || if self.config.batch_first {
                ks[0] == n
            } else {
                ks[1] == n
            };
        if !ok || !same_batch {
            return Err(input_error(
                LAYER,
                format!(
                    "expected query {layout} with E = {e} and key and value of one shape with the \
                     same batch and E, got query {qs:?}, key {ks:?}, value {vs:?}"
                ),
            ));
        }
        if let Some(m) = options.key_padding_mask {
            let want: &[usize] = if batched { &[n, s] } else { &[s] };
            if m.shape() != want {
                return Err(input_error(
                    LAYER,
                    format!(
                        "expected key_padding_mask of shape {want:?}, got {:?}",
                        m.shape()
                    ),
                ));
            }
        }
        let heads = self.config.num_heads;
        if let Some(m) = options.attn_mask {
            let ok = m.shape() == [l, s] || m.shape() == [n * heads, l, s];
            if !ok {
                return Err(input_error(
                    LAYER,
                    format!(
                        "the attn_mask must be [L, S] = {:?} or [N·num_heads, L, S] = {:?}, got {:?}",
                        [l, s],
                        [n * heads, l, s],
                        m.shape()
                    ),
                ));
            }
        }
        if options.is_causal && options.attn_mask.is_none() {
            return Err(input_error(
                LAYER,
                "is_causal is a hint that attn_mask is the causal mask: the mask must be given \
                 (see AttnMask::square_subsequent)",
            ));
        }
        let causal =
            options.is_causal && options.key_padding_mask.is_none() && !options.need_weights;
        Ok(Geometry {
            batched,
            n,
            l,
            s,
            causal,
        })
    }

    /// `attn_mask` and `key_padding_mask` merged into one additive mask broadcastable to
    /// `[N, H, L, S]`, as `F.multi_head_attention_forward` merges them.
    fn merged_mask(&self, g: &Geometry, options: &MhaForward<'_, T>) -> Result<Option<Tensor<T>>> {
        let attn = if g.causal {
            None
        } else {
            options
                .attn_mask
                .map(|m| {
                    let t = m.blocking_additive();
                    if t.ndim() == 2 {
                        t.reshape([1, 1, g.l, g.s])
                    } else {
                        t.reshape([g.n, self.config.num_heads, g.l, g.s])
                    }
                })
                .transpose()?
        };
        let padding = options
            .key_padding_mask
            .map(|m| m.blocking_additive().reshape([g.n, 1, 1, g.s]))
            .transpose()?;
        Ok(match (attn, padding) {
            (Some(a), Some(p)) => Some(a.add(&p)?),
            (a, p) => a.or(p),
        })
    }
}

impl<T: Element> Module<T> for MultiheadAttention<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        f("in_proj_weight", &self.in_proj_weight, StateKind::Parameter);
        if let Some(b) = &self.in_proj_bias {
            f("in_proj_bias", b, StateKind::Parameter);
        }
        visit_child("out_proj", &self.out_proj, f);
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}
