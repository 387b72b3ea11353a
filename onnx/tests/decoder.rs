//! The transformer decoder, the encoder under graph masks and the encoder–decoder
//! Transformer: several inputs (target, memory, key-padding masks), a symbolic batch and
//! symbolic lengths, the causal mask built in the graph; one file run by tract at several
//! batch sizes and lengths.

use strata_autograd::Var;
use strata_nn::{
    AttnMask, DecoderMasks, Module, Transformer, TransformerActivation, TransformerDecoder,
    TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayerConfig,
    generate_square_subsequent_mask,
};
use strata_onnx::{
    DecoderInputs, Example, GraphInput, GraphMasks, TransformerMasks, export_decoder,
    export_decoder_layer, export_encoder_masked, export_transformer,
};
use strata_tensor::{Tensor, seeded_rng};

use crate::common::{check_inputs, float};

/// (batch, target length, source length): the trace's first, then others.
const SIZES: [(usize, usize, usize); 3] = [(3, 4, 5), (5, 6, 3), (2, 1, 7)];

fn randn(shape: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::randn(shape, &mut seeded_rng(seed))
}

/// A boolean key-padding mask `[N, S]`: the last `k` positions of sample `k mod S` padded
/// (never a whole row), plus a whole row when `full_row`.
fn padding(n: usize, s: usize, full_row: bool) -> Tensor<f32> {
    let mut v = vec![0.0f32; n * s];
    for b in 0..n {
        let k = b % s;
        for j in s - k..s {
            v[b * s + j] = 1.0;
        }
    }
    if full_row && n > 1 {
        v[s..2 * s].fill(1.0);
    }
    Tensor::from_vec(v, &[n, s]).unwrap()
}

fn mask_of(x: &Example) -> AttnMask {
    match x {
        Example::Bool(t) => AttnMask::Bool(t.clone()),
        Example::Float(t) => AttnMask::Additive(t.clone()),
        Example::Index(_) => unreachable!(),
    }
}

fn config(
    norm_first: bool,
    batch_first: bool,
    activation: TransformerActivation,
) -> TransformerEncoderLayerConfig {
    TransformerEncoderLayerConfig::new(8, 2)
        .dim_feedforward(16)
        .dropout(0.1)
        .batch_first(batch_first)
        .norm_first(norm_first)
        .activation(activation)
}

#[test]
fn decoder_layer_post_norm_causal_over_lengths() {
    let mut layer = TransformerDecoderLayer::new(
        config(false, true, TransformerActivation::Relu),
        &mut seeded_rng(50),
    )
    .unwrap();
    layer.eval();
    check_inputs(
        "TransformerDecoderLayer post-norm causal",
        &SIZES,
        |(n, t, s)| {
            vec![
                GraphInput::new("tgt", randn(&[n, t, 8], 1)).dynamic(1, "tgt_len"),
                GraphInput::new("memory", randn(&[n, s, 8], 2)).dynamic(1, "src_len"),
            ]
        },
        |g, xs| export_decoder_layer(&layer, g, &xs[0], &DecoderInputs::causal(&xs[1])),
        |xs| {
            let t = xs[0].shape()[1];
            let causal = generate_square_subsequent_mask(t);
            let masks = DecoderMasks {
                tgt_mask: Some(&causal),
                tgt_is_causal: true,
                ..DecoderMasks::default()
            };
            layer
                .forward_with(&float(&xs[0]), &float(&xs[1]), &masks)
                .unwrap()
                .value()
        },
    );
}

#[test]
fn decoder_layer_pre_norm_sequence_first_with_boolean_padding() {
    let mut layer = TransformerDecoderLayer::new(
        config(true, false, TransformerActivation::Gelu),
        &mut seeded_rng(51),
    )
    .unwrap();
    layer.eval();
    check_inputs(
        "TransformerDecoderLayer pre-norm sequence-first padded",
        &SIZES,
        |(n, t, s)| {
            vec![
                GraphInput::new("tgt", randn(&[t, n, 8], 3))
                    .batch_axis(Some(1))
                    .dynamic(0, "tgt_len"),
                GraphInput::new("memory", randn(&[s, n, 8], 4))
                    .batch_axis(Some(1))
                    .dynamic(0, "src_len"),
                GraphInput::new("tgt_key_padding_mask", Example::Bool(padding(n, t, false)))
                    .dynamic(1, "tgt_len"),
                GraphInput::new(
                    "memory_key_padding_mask",
                    Example::Bool(padding(n, s, true)),
                )
                .dynamic(1, "src_len"),
            ]
        },
        |g, xs| {
            let inputs = DecoderInputs {
                memory: &xs[1],
                tgt: GraphMasks {
                    causal: true,
                    key_padding: Some(&xs[2]),
                },
                memory_key_padding: Some(&xs[3]),
            };
            export_decoder_layer(&layer, g, &xs[0], &inputs)
        },
        |xs| {
            let t = xs[0].shape()[0];
            let causal = generate_square_subsequent_mask(t);
            let (tp, mp) = (mask_of(&xs[2]), mask_of(&xs[3]));
            let masks = DecoderMasks {
                tgt_mask: Some(&causal),
                tgt_is_causal: true,
                tgt_key_padding_mask: Some(&tp),
                memory_key_padding_mask: Some(&mp),
                ..DecoderMasks::default()
            };
            layer
                .forward_with(&float(&xs[0]), &float(&xs[1]), &masks)
                .unwrap()
                .value()
        },
    );
}

