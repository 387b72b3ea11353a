//! Multi-head self-attention and the transformer encoder, decomposed into `MatMul`, `Add`,
//! `Reshape`, `Transpose`, `Softmax` and `LayerNormalization` (ONNX has no attention
//! operator in its default domain before opset 23).

use strata_autograd::Var;
use strata_nn::{
    AttnMask, Linear, MhaForward, MultiheadAttention, TransformerActivation, TransformerEncoder,
    TransformerEncoderLayer,
};
use strata_tensor::Tensor;

use super::basic::{check_dropout, gelu};
use super::{Export, run};
use crate::error::{OnnxError, Result, unsupported};
use crate::graph::{Attr, Example, Graph, Value};

/// `a + b` of two values of the same layout.
pub(crate) fn add(g: &mut Graph, a: &Value, b: &Value) -> Result<Value> {
    let y = Var::new(a.float("Add")?.value().add(&b.float("Add")?.value())?);
    let out = g.op("Add", &[a.name(), b.name()], vec![]);
    Ok(a.with(out, y))
}

/// The mask as an additive `[L, S]` constant: a boolean `true` (nonzero) is `-∞`.
fn additive_mask(mask: &AttnMask<f32>, l: usize, s: usize) -> Result<Tensor<f32>> {
    let t = mask.tensor();
    if t.shape() != [l, s] {
        return Err(unsupported(
            "MultiheadAttention",
            format!(
                "an attention mask of shape {:?} (only one [L, S] = [{l}, {s}] mask, shared \
                 by the whole batch, can be a constant of the graph)",
                t.shape()
            ),
        ));
    }
    Ok(match mask {
        AttnMask::Bool(t) => t.map(|v| if v != 0.0 { f32::NEG_INFINITY } else { 0.0 }),
        AttnMask::Additive(t) => t.clone(),
    })
}

/// Masks fed to, or built in, the graph, so that one file runs at every length: the
/// causal mask made from the query's length at run time, and a key-padding mask that is
/// an input of the graph.
#[derive(Clone, Copy, Debug, Default)]
pub struct GraphMasks<'a> {
    /// The causal mask (position `i` attends to `j <= i`), built in the graph with
    /// `Range` and `Greater` from the sequence length (PyTorch's `is_causal` with
    /// `generate_square_subsequent_mask`).
    pub causal: bool,
    /// A key-padding mask `[N, S]`: a boolean input (`true` = ignore that key, PyTorch's
    /// convention) or a float one added to the scores.
    pub key_padding: Option<&'a Value>,
}

/// The strata mask of a mask input's example: boolean or additive.
pub(crate) fn strata_mask(layer: &str, v: &Value) -> Result<AttnMask<f32>> {
    match v.example() {
        Example::Bool(t) => Ok(AttnMask::Bool(t.clone())),
        Example::Float(t) => Ok(AttnMask::Additive(t.clone())),
        Example::Index(t) => Err(OnnxError::Input {
            shape: t.shape().to_vec(),
            why: format!("{layer}: a key-padding mask is boolean or float, not indices"),
        }),
    }
}

/// The causal mask `[L, L]` of the length of dimension 1 of `h` (batch-first), built at
/// run time: `-inf` where the key comes after the query, `0` elsewhere. The positions are
/// the running sum of `L` ones (tract cannot type `Range` over a symbolic length).
fn causal_mask(g: &mut Graph, h: &str) -> String {
    let len = g.shape_of(h, 1, 2);
    let ones = g.op(
        "ConstantOfShape",
        &[&len],
        vec![(
            "value",
            Attr::Tensor(Tensor::from_vec(vec![1.0f32], &[1]).expect("one value")),
        )],
    );
    let axis = g.int_scalar("axis", 0);
    let positions = g.op("CumSum", &[&ones, &axis], vec![]);
    let rows = g.unsqueeze(&positions, &[1]);
    let cols = g.unsqueeze(&positions, &[0]);
    let future = g.op("Greater", &[&cols, &rows], vec![]);
    let ninf = g.scalar("neg_inf", f32::NEG_INFINITY);
    let zero = g.scalar("zero", 0.0);
    g.op("Where", &[&future, &ninf, &zero], vec![])
}

/// A key-padding mask input `[N, S]` as an additive `[N, 1, 1, S]`.
fn padding_mask(g: &mut Graph, m: &Value) -> Result<String> {
    let additive = match m.example() {
        Example::Bool(_) => {
            let ninf = g.scalar("neg_inf", f32::NEG_INFINITY);
            let zero = g.scalar("zero", 0.0);
            g.op("Where", &[m.name(), &ninf, &zero], vec![])
        }
        Example::Float(_) => m.name().to_string(),
        Example::Index(t) => {
            return Err(OnnxError::Input {
                shape: t.shape().to_vec(),
                why: "a key-padding mask is boolean or float, not indices".into(),
            });
        }
    };
    Ok(g.unsqueeze(&additive, &[1, 2]))
}

