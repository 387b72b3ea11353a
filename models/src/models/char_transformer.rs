//! The character-level transformer language model, and the `char-transformer` reference
//! training.

use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_autograd::Var;
use strata_nn::{
    AttnMask, Embedding, Forward, LearnedPositionalEncoding, Linear, Module, StateKind,
    TransformerActivation, TransformerEncoder, TransformerEncoderLayerConfig, visit_child,
};
use strata_tensor::rand::Rng;
use strata_tensor::rand::rngs::StdRng;
use strata_tensor::{IndexTensor, Tensor};

use crate::language::CharModel;
use crate::reference::{
    CharExtra, Defaults, LanguageTask, Length, OptimizerKind, Prepared, Record, ReferenceModel,
    Schedule, TrainOptions, corpus, language_model_predicts_nothing,
};
use crate::{ModelsError, Result};

/// The shape of a [`CharTransformer`], and the architecture record of `char-transformer`
/// checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

impl strata_onnx::Export for CharTransformer {
    /// Indices `[N, L]` → logits `[N, L, vocab]` under the causal mask: built in the graph
    /// from the length at run time when the input's length is symbolic
    /// ([`GraphInput::dynamic`](strata_onnx::GraphInput::dynamic), as `strata export`
    /// writes it: any `L` up to the context), a constant of the graph otherwise (`L` is
    /// then the traced length).
    fn export(
        &self,
        g: &mut strata_onnx::Graph,
        x: &strata_onnx::Value,
    ) -> strata_onnx::Result<strata_onnx::Value> {
        let h = g.scoped("embed", |g| self.embed.export(g, x))?;
        let h = g.scoped("pos", |g| self.pos.export(g, &h))?;
        let h = if x.is_dynamic(1) {
            let masks = strata_onnx::GraphMasks {
                causal: true,
                key_padding: None,
            };
            g.scoped("encoder", |g| {
                strata_onnx::export_encoder_masked(&self.encoder, g, &h, masks)
            })?
        } else {
            let len = x.shape().get(1).copied().unwrap_or(0);
            let mask = causal_mask(len).map_err(|e| strata_onnx::OnnxError::Input {
                shape: x.shape().to_vec(),
                why: e.to_string(),
            })?;
            g.scoped("encoder", |g| {
                strata_onnx::export_encoder(&self.encoder, g, &h, Some(&mask), true)
            })?
        };
        g.scoped("head", |g| self.head.export(g, &h))
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

/// `strata train char-transformer`: [`CharTransformer`] (d_model 128, 4 heads, two
/// pre-norm layers, context 64) on Moby Dick or the text `--data` names; 3000 AdamW steps
/// of 32 windows of 64 characters under a one-cycle schedule peaking at 2e-3, gradient
/// norm clipped at 1.
pub struct CharTransformerSpec;

impl ReferenceModel for CharTransformerSpec {
    type Architecture = CharTransformerConfig;
    type Extra = CharExtra;
    type Task = LanguageTask;

    const NAME: &'static str = "char-transformer";
    const ABOUT: &'static str =
        "A character-level transformer language model (causal mask) on Moby Dick.";

    fn preprocessing(
        &self,
        _dataset: &crate::reference::DatasetRecord,
        _extra: &Self::Extra,
    ) -> Option<crate::reference::Preprocessing> {
        Some(crate::reference::Preprocessing::described(
            "characters as indices into the vocabulary of `extra.vocab` (its characters, sorted)",
        ))
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            length: Length::Steps(3000),
            lr: 2e-3,
            batch_size: Some(32),
            optimizer: OptimizerKind::AdamW,
            schedule: Schedule::OneCycle,
            clip_grad_norm: Some(1.0),
            ema: None,
        }
    }

    fn prepare(&self, opts: &TrainOptions) -> Result<Prepared<Self>> {
        let (corpus, dataset) = corpus(opts)?;
        Ok(Prepared {
            architecture: CharTransformerConfig {
                vocab: corpus.vocab.len(),
                d_model: 128,
                heads: 4,
                layers: 2,
                feedforward: 512,
                context: 64,
                dropout: 0.0,
            },
            extra: CharExtra::of(&corpus.vocab),
            data: corpus,
            dataset,
        })
    }

    fn build(&self, config: &CharTransformerConfig, rng: &mut StdRng) -> Result<Box<CharModel>> {
        Ok(Box::new(CharModel::Transformer(CharTransformer::new(
            *config, rng,
        )?)))
    }

    /// Traced on the full context: the exported model takes indices `[N, context]` (int64)
    /// and gives logits `[N, context, vocab]`.
    fn export(
        &self,
        net: &CharModel,
        config: &CharTransformerConfig,
    ) -> Result<strata_onnx::Exported> {
        crate::language::export_char_model(net, config.context, config.vocab, Self::NAME)
    }

    fn task(&self, _config: &CharTransformerConfig) -> LanguageTask {
        LanguageTask::new(64)
    }

    fn check_extra(
        &self,
        a: &CharTransformerConfig,
        extra: &CharExtra,
    ) -> std::result::Result<(), String> {
        extra.check(a.vocab)
    }

    fn check_reloaded(
        &self,
        recorded: &CharExtra,
        reloaded: &CharExtra,
    ) -> std::result::Result<(), String> {
        recorded.check_same_text(reloaded)
    }

    fn predict(
        &self,
        _net: &CharModel,
        _record: &Record<CharTransformerConfig, CharExtra>,
        _input: &Path,
    ) -> Result<Vec<String>> {
        Err(language_model_predicts_nothing(Self::NAME))
    }

    fn generate(
        &self,
        net: &CharModel,
        extra: &CharExtra,
        prompt: &str,
        length: usize,
        temperature: f64,
        rng: &mut StdRng,
    ) -> Result<String> {
        extra.generate(net, prompt, length, temperature, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::assert_round_trip;
    use serde_json::json;

    #[test]
    fn the_architecture_round_trips() {
        let a = CharTransformerConfig {
            vocab: 65,
            d_model: 128,
            heads: 4,
            layers: 2,
            feedforward: 512,
            context: 64,
            dropout: 0.0,
        };
        let keys = json!({
            "vocab": 65, "d_model": 128, "heads": 4, "layers": 2, "feedforward": 512,
            "context": 64, "dropout": 0.0,
        });
        assert_round_trip(&a, keys);
    }
}
