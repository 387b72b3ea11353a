//! Transformer encoders and positional encodings.

use strata_autograd::Var;
use strata_tensor::rand::Rng;
use strata_tensor::{Element, Tensor};

use crate::error::{config_error, input_error};
use crate::functional::AttnMask;
use crate::layers::attention::{MhaConfig, MhaForward, MultiheadAttention};
use crate::{Dropout, Forward, LayerNorm, Linear, Module, Result, StateKind, visit_child};

/// The activation of a transformer layer's feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TransformerActivation {
    /// `F.relu` (PyTorch's default).
    #[default]
    Relu,
    /// `F.gelu`, the exact (erf) form.
    Gelu,
}

/// The settings of a [`TransformerEncoderLayer`]; [`TransformerEncoderLayerConfig::new`]
/// gives PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransformerEncoderLayerConfig {
    /// The model width `E`.
    pub d_model: usize,
    /// The number of attention heads.
    pub nhead: usize,
    /// The feed-forward block's hidden width (2048).
    pub dim_feedforward: usize,
    /// Dropout probability of the attention weights, the feed-forward hidden layer and
    /// both residual branches (0.1).
    pub dropout: f64,
    /// The feed-forward activation (ReLU).
    pub activation: TransformerActivation,
    /// The layer norms' eps (1e-5).
    pub layer_norm_eps: f64,
    /// Inputs `[N, L, E]` rather than `[L, N, E]` (false).
    pub batch_first: bool,
    /// Normalise before each block (pre-norm) rather than after the residual (false).
    pub norm_first: bool,
    /// Biases in the linear layers and the layer norms (true).
    pub bias: bool,
    /// Seed of the dropout RNGs (0): the attention uses `seed`, the dropouts after the
    /// activation and the two residual branches `seed + 1`, `seed + 2` and `seed + 3`.
    pub seed: u64,
}

impl TransformerEncoderLayerConfig {
    /// `d_model` and `nhead`, the rest PyTorch's defaults.
    pub fn new(d_model: usize, nhead: usize) -> Self {
        TransformerEncoderLayerConfig {
            d_model,
            nhead,
            dim_feedforward: 2048,
            dropout: 0.1,
            activation: TransformerActivation::Relu,
            layer_norm_eps: 1e-5,
            batch_first: false,
            norm_first: false,
            bias: true,
            seed: 0,
        }
    }

    /// The feed-forward hidden width.
    pub fn dim_feedforward(mut self, dim: usize) -> Self {
        self.dim_feedforward = dim;
        self
    }

    /// The dropout probability.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// The feed-forward activation.
    pub fn activation(mut self, activation: TransformerActivation) -> Self {
        self.activation = activation;
        self
    }

    /// The layer norms' eps.
    pub fn layer_norm_eps(mut self, eps: f64) -> Self {
        self.layer_norm_eps = eps;
        self
    }

    /// Whether inputs are `[N, L, E]`.
    pub fn batch_first(mut self, batch_first: bool) -> Self {
        self.batch_first = batch_first;
        self
    }

    /// Pre-norm (true) or post-norm (false).
    pub fn norm_first(mut self, norm_first: bool) -> Self {
        self.norm_first = norm_first;
        self
    }

