//! Multi-head self-attention and the transformer encoder, decomposed into `MatMul`, `Add`,
//! `Reshape`, `Transpose`, `Softmax` and `LayerNormalization` (ONNX has no attention
//! operator in its default domain before opset 23).

use strata_autograd::Var;
use strata_nn::{
    AttnMask, MhaForward, MultiheadAttention, TransformerActivation, TransformerEncoder,
    TransformerEncoderLayer,
};
use strata_tensor::Tensor;

use super::basic::{check_dropout, gelu};
use super::{Export, run};
use crate::error::{OnnxError, Result, unsupported};
use crate::graph::{Graph, Value};

/// `a + b` of two values of the same layout.
fn add(g: &mut Graph, a: &Value, b: &Value) -> Result<Value> {
    let y = Var::new(a.float("Add")?.value().add(&b.float("Add")?.value())?);
    let out = g.op("Add", &[a.name(), b.name()], vec![]);
    Ok(a.with(out, y))
}

/// The mask as an additive `[L, L]` constant: a boolean `true` (nonzero) is `-∞`.
fn additive_mask(mask: &AttnMask<f32>, len: usize) -> Result<Tensor<f32>> {
    let t = mask.tensor();
    if t.shape() != [len, len] {
        return Err(unsupported(
            "MultiheadAttention",
            format!(
                "an attention mask of shape {:?} (only one [L, L] = [{len}, {len}] mask, shared \
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

/// Self-attention `mha(x, x, x)` with an optional `[L, L]` mask (`nn.MultiheadAttention`'s
/// convention: a boolean `true` means *not allowed*), as
/// `softmax(Q·Kᵀ/√d + mask)·V` per head, then the output projection.
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
    const LAYER: &str = "MultiheadAttention";
    let config = mha.config();
    if mha.is_training() && config.dropout > 0.0 {
        return Err(unsupported(
            LAYER,
            "attention dropout is in train mode (random); call eval() before exporting",
        ));
    }
    let xv = x.float(LAYER)?;
    let options = MhaForward {
        attn_mask: mask,
        need_weights: false,
        is_causal,
        ..MhaForward::default()
    };
    let y = run(|| Ok(mha.forward(&xv, &xv, &xv, &options)?.0))?;
    let batch_axis = usize::from(!config.batch_first);
    if x.ndim() != 3 || x.batch_axis() != Some(batch_axis) {
        return Err(OnnxError::Input {
            shape: x.shape().to_vec(),
            why: format!("{LAYER} exports batched inputs with the batch dynamic"),
        });
    }
    let (e, heads) = (config.embed_dim, config.num_heads);
    let head_dim = e / heads;
    let len = x.shape()[1 - batch_axis];
    // Batch-first inside: [N, L, E].
    let h = if config.batch_first {
        x.name().to_string()
    } else {
        g.transpose(x.name(), &[1, 0, 2])
    };
    let w = mha.in_proj_weight.value();
    let b = mha.in_proj_bias.as_ref().map(Var::value);
    let project = |g: &mut Graph, i: usize, name: &str| -> Result<String> {
        let wi = g.constant(&format!("in_proj_weight_{name}"), &w.narrow(0, i * e, e)?);
        let bi = match &b {
            Some(b) => Some(g.constant(&format!("in_proj_bias_{name}"), &b.narrow(0, i * e, e)?)),
            None => None,
        };
        let p = g.linear(&h, 3, &wi, bi.as_deref());
        // [N, L, E] → [N, L, heads, d] → [N, heads, L, d]
        let p = g.reshape(&p, &[0, 0, heads as i64, head_dim as i64]);
        Ok(g.transpose(&p, &[0, 2, 1, 3]))
    };
    let q = project(g, 0, "q")?;
    let k = project(g, 1, "k")?;
    let v = project(g, 2, "v")?;
    let kt = g.transpose(&k, &[0, 1, 3, 2]);
    let scores = g.op("MatMul", &[&q, &kt], vec![]);
    let scale = g.scalar("scale", 1.0 / (head_dim as f32).sqrt());
    let mut scores = g.op("Mul", &[&scores, &scale], vec![]);
    match (mask, is_causal) {
        (Some(m), _) => {
            let m = g.constant("attn_mask", &additive_mask(m, len)?);
            scores = g.op("Add", &[&scores, &m], vec![]);
        }
        (None, true) => {
            return Err(unsupported(LAYER, "is_causal needs the mask itself"));
        }
        (None, false) => {}
    }
    let probs = g.op(
        "Softmax",
        &[&scores],
        vec![("axis", crate::graph::Attr::Int(3))],
    );
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
    Ok(x.with(out, y))
}

impl Export for MultiheadAttention<f32> {
    /// Self-attention without a mask (see [`export_self_attention`]).
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        export_self_attention(self, g, x, None, false)
    }
}

/// One encoder layer with an optional `[L, L]` mask, mirroring
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
    const LAYER: &str = "TransformerEncoderLayer";
    for d in [&layer.dropout, &layer.dropout1, &layer.dropout2] {
        check_dropout(LAYER, d)?;
    }
    let xv = x.float(LAYER)?;
    let expected = run(|| Ok(layer.forward_with(&xv, mask, None, is_causal)?))?;
    let config = layer.config();
    let sa = |g: &mut Graph, h: &Value| {
        g.scoped("self_attn", |g| {
            export_self_attention(&layer.self_attn, g, h, mask, is_causal)
        })
    };
    let ff = |g: &mut Graph, h: &Value| -> Result<Value> {
        let a = g.scoped("linear1", |g| layer.linear1.export(g, h))?;
        let y = run(|| {
            Ok(match config.activation {
                TransformerActivation::Relu => a.float(LAYER)?.relu(),
                TransformerActivation::Gelu => a.float(LAYER)?.gelu(),
            })
        })?;
        let out = match config.activation {
            TransformerActivation::Relu => g.op("Relu", &[a.name()], vec![]),
            TransformerActivation::Gelu => gelu(g, a.name(), false),
        };
        let a = a.with(out, y);
        g.scoped("linear2", |g| layer.linear2.export(g, &a))
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
    // The trace: the pieces, exported one by one, must add up to the layer's own forward.
    let pieces = out.float(LAYER)?.value().contiguous().to_vec();
    let whole = expected.value().contiguous().to_vec();
    let scale = whole.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let gap = pieces
        .iter()
        .zip(&whole)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    if pieces.len() != whole.len() || gap.is_nan() || gap > 1e-4 * scale {
        return Err(unsupported(
            LAYER,
            format!("the exported pieces differ from the layer's forward by {gap}"),
        ));
    }
    Ok(out.with(out.name().to_string(), expected))
}

/// The encoder with an optional `[L, L]` mask shared by every layer, then its final norm.
///
/// # Errors
/// As [`export_encoder_layer`].
pub fn export_encoder(
    encoder: &TransformerEncoder<f32>,
    g: &mut Graph,
    x: &Value,
    mask: Option<&AttnMask<f32>>,
    is_causal: bool,
) -> Result<Value> {
    let mut h = x.clone();
    for (i, layer) in encoder.layers.iter().enumerate() {
        h = g.scoped(&format!("layers.{i}"), |g| {
            export_encoder_layer(layer, g, &h, mask, is_causal)
        })?;
    }
    match &encoder.norm {
        Some(norm) => g.scoped("norm", |g| norm.export(g, &h)),
        None => Ok(h),
    }
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
