//! [`Graph`]: the ONNX graph an export builds, and [`Value`]: a value in it, with the
//! number strata computed for it on the example input.

use std::collections::HashMap;

use strata_autograd::Var;
use strata_tensor::{IndexTensor, Tensor};

use crate::error::{OnnxError, Result};
use crate::proto::{
    AttributeProto, AttributeType, DATA_TYPE_BOOL, DATA_TYPE_FLOAT, DATA_TYPE_INT64, NodeProto,
    TensorProto,
};

/// What strata computed for a value on the example input: the trace's record.
#[derive(Clone, Debug)]
pub enum Example {
    /// A float tensor (activations, the model's input and output).
    Float(Tensor<f32>),
    /// Indices (the input of an embedding), exported as int64.
    Index(IndexTensor),
    /// A boolean mask (nonzero is `true`), exported as bool: the key-padding masks of
    /// attention, `true` marking a position to ignore as in PyTorch.
    Bool(Tensor<f32>),
}

impl Example {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Example::Float(t) | Example::Bool(t) => t.shape(),
            Example::Index(t) => t.shape(),
        }
    }

    /// The ONNX element type (`TensorProto.DataType`).
    pub fn elem_type(&self) -> i32 {
        match self {
            Example::Float(_) => DATA_TYPE_FLOAT,
            Example::Index(_) => DATA_TYPE_INT64,
            Example::Bool(_) => DATA_TYPE_BOOL,
        }
    }
}

impl From<Tensor<f32>> for Example {
    fn from(t: Tensor<f32>) -> Self {
        Example::Float(t)
    }
}

impl From<IndexTensor> for Example {
    fn from(t: IndexTensor) -> Self {
        Example::Index(t)
    }
}

/// A value of the graph being built: its name in the ONNX graph, the example value strata
/// computed for it, which dimension is the (dynamic) batch, and which other dimensions are
/// symbolic (a sequence length that the file must accept at any size).
#[derive(Clone, Debug)]
pub struct Value {
    name: String,
    example: Example,
    batch_axis: Option<usize>,
    dynamic: Vec<(usize, String)>,
}

impl Value {
    /// A value named `name` whose example is `example`, batch along `batch_axis`.
    pub fn new(
        name: impl Into<String>,
        example: impl Into<Example>,
        batch_axis: Option<usize>,
    ) -> Self {
        Value {
            name: name.into(),
            example: example.into(),
            batch_axis,
            dynamic: Vec::new(),
        }
    }

    /// This value with dimension `axis` symbolic, named `dim` (`"tgt_len"`; an empty name
    /// is a dimension of unknown size).
    pub fn with_dynamic(mut self, axis: usize, dim: impl Into<String>) -> Value {
        self.dynamic.retain(|(a, _)| *a != axis);
        self.dynamic.push((axis, dim.into()));
        self.dynamic.sort();
        self
    }

    /// The symbolic dimensions other than the batch, with their names.
    pub fn dynamic_axes(&self) -> &[(usize, String)] {
        &self.dynamic
    }

    /// Whether dimension `axis` is the batch or another symbolic dimension.
    pub fn is_dynamic(&self, axis: usize) -> bool {
        self.batch_axis == Some(axis) || self.dynamic.iter().any(|(a, _)| *a == axis)
    }

    /// A value named `name` with `example`, whose layout is this one's with dimension `d`
    /// removed (the batch and the symbolic dimensions after `d` shift down; `d`'s own
    /// symbol is dropped).
    pub fn without_axis(&self, name: impl Into<String>, example: Var<f32>, d: usize) -> Value {
        let batch = match self.batch_axis {
            Some(b) if b == d => None,
            Some(b) if b > d => Some(b - 1),
            other => other,
        };
        let mut v = Value::new(name, example.value(), batch);
        v.dynamic = self
            .dynamic
            .iter()
            .filter(|(a, _)| *a != d)
            .map(|(a, n)| (if *a > d { a - 1 } else { *a }, n.clone()))
            .collect();
        v
    }

    /// This value's layout (batch and symbolic dimensions) under another name and example.
    pub fn like(&self, name: impl Into<String>, example: impl Into<Example>) -> Value {
        Value {
            name: name.into(),
            example: example.into(),
            batch_axis: self.batch_axis,
            dynamic: self.dynamic.clone(),
        }
    }

    /// The value's name in the graph.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The example value strata computed.
    pub fn example(&self) -> &Example {
        &self.example
    }

    /// The example's shape.
    pub fn shape(&self) -> &[usize] {
        self.example.shape()
    }

    /// The rank.
    pub fn ndim(&self) -> usize {
        self.shape().len()
    }

    /// Which dimension is the batch, if any.
    pub fn batch_axis(&self) -> Option<usize> {
        self.batch_axis
    }

