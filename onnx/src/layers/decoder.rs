//! The transformer decoder: `TransformerDecoderLayer` (self-attention under the graph's
//! causal mask, cross-attention to the memory, a second input of the graph),
//! `TransformerDecoder` and the encoder–decoder `Transformer`.

use strata_nn::{AttnMask, DecoderMasks, Transformer, TransformerDecoder, TransformerDecoderLayer};

use super::attention::{
    GraphMasks, add, attention, check_pieces, export_encoder_masked, feed_forward, strata_mask,
};
use super::basic::check_dropout;
use super::{Export, run};
use crate::error::Result;
use crate::graph::{Graph, Value};

/// What a decoder attends to besides its target: the memory (the encoder's output, in the
/// target's layout, usually an input of the graph) and the masks, built in the graph or fed
/// to it, so that one file runs at every target and memory length.
#[derive(Clone, Copy, Debug)]
pub struct DecoderInputs<'a> {
    /// The memory `[N, S, E]` (`[S, N, E]` sequence-first).
    pub memory: &'a Value,
    /// The target's masks: the causal one (built from the target's length at run time)
    /// and a target key-padding mask `[N, T]`.
    pub tgt: GraphMasks<'a>,
    /// A memory key-padding mask `[N, S]` (boolean `true` = ignore, or additive).
    pub memory_key_padding: Option<&'a Value>,
}

impl<'a> DecoderInputs<'a> {
    /// The memory, the causal target mask, no padding.
    pub fn causal(memory: &'a Value) -> Self {
        DecoderInputs {
            memory,
            tgt: GraphMasks {
                causal: true,
                key_padding: None,
            },
            memory_key_padding: None,
        }
    }
}

/// One decoder layer, mirroring [`TransformerDecoderLayer::forward_with`]: post-norm, or
/// pre-norm with `norm_first`.
///
/// # Errors
/// [`OnnxError::Unsupported`](crate::OnnxError::Unsupported) for dropout in train mode;
/// inputs that are not batched `[N, T, E]` / `[T, N, E]` floats with a dynamic batch; the
/// layer's own errors on the example.
pub fn export_decoder_layer(
    layer: &TransformerDecoderLayer<f32>,
    g: &mut Graph,
    tgt: &Value,
    inputs: &DecoderInputs<'_>,
) -> Result<Value> {
    const LAYER: &str = "TransformerDecoderLayer";
    for d in [
        &layer.dropout,
        &layer.dropout1,
        &layer.dropout2,
        &layer.dropout3,
    ] {
        check_dropout(LAYER, d)?;
    }
    let config = *layer.config();
    let causal = inputs.tgt.causal.then(|| {
        let len = tgt.shape()[usize::from(config.batch_first)];
        AttnMask::square_subsequent(len)
    });
    let tgt_padding = inputs
        .tgt
        .key_padding
        .map(|m| strata_mask(LAYER, m))
        .transpose()?;
    let memory_padding = inputs
        .memory_key_padding
        .map(|m| strata_mask(LAYER, m))
        .transpose()?;
    let masks = DecoderMasks {
        tgt_mask: causal.as_ref(),
        tgt_is_causal: inputs.tgt.causal,
        tgt_key_padding_mask: tgt_padding.as_ref(),
        memory_key_padding_mask: memory_padding.as_ref(),
        ..DecoderMasks::default()
    };
    let (t, m) = (tgt.float(LAYER)?, inputs.memory.float(LAYER)?);
    let expected = run(|| Ok(layer.forward_with(&t, &m, &masks)?))?;
    let sa = |g: &mut Graph, h: &Value| {
        g.scoped("self_attn", |g| {
            attention(&layer.self_attn, g, h, None, None, false, inputs.tgt)
        })
    };
    let cross = GraphMasks {
        causal: false,
        key_padding: inputs.memory_key_padding,
    };
    let mha = |g: &mut Graph, h: &Value| {
        g.scoped("multihead_attn", |g| {
            attention(
                &layer.multihead_attn,
                g,
                h,
                Some(inputs.memory),
                None,
                false,
                cross,
            )
        })
    };
    let ff = |g: &mut Graph, h: &Value| {
        feed_forward(g, &layer.linear1, &layer.linear2, config.activation, h)
    };
    let out = if config.norm_first {
        let n = g.scoped("norm1", |g| layer.norm1.export(g, tgt))?;
        let s = sa(g, &n)?;
        let x = add(g, tgt, &s)?;
        let n = g.scoped("norm2", |g| layer.norm2.export(g, &x))?;
        let c = mha(g, &n)?;
        let x = add(g, &x, &c)?;
        let n = g.scoped("norm3", |g| layer.norm3.export(g, &x))?;
        let f = ff(g, &n)?;
        add(g, &x, &f)?
    } else {
        let s = sa(g, tgt)?;
        let x = add(g, tgt, &s)?;
        let x = g.scoped("norm1", |g| layer.norm1.export(g, &x))?;
        let c = mha(g, &x)?;
        let x = add(g, &x, &c)?;
        let x = g.scoped("norm2", |g| layer.norm2.export(g, &x))?;
        let f = ff(g, &x)?;
        let x = add(g, &x, &f)?;
        g.scoped("norm3", |g| layer.norm3.export(g, &x))?
    };
    check_pieces(LAYER, &out, expected)
}

/// The decoder: every layer with the same memory and masks, then the final norm.
///
/// # Errors
/// As [`export_decoder_layer`].
pub fn export_decoder(
    decoder: &TransformerDecoder<f32>,
    g: &mut Graph,
    tgt: &Value,
    inputs: &DecoderInputs<'_>,
) -> Result<Value> {
    let mut h = tgt.clone();
    for (i, layer) in decoder.layers.iter().enumerate() {
        h = g.scoped(&format!("layers.{i}"), |g| {
            export_decoder_layer(layer, g, &h, inputs)
        })?;
    }
    match &decoder.norm {
        Some(norm) => g.scoped("norm", |g| norm.export(g, &h)),
        None => Ok(h),
    }
}

/// The masks of an encoder–decoder [`Transformer`] export, each built in the graph or an
/// input of it.
#[derive(Clone, Copy, Debug, Default)]
pub struct TransformerMasks<'a> {
    /// A source key-padding mask `[N, S]` for the encoder's self-attention.
    pub src_key_padding: Option<&'a Value>,
    /// The target's masks (causal, target key padding).
    pub tgt: GraphMasks<'a>,
    /// A memory key-padding mask `[N, S]` for the cross-attention (usually the source's).
    pub memory_key_padding: Option<&'a Value>,
}

/// `Transformer::forward_with(src, tgt, …)`: the encoder on `src` (scope `encoder`), the
/// decoder on `tgt` and the encoder's output (scope `decoder`), under `masks`.
///
/// # Errors
/// As [`export_decoder_layer`] and [`export_encoder_masked`].
pub fn export_transformer(
    model: &Transformer<f32>,
    g: &mut Graph,
    src: &Value,
    tgt: &Value,
    masks: &TransformerMasks<'_>,
) -> Result<Value> {
    let encoder_masks = GraphMasks {
        causal: false,
        key_padding: masks.src_key_padding,
    };
    let memory = g.scoped("encoder", |g| {
        export_encoder_masked(&model.encoder, g, src, encoder_masks)
    })?;
    let inputs = DecoderInputs {
        memory: &memory,
        tgt: masks.tgt,
        memory_key_padding: masks.memory_key_padding,
    };
    g.scoped("decoder", |g| {
        export_decoder(&model.decoder, g, tgt, &inputs)
    })
}
