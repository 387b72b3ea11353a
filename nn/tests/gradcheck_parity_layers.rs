//! Gradient properties (first and second order, f64) of the layers added for PyTorch
//! parity, in their inputs and parameters. Their values against PyTorch are in
//! `pytorch_layers`.

use crate::common;

use common::*;
use proptest::prelude::*;
use strata_autograd::Var;
use strata_nn::*;
use strata_tensor::seeded_rng;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// GroupNorm in its input, over [N, C, L] with C split into groups and random affine
    /// parameters (their gradients are checked against PyTorch in `pytorch_layers`).
    #[test]
    fn group_norm(n in 1..=2usize, groups in 1..=2usize, per in 1..=2usize, l in 2..=3usize,
                  x in smooth(24), w in smooth(4), b in smooth(4)) {
        let c = groups * per;
        let gn = GroupNorm::<f64>::new(groups, c).unwrap();
        gn.weight.as_ref().unwrap().set_value(tensor(w[..c].to_vec(), &[c])).unwrap();
        gn.bias.as_ref().unwrap().set_value(tensor(b[..c].to_vec(), &[c])).unwrap();
        check(|v| gn.forward(&v[0]), &[tensor(x[..n * c * l].to_vec(), &[n, c, l])])?;
    }

    /// InstanceNorm2d (affine, training) in its input.
    #[test]
    fn instance_norm(x in smooth(36)) {
        let layer = InstanceNorm2d::<f64>::with_config(2, InstanceNormConfig { affine: true, ..Default::default() });
        check(|v| layer.forward(&v[0]), &[tensor(x[..24].to_vec(), &[2, 2, 2, 3])])?;
    }

    /// PixelShuffle, PixelUnshuffle and Unflatten in their input.
    #[test]
    fn rearrangements(x in smooth(48)) {
        let ps = PixelShuffle::new(2).unwrap();
        check(|v| ps.forward(&v[0]), &[tensor(x[..24].to_vec(), &[1, 4, 3, 2])])?;
        let pu = PixelUnshuffle::new(2).unwrap();
        check(|v| pu.forward(&v[0]), &[tensor(x[..16].to_vec(), &[1, 1, 4, 4])])?;
        let uf = Unflatten::new(-1, &[3, -1]).unwrap();
        check(|v| uf.forward(&v[0]), &[tensor(x[..12].to_vec(), &[2, 6])])?;
    }

    /// interpolate: nearest and linear (both corner conventions), up and down, 1-D and 2-D.
    #[test]
    fn interpolation(x in smooth(30), out in 1..=6usize, corners in any::<bool>(), nearest in any::<bool>(), two_d in any::<bool>()) {
        let mode = if nearest { InterpolateMode::Nearest } else { InterpolateMode::Linear { align_corners: corners } };
        let (input, resize) = if two_d {
            (tensor(x[..15].to_vec(), &[1, 1, 3, 5]), Resize::Size(vec![out, 4]))
        } else {
            (tensor(x[..8].to_vec(), &[2, 1, 4]), Resize::Size(vec![out]))
        };
        let up = Upsample { resize, mode };
        check(|v| up.forward(&v[0]), &[input])?;
    }

    /// Bilinear in both inputs, with random weights.
    #[test]
    fn bilinear(x1 in smooth(6), x2 in smooth(4), seed in any::<u64>()) {
        let layer = Bilinear::<f64>::new(3, 2, 2, true, &mut seeded_rng(seed));
        check(|v| layer.forward(&v[0], &v[1]), &[tensor(x1, &[2, 3]), tensor(x2, &[2, 2])])?;
    }
}

