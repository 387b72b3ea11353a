//! The reference models of the strata reference material, built only from strata-nn.

mod cnn;
mod linear;
mod logistic;
mod mlp;
mod sequence;

pub use cnn::{Cnn, CnnConfig};
pub use linear::{LinearRegression, PolynomialRegression, r2_score};
pub use logistic::LogisticRegression;
pub use mlp::Mlp;
pub use sequence::{
    CharRnn, CharRnnConfig, CharTransformer, CharTransformerConfig, Forecaster, Recurrent,
    RecurrentKind, RecurrentState, SequenceClassifier, SequenceClassifierConfig,
};
