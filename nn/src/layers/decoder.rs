//! The decoder side of the transformer: `TransformerDecoderLayer`, `TransformerDecoder`,
//! the encoder–decoder `Transformer`, and `generate_square_subsequent_mask`, with
//! PyTorch's structure, defaults and state-dict keys.

use strata_autograd::Var;
use strata_tensor::rand::Rng;
use strata_tensor::{Element, Tensor};

use crate::error::input_error;
use crate::functional::AttnMask;
use crate::layers::attention::{KvCache, MhaConfig, MhaForward, MultiheadAttention};
use crate::layers::transformer::{
    TransformerEncoder, TransformerEncoderLayerConfig, feed_forward_hidden,
};
use crate::{Dropout, Forward, LayerNorm, Linear, Module, Result, StateKind, visit_child};

/// The causal mask of `size` positions, like
/// `nn.Transformer.generate_square_subsequent_mask(size)`: `[size, size]`, 0 on and below
/// the diagonal and `-inf` above it (an additive mask: position `i` attends to `j <= i`).
///
/// ```
/// use strata_nn::generate_square_subsequent_mask;
///
/// let m = generate_square_subsequent_mask::<f32>(3);
/// assert_eq!(m.tensor().to_vec(), vec![0.0, f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0, 0.0, f32::NEG_INFINITY, 0.0, 0.0, 0.0]);
/// ```
pub fn generate_square_subsequent_mask<T: Element>(size: usize) -> AttnMask<T> {
    let values = (0..size * size)
        .map(|k| {
            if k % size.max(1) > k / size.max(1) {
                T::neg_infinity()
            } else {
                T::zero()
            }
        })
        .collect();
    AttnMask::Additive(Tensor::from_vec(values, &[size, size]).expect("size × size values"))
}

/// The masks of a decoder step, like the keyword arguments of PyTorch's
/// `TransformerDecoderLayer.forward`: `true` in a boolean mask means *not allowed*.
#[derive(Clone, Copy)]
pub struct DecoderMasks<'a, T: Element> {
    /// `[T, T]` or `[N·nhead, T, T]` over the target (usually the causal mask).
    pub tgt_mask: Option<&'a AttnMask<T>>,
    /// `[T, S]` or `[N·nhead, T, S]` from the target to the memory.
    pub memory_mask: Option<&'a AttnMask<T>>,
    /// `[N, T]`: padded target positions.
    pub tgt_key_padding_mask: Option<&'a AttnMask<T>>,
    /// `[N, S]`: padded memory positions.
    pub memory_key_padding_mask: Option<&'a AttnMask<T>>,
    /// A hint that `tgt_mask` is the causal mask.
    pub tgt_is_causal: bool,
    /// A hint that `memory_mask` is causal.
    pub memory_is_causal: bool,
}

impl<T: Element> Default for DecoderMasks<'_, T> {
    fn default() -> Self {
        DecoderMasks {
            tgt_mask: None,
            memory_mask: None,
            tgt_key_padding_mask: None,
            memory_key_padding_mask: None,
            tgt_is_causal: false,
            memory_is_causal: false,
        }
    }
}

/// A transformer decoder layer, like `nn.TransformerDecoderLayer(d_model, nhead,
/// dim_feedforward=2048, dropout=0.1, activation=relu, layer_norm_eps=1e-5,
/// batch_first=False, norm_first=False, bias=True)` (the settings are an encoder layer's):
/// self-attention over the target, attention from the target to the encoder's output
/// (`memory`), then the feed-forward block, each with a residual and a norm (before the
/// block with `norm_first`). Keys: `self_attn.*`, `multihead_attn.*`, `linear1`,
/// `linear2`, `norm1`, `norm2`, `norm3`.
pub struct TransformerDecoderLayer<T: Element = f32> {
    /// Self-attention over the target.
    pub self_attn: MultiheadAttention<T>,
    /// Attention from the target to the memory.
    pub multihead_attn: MultiheadAttention<T>,
    /// `d_model → dim_feedforward`.
    pub linear1: Linear<T>,
    /// After the activation.
    pub dropout: Dropout,
    /// `dim_feedforward → d_model`.
    pub linear2: Linear<T>,
    /// The self-attention block's norm.
    pub norm1: LayerNorm<T>,
    /// The cross-attention block's norm.
    pub norm2: LayerNorm<T>,
    /// The feed-forward block's norm.
    pub norm3: LayerNorm<T>,
    /// On each block's output.
    pub dropout1: Dropout,
    /// On the cross-attention's output.
    pub dropout2: Dropout,
    /// On the feed-forward block's output.
    pub dropout3: Dropout,
    config: TransformerEncoderLayerConfig,
}

