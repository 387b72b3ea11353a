//! Multi-head attention and the transformer encoder, decomposed into MatMul, Softmax,
//! LayerNormalization and friends; masks as constants.

use strata_autograd::Var;
use strata_nn::{
    AttnMask, Forward, LearnedPositionalEncoding, MhaConfig, MhaForward, Module,
    MultiheadAttention, TransformerActivation, TransformerEncoder, TransformerEncoderLayer,
    TransformerEncoderLayerConfig,
};
use strata_onnx::{Example, Export, ExportOptions, Graph, Value, export_encoder};
use strata_tensor::{Tensor, seeded_rng};

use crate::common::{check_batches, float, floats};

#[test]
fn self_attention_batch_first_and_sequence_first() {
    let mut rng = seeded_rng(20);
    let mha = MultiheadAttention::new(MhaConfig::new(8, 2).batch_first(true), &mut rng).unwrap();
    mha.in_proj_bias
        .as_ref()
        .unwrap()
        .set_value(Tensor::randn(&[24], &mut rng))
        .unwrap();
    let forward = |x: &Example| {
        let x = float(x);
        let options = MhaForward {
            need_weights: false,
            ..MhaForward::default()
        };
        mha.forward(&x, &x, &x, &options).unwrap().0.value()
    };
    check_batches(
        "MHA batch-first",
        &mha,
        |b| floats(b, &[5, 8]),
        forward,
        &ExportOptions::default(),
    );

    let seq = MultiheadAttention::new(MhaConfig::new(8, 4), &mut rng).unwrap();
    let forward = |x: &Example| {
        let x = float(x);
        let options = MhaForward {
            need_weights: false,
            ..MhaForward::default()
        };
        seq.forward(&x, &x, &x, &options).unwrap().0.value()
    };
    let make = |b: usize| Example::Float(Tensor::randn(&[6, b, 8], &mut seeded_rng(b as u64)));
    let options = ExportOptions {
        batch_axis: 1,
        ..ExportOptions::default()
    };
    check_batches("MHA sequence-first", &seq, make, forward, &options);
}

#[test]
fn encoder_layers_post_norm_and_pre_norm() {
    let mut rng = seeded_rng(21);
    for (norm_first, activation) in [
        (false, TransformerActivation::Relu),
        (true, TransformerActivation::Gelu),
    ] {
        let config = TransformerEncoderLayerConfig::new(8, 2)
            .dim_feedforward(16)
            .batch_first(true)
            .norm_first(norm_first)
            .activation(activation);
        let mut layer = TransformerEncoderLayer::new(config, &mut rng).unwrap();
        layer.eval();
        let what = format!("TransformerEncoderLayer norm_first {norm_first}");
        check_batches(
            &what,
            &layer,
            |b| floats(b, &[4, 8]),
            |x| layer.forward(&float(x)).unwrap().value(),
            &ExportOptions::default(),
        );
    }
}

/// A causal language-model-like stack: learned positions, an encoder under a causal mask.
struct Causal {
    pos: LearnedPositionalEncoding,
    encoder: TransformerEncoder,
    mask: AttnMask,
}

impl Export for Causal {
    fn export(&self, g: &mut Graph, x: &Value) -> strata_onnx::Result<Value> {
        let h = g.scoped("pos", |g| self.pos.export(g, x))?;
        g.scoped("encoder", |g| {
            export_encoder(&self.encoder, g, &h, Some(&self.mask), true)
        })
    }
}

#[test]
fn encoder_under_a_causal_mask() {
    let mut rng = seeded_rng(22);
    let config = TransformerEncoderLayerConfig::new(8, 2)
        .dim_feedforward(16)
        .batch_first(true)
        .norm_first(true)
        .dropout(0.1);
    let mut encoder = TransformerEncoder::new(config, 2, true, &mut rng).unwrap();
    encoder.eval();
    let len = 5;
    let model = Causal {
        pos: LearnedPositionalEncoding::new(8, 8, &mut rng).unwrap(),
        encoder,
        mask: AttnMask::Bool(Tensor::ones(&[len, len]).triu(1).unwrap()),
    };
    let forward = |x: &Example| {
        let h = model.pos.forward(&float(x)).unwrap();
        model
            .encoder
            .forward_with(&h, Some(&model.mask), None, true)
            .unwrap()
            .value()
    };
    check_batches(
        "causal encoder",
        &model,
        |b| floats(b, &[len, 8]),
        forward,
        &ExportOptions::default(),
    );
    // The mask matters: position 0's output does not depend on later positions.
    let x = floats(1, &[len, 8]);
    let Example::Float(t) = &x else {
        unreachable!()
    };
    let mut changed = t.to_vec();
    changed[8 * 4] += 1.0; // the last position's first feature
    let y0 = forward(&x).to_vec();
    let y1 = forward(&Example::Float(
        Tensor::from_vec(changed, &[1, len, 8]).unwrap(),
    ))
    .to_vec();
    assert_eq!(y0[..8], y1[..8]);
    assert_ne!(y0[32..], y1[32..]);
    let _ = Var::new(Tensor::<f32>::zeros(&[1]));
}
