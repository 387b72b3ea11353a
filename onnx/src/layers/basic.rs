//! Linear, convolutions, pooling, normalisation, activations, reshapes, dropout,
//! embeddings, positional encodings and `Sequential`.

use strata_nn::{
    AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool1d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d,
    Conv2d, Dropout, Embedding, Flatten, Forward, GELU, GroupNorm, Identity, LayerNorm, LeakyReLU,
    LearnedPositionalEncoding, Linear, LogSoftmax, MaxPool1d, MaxPool2d, Pool1dParams, ReLU,
    Sequential, SiLU, Sigmoid, SinusoidalPositionalEncoding, Softmax, Tanh,
};
use strata_tensor::{Pool2dParams, Tensor};

use super::{Export, export_forward, run};
use crate::error::{OnnxError, Result, unsupported};
use crate::graph::{Attr, Example, Graph, Value};

pub(crate) fn ints(v: &[usize]) -> Attr {
    Attr::Ints(v.iter().map(|&x| x as i64).collect())
}

/// `dim` (maybe negative) as an index into `rank` dimensions.
fn axis(dim: isize, rank: usize) -> i64 {
    if dim < 0 { dim + rank as isize } else { dim }
        .try_into()
        .unwrap_or(0)
}

impl Export for Linear<f32> {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(self.forward(&x.float("Linear")?.clone())?))?;
        let w = g.param("weight", &self.weight);
        let b = self.bias.as_ref().map(|b| g.param("bias", b));
        let out = g.linear(x.name(), x.ndim(), &w, b.as_deref());
        Ok(x.with(out, y))
    }
}

/// A `Conv` node: `pads` are the leading pads, `extra` the additional trailing ones.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    g: &mut Graph,
    x: &str,
    weight: &strata_autograd::Var<f32>,
    bias: Option<&strata_autograd::Var<f32>>,
    kernel: &[usize],
    stride: &[usize],
    pads: &[usize],
    extra: &[usize],
    dilation: &[usize],
    groups: usize,
) -> String {
    let w = g.param("weight", weight);
    let b = bias.map(|b| g.param("bias", b));
    let mut inputs = vec![x, w.as_str()];
    inputs.extend(b.as_deref());
    let mut all_pads: Vec<usize> = pads.to_vec();
    all_pads.extend(pads.iter().zip(extra).map(|(p, e)| p + e));
    g.op(
        "Conv",
        &inputs,
        vec![
            ("kernel_shape", ints(kernel)),
            ("strides", ints(stride)),
            ("pads", ints(&all_pads)),
            ("dilations", ints(dilation)),
            ("group", Attr::Int(groups as i64)),
        ],
    )
}

pub(crate) fn batched(layer: &str, x: &Value, rank: usize) -> Result<()> {
    if x.ndim() != rank || x.batch_axis() != Some(0) {
        return Err(OnnxError::Input {
            shape: x.shape().to_vec(),
            why: format!("{layer} exports batched inputs of rank {rank}, batch first"),
        });
    }
    Ok(())
}

impl Export for Conv2d<f32> {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(self.forward(&x.float("Conv2d")?)?))?;
        batched("Conv2d", x, 4)?;
        let ws = self.weight.shape();
        let kernel = [ws[2], ws[3]];
        let p = self.params();
        let (pads, extra) = p.padding.resolve(kernel, p.dilation);
        let out = conv(
            g,
            x.name(),
            &self.weight,
            self.bias.as_ref(),
            &kernel,
            &p.stride,
            &pads,
            &extra,
            &p.dilation,
            p.groups,
        );
        Ok(x.with(out, y))
    }
}

impl Export for Conv1d<f32> {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(self.forward(&x.float("Conv1d")?)?))?;
        batched("Conv1d", x, 3)?;
        let kernel = [self.weight.shape()[2]];
        let p = self.params();
        let (pads, extra) = p.padding.resolve(kernel, [p.dilation]);
        let out = conv(
            g,
            x.name(),
            &self.weight,
            self.bias.as_ref(),
            &kernel,
            &[p.stride],
            &pads,
            &extra,
            &[p.dilation],
            p.groups,
        );
        Ok(x.with(out, y))
    }
}