impl<T: Element> TransformerDecoderLayer<T> {
    /// A layer initialised as PyTorch does (self-attention, cross-attention, `linear1`,
    /// `linear2` drawn from `rng` in that order; norms at 1 and 0).
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) when `d_model` is not a positive
    /// multiple of `nhead` or the dropout probability is outside `[0, 1]`.
    pub fn new<R: Rng + ?Sized>(
        config: TransformerEncoderLayerConfig,
        rng: &mut R,
    ) -> Result<Self> {
        let c = config;
        let mha = |seed: u64| {
            MhaConfig::new(c.d_model, c.nhead)
                .dropout(c.dropout)
                .bias(c.bias)
                .batch_first(c.batch_first)
                .seed(seed)
        };
        let self_attn = MultiheadAttention::new(mha(c.seed), rng)?;
        let multihead_attn = MultiheadAttention::new(mha(c.seed.wrapping_add(5)), rng)?;
        let linear1 = Linear::new(c.d_model, c.dim_feedforward, c.bias, rng);
        let linear2 = Linear::new(c.dim_feedforward, c.d_model, c.bias, rng);
        let norm = || LayerNorm::with_options(&[c.d_model], c.layer_norm_eps, true, c.bias);
        let dropout = |k: u64| Dropout::new(c.dropout, c.seed.wrapping_add(k));
        Ok(TransformerDecoderLayer {
            self_attn,
            multihead_attn,
            linear1,
            dropout: dropout(1)?,
            linear2,
            norm1: norm(),
            norm2: norm(),
            norm3: norm(),
            dropout1: dropout(2)?,
            dropout2: dropout(3)?,
            dropout3: dropout(4)?,
            config,
        })
    }

    /// The settings the layer was built with.
    pub fn config(&self) -> &TransformerEncoderLayerConfig {
        &self.config
    }

    /// A copy with the same settings and parameter values, dropout seeded from `seed`.
    fn copy_with_seed(&self, seed: u64) -> Result<Self> {
        let config = TransformerEncoderLayerConfig {
            seed,
            ..self.config
        };
        let mut copy = TransformerDecoderLayer::new(config, &mut strata_tensor::seeded_rng(seed))?;
        copy.load_state_dict(&self.state_dict(), true)?;
        copy.set_training(self.dropout.is_training());
        Ok(copy)
    }

    /// The layer, like `layer(tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
    /// memory_key_padding_mask, tgt_is_causal, memory_is_causal)`.
    ///
    /// # Shapes
    /// tgt `[T, N, E]` and memory `[S, N, E]` (`[N, T, E]`, `[N, S, E]` with
    /// `batch_first`; `[T, E]`, `[S, E]` unbatched). Output like `tgt`.
    ///
    /// # Errors
    /// As [`MultiheadAttention::forward`].
    pub fn forward_with(
        &self,
        tgt: &Var<T>,
        memory: &Var<T>,
        masks: &DecoderMasks<'_, T>,
    ) -> Result<Var<T>> {
        let mut sa = |x: &Var<T>| -> Result<Var<T>> {
            let options = MhaForward {
                key_padding_mask: masks.tgt_key_padding_mask,
                need_weights: false,
                attn_mask: masks.tgt_mask,
                average_attn_weights: true,
                is_causal: masks.tgt_is_causal,
            };
            let (y, _) = self.self_attn.forward(x, x, x, &options)?;
            self.dropout1.forward(&y)
        };
        let mut mha = |x: &Var<T>| -> Result<Var<T>> {
            let options = MhaForward {
                key_padding_mask: masks.memory_key_padding_mask,
                need_weights: false,
                attn_mask: masks.memory_mask,
                average_attn_weights: true,
                is_causal: masks.memory_is_causal,
            };
            let (y, _) = self.multihead_attn.forward(x, memory, memory, &options)?;
            self.dropout2.forward(&y)
        };
        self.blocks(tgt, &mut sa, &mut mha)
    }

    /// The layer on the newest target positions `tgt` (one or more), with the keys and
    /// values of the earlier positions and of the memory taken from `cache`, for
    /// incremental (autoregressive) decoding: each position attends causally to every
    /// position so far. Equal to the last positions of [`forward_with`] on the whole
    /// target with the causal mask, computing only the new ones. For eval mode (no
    /// dropout).
    ///
    /// # Errors
    /// As [`MultiheadAttention::forward_cached`].
    ///
    /// [`forward_with`]: TransformerDecoderLayer::forward_with
    pub fn forward_incremental(
        &self,
        tgt: &Var<T>,
        memory: &Var<T>,
        cache: &mut DecoderLayerCache<T>,
        memory_key_padding_mask: Option<&AttnMask<T>>,
    ) -> Result<Var<T>> {
        let bf = self.config.batch_first;
        let past = cache.self_attn.len(bf);
        let new = if tgt.ndim() == 3 && bf {
            tgt.shape()[1]
        } else {
            tgt.shape()[0]
        };
        let causal = block_causal_mask::<T>(past, new);
        // The cross-attention's keys and values are the first step's memory's: a later
        // step with another memory would silently attend to the old one.
        match &cache.memory_shape {
            Some(shape) if shape.as_slice() != memory.shape() => {
                return Err(input_error(
                    "TransformerDecoderLayer",
                    format!(
                        "the cache holds the keys and values of a memory of shape {shape:?}, \
                         this step gives one of shape {:?}: start a new DecoderCache for \
                         another memory",
                        memory.shape()
                    ),
                ));
            }
            _ => {}
        }
        let DecoderLayerCache {
            self_attn,
            cross_attn,
            memory_shape,
        } = cache;
        let mut sa = |x: &Var<T>| -> Result<Var<T>> {
            let options = MhaForward {
                attn_mask: Some(&causal),
                need_weights: false,
                ..MhaForward::default()
            };
            self.self_attn
                .forward_cached(x, Some(x), self_attn, &options)
        };
        let mut mha = |x: &Var<T>| -> Result<Var<T>> {
            let options = MhaForward {
                key_padding_mask: memory_key_padding_mask,
                need_weights: false,
                ..MhaForward::default()
            };
            let fresh = cross_attn.is_empty().then_some(memory);
            self.multihead_attn
                .forward_cached(x, fresh, cross_attn, &options)
        };
        let y = self.blocks(tgt, &mut sa, &mut mha)?;
        if memory_shape.is_none() {
            *memory_shape = Some(memory.shape().to_vec());
        }
        Ok(y)
    }

    /// The three residual blocks around the given attentions, in the layer's norm order.
    fn blocks(
        &self,
        tgt: &Var<T>,
        sa: &mut dyn FnMut(&Var<T>) -> Result<Var<T>>,
        mha: &mut dyn FnMut(&Var<T>) -> Result<Var<T>>,
    ) -> Result<Var<T>> {
        let ff = |x: &Var<T>| -> Result<Var<T>> {
            let h = feed_forward_hidden(&self.linear1, self.config.activation, x)?;
            let h = self.dropout.forward(&h)?;
            self.dropout3.forward(&self.linear2.forward(&h)?)
        };
        if self.config.norm_first {
            let x = tgt.add(&sa(&self.norm1.forward(tgt)?)?)?;
            let x = x.add(&mha(&self.norm2.forward(&x)?)?)?;
            Ok(x.add(&ff(&self.norm3.forward(&x)?)?)?)
        } else {
            let x = self.norm1.forward(&tgt.add(&sa(tgt)?)?)?;
            let x = self.norm2.forward(&x.add(&mha(&x)?)?)?;
            self.norm3.forward(&x.add(&ff(&x)?)?)
        }
    }
}