    /// Whether the linear layers and layer norms have biases.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// The dropout RNGs' seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// One transformer encoder layer, like `nn.TransformerEncoderLayer(d_model, nhead,
/// dim_feedforward, dropout, activation, layer_norm_eps, batch_first, norm_first, bias)`:
/// self-attention then a feed-forward block, each with a residual connection and a layer
/// norm (after the residual by default, before the block with `norm_first`). Submodules and
/// state-dict keys are PyTorch's: `self_attn.in_proj_weight`, …, `linear1`, `linear2`,
/// `norm1`, `norm2`.
///
/// ```
/// use strata_nn::{Forward, Module, TransformerEncoderLayer, TransformerEncoderLayerConfig};
/// use strata_autograd::Var;
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let mut rng = seeded_rng(0);
/// let config = TransformerEncoderLayerConfig::new(16, 4).dim_feedforward(32).batch_first(true);
/// let layer = TransformerEncoderLayer::<f32>::new(config, &mut rng)?;
/// let y = layer.forward(&Var::new(Tensor::randn(&[2, 5, 16], &mut rng)))?;
/// assert_eq!(y.shape(), &[2, 5, 16]);
/// assert_eq!(layer.state_dict().len(), 12);
/// # Ok::<(), strata_nn::NnError>(())
/// ```
pub struct TransformerEncoderLayer<T: Element = f32> {
    /// The self-attention.
    pub self_attn: MultiheadAttention<T>,
    /// `d_model → dim_feedforward`.
    pub linear1: Linear<T>,
    /// After the activation.
    pub dropout: Dropout,
    /// `dim_feedforward → d_model`.
    pub linear2: Linear<T>,
    /// The attention block's norm.
    pub norm1: LayerNorm<T>,
    /// The feed-forward block's norm.
    pub norm2: LayerNorm<T>,
    /// On the attention block's output.
    pub dropout1: Dropout,
    /// On the feed-forward block's output.
    pub dropout2: Dropout,
    config: TransformerEncoderLayerConfig,
}

impl<T: Element> TransformerEncoderLayer<T> {
    /// A layer initialised as PyTorch does (the attention's projections, then `linear1`,
    /// then `linear2`, drawn from `rng`; the norms at weight 1 and bias 0).
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) when `d_model` is not a positive
    /// multiple of `nhead` or the dropout probability is outside `[0, 1]`.
    pub fn new<R: Rng + ?Sized>(
        config: TransformerEncoderLayerConfig,
        rng: &mut R,
    ) -> Result<Self> {
        let c = config;
        let mha = MhaConfig::new(c.d_model, c.nhead)
            .dropout(c.dropout)
            .bias(c.bias)
            .batch_first(c.batch_first)
            .seed(c.seed);
        let self_attn = MultiheadAttention::new(mha, rng)?;
        let linear1 = Linear::new(c.d_model, c.dim_feedforward, c.bias, rng);
        let linear2 = Linear::new(c.dim_feedforward, c.d_model, c.bias, rng);
        let norm = || LayerNorm::with_options(&[c.d_model], c.layer_norm_eps, true, c.bias);
        Ok(TransformerEncoderLayer {
            self_attn,
            linear1,
            dropout: Dropout::new(c.dropout, c.seed.wrapping_add(1))?,
            linear2,
            norm1: norm(),
            norm2: norm(),
            dropout1: Dropout::new(c.dropout, c.seed.wrapping_add(2))?,
            dropout2: Dropout::new(c.dropout, c.seed.wrapping_add(3))?,
            config,
        })
    }

    /// The settings the layer was built with.
    pub fn config(&self) -> &TransformerEncoderLayerConfig {
        &self.config
    }

    /// A layer with the same settings and copies of this one's parameter values, its
    /// dropout RNGs seeded from `seed` (how [`TransformerEncoder`] deep-copies its layer).
    fn copy_with_seed(&self, seed: u64) -> Result<Self> {
        let config = TransformerEncoderLayerConfig {
            seed,
            ..self.config
        };
        let mut rng = strata_tensor::seeded_rng(seed);
        let copy = TransformerEncoderLayer::new(config, &mut rng)?;
        copy.load_state_dict(&self.state_dict(), true)?;
        let mut copy = copy;
        copy.set_training(self.dropout.is_training());
        Ok(copy)
    }

