//! The decoder side of the transformer against PyTorch (fixtures of
//! `generate_attention.py`, `decoder()`): nn.TransformerDecoderLayer in both norm orders
//! with causal, boolean and key-padding masks; nn.TransformerDecoder with a final norm; and
//! the full nn.Transformer. Outputs and the gradients of every input and parameter.

use strata_autograd::Var;
use strata_nn::*;

use crate::attention::{MaskKind, check_grads, get, load, mask, params, rng};

fn check(
    name: &str,
    module: &dyn Module<f64>,
    run: impl Fn(&Var<f64>, &Var<f64>, &StateDict<f64>) -> Result<Var<f64>>,
) {
    let sd = load(name);
    module.load_state_dict(&params(&sd), true).unwrap();
    let (x, memory) = (
        Var::parameter(get(&sd, "x")),
        Var::parameter(get(&sd, "memory")),
    );
    let y = run(&x, &memory, &sd).unwrap();
    crate::attention::assert_close(&y.value(), &get(&sd, "y"), &format!("{name} output"));
    let loss = y.mul(&Var::new(get(&sd, "proj"))).unwrap().sum_all();
    let mut vars: Vec<(String, Var<f64>)> =
        vec![("grad_x".into(), x), ("grad_memory".into(), memory)];
    for (key, p) in module.named_parameters() {
        vars.push((format!("g.{key}"), p));
    }
    let refs: Vec<(&str, &Var<f64>)> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
    check_grads(&sd, &loss, &refs, name);
}

fn base() -> TransformerEncoderLayerConfig {
    TransformerEncoderLayerConfig::new(8, 2)
        .dim_feedforward(16)
        .dropout(0.0)
}

#[test]
fn decoder_layers_match_pytorch() {
    let post = TransformerDecoderLayer::<f64>::new(base(), &mut rng()).unwrap();
    check("decoder_layer_post", &post, |x, m, sd| {
        let (causal, kpm) = (
            mask(sd, "tgt_mask", MaskKind::Additive),
            mask(sd, "memory_key_padding_mask", MaskKind::Bool),
        );
        let masks = DecoderMasks {
            tgt_mask: causal.as_ref(),
            memory_key_padding_mask: kpm.as_ref(),
            tgt_is_causal: true,
            ..Default::default()
        };
        post.forward_with(x, m, &masks)
    });
    let config = base()
        .norm_first(true)
        .activation(TransformerActivation::Gelu)
        .batch_first(true);
    let pre = TransformerDecoderLayer::<f64>::new(config, &mut rng()).unwrap();
    check("decoder_layer_pre_gelu", &pre, |x, m, sd| {
        let (blocked, kpm) = (
            mask(sd, "memory_mask", MaskKind::Bool),
            mask(sd, "tgt_key_padding_mask", MaskKind::Bool),
        );
        let masks = DecoderMasks {
            memory_mask: blocked.as_ref(),
            tgt_key_padding_mask: kpm.as_ref(),
            ..Default::default()
        };
        pre.forward_with(x, m, &masks)
    });
}

#[test]
fn decoder_and_transformer_match_pytorch() {
    let stack =
        TransformerDecoder::<f64>::new(base().batch_first(true), 2, true, &mut rng()).unwrap();
    check("decoder_stack", &stack, |x, m, sd| {
        let causal = mask(sd, "tgt_mask", MaskKind::Additive);
        stack.forward_with(
            x,
            m,
            &DecoderMasks {
                tgt_mask: causal.as_ref(),
                ..Default::default()
            },
        )
    });
    let model = Transformer::<f64>::new(base().batch_first(true), 2, 2, &mut rng()).unwrap();
    check("transformer_full", &model, |tgt, src, sd| {
        let causal = mask(sd, "tgt_mask", MaskKind::Additive);
        let kpm = mask(sd, "src_key_padding_mask", MaskKind::Bool);
        let masks = DecoderMasks {
            tgt_mask: causal.as_ref(),
            memory_key_padding_mask: kpm.as_ref(),
            ..Default::default()
        };
        model.forward_with(src, tgt, None, kpm.as_ref(), &masks)
    });
}