/// The additive mask of `new` positions after `past` cached ones: `[new, past + new]`,
/// position `i` of the new ones sees keys `0..=past + i`.
fn block_causal_mask<T: Element>(past: usize, new: usize) -> AttnMask<T> {
    let total = past + new;
    let values = (0..new * total)
        .map(|k| {
            if k % total > past + k / total {
                T::neg_infinity()
            } else {
                T::zero()
            }
        })
        .collect();
    AttnMask::Additive(Tensor::from_vec(values, &[new, total]).expect("new × total values"))
}

/// The keys and values a decoder layer keeps between incremental steps: those of its
/// self-attention (growing by the new positions each step) and of its cross-attention
/// (the memory's, computed at the first step).
#[derive(Clone, Default)]
pub struct DecoderLayerCache<T: Element = f32> {
    /// The self-attention's keys and values.
    pub self_attn: KvCache<T>,
    /// The cross-attention's keys and values (of the memory).
    pub cross_attn: KvCache<T>,
    /// The shape of the memory they were computed from.
    memory_shape: Option<Vec<usize>>,
}

/// One [`DecoderLayerCache`] per layer of a [`TransformerDecoder`]; start a new one for
/// each sequence (or batch of sequences) decoded.
#[derive(Clone, Default)]
pub struct DecoderCache<T: Element = f32> {
    layers: Vec<DecoderLayerCache<T>>,
}