/// The layers' parameters receive the gradients their functional forms give.
#[test]
fn parameters_get_gradients() {
    let gn = GroupNorm::<f64>::new(2, 4).unwrap();
    let x = Var::new(strata_tensor::Tensor::randn(&[2, 4, 3], &mut seeded_rng(1)));
    gn.forward(&x)
        .unwrap()
        .square()
        .sum_all()
        .backward()
        .unwrap();
    assert!(
        gn.weight.as_ref().unwrap().grad().is_some() && gn.bias.as_ref().unwrap().grad().is_some()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Transposed convolutions in input, weight and bias: strides, paddings, output
    /// paddings, dilations and groups.
    #[test]
    fn conv_transpose(stride in 1..=3usize, pad in 0..=1usize, dil in 1..=2usize, groups in 1..=2usize,
                      k in 1..=3usize, x in smooth(32), w in smooth(36), b in smooth(4), one_d in any::<bool>()) {
        let op = stride.max(dil) - 1;
        let params2 = strata_autograd::ConvTransposeParams {
            stride: [1, stride], padding: [0, pad], output_padding: [0, op], dilation: [1, dil], groups,
        };
        let (cin, cout) = (2 * groups, 2);
        let xs = tensor(x[..cin * 3 * 2].to_vec(), &[2, cin, 3]);
        let wn = cin * (cout / groups).max(1) * k;
        let ws = tensor(w[..wn].to_vec(), &[cin, (cout / groups).max(1), k]);
        let bs = tensor(b[..(cout / groups).max(1) * groups].to_vec(), &[(cout / groups).max(1) * groups]);
        if one_d {
            let params1 = strata_autograd::ConvTransposeParams {
                stride: [stride], padding: [pad], output_padding: [op], dilation: [dil], groups,
            };
            check(|v| Ok(v[0].conv_transpose1d(&v[1], Some(&v[2]), params1)?), &[xs, ws, bs])?;
        } else {
            let xs = xs.reshape(&[2, cin, 1, 3][..]).unwrap();
            let ws = ws.reshape(&[cin, (cout / groups).max(1), 1, k][..]).unwrap();
            check(|v| Ok(v[0].conv_transpose2d(&v[1], Some(&v[2]), params2)?), &[xs, ws, bs])?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// MaxPool1d, AvgPool1d and AdaptiveMaxPool2d in their input (distinct values, so
    /// maxima have no ties).
    #[test]
    fn pools(x in distinct(40), k in 1..=3usize, stride in 1..=2usize, out in (1..=3usize, 1..=3usize)) {
        let params = Pool1dParams { stride, padding: k / 2, ..Pool1dParams::new(k) };
        let line = tensor(x[..16].to_vec(), &[2, 2, 4]);
        check(|v| MaxPool1d { params }.forward(&v[0]), std::slice::from_ref(&line))?;
        check(|v| AvgPool1d { params }.forward(&v[0]), &[line])?;
        let plane = tensor(x[..40].to_vec(), &[2, 4, 5]);
        check(|v| AdaptiveMaxPool2d { output_size: [out.0, out.1] }.forward(&v[0]), &[plane])?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// EmbeddingBag (Sum) in its per-index weights, with random bags (empty ones too).
    #[test]
    fn embedding_bag(ids in proptest::collection::vec(0..5i64, 1..8), cut in proptest::collection::vec(any::<bool>(), 8),
                     w in smooth(8), seed in any::<u64>()) {
        let bag = EmbeddingBag::<f64>::new(5, 3, BagMode::Sum, Some(4), &mut seeded_rng(seed)).unwrap();
        let n = ids.len();
        let mut offsets = vec![0i64];
        offsets.extend((1..n).filter(|&k| cut[k]).map(|k| k as i64));
        let input = strata_tensor::IndexTensor::from_vec(ids, &[n]).unwrap();
        let k = offsets.len();
        let offsets = strata_tensor::IndexTensor::from_vec(offsets, &[k]).unwrap();
        check(|v| bag.forward(&input, Some(&offsets), Some(&v[0])), &[tensor(w[..n].to_vec(), &[n])])?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Conv3d in input, weight and bias; MaxPool3d and AvgPool3d in their input.
    #[test]
    fn volumetric(x in distinct(54), w in smooth(16), b in smooth(2), stride in 1..=2usize, pad in 0..=1usize) {
        let p = Conv3dParams { stride: [stride, 1, stride], padding: [pad, pad, 0], ..Default::default() };
        let input = tensor(x[..54].to_vec(), &[1, 2, 3, 3, 3]);
        check(|v| functional::conv3d(&v[0], &v[1], Some(&v[2]), p),
              &[input.clone(), tensor(w, &[2, 2, 2, 2, 1]), tensor(b, &[2])])?;
        let pool = Pool3dParams { stride: [stride; 3], padding: [pad; 3], count_include_pad: pad == 0, ..Pool3dParams::new(2) };
        check(|v| MaxPool3d { params: pool }.forward(&v[0]), std::slice::from_ref(&input))?;
        check(|v| AvgPool3d { params: pool }.forward(&v[0]), &[input])?;
    }
}