/// A `MaxPool` or `AveragePool` node for 2-d pool settings (1-d ones use the width only).
fn pool(
    g: &mut Graph,
    layer: &str,
    x: &str,
    p: &Pool2dParams,
    one_d: bool,
    max: bool,
) -> Result<String> {
    let pick = |a: [usize; 2]| if one_d { vec![a[1]] } else { a.to_vec() };
    let pads = pick(p.padding);
    let mut all_pads = pads.clone();
    all_pads.extend(&pads);
    let mut attrs = vec![
        ("kernel_shape", ints(&pick(p.kernel))),
        ("strides", ints(&pick(p.stride))),
        ("pads", ints(&all_pads)),
        ("ceil_mode", Attr::Int(p.ceil_mode as i64)),
    ];
    if max {
        attrs.push(("dilations", ints(&pick(p.dilation))));
        return Ok(g.op("MaxPool", &[x], attrs));
    }
    if p.divisor_override.is_some() {
        return Err(unsupported(
            layer,
            "divisor_override has no ONNX equivalent",
        ));
    }
    if p.dilation != [1, 1] {
        return Err(unsupported(
            layer,
            "a dilated average pool has no ONNX equivalent",
        ));
    }
    attrs.push(("count_include_pad", Attr::Int(p.count_include_pad as i64)));
    Ok(g.op("AveragePool", &[x], attrs))
}

fn pool1d_params(p: &Pool1dParams) -> Pool2dParams {
    Pool2dParams {
        kernel: [1, p.kernel],
        stride: [1, p.stride],
        padding: [0, p.padding],
        dilation: [1, p.dilation],
        ceil_mode: p.ceil_mode,
        count_include_pad: p.count_include_pad,
        divisor_override: None,
    }
}

macro_rules! pool_layers {
    ($($ty:ty => $name:literal, $rank:literal, $one_d:literal, $max:literal, |$s:ident| $params:expr;)*) => {$(
        impl Export for $ty {
            fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
                let y = run(|| Ok(Forward::<f32>::forward(self, &x.float($name)?)?))?;
                batched($name, x, $rank)?;
                let $s = self;
                let out = pool(g, $name, x.name(), &$params, $one_d, $max)?;
                Ok(x.with(out, y))
            }
        }
    )*};
}

pool_layers! {
    MaxPool2d => "MaxPool2d", 4, false, true, |s| s.params;
    AvgPool2d => "AvgPool2d", 4, false, false, |s| s.params;
    MaxPool1d => "MaxPool1d", 3, true, true, |s| pool1d_params(&s.params);
    AvgPool1d => "AvgPool1d", 3, true, false, |s| pool1d_params(&s.params);
}

/// Adaptive pooling where ONNX can say it: to 1 × 1 (a global pool), or when each output
/// cell covers an equal, disjoint window (the input size a multiple of the output size).
fn adaptive(g: &mut Graph, layer: &str, x: &Value, out: [usize; 2], max: bool) -> Result<String> {
    batched(layer, x, 4)?;
    let (h, w) = (x.shape()[2], x.shape()[3]);
    if out == [1, 1] {
        let op = if max {
            "GlobalMaxPool"
        } else {
            "GlobalAveragePool"
        };
        return Ok(g.op(op, &[x.name()], vec![]));
    }
    if out.contains(&0) || h % out[0] != 0 || w % out[1] != 0 {
        return Err(unsupported(
            layer,
            format!(
                "an output of {out:?} from {h} × {w} has windows of unequal sizes, which ONNX's \
                 pools cannot express"
            ),
        ));
    }
    let kernel = [h / out[0], w / out[1]];
    let attrs = vec![("kernel_shape", ints(&kernel)), ("strides", ints(&kernel))];
    Ok(g.op(
        if max { "MaxPool" } else { "AveragePool" },
        &[x.name()],
        attrs,
    ))
}

impl Export for AdaptiveAvgPool2d {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| {
            Ok(Forward::<f32>::forward(
                self,
                &x.float("AdaptiveAvgPool2d")?,
            )?)
        })?;
        let out = adaptive(g, "AdaptiveAvgPool2d", x, self.output_size, false)?;
        Ok(x.with(out, y))
    }
}

