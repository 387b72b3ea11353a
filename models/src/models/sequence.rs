//! The sequence models: character language models (recurrent and transformer), a
//! recurrent forecaster, and a transformer sequence classifier.

use strata_autograd::Var;
use strata_nn::{
    AttnMask, Embedding, Forward, GRU, LSTM, LearnedPositionalEncoding, Linear, Module, RnnConfig,
    StateKind, TransformerActivation, TransformerEncoder, TransformerEncoderLayerConfig,
    visit_child,
};
use strata_tensor::rand::Rng;
use strata_tensor::{IndexTensor, Tensor};

use crate::{ModelsError, Result};

/// Which recurrent layer a model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RecurrentKind {
    /// `nn.LSTM`.
    Lstm,
    /// `nn.GRU`.
    Gru,
}

impl RecurrentKind {
    /// `"lstm"` or `"gru"`.
    pub fn name(self) -> &'static str {
        match self {
            RecurrentKind::Lstm => "lstm",
            RecurrentKind::Gru => "gru",
        }
    }

    /// The kind named `name` (`"lstm"` or `"gru"`).
    ///
    /// # Errors
    /// [`ModelsError::Config`] for another name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "lstm" => Ok(RecurrentKind::Lstm),
            "gru" => Ok(RecurrentKind::Gru),
            other => Err(ModelsError::Config(format!(
                "unknown recurrent layer {other:?} (lstm or gru)"
            ))),
        }
    }
}

/// An LSTM or a GRU behind one interface; its state-dict keys are the layer's own
/// (`weight_ih_l0`, …).
pub enum Recurrent {
    /// An LSTM.
    Lstm(LSTM),
    /// A GRU.
    Gru(GRU),
}

/// The state a [`Recurrent`] layer carries from one call to the next (for generation).
#[derive(Clone)]
pub enum RecurrentState {
    /// `(h, c)` of an LSTM, each `[layers, N, H]`.
    Lstm(Var, Var),
    /// `h` of a GRU, `[layers, N, H]`.
    Gru(Var),
}

impl Recurrent {
    /// A layer of `kind` with `config`.
    ///
    /// # Errors
    /// The layer's configuration errors.
    pub fn new<R: Rng + ?Sized>(
        kind: RecurrentKind,
        config: RnnConfig,
        rng: &mut R,
    ) -> Result<Self> {
        Ok(match kind {
            RecurrentKind::Lstm => Recurrent::Lstm(LSTM::new(config, rng)?),
            RecurrentKind::Gru => Recurrent::Gru(GRU::new(config, rng)?),
        })
    }

    /// Runs the layer over `x` from `state` (zeros when `None`): the output sequence and
    /// the final state.
    ///
    /// # Errors
    /// Shape errors of the layer, or a state of the other kind.
    pub fn forward(
        &self,
        x: &Var,
        state: Option<&RecurrentState>,
    ) -> strata_nn::Result<(Var, RecurrentState)> {
        match (self, state) {
            (Recurrent::Lstm(l), None) => {
                let (y, (h, c)) = l.forward(x, None)?;
                Ok((y, RecurrentState::Lstm(h, c)))
            }
            (Recurrent::Lstm(l), Some(RecurrentState::Lstm(h0, c0))) => {
                let (y, (h, c)) = l.forward(x, Some((h0, c0)))?;
                Ok((y, RecurrentState::Lstm(h, c)))
            }
            (Recurrent::Gru(g), None) => {
                let (y, h) = g.forward(x, None)?;
                Ok((y, RecurrentState::Gru(h)))
            }
            (Recurrent::Gru(g), Some(RecurrentState::Gru(h0))) => {
                let (y, h) = g.forward(x, Some(h0))?;
                Ok((y, RecurrentState::Gru(h)))
            }
            _ => Err(strata_nn::NnError::Input {
                layer: "Recurrent",
                msg: "the state belongs to the other kind of layer (LSTM vs GRU)".into(),
            }),
        }
    }
}

impl Module for Recurrent {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        match self {
            Recurrent::Lstm(l) => l.visit_state(f),
            Recurrent::Gru(g) => g.visit_state(f),
        }
    }

    fn set_training(&mut self, training: bool) {
        match self {
            Recurrent::Lstm(l) => l.set_training(training),
            Recurrent::Gru(g) => g.set_training(training),
        }
    }
}

/// The shape of a [`CharRnn`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CharRnnConfig {
    /// Characters in the vocabulary.
    pub vocab: usize,
    /// Embedding width.
    pub embed_dim: usize,
    /// Hidden size of the recurrent layer.
    pub hidden: usize,
    /// Stacked recurrent layers.
    pub layers: usize,
    /// LSTM or GRU.
    pub kind: RecurrentKind,
    /// Dropout between recurrent layers.
    pub dropout: f64,
}

/// A character-level language model: embedding → LSTM/GRU → linear head over the
/// vocabulary. State-dict keys `embed.weight`, `rnn.weight_ih_l0`, …, `head.weight`.
pub struct CharRnn {
    /// The character embedding.
    pub embed: Embedding,
    /// The recurrent layers (batch-first).
    pub rnn: Recurrent,
    /// Logits over the vocabulary.
    pub head: Linear,
    config: CharRnnConfig,
}

