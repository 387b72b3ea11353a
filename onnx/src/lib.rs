//! ONNX export of strata modules.
//!
//! strata-onnx writes a module's inference forward as an ONNX model (opset 17): the
//! weights become initializers named by their state-dict keys, and the batch dimension of
//! the input and output is symbolic (`"batch"`), so the file runs on any batch size. It
//! owns the [`Export`] trait (implemented here for strata-nn's layers; models implement it
//! the way their `forward` is written), the [`Graph`] an export builds and the protobuf
//! messages of [`proto`]; strata-nn's layers and strata-models' reference models are
//! what it exports.
//!
//! A forward of several inputs (a decoder's target and memory, key-padding masks) is
//! exported with [`export_with_inputs`], each input with its own symbolic dimensions (a
//! sequence length), and masks that follow the length built in the graph, so one file
//! runs at every batch size and length.
//!
//! An export is a trace: it runs the forward on an example input, layer by layer, so every
//! shape is checked by the layers themselves, and returns what strata computed next to the
//! model, for comparing with an ONNX runtime. A layer or setting with no ONNX equivalent
//! (a pool with unequal windows, dropout in train mode) is an [`OnnxError::Unsupported`]
//! that names it.
//!
//! ```
//! use strata_nn::{Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential};
//! use strata_onnx::{ExportOptions, export};
//! use strata_tensor::{Tensor, seeded_rng};
//!
//! let mut rng = seeded_rng(0);
//! let model = Sequential::<f32>::new()
//!     .push(Conv2d::new(1, 4, 3, &mut rng)?)
//!     .push(ReLU)
//!     .push(MaxPool2d::new(2))
//!     .push(Flatten::default())
//!     .push(Linear::new(4 * 3 * 3, 10, true, &mut rng));
//! let example = Tensor::randn(&[2, 1, 8, 8], &mut rng);
//! let exported = export(&model, example, &ExportOptions::default())?;
//! assert_eq!(exported.output.shape(), &[2, 10]); // strata's own output on the example
//! let path = std::env::temp_dir().join(format!("strata-doc-{}.onnx", std::process::id()));
//! exported.save(&path)?; // written aside, then renamed into place
//! assert!(std::fs::metadata(&path)?.len() > 10 * 36 * 4); // the Linear weight alone
//! # std::fs::remove_file(&path)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod graph;
mod layers;
pub mod ops;
pub mod proto;

use std::path::Path;

use prost::Message;
use strata_tensor::Tensor;

pub use error::{OnnxError, Result};
pub use graph::{Attr, Example, Graph, Value};
pub use layers::{
    DecoderInputs, Export, GraphMasks, TransformerMasks, export_bilinear, export_decoder,
    export_decoder_layer, export_encoder, export_encoder_layer, export_encoder_masked,
    export_forward, export_self_attention, export_transformer,
};
use proto::{
    DATA_TYPE_FLOAT, GraphProto, ModelProto, OperatorSetIdProto, TensorShapeProto, TypeProto,
    ValueInfoProto, tensor_shape_proto, type_proto,
};

/// The ONNX operator set the exporter writes.
pub const OPSET: i64 = 17;
/// The IR version of opset 17's ONNX release (1.12).
pub const IR_VERSION: i64 = 8;

/// How an export names things.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// The graph's name.
    pub graph_name: String,
    /// The input's name.
    pub input_name: String,
    /// The output's name.
    pub output_name: String,
    /// Which dimension of the input is the batch (0 for batch-first models, 1 for
    /// sequence-first ones).
    pub batch_axis: usize,
    /// The name of the symbolic batch dimension.
    pub batch_name: String,
    /// Free text stored in the model (`doc_string`).
    pub doc: String,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            graph_name: "strata".into(),
            input_name: "input".into(),
            output_name: "output".into(),
            batch_axis: 0,
            batch_name: "batch".into(),
            doc: String::new(),
        }
    }
}

/// An exported model and what strata computed on the example input.
#[derive(Clone, Debug)]
pub struct Exported {
    /// The ONNX model.
    pub model: ModelProto,
    /// strata's output on the example input.
    pub output: Tensor<f32>,
}