    /// The layer with masks, like `layer(src, src_mask, src_key_padding_mask, is_causal)`.
    /// Masks follow `nn.MultiheadAttention`: a boolean `true` means *not allowed*.
    ///
    /// # Shapes
    /// src `[L, N, E]` (`[N, L, E]` with `batch_first`, `[L, E]` unbatched); `src_mask`
    /// `[L, L]` or `[N·nhead, L, L]`; `src_key_padding_mask` `[N, L]` (`[L]` unbatched).
    /// Output like `src`.
    ///
    /// # Errors
    /// As [`MultiheadAttention::forward`] (the input or masks do not fit; `is_causal`
    /// without `src_mask`).
    pub fn forward_with(
        &self,
        src: &Var<T>,
        src_mask: Option<&AttnMask<T>>,
        src_key_padding_mask: Option<&AttnMask<T>>,
        is_causal: bool,
    ) -> Result<Var<T>> {
        let sa = |x: &Var<T>| -> Result<Var<T>> {
            let options = MhaForward {
                key_padding_mask: src_key_padding_mask,
                need_weights: false,
                attn_mask: src_mask,
                average_attn_weights: true,
                is_causal,
            };
            let (y, _) = self.self_attn.forward(x, x, x, &options)?;
            self.dropout1.forward(&y)
        };
        let ff = |x: &Var<T>| -> Result<Var<T>> {
            let h = feed_forward_hidden(&self.linear1, self.config.activation, x)?;
            let h = self.dropout.forward(&h)?;
            self.dropout2.forward(&self.linear2.forward(&h)?)
        };
        if self.config.norm_first {
            let x = src.add(&sa(&self.norm1.forward(src)?)?)?;
            Ok(x.add(&ff(&self.norm2.forward(&x)?)?)?)
        } else {
            let x = self.norm1.forward(&src.add(&sa(src)?)?)?;
            self.norm2.forward(&x.add(&ff(&x)?)?)
        }
    }
}

/// A feed-forward block's hidden layer, `activation(linear1(x))`; ReLU is fused into the
/// product ([`Var::linear_relu`]: no pass of its own over the `[*, dim_feedforward]`
/// hidden values).
pub(crate) fn feed_forward_hidden<T: Element>(
    linear1: &Linear<T>,
    activation: TransformerActivation,
    x: &Var<T>,
) -> Result<Var<T>> {
    match activation {
        TransformerActivation::Relu => Ok(x.linear_relu(&linear1.weight, linear1.bias.as_ref())?),
        TransformerActivation::Gelu => Ok(linear1.forward(x)?.gelu()),
    }
}

impl<T: Element> Module<T> for TransformerEncoderLayer<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        visit_child("self_attn", &self.self_attn, f);
        visit_child("linear1", &self.linear1, f);
        visit_child("linear2", &self.linear2, f);
        visit_child("norm1", &self.norm1, f);
        visit_child("norm2", &self.norm2, f);
    }

    fn set_training(&mut self, training: bool) {
        Module::<T>::set_training(&mut self.self_attn, training);
        for d in [&mut self.dropout, &mut self.dropout1, &mut self.dropout2] {
            Module::<T>::set_training(d, training);
        }
    }
}

impl<T: Element> Forward<T> for TransformerEncoderLayer<T> {
    /// The layer without masks.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        self.forward_with(x, None, None, false)
    }
}

/// A stack of `num_layers` transformer encoder layers and an optional final layer norm,
/// like `nn.TransformerEncoder(encoder_layer, num_layers, norm)`. As in PyTorch, every layer
/// starts as a copy of the same freshly initialised layer (PyTorch deep-copies the layer it
/// is given); the final norm is `LayerNorm(d_model, eps = layer_norm_eps, bias)`. Keys:
/// `layers.{i}.…`, then `norm.weight`, `norm.bias`.
///
/// ```
/// use strata_nn::{Forward, Module, TransformerEncoder, TransformerEncoderLayerConfig};
/// use strata_autograd::Var;
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let mut rng = seeded_rng(0);
/// let config = TransformerEncoderLayerConfig::new(8, 2).dim_feedforward(16);
/// let encoder = TransformerEncoder::<f32>::new(config, 2, true, &mut rng)?;
/// let y = encoder.forward(&Var::new(Tensor::randn(&[5, 3, 8], &mut rng)))?; // [L, N, E]
/// assert_eq!(y.shape(), &[5, 3, 8]);
/// assert!(encoder.state_dict().get("layers.1.norm2.bias").is_some());
/// assert!(encoder.state_dict().get("norm.weight").is_some());
/// # Ok::<(), strata_nn::NnError>(())
/// ```
pub struct TransformerEncoder<T: Element = f32> {
    /// The layers, applied in order.
    pub layers: Vec<TransformerEncoderLayer<T>>,
    /// The final norm, when there is one.
    pub norm: Option<LayerNorm<T>>,
}