impl CharRnn {
    /// A freshly initialised model.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for a zero size; layer configuration errors.
    pub fn new<R: Rng + ?Sized>(config: CharRnnConfig, rng: &mut R) -> Result<Self> {
        if config.vocab == 0 || config.embed_dim == 0 || config.hidden == 0 || config.layers == 0 {
            return Err(ModelsError::Config(format!(
                "char-rnn sizes must be positive, got {config:?}"
            )));
        }
        let rnn_config = RnnConfig::new(config.embed_dim, config.hidden)
            .num_layers(config.layers)
            .batch_first(true)
            .dropout(config.dropout);
        Ok(CharRnn {
            embed: Embedding::new(config.vocab, config.embed_dim, None, rng)?,
            rnn: Recurrent::new(config.kind, rnn_config, rng)?,
            head: Linear::new(config.hidden, config.vocab, true, rng),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> CharRnnConfig {
        self.config
    }

    /// Logits `[N, L, vocab]` for character indices `[N, L]`, continuing from `state`;
    /// and the state after the last character.
    ///
    /// # Errors
    /// An index outside the vocabulary, or a state that does not fit.
    pub fn forward(
        &self,
        ids: &IndexTensor,
        state: Option<&RecurrentState>,
    ) -> Result<(Var, RecurrentState)> {
        let x = self.embed.forward(ids)?;
        let (y, state) = self.rnn.forward(&x, state)?;
        Ok((self.head.forward(&y)?, state))
    }
}

impl Module for CharRnn {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        visit_child("embed", &self.embed, f);
        visit_child("rnn", &self.rnn, f);
        visit_child("head", &self.head, f);
    }

    fn set_training(&mut self, training: bool) {
        self.rnn.set_training(training);
    }
}

/// The shape of a [`CharTransformer`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CharTransformerConfig {
    /// Characters in the vocabulary.
    pub vocab: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Width of the feed-forward block.
    pub feedforward: usize,
    /// The longest context (the positional table's length).
    pub context: usize,
    /// Dropout inside the encoder layers.
    pub dropout: f64,
}

/// A character-level transformer language model: embedding plus learned positions →
/// a pre-norm transformer encoder under a causal mask → linear head. State-dict keys
/// `embed.weight`, `pos.weight`, `encoder.layers.0.self_attn.in_proj_weight`, …,
/// `encoder.norm.weight`, `head.weight`.
pub struct CharTransformer {
    /// The character embedding.
    pub embed: Embedding,
    /// Learned positions.
    pub pos: LearnedPositionalEncoding,
    /// The encoder (batch-first, pre-norm, GELU, final norm).
    pub encoder: TransformerEncoder,
    /// Logits over the vocabulary.
    pub head: Linear,
    config: CharTransformerConfig,
}

impl CharTransformer {
    /// A freshly initialised model.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for a zero size; layer configuration errors (e.g. a width
    /// not divisible by the number of heads).
    pub fn new<R: Rng + ?Sized>(config: CharTransformerConfig, rng: &mut R) -> Result<Self> {
        if config.vocab == 0 || config.layers == 0 || config.context == 0 {
            return Err(ModelsError::Config(format!(
                "char-transformer sizes must be positive, got {config:?}"
            )));
        }
        let layer = TransformerEncoderLayerConfig::new(config.d_model, config.heads)
            .dim_feedforward(config.feedforward)
            .dropout(config.dropout)
            .activation(TransformerActivation::Gelu)
            .batch_first(true)
            .norm_first(true);
        Ok(CharTransformer {
            embed: Embedding::new(config.vocab, config.d_model, None, rng)?,
            pos: LearnedPositionalEncoding::new(config.context, config.d_model, rng)?,
            encoder: TransformerEncoder::new(layer, config.layers, true, rng)?,
            head: Linear::new(config.d_model, config.vocab, true, rng),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> CharTransformerConfig {
        self.config
    }

    /// Logits `[N, L, vocab]` for character indices `[N, L]`, each position seeing only
    /// itself and earlier ones.
    ///
    /// # Errors
    /// [`ModelsError::Config`] when `L` exceeds the context; an index outside the
    /// vocabulary.
    pub fn forward(&self, ids: &IndexTensor) -> Result<Var> {
        let len = *ids.shape().last().unwrap_or(&0);
        if ids.shape().len() != 2 || len == 0 || len > self.config.context {
            return Err(ModelsError::Config(format!(
                "char-transformer: expected indices [N, L] with 0 < L <= {}, got {:?}",
                self.config.context,
                ids.shape()
            )));
        }
        let x = self.pos.forward(&self.embed.forward(ids)?)?;
        let mask = causal_mask(len)?;
        let y = self.encoder.forward_with(&x, Some(&mask), None, true)?;
        Ok(self.head.forward(&y)?)
    }
}

/// The causal mask in `nn.MultiheadAttention`'s boolean convention: `true` (1) above the
/// diagonal, where a position may not look.
fn causal_mask(len: usize) -> Result<AttnMask> {
    Ok(AttnMask::Bool(Tensor::ones(&[len, len]).triu(1)?))
}

impl Module for CharTransformer {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        visit_child("embed", &self.embed, f);
        visit_child("pos", &self.pos, f);
        visit_child("encoder", &self.encoder, f);
        visit_child("head", &self.head, f);
    }

    fn set_training(&mut self, training: bool) {
        self.encoder.set_training(training);
    }
}

/// A one-step-ahead forecaster: an LSTM/GRU reads a window `[N, W, 1]` of a
/// (standardised) series, a linear head maps its last output to the next value `[N]`.
/// State-dict keys `rnn.weight_ih_l0`, …, `head.weight`, `head.bias`.
pub struct Forecaster {
    /// The recurrent layers (batch-first).
    pub rnn: Recurrent,
    /// The last hidden output → the next value.
    pub head: Linear,
}

impl Forecaster {
    /// A forecaster with `layers` recurrent layers of `hidden` units.
    ///
    /// # Errors
    /// Layer configuration errors.
    pub fn new<R: Rng + ?Sized>(
        kind: RecurrentKind,
        hidden: usize,
        layers: usize,
        rng: &mut R,
    ) -> Result<Self> {
        let config = RnnConfig::new(1, hidden)
            .num_layers(layers)
            .batch_first(true);
        Ok(Forecaster {
            rnn: Recurrent::new(kind, config, rng)?,
            head: Linear::new(hidden, 1, true, rng),
        })
    }
}

impl Module for Forecaster {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        visit_child("rnn", &self.rnn, f);
        visit_child("head", &self.head, f);
    }

    fn set_training(&mut self, training: bool) {
        self.rnn.set_training(training);
    }
}

impl Forward for Forecaster {
    /// `[N, W, 1]` (or `[N, W]`) → `[N]`.
    fn forward(&self, x: &Var) -> strata_nn::Result<Var> {
        let x = if x.ndim() == 2 {
            x.unsqueeze(-1)?
        } else {
            x.clone()
        };
        let (y, _) = self.rnn.forward(&x, None)?;
        let last = y.select(1, -1)?;
        Ok(self.head.forward(&last)?.squeeze(-1)?)
    }
}

/// The shape of a [`SequenceClassifier`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SequenceClassifierConfig {
    /// Features per token.
    pub features: usize,
    /// Tokens per sequence (the positional table's length).
    pub length: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Width of the feed-forward block.
    pub feedforward: usize,
    /// Classes.
    pub classes: usize,
    /// Dropout inside the encoder layers.
    pub dropout: f64,
}

/// A transformer-encoder sequence classifier: each token's features are projected to
/// `d_model`, learned positions are added, a pre-norm encoder mixes the tokens, and the
/// mean over tokens goes through a linear head. Used on MNIST read as sequences of 28
/// rows of 28 pixels. Input `[N, L, features]` (or `[N, 1, L, features]` images); output
/// logits `[N, classes]`.
pub struct SequenceClassifier {
    /// Token features → `d_model`.
    pub embed: Linear,
    /// Learned positions.
    pub pos: LearnedPositionalEncoding,
    /// The encoder (batch-first, pre-norm, GELU, final norm).
    pub encoder: TransformerEncoder,
    /// Mean token → class logits.
    pub head: Linear,
    config: SequenceClassifierConfig,
}

impl SequenceClassifier {
    /// A freshly initialised classifier.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for a zero size; layer configuration errors.
    pub fn new<R: Rng + ?Sized>(config: SequenceClassifierConfig, rng: &mut R) -> Result<Self> {
        if config.features == 0 || config.length == 0 || config.layers == 0 || config.classes == 0 {
            return Err(ModelsError::Config(format!(
                "sequence classifier sizes must be positive, got {config:?}"
            )));
        }
        let layer = TransformerEncoderLayerConfig::new(config.d_model, config.heads)
            .dim_feedforward(config.feedforward)
            .dropout(config.dropout)
            .activation(TransformerActivation::Gelu)
            .batch_first(true)
            .norm_first(true);
        Ok(SequenceClassifier {
            embed: Linear::new(config.features, config.d_model, true, rng),
            pos: LearnedPositionalEncoding::new(config.length, config.d_model, rng)?,
            encoder: TransformerEncoder::new(layer, config.layers, true, rng)?,
            head: Linear::new(config.d_model, config.classes, true, rng),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> SequenceClassifierConfig {
        self.config
    }
}

impl Module for SequenceClassifier {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        visit_child("embed", &self.embed, f);
        visit_child("pos", &self.pos, f);
        visit_child("encoder", &self.encoder, f);
        visit_child("head", &self.head, f);
    }

    fn set_training(&mut self, training: bool) {
        self.encoder.set_training(training);
    }
}

impl Forward for SequenceClassifier {
    fn forward(&self, x: &Var) -> strata_nn::Result<Var> {
        let x = if x.ndim() == 4 {
            x.squeeze(1)?
        } else {
            x.clone()
        };
        let y = self
            .encoder
            .forward(&self.pos.forward(&self.embed.forward(&x)?)?)?;
        self.head.forward(&y.mean(&[1], false)?)
    }
}
