//! Per-sample gradients of every layer with parameters equal the gradients of
//! single-sample backward passes (f64), and their ghost norms and weighted sums equal
//! those of the materialised per-sample gradients.

use proptest::prelude::*;
use strata_autograd::Var;
use strata_nn::{
    Conv1d, Conv1dParams, Conv2d, Conv2dParams, Embedding, Forward, GRU, GRUCell, GroupNorm, LSTM,
    LSTMCell, LayerNorm, LearnedPositionalEncoding, Linear, MhaConfig, MhaForward, Module,
    MultiheadAttention, Padding, RMSNorm, RNN, RnnConfig, RnnNonlinearity, Sequential, Tanh,
    TransformerEncoder, TransformerEncoderLayerConfig,
};
use strata_tensor::{IndexTensor, Tensor, seeded_rng};

use crate::common::{check_per_sample, ok, projected};

const CASES: u32 = 12;

/// A recurrent layer as a function of its input and initial state.
type Layer<'a> = dyn Fn(&Var<f64>, Option<&Var<f64>>) -> strata_nn::Result<Var<f64>> + 'a;

fn randn(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::randn(shape, &mut seeded_rng(seed))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn linear_on_rows_and_sequences(
        batch in 1usize..5, rows in 0usize..4, fin in 1usize..6, fout in 1usize..6,
        bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut rng = seeded_rng(seed);
        let model = Sequential::<f64>::new()
            .push(Linear::new(fin, fout, bias, &mut rng))
            .push(Tanh)
            .push(Linear::new(fout, 3, true, &mut rng));
        // rows = 0: a 2-d input [B, in]; otherwise [B, rows, in].
        let shape: Vec<usize> = if rows == 0 { vec![batch, fin] } else { vec![batch, rows, fin] };
        let x = randn(&shape, seed ^ 1);
        let mut out = shape.clone();
        *out.last_mut().unwrap() = 3;
        let r = randn(&out, seed ^ 2);
        check_per_sample(&model, batch, true, &|range| {
            let xs = Var::new(x.narrow(0, range.start, range.len())?);
            projected(&model.forward(&xs)?, &r, 0, range)
        })?;
    }

    #[test]
    fn linear_sequence_first(batch in 1usize..4, len in 1usize..4, seed in any::<u64>()) {
        let fc = Linear::<f64>::new(3, 2, true, &mut seeded_rng(seed));
        let x = randn(&[len, batch, 3], seed ^ 1);
        let r = randn(&[len, batch, 2], seed ^ 2);
        check_per_sample(&fc, batch, false, &|range| {
            let xs = Var::new(x.narrow(1, range.start, range.len())?);
            projected(&fc.forward(&xs)?, &r, 1, range)
        })?;
    }

    #[test]
    fn conv2d_with_stride_padding_dilation_groups(
        batch in 1usize..4, groups in 1usize..3, cin_g in 1usize..3, cout_g in 1usize..3,
        kh in 1usize..4, kw in 1usize..3, stride in 1usize..3, dilation in 1usize..3,
        pad in 0usize..3, h in 4usize..8, w in 4usize..7, bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        // pad = 2 means "same" (stride 1 only).
        let padding = if pad == 2 && stride == 1 { Padding::Same } else { Padding::Explicit([pad % 2, pad % 2]) };
        let params = Conv2dParams { stride: [stride, 1], padding, dilation: [dilation, 1], groups };
        let (cin, cout) = (cin_g * groups, cout_g * groups);
        let conv = ok(Conv2d::<f64>::with_params(cin, cout, [kh, kw], params, bias, &mut seeded_rng(seed)))?;
        let x = randn(&[batch, cin, h + 2 * dilation, w], seed ^ 1);
        let y = ok(conv.forward(&Var::new(x.clone())))?;
        let r = randn(y.shape(), seed ^ 2);
        check_per_sample(&conv, batch, true, &|range| {
            let xs = Var::new(x.narrow(0, range.start, range.len())?);
            projected(&conv.forward(&xs)?, &r, 0, range)
        })?;
    }

    #[test]
    fn conv1d_with_stride_padding_dilation_groups(
        batch in 1usize..4, groups in 1usize..3, k in 1usize..4, stride in 1usize..3,
        dilation in 1usize..3, pad in 0usize..3, len in 6usize..10, seed in any::<u64>(),
    ) {
        let padding = if pad == 2 && stride == 1 { Padding::Same } else { Padding::Explicit([pad % 2]) };
        let params = Conv1dParams { stride, padding, dilation, groups };
        let conv = ok(Conv1d::<f64>::with_params(2 * groups, groups, k, params, true, &mut seeded_rng(seed)))?;
        let x = randn(&[batch, 2 * groups, len], seed ^ 1);
        let y = ok(conv.forward(&Var::new(x.clone())))?;
        let r = randn(y.shape(), seed ^ 2);
        check_per_sample(&conv, batch, true, &|range| {
            let xs = Var::new(x.narrow(0, range.start, range.len())?);
            projected(&conv.forward(&xs)?, &r, 0, range)
        })?;
    }

    #[test]
    fn embedding_with_repeats_and_padding(
        batch in 1usize..5, len in 1usize..6, num in 2usize..6, padding in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let emb = ok(Embedding::<f64>::new(num, 3, padding.then_some(0), &mut seeded_rng(seed)))?;
        // Few distinct indices, so that a sequence repeats some.
        let idx: Vec<i64> = (0..batch * len).map(|k| ((k as u64 * 7 + seed) % num as u64) as i64).collect();
        let r = randn(&[batch, len, 3], seed ^ 2);
        check_per_sample(&emb, batch, true, &|range| {
            let part = idx[range.start * len..range.end * len].to_vec();
            let ids = IndexTensor::from_vec(part, &[range.len(), len])?;
            projected(&emb.forward(&ids)?, &r, 0, range)
        })?;
    }

    #[test]
    fn group_norm_with_its_affine_map(
        batch in 1usize..4, groups in 1usize..4, per in 1usize..3, h in 1usize..4,
        seed in any::<u64>(),
    ) {
        let c = groups * per;
        let gn = ok(GroupNorm::<f64>::new(groups, c))?;
        // Weights and biases away from their initial 1 and 0.
        for p in gn.parameters() {
            p.set_value(randn(p.shape(), seed ^ 3)).unwrap();
        }
        let x = randn(&[batch, c, h, h + 1], seed ^ 1);
        let y = ok(gn.forward(&Var::new(x.clone())))?;
        let r = randn(y.shape(), seed ^ 2);
        check_per_sample(&gn, batch, true, &|range| {
            let xs = Var::new(x.narrow(0, range.start, range.len())?);
            projected(&gn.forward(&xs)?, &r, 0, range)
        })?;
    }

    #[test]
    fn layer_norm_and_rms_norm(
        batch in 1usize..4, rows in 1usize..3, d1 in 1usize..3, d2 in 2usize..4,
        seed in any::<u64>(),
    ) {
        let mut rng = seeded_rng(seed);
        let ln = LayerNorm::<f64>::new(&[d1, d2]);
        let rms = RMSNorm::<f64>::new(&[d2]);
        // Move the affine parameters off their initial values.
        for p in ln.parameters().iter().chain(rms.parameters().iter()) {
            ok(p.set_value(Tensor::randn(p.shape(), &mut rng)))?;
        }
        let model = Sequential::new().push(ln).push(rms);
        let x = randn(&[batch, rows, d1, d2], seed ^ 1);
        let r = randn(&[batch, rows, d1, d2], seed ^ 2);
        check_per_sample(&model, batch, true, &|range| {
            let xs = Var::new(x.narrow(0, range.start, range.len())?);
            projected(&model.forward(&xs)?, &r, 0, range)
        })?;
    }

    #[test]
    fn recurrent_layers_all_layers_both_directions(
        batch in 1usize..4, len in 1usize..5, kind in 0usize..4, layers in 1usize..3,
        bidirectional in any::<bool>(), batch_first in any::<bool>(), bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let config = RnnConfig::new(3, 4).num_layers(layers).bidirectional(bidirectional)
            .batch_first(batch_first).bias(bias);
        let mut rng = seeded_rng(seed);
        let dirs = if bidirectional { 2 } else { 1 };
        let shape = if batch_first { vec![batch, len, 3] } else { vec![len, batch, 3] };
        let dim = usize::from(!batch_first);
        let x = randn(&shape, seed ^ 1);
        let mut out = shape.clone();
        out[2] = 4 * dirs;
        let r = randn(&out, seed ^ 2);
        let h0 = randn(&[layers * dirs, batch, 4], seed ^ 3);
        let run = |layer: &Layer,
                   range: std::ops::Range<usize>| {
            let xs = Var::new(x.narrow(dim as isize, range.start, range.len())?);
            let h = Var::new(h0.narrow(1, range.start, range.len())?);
            projected(&layer(&xs, Some(&h))?, &r, dim, range)
        };
        match kind {
            0 => {
                let m = ok(LSTM::<f64>::new(config, &mut rng))?;
                let c0 = randn(&[layers * dirs, batch, 4], seed ^ 4);
                check_per_sample(&m, batch, batch_first, &|range| {
                    let xs = Var::new(x.narrow(dim as isize, range.start, range.len())?);
                    let h = Var::new(h0.narrow(1, range.start, range.len())?);
                    let c = Var::new(c0.narrow(1, range.start, range.len())?);
                    projected(&m.forward(&xs, Some((&h, &c)))?.0, &r, dim, range)
                })?;
            }
            1 => {
                let m = ok(GRU::<f64>::new(config, &mut rng))?;
                check_per_sample(&m, batch, batch_first, &|range| {
                    run(&|x, h| Ok(m.forward(x, h)?.0), range)
                })?;
            }
            k => {
                let act = if k == 2 { RnnNonlinearity::Tanh } else { RnnNonlinearity::Relu };
                let m = ok(RNN::<f64>::new(config, act, &mut rng))?;
                check_per_sample(&m, batch, batch_first, &|range| {
                    run(&|x, h| Ok(m.forward(x, h)?.0), range)
                })?;
            }
        }
    }

    #[test]
    fn recurrent_cells(batch in 1usize..4, kind in 0usize..3, seed in any::<u64>()) {
        let mut rng = seeded_rng(seed);
        let x = randn(&[batch, 3], seed ^ 1);
        let h0 = randn(&[batch, 4], seed ^ 3);
        let r = randn(&[batch, 4], seed ^ 2);
        let slice = |t: &Tensor<f64>, range: &std::ops::Range<usize>| -> strata_nn::Result<Var<f64>> {
            Ok(Var::new(t.narrow(0, range.start, range.len())?))
        };
        match kind {
            0 => {
                let cell = ok(LSTMCell::<f64>::new(3, 4, true, &mut rng))?;
                check_per_sample(&cell, batch, true, &|range| {
                    let (h, c) = (slice(&h0, &range)?, slice(&h0, &range)?);
                    let (h1, _) = cell.forward(&slice(&x, &range)?, Some((&h, &c)))?;
                    projected(&h1, &r, 0, range)
                })?;
            }
            1 => {
                let cell = ok(GRUCell::<f64>::new(3, 4, true, &mut rng))?;
                check_per_sample(&cell, batch, true, &|range| {
                    let h1 = cell.forward(&slice(&x, &range)?, Some(&slice(&h0, &range)?))?;
                    projected(&h1, &r, 0, range)
                })?;
            }
            _ => {
                let cell = ok(strata_nn::RNNCell::<f64>::new(3, 4, false, RnnNonlinearity::Tanh, &mut rng))?;
                check_per_sample(&cell, batch, true, &|range| {
                    let h1 = cell.forward(&slice(&x, &range)?, None)?;
                    projected(&h1, &r, 0, range)
                })?;
            }
        }
    }

    #[test]
    fn multihead_attention_self_and_cross(
        batch in 1usize..4, len in 1usize..4, src in 1usize..4, heads in 1usize..3,
        cross in any::<bool>(), need_weights in any::<bool>(), batch_first in any::<bool>(),
        bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let e = 2 * heads;
        let config = MhaConfig::new(e, heads).batch_first(batch_first).bias(bias);
        let mha = ok(MultiheadAttention::<f64>::new(config, &mut seeded_rng(seed)))?;
        let dim = usize::from(!batch_first);
        let shape = |l: usize| if batch_first { vec![batch, l, e] } else { vec![l, batch, e] };
        let q = randn(&shape(len), seed ^ 1);
        let kv = randn(&shape(src), seed ^ 3);
        let r = randn(&shape(len), seed ^ 2);
        check_per_sample(&mha, batch, batch_first, &|range| {
            let qs = Var::new(q.narrow(dim as isize, range.start, range.len())?);
            let options = MhaForward { need_weights, ..MhaForward::default() };
            let y = if cross {
                let kvs = Var::new(kv.narrow(dim as isize, range.start, range.len())?);
                mha.forward(&qs, &kvs, &kvs, &options)?.0
            } else {
                mha.forward(&qs, &qs, &qs, &options)?.0
            };
            projected(&y, &r, dim, range)
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn transformer_encoder_with_learned_positions(
        batch in 1usize..3, len in 1usize..4, norm_first in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut rng = seeded_rng(seed);
        let layer = TransformerEncoderLayerConfig::new(4, 2).dim_feedforward(6).dropout(0.0)
            .batch_first(true).norm_first(norm_first);
        let encoder = ok(TransformerEncoder::<f64>::new(layer, 2, true, &mut rng))?;
        let pos = ok(LearnedPositionalEncoding::<f64>::new(5, 4, &mut rng))?;
        let model = Sequential::new().push(pos).push(encoder);
        let x = randn(&[batch, len, 4], seed ^ 1);
        let r = randn(&[batch, len, 4], seed ^ 2);
        check_per_sample(&model, batch, true, &|range| {
            let xs = Var::new(x.narrow(0, range.start, range.len())?);
            projected(&model.forward(&xs)?, &r, 0, range)
        })?;
    }
}
