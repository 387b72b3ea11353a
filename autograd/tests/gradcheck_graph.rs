//! Gradchecks of composite graphs: a small MLP with a gather-based NLL loss, a
//! conv2d → relu → max_pool2d → flatten → matmul chain, and a value used several times
//! in one graph (the backward walk must add up every path).

use crate::common;

use common::*;
use proptest::prelude::*;
use strata_autograd::{Result, Var};
use strata_tensor::{Conv2dParams, IndexTensor, Pool2dParams, Tensor};

/// `mean(-log_softmax(tanh(x·w1 + b1)·w2)[target])`: the NLL loss of a one-hidden-layer
/// MLP, picking each row's target log-probability with `gather`.
fn mlp_loss(
    x: &Var<f64>,
    w1: &Var<f64>,
    b1: &Var<f64>,
    w2: &Var<f64>,
    targets: &IndexTensor,
) -> Result<Var<f64>> {
    let hidden = x.matmul(w1)?.add(b1)?.tanh();
    let log_probs = hidden.matmul(w2)?.log_softmax(-1)?;
    Ok(log_probs.gather(1, targets)?.neg().mean_all())
}

/// The MLP's inputs: x `[batch, d]`, w1 `[d, h]`, b1 `[h]`, w2 `[h, classes]`, each in
/// any layout, and one target class per row.
#[allow(clippy::type_complexity)]
fn mlp_case() -> BoxedStrategy<(Arg, Arg, Arg, Arg, IndexTensor)> {
    (1..=4usize, 1..=3usize, 1..=4usize, 2..=4usize)
        .prop_flat_map(|(batch, d, h, classes)| {
            (
                arg(vec![batch, d], smooth, true),
                arg(vec![d, h], smooth, true),
                arg(vec![h], smooth, true),
                arg(vec![h, classes], smooth, true),
                index_values(vec![batch, 1], classes),
            )
        })
        .boxed()
}

/// Whether relu and 2×2 max pooling of the pre-activations `z` (`[N, C, H, W]`) are
/// differentiable there: no pre-activation within 1e-3 of relu's kink, and in every
/// pooling window with a positive maximum, the runner-up at least 1e-3 below it (a
/// window whose maximum is 0 has zero gradient whichever element wins).
fn smooth_relu_pool(z: &Tensor<f64>) -> bool {
    let s = z.shape();
    let (planes, h, w) = (s[0] * s[1], s[2], s[3]);
    let data = z.to_vec();
    if data.iter().any(|v| v.abs() < 1e-3) {
        return false;
    }
    (0..planes).all(|p| {
        (0..h / 2).all(|i| {
            (0..w / 2).all(|j| {
                let mut window: Vec<f64> = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .iter()
                    .map(|(di, dj)| data[p * h * w + (2 * i + di) * w + 2 * j + dj].max(0.0))
                    .collect();
                window.sort_by(|a, b| b.total_cmp(a));
                window[0] == 0.0 || window[0] - window[1] >= 1e-3
            })
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn mlp_nll_loss((x, w1, b1, w2, targets) in mlp_case()) {
        check(
            |v| {
                mlp_loss(
                    &x.apply(&v[0])?,
                    &w1.apply(&v[1])?,
                    &b1.apply(&v[2])?,
                    &w2.apply(&v[3])?,
                    &targets,
                )
            },
            &[x.tensor(), w1.tensor(), b1.tensor(), w2.tensor()],
        )?;
    }

    // x [n, 1, h, w] → conv2d (2 filters 2×2, bias) → relu → max_pool2d(2) → flatten →
    // matmul with fc [2·⌊(h-1)/2⌋·⌊(w-1)/2⌋, 3]. Cases where relu or the pooling sits on
    // a kink (see `smooth_relu_pool`) are rejected.
    #[test]
    fn conv_relu_pool_flatten_matmul(
        (x, weight, bias, fc) in (1..=2usize, 3..=5usize, 3..=5usize).prop_flat_map(|(n, h, w)| {
            let features = 2 * ((h - 1) / 2) * ((w - 1) / 2);
            (
                contiguous(vec![n, 1, h, w], smooth),
                contiguous(vec![2, 1, 2, 2], smooth),
                contiguous(vec![2], smooth),
                arg(vec![features, 3], smooth, true),
            )
        }),
    ) {
        let z = x.tensor().conv2d(&weight.tensor(), Some(&bias.tensor()), Conv2dParams::default())?;
        prop_assume!(smooth_relu_pool(&z));
        check(
            |v| {
                let z = v[0].conv2d(&v[1], Some(&v[2]), Conv2dParams::default())?;
                let pooled = z.relu().max_pool2d(Pool2dParams::new(2))?;
                pooled.flatten(1, -1)?.matmul(&fc.apply(&v[3])?)
            },
            &[x.tensor(), weight.tensor(), bias.tensor(), fc.tensor()],
        )?;
    }

    // x = tanh(a)·b is an intermediate used four times: x·x + exp(x) + x. Its gradient
    // must add the contributions of every use: d/dx = 2x + e^x + 1.
    #[test]
    fn value_used_several_times(
        (a, b) in broadcast_shapes(2, 24).prop_flat_map(|s| {
            (arg(s[0].clone(), smooth, true), arg(s[1].clone(), smooth, true))
        }),
    ) {
        check(
            |v| {
                let x = a.apply(&v[0])?.tanh().mul(&b.apply(&v[1])?)?;
                x.mul(&x)?.add(&x.exp())?.add(&x)
            },
            &[a.tensor(), b.tensor()],
        )?;
    }

    // The same leaf on both sides of several ops, and through two different views of it.
    #[test]
    fn leaf_used_through_two_views(a in shaped(2..=2, 16, smooth, true)) {
        check(
            |v| {
                let x = a.apply(&v[0])?;
                let xt = x.t()?;
                let gram = xt.matmul(&x)?;
                gram.add(&gram.t()?)?.sum(&[0], false)?.mul(&x.sum(&[0], false)?)
            },
            &[a.tensor()],
        )?;
    }
}