impl Export for AdaptiveMaxPool2d {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| {
            Ok(Forward::<f32>::forward(
                self,
                &x.float("AdaptiveMaxPool2d")?,
            )?)
        })?;
        let out = adaptive(g, "AdaptiveMaxPool2d", x, self.output_size, true)?;
        Ok(x.with(out, y))
    }
}

/// BatchNormalization with the running statistics (eval mode).
macro_rules! batch_norm {
    ($($ty:ty => $name:literal;)*) => {$(
        impl Export for $ty {
            fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
                if self.is_training() {
                    return Err(unsupported(
                        $name,
                        "it is in train mode (batch statistics); call eval() before exporting",
                    ));
                }
                let (Some(mean), Some(var)) = (self.running_mean(), self.running_var()) else {
                    return Err(unsupported(
                        $name,
                        "without running statistics it normalises with batch statistics, \
                         which ONNX's BatchNormalization does not do",
                    ));
                };
                let y = run(|| Ok(self.forward(&x.float($name)?)?))?;
                let c = mean.shape()[0];
                let scale = match self.weight() {
                    Some(w) => g.param("weight", w),
                    None => g.constant("weight", &Tensor::ones(&[c])),
                };
                let bias = match self.bias() {
                    Some(b) => g.param("bias", b),
                    None => g.constant("bias", &Tensor::zeros(&[c])),
                };
                let mean = g.constant("running_mean", &mean);
                let var = g.constant("running_var", &var);
                let out = g.op(
                    "BatchNormalization",
                    &[x.name(), &scale, &bias, &mean, &var],
                    vec![("epsilon", Attr::Float(self.config().eps as f32))],
                );
                Ok(x.with(out, y))
            }
        }
    )*};
}

batch_norm! {
    BatchNorm1d<f32> => "BatchNorm1d";
    BatchNorm2d<f32> => "BatchNorm2d";
}

impl Export for LayerNorm<f32> {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(self.forward(&x.float("LayerNorm")?)?))?;
        let shape = self.normalized_shape();
        let scale = match &self.weight {
            Some(w) => g.param("weight", w),
            None => g.constant("weight", &Tensor::ones(shape)),
        };
        let mut inputs = vec![x.name().to_string(), scale];
        if let Some(b) = &self.bias {
            inputs.push(g.param("bias", b));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let out = g.op(
            "LayerNormalization",
            &refs,
            vec![
                ("axis", Attr::Int(-(shape.len() as i64))),
                ("epsilon", Attr::Float(self.eps() as f32)),
            ],
        );
        Ok(x.with(out, y))
    }
}

impl Export for GroupNorm<f32> {
    /// `[N, C, *]` viewed as `[N, G, rest]`, normalised over `rest` by hand (ReduceMean,
    /// Sub, Mul, Sqrt, Div: GroupNormalization of opset 18 changed meaning in opset 21),
    /// then the per-channel affine map.
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(self.forward(&x.float("GroupNorm")?)?))?;
        if x.batch_axis() != Some(0) || x.ndim() < 2 {
            return Err(OnnxError::Input {
                shape: x.shape().to_vec(),
                why: "GroupNorm exports batched inputs [N, C, *]".into(),
            });
        }
        let groups = self.num_groups() as i64;
        let grouped = g.reshape(x.name(), &[0, groups, -1]);
        let axes = vec![("axes", Attr::Ints(vec![2])), ("keepdims", Attr::Int(1))];
        let mean = g.op("ReduceMean", &[&grouped], axes.clone());
        let centred = g.op("Sub", &[&grouped, &mean], vec![]);
        let square = g.op("Mul", &[&centred, &centred], vec![]);
        let var = g.op("ReduceMean", &[&square], axes);
        let eps = g.scalar("eps", self.eps() as f32);
        let var = g.op("Add", &[&var, &eps], vec![]);
        let std = g.op("Sqrt", &[&var], vec![]);
        let normed = g.op("Div", &[&centred, &std], vec![]);
        let mut back: Vec<i64> = vec![0];
        back.extend(x.shape()[1..].iter().map(|&d| d as i64));
        let mut out = g.reshape(&normed, &back);
        let c = x.shape()[1];
        let mut per_channel = vec![c];
        per_channel.extend(std::iter::repeat_n(1, x.ndim() - 2));
        if let Some(w) = &self.weight {
            let w = g.constant("weight", &w.value().reshape(per_channel.as_slice())?);
            out = g.op("Mul", &[&out, &w], vec![]);
        }
        if let Some(b) = &self.bias {
            let b = g.constant("bias", &b.value().reshape(per_channel.as_slice())?);
            out = g.op("Add", &[&out, &b], vec![]);
        }
        Ok(x.with(out, y))
    }
}

