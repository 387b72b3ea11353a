//! The reference models of the strata reference material, built only from strata-nn, each
//! with its reference training ([`ReferenceModel`](crate::reference::ReferenceModel)), and
//! the [`REGISTRY`] that lists them.

mod char_rnn;
mod char_transformer;
mod cnn;
pub mod dates;
mod dp_cnn;
mod forecast;
mod linear;
mod logistic;
mod mlp;
mod pinn;
mod recurrent;
mod seq2seq;
mod seq_classifier;

use crate::reference::Model;

pub use char_rnn::{CharRnn, CharRnnConfig, CharRnnSpec};
pub use char_transformer::{CharTransformer, CharTransformerConfig, CharTransformerSpec};
pub use cnn::{Cnn, CnnConfig, CnnSpec};
pub use dp_cnn::{DpCnn, DpCnnSpec};
pub use forecast::{ForecastArchitecture, ForecastExtra, ForecastSpec, Forecaster};
pub use linear::{
    LinearRegression, LinregArchitecture, LinregSpec, PolynomialRegression, PolyregArchitecture,
    PolyregSpec, r2_score,
};
pub use logistic::{LogisticRegression, LogregArchitecture, LogregSpec};
pub use mlp::{Mlp, MlpArchitecture, MlpSpec};
pub use pinn::{
    Collocation, PinnArchitecture, PinnNet, PinnProblem, PinnSpec, pinn_loss, solution,
};
pub use recurrent::{Recurrent, RecurrentKind, RecurrentState};
pub use seq_classifier::{SeqClassifierSpec, SequenceClassifier, SequenceClassifierConfig};
pub use seq2seq::{
    DateData, DateProblem, PairScores, Seq2Seq, Seq2SeqConfig, Seq2SeqSpec, Seq2SeqTask,
    evaluate_pairs,
};

/// Every reference model of the `strata` command, once, in the order of `strata train
/// --help`. A new model is its file above and one line here.
pub static REGISTRY: &[Model] = &[
    Model::new(&LinregSpec),
    Model::new(&PolyregSpec),
    Model::new(&LogregSpec),
    Model::new(&MlpSpec),
    Model::new(&CnnSpec),
    Model::new(&DpCnnSpec),
    Model::new(&CharRnnSpec),
    Model::new(&CharTransformerSpec),
    Model::new(&ForecastSpec),
    Model::new(&SeqClassifierSpec),
    Model::new(&Seq2SeqSpec),
    Model::new(&PinnSpec),
];