/// Attention `mha(query, kv, kv)` (self-attention when `kv` is `None`) with an optional
/// constant `[L, S]` mask (`constant_is_causal`: PyTorch's `is_causal` hint that it is the
/// causal one) and the graph's masks, as `softmax(Q·Kᵀ/√d + masks)·V` per head,
/// then the output projection. A query whose every key is masked gets zeros, as strata's
/// (and PyTorch's) fused attention gives.
pub(crate) fn attention(
    mha: &MultiheadAttention<f32>,
    g: &mut Graph,
    query: &Value,
    kv: Option<&Value>,
    constant: Option<&AttnMask<f32>>,
    constant_is_causal: bool,
    masks: GraphMasks<'_>,
) -> Result<Value> {
    const LAYER: &str = "MultiheadAttention";
    let config = mha.config();
    if mha.is_training() && config.dropout > 0.0 {
        return Err(unsupported(
            LAYER,
            "attention dropout is in train mode (random); call eval() before exporting",
        ));
    }
    if constant.is_some() && masks.causal {
        return Err(unsupported(
            LAYER,
            "a constant mask and the graph's causal mask together (pass one of them)",
        ));
    }
    let qv = query.float(LAYER)?;
    let kvv = match kv {
        Some(m) => m.float(LAYER)?,
        None => qv.clone(),
    };
    let causal_constant = masks.causal.then(|| {
        let len = query.shape()[usize::from(config.batch_first)];
        AttnMask::square_subsequent(len)
    });
    let padding = masks
        .key_padding
        .map(|m| strata_mask(LAYER, m))
        .transpose()?;
    let options = MhaForward {
        attn_mask: constant.or(causal_constant.as_ref()),
        key_padding_mask: padding.as_ref(),
        need_weights: false,
        is_causal: masks.causal || constant_is_causal,
        ..MhaForward::default()
    };
    let y = run(|| Ok(mha.forward(&qv, &kvv, &kvv, &options)?.0))?;
    let batch_axis = usize::from(!config.batch_first);
    for v in std::iter::once(query).chain(kv) {
        if v.ndim() != 3 || v.batch_axis() != Some(batch_axis) {
            return Err(OnnxError::Input {
                shape: v.shape().to_vec(),
                why: format!("{LAYER} exports batched inputs with the batch dynamic"),
            });
        }
    }
    let (e, heads) = (config.embed_dim, config.num_heads);
    let head_dim = e / heads;
    // Batch-first inside: [N, L, E].
    let batch_first = |g: &mut Graph, v: &Value| {
        if config.batch_first {
            v.name().to_string()
        } else {
            g.transpose(v.name(), &[1, 0, 2])
        }
    };
    let hq = batch_first(g, query);
    let hkv = match kv {
        Some(m) => batch_first(g, m),
        None => hq.clone(),
    };
    let w = mha.in_proj_weight.value();
    let b = mha.in_proj_bias.as_ref().map(Var::value);
    let project = |g: &mut Graph, h: &str, i: usize, name: &str| -> Result<String> {
        let wi = g.constant(&format!("in_proj_weight_{name}"), &w.narrow(0, i * e, e)?);
        let bi = match &b {
            Some(b) => Some(g.constant(&format!("in_proj_bias_{name}"), &b.narrow(0, i * e, e)?)),
            None => None,
        };
        let p = g.linear(h, 3, &wi, bi.as_deref());
        // [N, L, E] → [N, L, heads, d] → [N, heads, L, d]
        let p = g.reshape(&p, &[0, 0, heads as i64, head_dim as i64]);
        Ok(g.transpose(&p, &[0, 2, 1, 3]))
    };
    let q = project(g, &hq, 0, "q")?;
    let k = project(g, &hkv, 1, "k")?;
    let v = project(g, &hkv, 2, "v")?;
    let kt = g.transpose(&k, &[0, 1, 3, 2]);
    let scores = g.op("MatMul", &[&q, &kt], vec![]);
    let scale = g.scalar("scale", 1.0 / (head_dim as f32).sqrt());
    let mut scores = g.op("Mul", &[&scores, &scale], vec![]);
    if let Some(m) = constant {
        let (l, s) = (qv.shape()[1 - batch_axis], kvv.shape()[1 - batch_axis]);
        let m = g.constant("attn_mask", &additive_mask(m, l, s)?);
        scores = g.op("Add", &[&scores, &m], vec![]);
    }
    if masks.causal {
        let m = causal_mask(g, &hq);
        scores = g.op("Add", &[&scores, &m], vec![]);
    }
    if let Some(p) = masks.key_padding {
        let m = padding_mask(g, p)?;
        scores = g.op("Add", &[&scores, &m], vec![]);
    }
    let mut probs = g.op("Softmax", &[&scores], vec![("axis", Attr::Int(3))]);
    if masks.key_padding.is_some() || constant.is_some() {
        // A row of -inf gives NaN in Softmax; strata's attention gives zeros there.
        let nan = g.op("IsNaN", &[&probs], vec![]);
        let zero = g.scalar("zero", 0.0);
        probs = g.op("Where", &[&nan, &zero, &probs], vec![]);
    }
    let attn = g.op("MatMul", &[&probs, &v], vec![]);
    let attn = g.transpose(&attn, &[0, 2, 1, 3]);
    let attn = g.reshape(&attn, &[0, 0, e as i64]);
    let ow = g.scoped("out_proj", |g| Ok(g.param("weight", &mha.out_proj.weight)))?;
    let ob = match &mha.out_proj.bias {
        Some(b) => Some(g.scoped("out_proj", |g| Ok(g.param("bias", b)))?),
        None => None,
    };
    let mut out = g.linear(&attn, 3, &ow, ob.as_deref());
    if !config.batch_first {
        out = g.transpose(&out, &[1, 0, 2]);
    }
    Ok(query.with(out, y))
}

