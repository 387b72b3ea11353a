//! [`Export`] for strata-nn's layers, and [`export_forward`]: the export of a layer known
//! only as a `dyn Forward` (what a [`Sequential`](strata_nn::Sequential) holds).

mod attention;
mod basic;
mod recurrent;

use std::any::Any;

use strata_autograd::{Var, no_grad};
use strata_nn::Forward;

use crate::error::{Result, unsupported};
use crate::graph::{Graph, Value};

pub use attention::{export_encoder, export_encoder_layer, export_self_attention};
pub(crate) use basic::flatten;

/// A module that can write its inference forward into an ONNX [`Graph`].
///
/// `export` receives the input [`Value`] (its name in the graph and the example value
/// strata computed for it), appends the nodes and initializers of the layer's forward, and
/// returns the output value, whose example is what strata's own forward gives on the
/// input's example: the export is a trace of the forward on the example input, one layer
/// at a time, so every shape is checked by the layer itself. Weights are written through
/// [`Graph::param`] under their state-dict names; children are exported inside
/// [`Graph::scoped`] with their state-dict prefix.
///
/// Implement it for a model of your own the way its `forward` is written:
///
/// ```
/// use strata_nn::{Forward, Linear, Module, StateKind, visit_child};
/// use strata_onnx::{Export, Graph, Value};
/// use strata_autograd::Var;
///
/// struct Net { fc1: Linear, fc2: Linear }
///
/// impl Export for Net {
///     fn export(&self, g: &mut Graph, x: &Value) -> strata_onnx::Result<Value> {
///         let h = g.scoped("fc1", |g| self.fc1.export(g, x))?;
///         let h = strata_nn::ReLU.export(g, &h)?;
///         g.scoped("fc2", |g| self.fc2.export(g, &h))
///     }
/// }
/// ```
pub trait Export {
    /// Appends this module's forward on `x` to `g`; returns its output.
    ///
    /// # Errors
    /// [`OnnxError::Unsupported`](crate::OnnxError::Unsupported) naming a layer, op or
    /// setting with no ONNX equivalent; the forward's own errors on the example.
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value>;
}

/// Runs a strata forward on an example without recording a graph.
pub(crate) fn run(f: impl FnOnce() -> Result<Var<f32>>) -> Result<Var<f32>> {
    no_grad(f)
}

/// Exports `layer` by recognising its concrete type among strata-nn's layers; a layer of
/// another type is an [`OnnxError::Unsupported`](crate::OnnxError::Unsupported) that names
/// it.
///
/// # Errors
/// As [`Export::export`].
pub fn export_forward(layer: &dyn Forward<f32>, g: &mut Graph, x: &Value) -> Result<Value> {
    let any: &dyn Any = layer;
    macro_rules! dispatch {
        ($($ty:ty),* $(,)?) => {
            $(if let Some(l) = any.downcast_ref::<$ty>() {
                return l.export(g, x);
            })*
        };
    }
    use strata_nn::*;
    dispatch!(
        Linear<f32>,
        Conv1d<f32>,
        Conv2d<f32>,
        MaxPool1d,
        MaxPool2d,
        AvgPool1d,
        AvgPool2d,
        AdaptiveAvgPool2d,
        AdaptiveMaxPool2d,
        BatchNorm1d<f32>,
        BatchNorm2d<f32>,
        LayerNorm<f32>,
        GroupNorm<f32>,
        ReLU,
        Sigmoid,
        Tanh,
        SiLU,
        Identity,
        LeakyReLU,
        GELU,
        Softmax,
        LogSoftmax,
        Flatten,
        Dropout,
        Sequential<f32>,
        LearnedPositionalEncoding<f32>,
        SinusoidalPositionalEncoding<f32>,
        MultiheadAttention<f32>,
        TransformerEncoderLayer<f32>,
        TransformerEncoder<f32>,
    );
    Err(unsupported(
        layer.type_name(),
        "the ONNX exporter does not know this layer; implement strata_onnx::Export for the \
         model that contains it",
    ))
}
