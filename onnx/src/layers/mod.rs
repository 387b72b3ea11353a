//! [`Export`] for strata-nn's layers, and [`export_forward`]: the export of a layer known
//! only as a `dyn Forward` (what a [`Sequential`](strata_nn::Sequential) holds).

mod attention;
mod basic;
mod bilinear;
mod decoder;
mod embedding_bag;
mod norms;
mod recurrent;
mod resample;
mod volume;

use std::any::Any;

use strata_autograd::{Var, no_grad};
use strata_nn::{Forward, Hooked};

use crate::error::{Result, unsupported};
use crate::graph::{Graph, Value};

pub use attention::{
    GraphMasks, export_encoder, export_encoder_layer, export_encoder_masked, export_self_attention,
};
pub(crate) use basic::flatten;
pub use bilinear::export_bilinear;
pub use decoder::{
    DecoderInputs, TransformerMasks, export_decoder, export_decoder_layer, export_transformer,
};

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
    macro_rules! layers {
        ($($ty:ty),* $(,)?) => {
            dispatch!($($ty,)* $(Hooked<$ty, f32>,)*);
        };
    }
    layers!(
        Linear<f32>,
        Conv1d<f32>,
        Conv2d<f32>,
        Conv3d<f32>,
        ConvTranspose1d<f32>,
        ConvTranspose2d<f32>,
        MaxPool1d,
        MaxPool2d,
        MaxPool3d,
        AvgPool1d,
        AvgPool2d,
        AvgPool3d,
        AdaptiveAvgPool2d,
        AdaptiveMaxPool2d,
        BatchNorm1d<f32>,
        BatchNorm2d<f32>,
        LayerNorm<f32>,
        RMSNorm<f32>,
        GroupNorm<f32>,
        InstanceNorm1d<f32>,
        InstanceNorm2d<f32>,
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
        Unflatten,
        PixelShuffle,
        PixelUnshuffle,
        Upsample,
        Dropout,
        Sequential<f32>,
        LearnedPositionalEncoding<f32>,
        SinusoidalPositionalEncoding<f32>,
        TransformerEncoderLayer<f32>,
        TransformerEncoder<f32>,
    );
    dispatch!(MultiheadAttention<f32>);
    Err(unsupported(
        layer.type_name(),
        "the ONNX exporter does not know this layer; implement strata_onnx::Export for the \
         model that contains it",
    ))
}

impl<M: Export + Forward<f32>> Export for Hooked<M, f32> {
    /// The inner module's export: ONNX has no hooks, so hooks that only observe (log
    /// activations, Opacus-style captures) are simply not in the file. A pre-hook or
    /// forward hook that replaces the input or output would make the file compute
    /// something else: the hooked forward is run on the example and compared with the
    /// inner module's, and any difference is refused. (A hook that changes values only on
    /// other inputs than the example cannot be seen by the trace.)
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let out = self.inner().export(g, x)?;
        let hooked = run(|| Ok(self.forward(&x.float("Hooked")?)?))?.value();
        let inner = out.float("Hooked")?.value();
        let same = hooked.shape() == inner.shape()
            && hooked
                .to_vec()
                .iter()
                .zip(inner.to_vec())
                .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
        if !same {
            return Err(unsupported(
                format!("Hooked<{}>", self.inner().type_name()),
                "a forward pre-hook or forward hook changed the module's input or output on the \
                 example; ONNX cannot run hooks: remove them, or export the inner module",
            ));
        }
        Ok(out)
    }
}
