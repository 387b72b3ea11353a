//! The recurrent layer of the sequence models: an LSTM or a GRU behind one interface.

use serde::{Deserialize, Serialize};
use strata_autograd::Var;
use strata_nn::{GRU, LSTM, Module, RnnConfig, StateKind};
use strata_tensor::rand::Rng;

use crate::{ModelsError, Result};

/// Which recurrent layer a model uses (`"lstm"` or `"gru"` in records).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

impl strata_onnx::Export for Recurrent {
    /// The output sequence, from zeros.
    fn export(
        &self,
        g: &mut strata_onnx::Graph,
        x: &strata_onnx::Value,
    ) -> strata_onnx::Result<strata_onnx::Value> {
        match self {
            Recurrent::Lstm(l) => l.export(g, x),
            Recurrent::Gru(r) => r.export(g, x),
        }
    }
}