#[test]
fn causal_mask_matches_pytorch() {
    let sd = load("decoder_stack");
    let want = get(&sd, "tgt_mask");
    let got = generate_square_subsequent_mask::<f64>(4);
    assert_eq!(got.tensor().to_vec(), want.to_vec());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]

    /// A decoder layer in target and memory, both norm orders, with the causal mask
    /// (first and second order; the parameters' gradients are checked against PyTorch).
    #[test]
    fn decoder_layer_gradients(norm_first in proptest::prelude::any::<bool>(), seed in 0..1000u64,
                               tgt in crate::common::smooth(12), memory in crate::common::smooth(16)) {
        let config = TransformerEncoderLayerConfig::new(4, 2).dim_feedforward(6).dropout(0.0).norm_first(norm_first).batch_first(true);
        let layer = TransformerDecoderLayer::<f64>::new(config, &mut strata_tensor::seeded_rng(seed)).unwrap();
        let causal = generate_square_subsequent_mask::<f64>(3);
        let masks = DecoderMasks { tgt_mask: Some(&causal), tgt_is_causal: true, ..Default::default() };
        crate::common::check(
            |v| layer.forward_with(&v[0], &v[1], &masks),
            &[crate::common::tensor(tgt, &[1, 3, 4]), crate::common::tensor(memory, &[1, 4, 4])],
        )?;
    }
}

/// Incremental decoding with the key/value cache equals the full causal run: a prompt of
/// two positions, then one position at a time, in both norm orders and both layouts.
#[test]
fn kv_cache_decoding_is_exact() {
    use strata_tensor::{Tensor, seeded_rng};
    for (norm_first, batch_first) in [(false, true), (true, false), (true, true)] {
        let config = TransformerEncoderLayerConfig::new(8, 2)
            .dim_feedforward(12)
            .norm_first(norm_first)
            .batch_first(batch_first);
        let mut rng = seeded_rng(7);
        let mut decoder = TransformerDecoder::<f64>::new(config, 2, true, &mut rng).unwrap();
        decoder.eval();
        let (t, n, s) = (5, 2, 4);
        let (tgt, memory) = if batch_first {
            (
                Tensor::randn(&[n, t, 8], &mut rng),
                Tensor::randn(&[n, s, 8], &mut rng),
            )
        } else {
            (
                Tensor::randn(&[t, n, 8], &mut rng),
                Tensor::randn(&[s, n, 8], &mut rng),
            )
        };
        let seq_dim: isize = if batch_first { 1 } else { 0 };
        let (tgt, memory) = (Var::new(tgt), Var::new(memory));
        let causal = generate_square_subsequent_mask::<f64>(t);
        let masks = DecoderMasks {
            tgt_mask: Some(&causal),
            ..Default::default()
        };
        let full = decoder.forward_with(&tgt, &memory, &masks).unwrap();
        let mut cache = DecoderCache::new();
        let mut pieces = vec![
            decoder
                .forward_incremental(
                    &tgt.narrow(seq_dim, 0, 2).unwrap(),
                    &memory,
                    &mut cache,
                    None,
                )
                .unwrap(),
        ];
        for p in 2..t {
            let step = tgt.narrow(seq_dim, p, 1).unwrap();
            pieces.push(
                decoder
                    .forward_incremental(&step, &memory, &mut cache, None)
                    .unwrap(),
            );
        }
        let stepped = Var::cat(&pieces, seq_dim).unwrap();
        let (a, b) = (full.to_vec(), stepped.to_vec());
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-12,
            "norm_first {norm_first}, batch_first {batch_first}: {worst}"
        );
    }
    // A layer in train mode with dropout refuses the cache.
    let config = TransformerEncoderLayerConfig::new(8, 2)
        .dim_feedforward(12)
        .batch_first(true);
    let layer = TransformerDecoderLayer::<f64>::new(config, &mut seeded_rng(0)).unwrap();
    let x = Var::new(Tensor::zeros(&[1, 1, 8]));
    let err = layer.forward_incremental(&x, &x, &mut DecoderLayerCache::default(), None);
    assert!(err.unwrap_err().to_string().contains("eval"));
}