    /// The example as a float var (for running a strata layer on it).
    ///
    /// # Errors
    /// [`OnnxError::Input`] when the value holds indices, naming `layer`.
    pub fn float(&self, layer: &str) -> Result<Var<f32>> {
        match &self.example {
            Example::Float(t) => Ok(Var::new(t.clone())),
            Example::Index(t) => Err(OnnxError::Input {
                shape: t.shape().to_vec(),
                why: format!("{layer} takes floats, not indices"),
            }),
            Example::Bool(t) => Err(OnnxError::Input {
                shape: t.shape().to_vec(),
                why: format!("{layer} takes floats, not a boolean mask"),
            }),
        }
    }

    /// This value's name with another example (the output of a layer computed by strata),
    /// keeping the batch axis and the symbolic dimensions: for layers that change values,
    /// not the layout of the leading dimensions.
    pub fn with(&self, name: impl Into<String>, example: Var<f32>) -> Value {
        self.like(name, example.value())
    }
}

/// An attribute value, for [`Graph::op`].
#[derive(Clone, Debug)]
pub enum Attr {
    /// An int.
    Int(i64),
    /// A float.
    Float(f32),
    /// Ints.
    Ints(Vec<i64>),
    /// A string.
    Str(String),
    /// Strings.
    Strs(Vec<String>),
    /// A float tensor.
    Tensor(Tensor<f32>),
}

impl Attr {
    fn into_proto(self, name: &str) -> AttributeProto {
        let mut a = AttributeProto {
            name: name.to_string(),
            ..AttributeProto::default()
        };
        match self {
            Attr::Int(i) => {
                a.r#type = AttributeType::Int as i32;
                a.i = i;
            }
            Attr::Float(f) => {
                a.r#type = AttributeType::Float as i32;
                a.f = f;
            }
            Attr::Ints(v) => {
                a.r#type = AttributeType::Ints as i32;
                a.ints = v;
            }
            Attr::Str(s) => {
                a.r#type = AttributeType::String as i32;
                a.s = s.into_bytes();
            }
            Attr::Strs(v) => {
                a.r#type = AttributeType::Strings as i32;
                a.strings = v.into_iter().map(String::into_bytes).collect();
            }
            Attr::Tensor(t) => {
                a.r#type = AttributeType::Tensor as i32;
                a.t = Some(float_tensor(String::new(), &t));
            }
        }
        a
    }
}

/// `t` as a float `TensorProto` named `name`, its elements little-endian in `raw_data`.
fn float_tensor(name: String, t: &Tensor<f32>) -> TensorProto {
    let data = t.contiguous().to_vec();
    let mut raw = Vec::with_capacity(data.len() * 4);
    for x in data {
        raw.extend_from_slice(&x.to_le_bytes());
    }
    TensorProto {
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: DATA_TYPE_FLOAT,
        name,
        raw_data: raw,
        ..TensorProto::default()
    }
}