/// Self-attention `mha(x, x, x)` with an optional `[L, L]` mask (`nn.MultiheadAttention`'s
/// convention: a boolean `true` means *not allowed*), as
/// `softmax(Q·Kᵀ/√d + mask)·V` per head, then the output projection. The mask is a
/// constant of the graph, so the file runs at the traced length only; see
/// [`GraphMasks`] and [`export_encoder_masked`] for masks that follow the length.
///
/// # Errors
/// [`OnnxError::Unsupported`] for a mask that is not one `[L, L]` tensor, dropout in train
/// mode, `is_causal` without a mask; the layer's own errors on the example.
pub fn export_self_attention(
    mha: &MultiheadAttention<f32>,
    g: &mut Graph,
    x: &Value,
    mask: Option<&AttnMask<f32>>,
    is_causal: bool,
) -> Result<Value> {
    if is_causal && mask.is_none() {
        return Err(unsupported(
            "MultiheadAttention",
            "is_causal needs the mask itself",
        ));
    }
    attention(mha, g, x, None, mask, is_causal, GraphMasks::default())
}

impl Export for MultiheadAttention<f32> {
    /// Self-attention without a mask (see [`export_self_attention`]).
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        export_self_attention(self, g, x, None, false)
    }
}

/// The feed-forward block `linear2(activation(linear1(h)))` of a transformer layer.
pub(crate) fn feed_forward(
    g: &mut Graph,
    linear1: &Linear<f32>,
    linear2: &Linear<f32>,
    activation: TransformerActivation,
    h: &Value,
) -> Result<Value> {
    let a = g.scoped("linear1", |g| linear1.export(g, h))?;
    let y = run(|| {
        Ok(match activation {
            TransformerActivation::Relu => a.float("linear1")?.relu(),
            TransformerActivation::Gelu => a.float("linear1")?.gelu(),
        })
    })?;
    let out = match activation {
        TransformerActivation::Relu => g.op("Relu", &[a.name()], vec![]),
        TransformerActivation::Gelu => gelu(g, a.name(), false),
    };
    let a = a.with(out, y);
    g.scoped("linear2", |g| linear2.export(g, &a))
}

/// The trace's check: the pieces, exported one by one, must add up to the layer's own
/// forward (`expected`); the output carries the layer's own value.
pub(crate) fn check_pieces(layer: &str, out: &Value, expected: Var<f32>) -> Result<Value> {
    let pieces = out.float(layer)?.value().contiguous().to_vec();
    let whole = expected.value().contiguous().to_vec();
    let scale = whole.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let gap = pieces
        .iter()
        .zip(&whole)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    if pieces.len() != whole.len() || gap.is_nan() || gap > 1e-4 * scale {
        return Err(unsupported(
            layer,
            format!("the exported pieces differ from the layer's forward by {gap}"),
        ));
    }
    Ok(out.with(out.name().to_string(), expected))
}