impl<T: Element> DecoderCache<T> {
    /// An empty cache.
    pub fn new() -> Self {
        DecoderCache { layers: Vec::new() }
    }
}

impl<T: Element> Module<T> for TransformerDecoderLayer<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        visit_child("self_attn", &self.self_attn, f);
        visit_child("multihead_attn", &self.multihead_attn, f);
        visit_child("linear1", &self.linear1, f);
        visit_child("linear2", &self.linear2, f);
        visit_child("norm1", &self.norm1, f);
        visit_child("norm2", &self.norm2, f);
        visit_child("norm3", &self.norm3, f);
    }

    fn set_training(&mut self, training: bool) {
        Module::<T>::set_training(&mut self.self_attn, training);
        Module::<T>::set_training(&mut self.multihead_attn, training);
        for d in [
            &mut self.dropout,
            &mut self.dropout1,
            &mut self.dropout2,
            &mut self.dropout3,
        ] {
            Module::<T>::set_training(d, training);
        }
    }
}

/// A stack of decoder layers and an optional final norm, like
/// `nn.TransformerDecoder(decoder_layer, num_layers, norm)`: every layer starts as a copy
/// of one freshly initialised layer (PyTorch deep-copies the layer it is given). Keys:
/// `layers.{i}.…`, `norm.*`.
pub struct TransformerDecoder<T: Element = f32> {
    /// The layers, applied in order.
    pub layers: Vec<TransformerDecoderLayer<T>>,
    /// The final norm, when there is one.
    pub norm: Option<LayerNorm<T>>,
}

impl<T: Element> TransformerDecoder<T> {
    /// `num_layers` copies of a layer built from `layer_config` and `rng` (copy `i`'s
    /// dropout seeded with `seed + 6·i`), and a final norm when `final_norm`.
    ///
    /// # Errors
    /// As [`TransformerDecoderLayer::new`].
    pub fn new<R: Rng + ?Sized>(
        layer_config: TransformerEncoderLayerConfig,
        num_layers: usize,
        final_norm: bool,
        rng: &mut R,
    ) -> Result<Self> {
        let first = TransformerDecoderLayer::new(layer_config, rng)?;
        let layers = (0..num_layers)
            .map(|i| first.copy_with_seed(layer_config.seed.wrapping_add(6 * i as u64)))
            .collect::<Result<Vec<_>>>()?;
        let c = layer_config;
        Ok(TransformerDecoder {
            layers,
            norm: final_norm
                .then(|| LayerNorm::with_options(&[c.d_model], c.layer_norm_eps, true, c.bias)),
        })
    }

    /// The decoder: every layer gets the memory and the same masks.
    ///
    /// # Errors
    /// As [`TransformerDecoderLayer::forward_with`].
    pub fn forward_with(
        &self,
        tgt: &Var<T>,
        memory: &Var<T>,
        masks: &DecoderMasks<'_, T>,
    ) -> Result<Var<T>> {
        let mut x = tgt.clone();
        for layer in &self.layers {
            x = layer.forward_with(&x, memory, masks)?;
        }
        match &self.norm {
            Some(norm) => norm.forward(&x),
            None => Ok(x),
        }
    }
}

impl<T: Element> TransformerDecoder<T> {
    /// The decoder on the newest target positions, every layer with its cache (see
    /// [`TransformerDecoderLayer::forward_incremental`]): greedy or beam decoding calls it
    /// once per generated token with a fresh [`DecoderCache`] per sequence.
    ///
    /// # Errors
    /// As [`TransformerDecoderLayer::forward_incremental`].
    pub fn forward_incremental(
        &self,
        tgt: &Var<T>,
        memory: &Var<T>,
        cache: &mut DecoderCache<T>,
        memory_key_padding_mask: Option<&AttnMask<T>>,
    ) -> Result<Var<T>> {
        cache
            .layers
            .resize_with(self.layers.len(), DecoderLayerCache::default);
        let mut x = tgt.clone();
        for (layer, c) in self.layers.iter().zip(&mut cache.layers) {
            x = layer.forward_incremental(&x, memory, c, memory_key_padding_mask)?;
        }
        match &self.norm {
            Some(norm) => norm.forward(&x),
            None => Ok(x),
        }
    }
}