impl Exported {
    /// The model as the bytes of an `.onnx` file.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.model.encode_to_vec()
    }

    /// The graph's inputs and output with their element types and dimensions, symbolic
    /// ones by name: `"src int64 [batch, src_len], tgt_in int64 [batch, tgt_len] -> logits
    /// float [batch, tgt_len, 80]"`.
    pub fn signature(&self) -> String {
        use tensor_shape_proto::dimension::Value as Dim;
        let describe = |v: &ValueInfoProto| {
            let Some(type_proto::Value::TensorType(t)) =
                v.r#type.as_ref().and_then(|t| t.value.as_ref())
            else {
                return v.name.clone();
            };
            let elem = match t.elem_type {
                proto::DATA_TYPE_FLOAT => "float",
                proto::DATA_TYPE_INT64 => "int64",
                proto::DATA_TYPE_BOOL => "bool",
                _ => "?",
            };
            let dims: Vec<String> = t
                .shape
                .iter()
                .flat_map(|s| &s.dim)
                .map(|d| match &d.value {
                    Some(Dim::DimValue(v)) => v.to_string(),
                    Some(Dim::DimParam(p)) => p.clone(),
                    None => "?".into(),
                })
                .collect();
            format!("{} {elem} [{}]", v.name, dims.join(", "))
        };
        let Some(g) = &self.model.graph else {
            return String::new();
        };
        let inputs: Vec<String> = g.input.iter().map(describe).collect();
        let outputs: Vec<String> = g.output.iter().map(describe).collect();
        format!("{} -> {}", inputs.join(", "), outputs.join(", "))
    }

    /// Writes the model to `path` atomically (a temporary file beside it, synced, then
    /// renamed over it), so `path` holds the old file or the whole new one.
    ///
    /// # Errors
    /// [`OnnxError::Io`] when the file cannot be written (a missing directory, no
    /// permission), naming the path.
    pub fn save(&self, path: &Path) -> Result<()> {
        strata_tensor::io::fs::write_atomic(path, &self.to_bytes()).map_err(|source| {
            OnnxError::Io {
                path: path.to_path_buf(),
                source,
            }
        })
    }
}