/// The ONNX graph an export builds: nodes in order, initializers, and the scope (the
/// state-dict prefix) that names the weights of the layer being exported.
#[derive(Default)]
pub struct Graph {
    pub(crate) nodes: Vec<NodeProto>,
    pub(crate) initializers: Vec<TensorProto>,
    scope: Vec<String>,
    counts: HashMap<String, usize>,
    /// Initializer names of parameters already written, by var id (a shared weight is
    /// written once).
    params: HashMap<u64, String>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` with `name` appended to the scope (as `visit_child` prefixes state-dict
    /// keys), so the weights it writes are named `…name.weight`.
    ///
    /// # Errors
    /// Whatever `f` returns.
    pub fn scoped<R>(&mut self, name: &str, f: impl FnOnce(&mut Graph) -> Result<R>) -> Result<R> {
        self.scope.push(name.to_string());
        let out = f(self);
        self.scope.pop();
        out
    }

    /// `name` inside the current scope (`"fc1.weight"`).
    pub fn scoped_name(&self, name: &str) -> String {
        let mut parts: Vec<&str> = self.scope.iter().map(String::as_str).collect();
        parts.push(name);
        parts.join(".")
    }

    /// A name not used before, from `hint` (`"fc1.MatMul"`, `"fc1.MatMul_1"`, …).
    pub fn fresh(&mut self, hint: &str) -> String {
        let base = self.scoped_name(hint);
        let count = self.counts.entry(base.clone()).or_insert(0);
        let name = if *count == 0 {
            base
        } else {
            format!("{base}_{count}")
        };
        *count += 1;
        name
    }

    /// Appends a node `op_type(inputs) -> outputs` with `attrs`; returns the name of its
    /// first output.
    pub fn op_n(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: usize,
        attrs: Vec<(&str, Attr)>,
    ) -> Vec<String> {
        let name = self.fresh(op_type);
        let outs: Vec<String> = (0..outputs)
            .map(|i| {
                if i == 0 {
                    format!("{name}_out")
                } else {
                    format!("{name}_out{i}")
                }
            })
            .collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outs.clone(),
            name,
            op_type: op_type.to_string(),
            attribute: attrs.into_iter().map(|(n, a)| a.into_proto(n)).collect(),
            ..NodeProto::default()
        });
        outs
    }

    /// Appends a node with one output; returns that output's name.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.op_n(op_type, inputs, 1, attrs).remove(0)
    }

    /// Writes `t` as a float initializer named `name` in the current scope (made unique);
    /// returns its name.
    pub fn constant(&mut self, name: &str, t: &Tensor<f32>) -> String {
        let name = self.fresh(name);
        self.initializers.push(float_tensor(name.clone(), t));
        name
    }

    /// Writes int64 values (a shape, axes, indices) as an initializer of shape `[len]`;
    /// returns its name.
    pub fn ints(&mut self, name: &str, values: &[i64]) -> String {
        let name = self.fresh(name);
        let mut raw = Vec::with_capacity(values.len() * 8);
        for x in values {
            raw.extend_from_slice(&x.to_le_bytes());
        }
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: DATA_TYPE_INT64,
            name: name.clone(),
            raw_data: raw,
            ..TensorProto::default()
        });
        name
    }

    /// A scalar (0-d) int64 constant (`Range`'s bounds).
    pub fn int_scalar(&mut self, name: &str, value: i64) -> String {
        let name = self.fresh(name);
        self.initializers.push(TensorProto {
            dims: vec![],
            data_type: DATA_TYPE_INT64,
            name: name.clone(),
            raw_data: value.to_le_bytes().to_vec(),
            ..TensorProto::default()
        });
        name
    }

    /// A scalar float constant.
    pub fn scalar(&mut self, name: &str, value: f32) -> String {
        self.constant(name, &Tensor::scalar(value))
    }

    /// Writes the parameter `var` as an initializer named `name` in the current scope (its
    /// state-dict key); a var written before is not written again.
    pub fn param(&mut self, name: &str, var: &Var<f32>) -> String {
        if let Some(existing) = self.params.get(&var.id()) {
            return existing.clone();
        }
        let written = self.constant(name, &var.value());
        self.params.insert(var.id(), written.clone());
        written
    }

    /// `y = x·Wᵀ + b` for `x` of any rank, with `weight` `[out, in]` (PyTorch's layout)
    /// written under `weight_name`: `Gemm` for 2-d inputs, `MatMul` with the transposed
    /// weight otherwise.
    pub fn linear(&mut self, x: &str, rank: usize, weight: &str, bias: Option<&str>) -> String {
        if rank == 2 {
            let mut inputs = vec![x, weight];
            inputs.extend(bias);
            return self.op("Gemm", &inputs, vec![("transB", Attr::Int(1))]);
        }
        let wt = self.op(
            "Transpose",
            &[weight],
            vec![("perm", Attr::Ints(vec![1, 0]))],
        );
        let y = self.op("MatMul", &[x, &wt], vec![]);
        match bias {
            Some(b) => self.op("Add", &[&y, b], vec![]),
            None => y,
        }
    }

    /// `Reshape(x, shape)`, where `0` keeps the input's dimension and `-1` is inferred (so
    /// a dynamic batch passes through).
    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let s = self.ints("shape", shape);
        self.op("Reshape", &[x, &s], vec![])
    }

    /// `Transpose(x, perm)`.
    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.op("Transpose", &[x], vec![("perm", Attr::Ints(perm.to_vec()))])
    }

    /// The sizes of dimensions `start..end` of `x` at run time (`Shape` with `start` and
    /// `end`), an int64 vector: for shapes that follow a symbolic dimension.
    pub fn shape_of(&mut self, x: &str, start: i64, end: i64) -> String {
        self.op(
            "Shape",
            &[x],
            vec![("start", Attr::Int(start)), ("end", Attr::Int(end))],
        )
    }

    /// `Unsqueeze(x, axes)`.
    pub fn unsqueeze(&mut self, x: &str, axes: &[i64]) -> String {
        let a = self.ints("axes", axes);
        self.op("Unsqueeze", &[x, &a], vec![])
    }

    /// `Concat(parts, axis)`.
    pub fn concat(&mut self, parts: &[&str], axis: i64) -> String {
        self.op("Concat", parts, vec![("axis", Attr::Int(axis))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_scoped_and_unique() {
        let mut g = Graph::new();
        let a = g.op("Relu", &["x"], vec![]);
        let b = g.op("Relu", &[&a], vec![]);
        assert_ne!(a, b);
        let w = g.scoped("encoder", |g| {
            g.scoped(
                "layers.0",
                |g| Ok(g.constant("weight", &Tensor::ones(&[2]))),
            )
        });
        assert_eq!(w.unwrap(), "encoder.layers.0.weight");
        // A parameter used twice is written once.
        let p = Var::parameter(Tensor::<f32>::ones(&[3]));
        let first = g.param("weight", &p);
        let again = g.param("other", &p);
        assert_eq!(first, again);
        assert_eq!(g.initializers.len(), 2);
        assert_eq!(
            g.initializers[1].raw_data,
            [1.0f32.to_le_bytes(); 3].concat()
        );
    }
}