macro_rules! unit_ops {
    ($($ty:ty => $op:literal;)*) => {$(
        impl Export for $ty {
            fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
                let y = run(|| Ok(Forward::<f32>::forward(self, &x.float($op)?)?))?;
                let out = g.op($op, &[x.name()], vec![]);
                Ok(x.with(out, y))
            }
        }
    )*};
}

unit_ops! {
    ReLU => "Relu";
    Sigmoid => "Sigmoid";
    Tanh => "Tanh";
}

impl Export for SiLU {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(Forward::<f32>::forward(self, &x.float("SiLU")?)?))?;
        let s = g.op("Sigmoid", &[x.name()], vec![]);
        let out = g.op("Mul", &[x.name(), &s], vec![]);
        Ok(x.with(out, y))
    }
}

impl Export for Identity {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let out = g.op("Identity", &[x.name()], vec![]);
        Ok(x.like(out, x.example().clone()))
    }
}

impl Export for LeakyReLU {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(Forward::<f32>::forward(self, &x.float("LeakyReLU")?)?))?;
        let alpha = Attr::Float(self.negative_slope as f32);
        let out = g.op("LeakyRelu", &[x.name()], vec![("alpha", alpha)]);
        Ok(x.with(out, y))
    }
}

/// GELU as its formula (the `Gelu` op only exists from opset 20): `x/2 · (1 + erf(x/√2))`,
/// or with `tanh`, `x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`.
pub(crate) fn gelu(g: &mut Graph, x: &str, tanh: bool) -> String {
    let inner = if tanh {
        let cube = g.op("Mul", &[x, x], vec![]);
        let cube = g.op("Mul", &[&cube, x], vec![]);
        let c = g.scalar("gelu_c", 0.044715);
        let term = g.op("Mul", &[&cube, &c], vec![]);
        let sum = g.op("Add", &[x, &term], vec![]);
        let k = g.scalar("gelu_k", (2.0 / std::f64::consts::PI).sqrt() as f32);
        let arg = g.op("Mul", &[&sum, &k], vec![]);
        g.op("Tanh", &[&arg], vec![])
    } else {
        let k = g.scalar("gelu_k", std::f32::consts::FRAC_1_SQRT_2);
        let arg = g.op("Mul", &[x, &k], vec![]);
        g.op("Erf", &[&arg], vec![])
    };
    let one = g.scalar("one", 1.0);
    let half = g.scalar("half", 0.5);
    let sum = g.op("Add", &[&inner, &one], vec![]);
    let half_x = g.op("Mul", &[x, &half], vec![]);
    g.op("Mul", &[&half_x, &sum], vec![])
}

impl Export for GELU {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(Forward::<f32>::forward(self, &x.float("GELU")?)?))?;
        let out = gelu(g, x.name(), self.tanh);
        Ok(x.with(out, y))
    }
}

impl Export for Softmax {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(Forward::<f32>::forward(self, &x.float("Softmax")?)?))?;
        let a = Attr::Int(axis(self.dim, x.ndim()));
        let out = g.op("Softmax", &[x.name()], vec![("axis", a)]);
        Ok(x.with(out, y))
    }
}

impl Export for LogSoftmax {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(Forward::<f32>::forward(self, &x.float("LogSoftmax")?)?))?;
        let a = Attr::Int(axis(self.dim, x.ndim()));
        let out = g.op("LogSoftmax", &[x.name()], vec![("axis", a)]);
        Ok(x.with(out, y))
    }
}