/// One encoder layer with a constant mask or the graph's masks.
fn encoder_layer(
    layer: &TransformerEncoderLayer<f32>,
    g: &mut Graph,
    x: &Value,
    mask: Option<&AttnMask<f32>>,
    is_causal: bool,
    masks: GraphMasks<'_>,
) -> Result<Value> {
    const LAYER: &str = "TransformerEncoderLayer";
    for d in [&layer.dropout, &layer.dropout1, &layer.dropout2] {
        check_dropout(LAYER, d)?;
    }
    if is_causal && mask.is_none() {
        return Err(unsupported(
            "MultiheadAttention",
            "is_causal needs the mask itself",
        ));
    }
    let xv = x.float(LAYER)?;
    let causal = masks.causal.then(|| {
        let len = x.shape()[usize::from(layer.config().batch_first)];
        AttnMask::square_subsequent(len)
    });
    let padding = masks
        .key_padding
        .map(|m| strata_mask(LAYER, m))
        .transpose()?;
    let expected = run(|| {
        Ok(layer.forward_with(
            &xv,
            mask.or(causal.as_ref()),
            padding.as_ref(),
            is_causal || masks.causal,
        )?)
    })?;
    let config = layer.config();
    let sa = |g: &mut Graph, h: &Value| {
        g.scoped("self_attn", |g| {
            attention(&layer.self_attn, g, h, None, mask, is_causal, masks)
        })
    };
    let ff = |g: &mut Graph, h: &Value| {
        feed_forward(g, &layer.linear1, &layer.linear2, config.activation, h)
    };
    let out = if config.norm_first {
        let n1 = g.scoped("norm1", |g| layer.norm1.export(g, x))?;
        let s = sa(g, &n1)?;
        let h = add(g, x, &s)?;
        let n2 = g.scoped("norm2", |g| layer.norm2.export(g, &h))?;
        let f = ff(g, &n2)?;
        add(g, &h, &f)?
    } else {
        let s = sa(g, x)?;
        let h = add(g, x, &s)?;
        let h = g.scoped("norm1", |g| layer.norm1.export(g, &h))?;
        let f = ff(g, &h)?;
        let h2 = add(g, &h, &f)?;
        g.scoped("norm2", |g| layer.norm2.export(g, &h2))?
    };
    check_pieces(LAYER, &out, expected)
}

/// One encoder layer with an optional `[L, L]` mask (a constant of the graph), mirroring
/// [`TransformerEncoderLayer::forward_with`] (post-norm, or pre-norm with `norm_first`).
///
/// # Errors
/// As [`export_self_attention`]; dropout in train mode.
pub fn export_encoder_layer(
    layer: &TransformerEncoderLayer<f32>,
    g: &mut Graph,
    x: &Value,
    mask: Option<&AttnMask<f32>>,
    is_causal: bool,
) -> Result<Value> {
    encoder_layer(layer, g, x, mask, is_causal, GraphMasks::default())
}

fn encoder(
    encoder: &TransformerEncoder<f32>,
    g: &mut Graph,
    x: &Value,
    mask: Option<&AttnMask<f32>>,
    is_causal: bool,
    masks: GraphMasks<'_>,
) -> Result<Value> {
    let mut h = x.clone();
    for (i, layer) in encoder.layers.iter().enumerate() {
        h = g.scoped(&format!("layers.{i}"), |g| {
            encoder_layer(layer, g, &h, mask, is_causal, masks)
        })?;
    }
    match &encoder.norm {
        Some(norm) => g.scoped("norm", |g| norm.export(g, &h)),
        None => Ok(h),
    }
}

/// The encoder with an optional `[L, L]` mask (a constant of the graph, so the file runs
/// at the traced length) shared by every layer, then its final norm.
///
/// # Errors
/// As [`export_encoder_layer`].
pub fn export_encoder(
    encoder_: &TransformerEncoder<f32>,
    g: &mut Graph,
    x: &Value,
    mask: Option<&AttnMask<f32>>,
    is_causal: bool,
) -> Result<Value> {
    encoder(encoder_, g, x, mask, is_causal, GraphMasks::default())
}

/// The encoder under masks that follow the length at run time (the causal mask built in
/// the graph, a key-padding mask input `[N, S]`), so one file runs at every sequence
/// length; the input's sequence dimension should be symbolic
/// ([`GraphInput::dynamic`](crate::GraphInput::dynamic)).
///
/// # Errors
/// As [`export_encoder_layer`]; a key-padding mask of indices.
pub fn export_encoder_masked(
    encoder_: &TransformerEncoder<f32>,
    g: &mut Graph,
    x: &Value,
    masks: GraphMasks<'_>,
) -> Result<Value> {
    encoder(encoder_, g, x, None, false, masks)
}

impl Export for TransformerEncoderLayer<f32> {
    /// The layer without a mask.
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        export_encoder_layer(self, g, x, None, false)
    }
}

impl Export for TransformerEncoder<f32> {
    /// The encoder without a mask.
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        export_encoder(self, g, x, None, false)
    }
}
