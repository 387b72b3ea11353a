//! The reference models of the strata reference material, built only from strata-nn, each
//! with its reference training ([`ReferenceModel`](crate::reference::ReferenceModel)), and
//! the [`REGISTRY`] that lists them.

mod char_rnn;
mod char_transformer;
mod cnn;
pub mod dates;
mod dp_cnn;
mod dp_scatter;
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
pub use dp_scatter::{DpScatterNet, DpScatterSpec, SCATTER_J, SCATTER_L, ScatterConfig};
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
    Model::new(&DpScatterSpec),
    Model::new(&CharRnnSpec),
    Model::new(&CharTransformerSpec),
    Model::new(&ForecastSpec),
    Model::new(&SeqClassifierSpec),
    Model::new(&Seq2SeqSpec),
    Model::new(&PinnSpec),
];

/// The network a spec built as a `dyn Forward`, recognised as the model `M` and exported
/// traced on `example`; the trace's output must equal the network's own forward on it.
///
/// # Errors
/// A network of another type; the export's errors; a trace that differs from the forward.
pub(crate) fn export_net<M: strata_onnx::Export + 'static>(
    net: &dyn strata_nn::Forward,
    example: strata_tensor::Tensor<f32>,
    name: &str,
) -> crate::Result<strata_onnx::Exported> {
    let any: &dyn std::any::Any = net;
    let model = any.downcast_ref::<M>().ok_or_else(|| {
        crate::ModelsError::Config(format!(
            "{name}: the network is a {}, not the model's own type",
            net.type_name()
        ))
    })?;
    let expected =
        strata_autograd::no_grad(|| net.forward(&strata_autograd::Var::new(example.clone())))?;
    export_checked(model, example.into(), &expected.value(), name)
}

/// Exports `model` on `example` and checks the trace against `expected`, strata's own
/// forward on the example (so an export that drifts from the forward code is an error).
pub(crate) fn export_checked<M: strata_onnx::Export + ?Sized>(
    model: &M,
    example: strata_onnx::Example,
    expected: &strata_tensor::Tensor<f32>,
    name: &str,
) -> crate::Result<strata_onnx::Exported> {
    let exported = strata_onnx::export(model, example, &export_options(name))?;
    check_trace(exported, expected, name)
}

/// [`export_checked`] of a graph of several inputs (see
/// [`strata_onnx::export_with_inputs`]), the output named `output`.
pub(crate) fn export_checked_with(
    inputs: Vec<strata_onnx::GraphInput>,
    expected: &strata_tensor::Tensor<f32>,
    name: &str,
    build: impl FnOnce(
        &mut strata_onnx::Graph,
        &[strata_onnx::Value],
    ) -> strata_onnx::Result<strata_onnx::Value>,
) -> crate::Result<strata_onnx::Exported> {
    let exported = strata_onnx::export_with_inputs(inputs, &export_options(name), build)?;
    check_trace(exported, expected, name)
}

fn export_options(name: &str) -> strata_onnx::ExportOptions {
    strata_onnx::ExportOptions {
        graph_name: name.to_string(),
        doc: format!(
            "strata {name}, exported by strata {}",
            env!("CARGO_PKG_VERSION")
        ),
        ..strata_onnx::ExportOptions::default()
    }
}

/// `exported`, when its trace equals `expected` (strata's own forward on the example).
fn check_trace(
    exported: strata_onnx::Exported,
    expected: &strata_tensor::Tensor<f32>,
    name: &str,
) -> crate::Result<strata_onnx::Exported> {
    let (a, b) = (exported.output.to_vec(), expected.contiguous().to_vec());
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let same = exported.output.shape() == expected.shape()
        && a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-5 * scale);
    if !same {
        return Err(crate::ModelsError::Config(format!(
            "{name}: the ONNX export's trace differs from the model's forward"
        )));
    }
    Ok(exported)
}