impl<T: Element> TransformerEncoder<T> {
    /// `num_layers` copies of a layer built from `layer_config` and `rng`, the copy `i`'s
    /// dropout RNGs seeded with `layer_config.seed + 4·i`, and a final norm when
    /// `final_norm`.
    ///
    /// # Errors
    /// As [`TransformerEncoderLayer::new`].
    pub fn new<R: Rng + ?Sized>(
        layer_config: TransformerEncoderLayerConfig,
        num_layers: usize,
        final_norm: bool,
        rng: &mut R,
    ) -> Result<Self> {
        let first = TransformerEncoderLayer::new(layer_config, rng)?;
        let layers = (0..num_layers)
            .map(|i| first.copy_with_seed(layer_config.seed.wrapping_add(4 * i as u64)))
            .collect::<Result<Vec<_>>>()?;
        let c = layer_config;
        Ok(TransformerEncoder {
            layers,
            norm: final_norm
                .then(|| LayerNorm::with_options(&[c.d_model], c.layer_norm_eps, true, c.bias)),
        })
    }

    /// The encoder with masks, like `encoder(src, mask, src_key_padding_mask, is_causal)`:
    /// every layer gets the same masks (see [`TransformerEncoderLayer::forward_with`]).
    ///
    /// # Errors
    /// As [`TransformerEncoderLayer::forward_with`].
    pub fn forward_with(
        &self,
        src: &Var<T>,
        mask: Option<&AttnMask<T>>,
        src_key_padding_mask: Option<&AttnMask<T>>,
        is_causal: bool,
    ) -> Result<Var<T>> {
        let mut x = src.clone();
        for layer in &self.layers {
            x = layer.forward_with(&x, mask, src_key_padding_mask, is_causal)?;
        }
        match &self.norm {
            Some(norm) => norm.forward(&x),
            None => Ok(x),
        }
    }
}

impl<T: Element> Module<T> for TransformerEncoder<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        for (i, layer) in self.layers.iter().enumerate() {
            visit_child(&format!("layers.{i}"), layer, f);
        }
        if let Some(norm) = &self.norm {
            visit_child("norm", norm, f);
        }
    }

    fn set_training(&mut self, training: bool) {
        for layer in &mut self.layers {
            layer.set_training(training);
        }
    }
}

impl<T: Element> Forward<T> for TransformerEncoder<T> {
    /// The encoder without masks.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        self.forward_with(x, None, None, false)
    }
}

/// Checks that `x` is `[N, L, E]` or `[L, E]` with `E = d_model` and `L <= max_len`, and
/// returns `L`.
fn check_positions<T: Element>(
    layer: &'static str,
    x: &Var<T>,
    d_model: usize,
    max_len: usize,
) -> Result<usize> {
    let s = x.shape();
    let ok = (s.len() == 2 || s.len() == 3) && s[s.len() - 1] == d_model;
    if !ok {
        return Err(input_error(
            layer,
            format!("expected input [N, L, {d_model}] or [L, {d_model}], got {s:?}"),
        ));
    }
    let len = s[s.len() - 2];
    if len > max_len {
        return Err(input_error(
            layer,
            format!("the input has {len} positions, more than max_len = {max_len} (shape {s:?})"),
        ));
    }
    Ok(len)
}

/// The fixed sine/cosine position table of "Attention Is All You Need", added to the input:
/// `pe[pos, 2i] = sin(pos · w_i)`, `pe[pos, 2i+1] = cos(pos · w_i)`, `w_i =
/// exp(−2i · ln(10000) / d_model)`, as in PyTorch's transformer tutorial (which computes the
/// same table). The input is batch-first, `[N, L, E]` (or `[L, E]`), unlike the tutorial's
/// `[L, N, E]`; there is no dropout. The table is a non-persistent buffer: it has no
/// parameters and is not in the state dict.
///
/// ```
/// use strata_nn::{Forward, SinusoidalPositionalEncoding};
/// use strata_autograd::Var;
/// use strata_tensor::Tensor;
///
/// let pe = SinusoidalPositionalEncoding::<f32>::new(4, 100)?;
/// let y = pe.forward(&Var::new(Tensor::zeros(&[2, 3, 4])))?;
/// assert_eq!(y.to_vec()[..4], [0.0, 1.0, 0.0, 1.0]); // position 0: sin 0, cos 0
/// # Ok::<(), strata_nn::NnError>(())
/// ```
pub struct SinusoidalPositionalEncoding<T: Element = f32> {
    /// `[max_len, d_model]`.
    table: Tensor<T>,
}