impl<T: Element> Module<T> for TransformerDecoder<T> {
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

/// The encoder–decoder transformer of "Attention Is All You Need", like
/// `nn.Transformer(d_model, nhead, num_encoder_layers, num_decoder_layers,
/// dim_feedforward, dropout, activation, layer_norm_eps, batch_first, norm_first, bias)`:
/// an encoder and a decoder, each with a final norm, every matrix re-initialised
/// Xavier-uniform as PyTorch's `_reset_parameters` does. Keys: `encoder.layers.{i}.…`,
/// `encoder.norm.*`, `decoder.layers.{i}.…`, `decoder.norm.*`.
///
/// ```
/// use strata_autograd::Var;
/// use strata_nn::{DecoderMasks, Module, Transformer, TransformerEncoderLayerConfig, generate_square_subsequent_mask};
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let mut rng = seeded_rng(0);
/// let config = TransformerEncoderLayerConfig::new(16, 4).dim_feedforward(32).dropout(0.0).batch_first(true);
/// let model = Transformer::<f32>::new(config, 2, 2, &mut rng)?;
/// let (src, tgt) = (Var::new(Tensor::randn(&[3, 7, 16], &mut rng)), Var::new(Tensor::randn(&[3, 5, 16], &mut rng)));
/// let causal = generate_square_subsequent_mask(5);
/// let masks = DecoderMasks { tgt_mask: Some(&causal), tgt_is_causal: true, ..Default::default() };
/// let y = model.forward_with(&src, &tgt, None, None, &masks)?;
/// assert_eq!(y.shape(), &[3, 5, 16]);
/// assert!(model.state_dict().get("decoder.layers.1.multihead_attn.in_proj_weight").is_some());
/// # Ok::<(), strata_nn::NnError>(())
/// ```
pub struct Transformer<T: Element = f32> {
    /// The encoder (with its final norm).
    pub encoder: TransformerEncoder<T>,
    /// The decoder (with its final norm).
    pub decoder: TransformerDecoder<T>,
}

impl<T: Element> Transformer<T> {
    /// A model of `num_encoder_layers` and `num_decoder_layers` layers of `config`,
    /// initialised from `rng`.
    ///
    /// # Errors
    /// As [`TransformerDecoderLayer::new`].
    pub fn new<R: Rng + ?Sized>(
        config: TransformerEncoderLayerConfig,
        num_encoder_layers: usize,
        num_decoder_layers: usize,
        rng: &mut R,
    ) -> Result<Self> {
        let encoder = TransformerEncoder::new(config, num_encoder_layers, true, rng)?;
        let decoder_config = TransformerEncoderLayerConfig {
            seed: config.seed.wrapping_add(1 << 20),
            ..config
        };
        let decoder = TransformerDecoder::new(decoder_config, num_decoder_layers, true, rng)?;
        let model = Transformer { encoder, decoder };
        for (_, p) in model.named_parameters() {
            if p.ndim() > 1 {
                crate::init::xavier_uniform_(&p, 1.0, rng)?;
            }
        }
        Ok(model)
    }

    /// The model, like `model(src, tgt, src_mask, tgt_mask, memory_mask,
    /// src_key_padding_mask, tgt_key_padding_mask, memory_key_padding_mask)`: the encoder
    /// on `src` (with `src_mask`, `src_key_padding_mask`), the decoder on `tgt` and the
    /// encoder's output.
    ///
    /// # Errors
    /// As the encoder's and decoder's `forward_with`.
    pub fn forward_with(
        &self,
        src: &Var<T>,
        tgt: &Var<T>,
        src_mask: Option<&AttnMask<T>>,
        src_key_padding_mask: Option<&AttnMask<T>>,
        masks: &DecoderMasks<'_, T>,
    ) -> Result<Var<T>> {
        let memory = self
            .encoder
            .forward_with(src, src_mask, src_key_padding_mask, false)?;
        self.decoder.forward_with(tgt, &memory, masks)
    }
}

impl<T: Element> Module<T> for Transformer<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        visit_child("encoder", &self.encoder, f);
        visit_child("decoder", &self.decoder, f);
    }

    fn set_training(&mut self, training: bool) {
        self.encoder.set_training(training);
        self.decoder.set_training(training);
    }
}