/// A tensor value's type: `elem_type` with the example's shape, the symbolic dimensions
/// named (an empty name is a dimension of unknown size).
fn value_info(
    name: &str,
    elem_type: i32,
    shape: &[usize],
    symbolic: &[(usize, String)],
) -> ValueInfoProto {
    use tensor_shape_proto::{Dimension, dimension::Value as Dim};
    let dim = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| Dimension {
            value: match symbolic.iter().find(|(a, _)| *a == i) {
                Some((_, n)) if n.is_empty() => None,
                Some((_, n)) => Some(Dim::DimParam(n.clone())),
                None => Some(Dim::DimValue(d as i64)),
            },
            ..Dimension::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}

/// One input of a graph exported with [`export_with_inputs`]: its name, the example the
/// forward is traced on, the batch dimension and any other symbolic dimensions (a
/// sequence length), so one file runs on every batch size and length.
#[derive(Clone, Debug)]
pub struct GraphInput {
    /// The input's name in the graph.
    pub name: String,
    /// The example value (floats, int64 indices or a boolean mask).
    pub example: Example,
    /// Which dimension is the batch (named [`ExportOptions::batch_name`]); `None` for an
    /// input without one.
    pub batch_axis: Option<usize>,
    /// Other symbolic dimensions: `(axis, name)`, e.g. `(1, "tgt_len")`; inputs sharing a
    /// name share the size.
    pub dynamic: Vec<(usize, String)>,
}

impl GraphInput {
    /// An input named `name` traced on `example`, batch first, no other symbolic
    /// dimension.
    pub fn new(name: impl Into<String>, example: impl Into<Example>) -> Self {
        GraphInput {
            name: name.into(),
            example: example.into(),
            batch_axis: Some(0),
            dynamic: Vec::new(),
        }
    }

    /// The batch along `axis` (`None`: no batch dimension).
    pub fn batch_axis(mut self, axis: Option<usize>) -> Self {
        self.batch_axis = axis;
        self
    }

    /// Dimension `axis` symbolic, named `dim`.
    pub fn dynamic(mut self, axis: usize, dim: impl Into<String>) -> Self {
        self.dynamic.push((axis, dim.into()));
        self
    }

    /// Checks the example against the declared dimensions; the input as a [`Value`].
    fn value(&self) -> Result<Value> {
        let shape = self.example.shape().to_vec();
        let bad = |why: String| OnnxError::Input {
            shape: shape.clone(),
            why: format!("input {:?}: {why}", self.name),
        };
        if let Some(b) = self.batch_axis {
            match shape.get(b) {
                None => return Err(bad(format!("no batch dimension {b}"))),
                Some(0) => {
                    return Err(bad(
                        "the batch is empty: trace with at least one sample".into()
                    ));
                }
                Some(_) => {}
            }
        }
        if shape.contains(&0) {
            return Err(bad(
                "a dimension is zero: trace with a non-empty example".into()
            ));
        }
        let mut v = Value::new(self.name.clone(), self.example.clone(), self.batch_axis);
        for (a, n) in &self.dynamic {
            if *a >= shape.len() || Some(*a) == self.batch_axis || n.is_empty() {
                return Err(bad(format!(
                    "the symbolic dimension {a} ({n:?}) is out of range, unnamed or the batch"
                )));
            }
            v = v.with_dynamic(*a, n.clone());
        }
        Ok(v)
    }
}

/// Exports `model` traced on `example` (a float tensor, or indices for models that start
/// with an embedding), with the batch along `options.batch_axis`.
///
/// # Errors
/// [`OnnxError::Input`] for an example without that batch dimension or with a batch of
/// zero; [`OnnxError::Unsupported`] naming a layer, op or setting ONNX cannot express;
/// the forward's own errors on the example ([`OnnxError::Forward`]).
pub fn export<M: Export + ?Sized>(
    model: &M,
    example: impl Into<Example>,
    options: &ExportOptions,
) -> Result<Exported> {
    let input =
        GraphInput::new(options.input_name.clone(), example).batch_axis(Some(options.batch_axis));
    export_with_inputs(vec![input], options, |g, xs| model.export(g, &xs[0]))
}

/// Exports a forward of several inputs (a decoder's target and memory, a `Bilinear`'s
/// pair, masks), each with its symbolic dimensions: `build` receives the inputs as
/// [`Value`]s, in order, and returns the output, as [`Export::export`] does for one input.
/// `options.input_name` and `options.batch_axis` are not used (each input names its own).
///
/// ```
/// use strata_nn::Bilinear;
/// use strata_onnx::{ExportOptions, GraphInput, export_bilinear, export_with_inputs};
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let mut rng = seeded_rng(0);
/// let layer = Bilinear::new(3, 4, 2, true, &mut rng);
/// let inputs = vec![
///     GraphInput::new("x1", Tensor::randn(&[5, 3], &mut rng)),
///     GraphInput::new("x2", Tensor::randn(&[5, 4], &mut rng)),
/// ];
/// let exported = export_with_inputs(inputs, &ExportOptions::default(), |g, xs| {
///     export_bilinear(&layer, g, &xs[0], &xs[1])
/// })?;
/// assert_eq!(exported.model.graph.unwrap().input.len(), 2);
/// # Ok::<(), strata_onnx::OnnxError>(())
/// ```
///
/// # Errors
/// [`OnnxError::Input`] for an example with an empty or missing batch, a symbolic
/// dimension out of range, or two inputs of one name; as [`export`] otherwise.
pub fn export_with_inputs(
    inputs: Vec<GraphInput>,
    options: &ExportOptions,
    build: impl FnOnce(&mut Graph, &[Value]) -> Result<Value>,
) -> Result<Exported> {
    let values = inputs
        .iter()
        .map(GraphInput::value)
        .collect::<Result<Vec<_>>>()?;
    for (i, input) in inputs.iter().enumerate() {
        if inputs[..i].iter().any(|o| o.name == input.name) {
            return Err(OnnxError::Input {
                shape: input.example.shape().to_vec(),
                why: format!("two inputs are named {:?}", input.name),
            });
        }
    }
    let mut g = Graph::new();
    let out = build(&mut g, &values)?;
    let Example::Float(output) = out.example().clone() else {
        return Err(unsupported_output(out.shape()));
    };
    // The graph's output must be made by a node, also when the model is the identity.
    let last = if values.iter().any(|v| v.name() == out.name()) {
        g.op("Identity", &[out.name()], vec![])
    } else {
        out.name().to_string()
    };
    if let Some(node) = g
        .nodes
        .iter_mut()
        .rev()
        .find(|n| n.output.first().map(String::as_str) == Some(last.as_str()))
    {
        node.output[0] = options.output_name.clone();
    }
    for node in &mut g.nodes {
        for i in &mut node.input {
            if *i == last {
                i.clone_from(&options.output_name);
            }
        }
    }
    let batch_name = options.batch_name.as_str();
    let symbols = |v: &Value| {
        let mut s = v.dynamic_axes().to_vec();
        if let Some(b) = v.batch_axis() {
            s.push((b, batch_name.to_string()));
        }
        s
    };
    let graph = GraphProto {
        node: g.nodes,
        name: options.graph_name.clone(),
        initializer: g.initializers,
        input: values
            .iter()
            .map(|v| value_info(v.name(), v.example().elem_type(), v.shape(), &symbols(v)))
            .collect(),
        output: vec![value_info(
            &options.output_name,
            DATA_TYPE_FLOAT,
            output.shape(),
            &symbols(&out),
        )],
        ..GraphProto::default()
    };
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "strata".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: options.doc.clone(),
        graph: Some(graph),
        ..ModelProto::default()
    };
    Ok(Exported { model, output })
}

fn unsupported_output(shape: &[usize]) -> OnnxError {
    error::unsupported(
        "the model's output",
        format!("it is indices {shape:?}, not floats"),
    )
}
