//! The character-level recurrent language model, and the `char-rnn` reference training.

use serde::{Deserialize, Serialize};
use strata_autograd::Var;
use strata_nn::{Embedding, Forward, Linear, Module, RnnConfig, StateKind, visit_child};
use strata_tensor::IndexTensor;
use strata_tensor::rand::Rng;
use strata_tensor::rand::rngs::StdRng;

use super::{Recurrent, RecurrentKind, RecurrentState};
use crate::language::CharModel;
use crate::reference::{
    CharExtra, Defaults, LanguageTask, Length, OptimizerKind, Prepared, Record, ReferenceModel,
    Schedule, TrainOptions, corpus, language_model_predicts_nothing,
};
use crate::{ModelsError, Result};

/// The shape of a [`CharRnn`], and the architecture record of `char-rnn` checkpoints
/// (the kind of layer under the key `"cell"`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    #[serde(rename = "cell")]
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

impl strata_onnx::Export for CharRnn {
    /// Indices `[N, L]` → logits `[N, L, vocab]`, from a zero state.
    fn export(
        &self,
        g: &mut strata_onnx::Graph,
        x: &strata_onnx::Value,
    ) -> strata_onnx::Result<strata_onnx::Value> {
        let h = g.scoped("embed", |g| self.embed.export(g, x))?;
        let h = g.scoped("rnn", |g| self.rnn.export(g, &h))?;
        g.scoped("head", |g| self.head.export(g, &h))
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

/// `strata train char-rnn`: [`CharRnn`] (embedding 64, two LSTM layers of 256 or `--cell
/// gru`) on Moby Dick or the text `--data` names; 3000 AdamW steps of 32 windows of 64
/// characters under a one-cycle schedule peaking at 4e-3, gradient norm clipped at 1.
pub struct CharRnnSpec;

impl ReferenceModel for CharRnnSpec {
    type Architecture = CharRnnConfig;
    type Extra = CharExtra;
    type Task = LanguageTask;

    const NAME: &'static str = "char-rnn";
    const ABOUT: &'static str = "A character-level LSTM (or GRU) language model on Moby Dick.";
    const CELL: bool = true;

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
            lr: 4e-3,
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
            architecture: CharRnnConfig {
                vocab: corpus.vocab.len(),
                embed_dim: 64,
                hidden: 256,
                layers: 2,
                kind: opts.cell.unwrap_or(RecurrentKind::Lstm),
                dropout: 0.0,
            },
            extra: CharExtra::of(&corpus.vocab),
            data: corpus,
            dataset,
        })
    }

    fn build(&self, config: &CharRnnConfig, rng: &mut StdRng) -> Result<Box<CharModel>> {
        Ok(Box::new(CharModel::Rnn(CharRnn::new(*config, rng)?)))
    }

    /// Traced on windows of 64 characters (the training window): the exported model takes
    /// indices `[N, 64]` (int64) and gives logits `[N, 64, vocab]`.
    fn export(&self, net: &CharModel, config: &CharRnnConfig) -> Result<strata_onnx::Exported> {
        crate::language::export_char_model(net, 64, config.vocab, Self::NAME)
    }

    fn task(&self, _config: &CharRnnConfig) -> LanguageTask {
        LanguageTask::new(64)
    }

    fn check_extra(&self, a: &CharRnnConfig, extra: &CharExtra) -> std::result::Result<(), String> {
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
        _record: &Record<CharRnnConfig, CharExtra>,
        _input: &std::path::Path,
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
    fn the_architecture_round_trips_with_the_cell_by_name() {
        let a = CharRnnConfig {
            vocab: 65,
            embed_dim: 64,
            hidden: 256,
            layers: 2,
            kind: RecurrentKind::Gru,
            dropout: 0.0,
        };
        let keys = json!({
            "vocab": 65, "embed_dim": 64, "hidden": 256, "layers": 2, "cell": "gru", "dropout": 0.0,
        });
        assert_round_trip(&a, keys);
        let missing = json!({ "vocab": 65, "embed_dim": 64, "hidden": 256, "layers": 2 });
        let err = serde_json::from_value::<CharRnnConfig>(missing).unwrap_err();
        assert!(err.to_string().contains("cell"), "{err}");
    }
}