impl<T: Element> SinusoidalPositionalEncoding<T> {
    /// The table for `max_len` positions of width `d_model` (an odd width ends with a sine
    /// column), computed in f64.
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) when `d_model` is 0.
    pub fn new(d_model: usize, max_len: usize) -> Result<Self> {
        if d_model == 0 {
            return Err(config_error(
                "SinusoidalPositionalEncoding",
                "d_model must be positive",
            ));
        }
        let step = -(10000f64.ln()) / d_model as f64;
        let mut data = Vec::with_capacity(max_len * d_model);
        for pos in 0..max_len {
            for j in 0..d_model {
                let angle = pos as f64 * ((j - j % 2) as f64 * step).exp();
                data.push(T::from_f64(if j % 2 == 0 {
                    angle.sin()
                } else {
                    angle.cos()
                }));
            }
        }
        Ok(SinusoidalPositionalEncoding {
            table: Tensor::from_vec(data, &[max_len, d_model])?,
        })
    }

    /// The table, `[max_len, d_model]`.
    pub fn table(&self) -> &Tensor<T> {
        &self.table
    }
}

impl<T: Element> Module<T> for SinusoidalPositionalEncoding<T> {
    fn visit_state(&self, _f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {}
}

impl<T: Element> Forward<T> for SinusoidalPositionalEncoding<T> {
    /// `x + pe[:L]` for `x` `[N, L, E]` or `[L, E]`.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let (max_len, d) = (self.table.shape()[0], self.table.shape()[1]);
        let len = check_positions("SinusoidalPositionalEncoding", x, d, max_len)?;
        Ok(x.add(&Var::new(self.table.narrow(0, 0, len)?))?)
    }
}

/// A learned position embedding added to the input: a parameter `weight`
/// `[max_len, d_model]`, initialised standard normal like `nn.Embedding`; `x [N, L, E]`
/// (or `[L, E]`) becomes `x + weight[:L]`.
///
/// ```
/// use strata_nn::{Forward, LearnedPositionalEncoding, Module};
/// use strata_autograd::Var;
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let pe = LearnedPositionalEncoding::<f32>::new(10, 4, &mut seeded_rng(0))?;
/// let y = pe.forward(&Var::new(Tensor::zeros(&[2, 3, 4])))?;
/// assert_eq!(y.shape(), &[2, 3, 4]);
/// assert_eq!(pe.state_dict().keys().collect::<Vec<_>>(), ["weight"]);
/// # Ok::<(), strata_nn::NnError>(())
/// ```
pub struct LearnedPositionalEncoding<T: Element = f32> {
    /// `[max_len, d_model]`.
    pub weight: Var<T>,
}

impl<T: Element> LearnedPositionalEncoding<T> {
    /// A table of `max_len` positions of width `d_model`, drawn from `rng`.
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) when `d_model` is 0.
    pub fn new<R: Rng + ?Sized>(max_len: usize, d_model: usize, rng: &mut R) -> Result<Self> {
        if d_model == 0 {
            return Err(config_error(
                "LearnedPositionalEncoding",
                "d_model must be positive",
            ));
        }
        Ok(LearnedPositionalEncoding {
            weight: Var::parameter(Tensor::randn(&[max_len, d_model], rng)),
        })
    }
}

impl<T: Element> Module<T> for LearnedPositionalEncoding<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        f("weight", &self.weight, StateKind::Parameter);
    }
}

impl<T: Element> Forward<T> for LearnedPositionalEncoding<T> {
    /// `x + weight[:L]` for `x` `[N, L, E]` or `[L, E]`.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let (max_len, d) = (self.weight.shape()[0], self.weight.shape()[1]);
        let len = check_positions("LearnedPositionalEncoding", x, d, max_len)?;
        Ok(x.add(&self.weight.narrow(0, 0, len)?)?)
    }
}
