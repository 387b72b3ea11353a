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
    Export, export_encoder, export_encoder_layer, export_forward, export_self_attention,
};
use proto::{
    DATA_TYPE_FLOAT, DATA_TYPE_INT64, GraphProto, ModelProto, OperatorSetIdProto, TensorShapeProto,
    TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
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

/// A tensor value's type: `elem_type` with the example's shape, the batch dimension named.
fn value_info(
    name: &str,
    elem_type: i32,
    shape: &[usize],
    batch: Option<(usize, &str)>,
) -> ValueInfoProto {
    use tensor_shape_proto::{Dimension, dimension::Value as Dim};
    let dim = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| Dimension {
            value: Some(match batch {
                Some((b, name)) if b == i => Dim::DimParam(name.to_string()),
                _ => Dim::DimValue(d as i64),
            }),
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
    let example = example.into();
    let shape = example.shape().to_vec();
    let batch = options.batch_axis;
    match shape.get(batch) {
        None => {
            return Err(OnnxError::Input {
                shape,
                why: format!("no batch dimension {batch}"),
            });
        }
        Some(0) => {
            return Err(OnnxError::Input {
                shape,
                why: "the batch is empty: trace with at least one sample".into(),
            });
        }
        Some(_) => {}
    }
    if shape.contains(&0) {
        return Err(OnnxError::Input {
            shape,
            why: "a dimension is zero: trace with a non-empty example".into(),
        });
    }
    let input_type = match &example {
        Example::Float(_) => DATA_TYPE_FLOAT,
        Example::Index(_) => DATA_TYPE_INT64,
    };
    let input = Value::new(options.input_name.clone(), example, Some(batch));
    let mut g = Graph::new();
    let out = model.export(&mut g, &input)?;
    let Example::Float(output) = out.example().clone() else {
        return Err(unsupported_output(out.shape()));
    };
    // The graph's output must be made by a node, also when the model is the identity.
    let last = if out.name() == input.name() {
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
    let graph = GraphProto {
        node: g.nodes,
        name: options.graph_name.clone(),
        initializer: g.initializers,
        input: vec![value_info(
            &options.input_name,
            input_type,
            input.shape(),
            Some((batch, batch_name)),
        )],
        output: vec![value_info(
            &options.output_name,
            DATA_TYPE_FLOAT,
            output.shape(),
            out.batch_axis().map(|b| (b, batch_name)),
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