#[test]
fn decoder_stack_with_an_additive_memory_mask() {
    let mut decoder = TransformerDecoder::new(
        config(true, true, TransformerActivation::Relu),
        2,
        true,
        &mut seeded_rng(52),
    )
    .unwrap();
    decoder.eval();
    // Additive: 0, a finite penalty, and -inf, per PyTorch's float masks.
    let additive = |n: usize, s: usize| {
        let v = (0..n * s)
            .map(|i| match i % 4 {
                0 | 1 => 0.0,
                2 => -1.5,
                _ => f32::NEG_INFINITY,
            })
            .collect();
        Tensor::from_vec(v, &[n, s]).unwrap()
    };
    check_inputs(
        "TransformerDecoder additive memory padding",
        &SIZES,
        |(n, t, s)| {
            vec![
                GraphInput::new("tgt", randn(&[n, t, 8], 5)).dynamic(1, "tgt_len"),
                GraphInput::new("memory", randn(&[n, s, 8], 6)).dynamic(1, "src_len"),
                GraphInput::new("memory_key_padding_mask", additive(n, s)).dynamic(1, "src_len"),
            ]
        },
        |g, xs| {
            let inputs = DecoderInputs {
                memory_key_padding: Some(&xs[2]),
                ..DecoderInputs::causal(&xs[1])
            };
            export_decoder(&decoder, g, &xs[0], &inputs)
        },
        |xs| {
            let causal = generate_square_subsequent_mask(xs[0].shape()[1]);
            let mp = mask_of(&xs[2]);
            let masks = DecoderMasks {
                tgt_mask: Some(&causal),
                tgt_is_causal: true,
                memory_key_padding_mask: Some(&mp),
                ..DecoderMasks::default()
            };
            decoder
                .forward_with(&float(&xs[0]), &float(&xs[1]), &masks)
                .unwrap()
                .value()
        },
    );
}

#[test]
fn encoder_under_graph_masks_runs_at_any_length() {
    let mut encoder = TransformerEncoder::new(
        config(true, true, TransformerActivation::Gelu),
        2,
        true,
        &mut seeded_rng(53),
    )
    .unwrap();
    encoder.eval();
    for causal in [true, false] {
        check_inputs(
            &format!("TransformerEncoder graph masks causal {causal}"),
            &SIZES,
            |(n, _, s)| {
                vec![
                    GraphInput::new("src", randn(&[n, s, 8], 7)).dynamic(1, "src_len"),
                    GraphInput::new(
                        "src_key_padding_mask",
                        Example::Bool(padding(n, s, !causal)),
                    )
                    .dynamic(1, "src_len"),
                ]
            },
            |g, xs| {
                let masks = GraphMasks {
                    causal,
                    key_padding: Some(&xs[1]),
                };
                export_encoder_masked(&encoder, g, &xs[0], masks)
            },
            |xs| {
                let s = xs[0].shape()[1];
                let mask = causal.then(|| generate_square_subsequent_mask(s));
                let kp = mask_of(&xs[1]);
                encoder
                    .forward_with(&float(&xs[0]), mask.as_ref(), Some(&kp), causal)
                    .unwrap()
                    .value()
            },
        );
    }
}

#[test]
fn transformer_encoder_decoder_with_padding() {
    let mut model = Transformer::new(
        config(false, true, TransformerActivation::Relu),
        2,
        2,
        &mut seeded_rng(54),
    )
    .unwrap();
    model.eval();
    let bytes = check_inputs(
        "Transformer",
        &SIZES,
        |(n, t, s)| {
            vec![
                GraphInput::new("src", randn(&[n, s, 8], 8)).dynamic(1, "src_len"),
                GraphInput::new("tgt", randn(&[n, t, 8], 9)).dynamic(1, "tgt_len"),
                GraphInput::new("src_key_padding_mask", Example::Bool(padding(n, s, false)))
                    .dynamic(1, "src_len"),
            ]
        },
        |g, xs| {
            let masks = TransformerMasks {
                src_key_padding: Some(&xs[2]),
                tgt: GraphMasks {
                    causal: true,
                    key_padding: None,
                },
                memory_key_padding: Some(&xs[2]),
            };
            export_transformer(&model, g, &xs[0], &xs[1], &masks)
        },
        |xs| {
            let causal = generate_square_subsequent_mask(xs[1].shape()[1]);
            let kp = mask_of(&xs[2]);
            let masks = DecoderMasks {
                tgt_mask: Some(&causal),
                tgt_is_causal: true,
                memory_key_padding_mask: Some(&kp),
                ..DecoderMasks::default()
            };
            model
                .forward_with(&float(&xs[0]), &float(&xs[1]), None, Some(&kp), &masks)
                .unwrap()
                .value()
        },
    );
    // The weights are initializers under their state-dict names; the inputs are named
    // with symbolic batch and lengths.
    let parsed = <strata_onnx::proto::ModelProto as prost::Message>::decode(bytes.as_slice())
        .unwrap()
        .graph
        .unwrap();
    let names: Vec<&str> = parsed.initializer.iter().map(|t| t.name.as_str()).collect();
    for key in [
        "decoder.layers.1.multihead_attn.out_proj.weight",
        "encoder.norm.weight",
        "decoder.layers.0.linear1.weight",
    ] {
        assert!(names.contains(&key), "{key}");
        assert!(model.state_dict().get(key).is_some());
    }
    let inputs: Vec<&str> = parsed.input.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(inputs, ["src", "tgt", "src_key_padding_mask"]);
    let _ = Var::new(Tensor::<f32>::zeros(&[1]));
}