/// `x.flatten(start, end)` as a `Reshape` that keeps the dimensions before `start` (`0`),
/// infers the merged one (`-1`) and states those after `end`; the batch stays dynamic
/// when it is before `end`.
pub(crate) fn flatten(
    g: &mut Graph,
    x: &Value,
    start: isize,
    end: isize,
    y: strata_autograd::Var<f32>,
) -> Result<Value> {
    let rank = x.ndim();
    let (s, e) = (axis(start, rank) as usize, axis(end, rank) as usize);
    if let Some(b) = x.batch_axis()
        && b > e
    {
        return Err(unsupported(
            "Flatten",
            format!("merging dimensions {s}..={e} before the batch dimension {b}"),
        ));
    }
    if let Some((a, name)) = x.dynamic_axes().iter().find(|(a, _)| *a > e) {
        return Err(unsupported(
            "Flatten",
            format!(
                "merging dimensions {s}..={e} before the symbolic dimension {a} ({name:?}): \
                 the reshape would fix its size"
            ),
        ));
    }
    let mut shape: Vec<i64> = vec![0; s];
    shape.push(-1);
    shape.extend(x.shape()[e + 1..].iter().map(|&d| d as i64));
    let out = g.reshape(x.name(), &shape);
    let batch = x.batch_axis().map(|b| b.min(s));
    let mut v = Value::new(out, y.value(), batch);
    // Symbolic dimensions before `start` stay; one merged into `start` makes it unknown.
    for (a, name) in x.dynamic_axes() {
        if *a < s {
            v = v.with_dynamic(*a, name.clone());
        } else if batch != Some(s) {
            v = v.with_dynamic(s, "");
        }
    }
    Ok(v)
}

impl Export for Flatten {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(Forward::<f32>::forward(self, &x.float("Flatten")?)?))?;
        flatten(g, x, self.start_dim, self.end_dim, y)
    }
}

/// Dropout at inference is the identity; a layer in train mode is refused (its output is
/// random).
pub(crate) fn check_dropout(layer: &str, d: &Dropout) -> Result<()> {
    if d.is_training() && d.p() > 0.0 {
        return Err(unsupported(
            layer,
            "dropout is in train mode (random); call eval() before exporting",
        ));
    }
    Ok(())
}

impl Export for Dropout {
    fn export(&self, _g: &mut Graph, x: &Value) -> Result<Value> {
        check_dropout("Dropout", self)?;
        Ok(x.clone())
    }
}

impl Export for Embedding<f32> {
    /// `Gather(weight, indices, axis = 0)`.
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let Example::Index(ids) = x.example() else {
            return Err(OnnxError::Input {
                shape: x.shape().to_vec(),
                why: "Embedding takes indices (int64), not floats".into(),
            });
        };
        let y = run(|| Ok(self.forward(ids)?))?;
        let w = g.param("weight", &self.weight);
        let out = g.op("Gather", &[&w, x.name()], vec![("axis", Attr::Int(0))]);
        Ok(x.with(out, y))
    }
}

/// `x + table[:L]` for batch-first `x` `[N, L, E]`, `L` read at run time.
fn add_positions(
    g: &mut Graph,
    x: &Value,
    layer: &str,
    table: &str,
    y: strata_autograd::Var<f32>,
) -> Result<Value> {
    if x.ndim() != 3 || x.batch_axis() != Some(0) {
        return Err(OnnxError::Input {
            shape: x.shape().to_vec(),
            why: format!("{layer} exports batched inputs [N, L, E]"),
        });
    }
    // The rows up to the length at run time, so a symbolic length follows.
    let starts = g.ints("starts", &[0]);
    let ends = g.shape_of(x.name(), 1, 2);
    let axes = g.ints("axes", &[0]);
    let rows = g.op("Slice", &[table, &starts, &ends, &axes], vec![]);
    let out = g.op("Add", &[x.name(), &rows], vec![]);
    Ok(x.with(out, y))
}

impl Export for LearnedPositionalEncoding<f32> {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(self.forward(&x.float("LearnedPositionalEncoding")?)?))?;
        let table = g.param("weight", &self.weight);
        add_positions(g, x, "LearnedPositionalEncoding", &table, y)
    }
}

impl Export for SinusoidalPositionalEncoding<f32> {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(self.forward(&x.float("SinusoidalPositionalEncoding")?)?))?;
        let table = g.constant("pe", self.table());
        add_positions(g, x, "SinusoidalPositionalEncoding", &table, y)
    }
}

impl Export for Sequential<f32> {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let mut h = x.clone();
        for i in 0..self.len() {
            if let Some(layer) = self.get(i) {
                h = g.scoped(&i.to_string(), |g| export_forward(layer, g, &h))?;
            }
        }
        Ok(h)
    }
}
