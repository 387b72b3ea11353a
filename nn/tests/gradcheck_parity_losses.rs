//! Gradient properties (first and second order, f64) of the losses added for PyTorch
//! parity: the pair and triplet losses, the likelihood losses and CTC, over random shapes,
//! options and reductions. Values against PyTorch are in `pytorch_losses`.

use crate::common;

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use strata_autograd::Var;
use strata_nn::loss::{
    self, CTCLoss, GaussianNLLLoss, PoissonNLLLoss, Reduction, TripletMarginLoss,
};
use strata_tensor::{IndexTensor, Tensor};
use strata_testing::positive;

fn reduction() -> impl Strategy<Value = Reduction> {
    prop_oneof![
        Just(Reduction::None),
        Just(Reduction::Mean),
        Just(Reduction::Sum)
    ]
}

/// `n` labels of ±1 (with a 0 now and then: PyTorch gives it no loss in the cosine loss
/// and both terms in the hinge loss).
fn labels(n: usize) -> BoxedStrategy<Vec<f64>> {
    vec(
        prop_oneof![4 => Just(1.0), 4 => Just(-1.0), 1 => Just(0.0)],
        n,
    )
    .boxed()
}

/// Rows × features of a batch, and a batch of rows.
fn rows() -> impl Strategy<Value = (usize, usize)> {
    (1..=4usize, 1..=4usize)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// cosine_embedding_loss in both inputs: batched (`[N, D]`, target `[N]`) or one pair
    /// (`[D]`, 0-d target), any margin in [-0.5, 0.5].
    #[test]
    fn cosine_embedding((n, d) in rows(), batched in any::<bool>(), margin in -0.5..0.5f64,
                        r in reduction(), a in nonzero(16), b in nonzero(16), y in labels(4)) {
        let shape = if batched { vec![n, d] } else { vec![d] };
        let k = numel(&shape);
        let y = Var::new(if batched { tensor(y[..n].to_vec(), &[n]) } else { Tensor::scalar(y[0]) });
        check(
            |v| loss::cosine_embedding_loss(&v[0], &v[1], &y, margin, r),
            &[tensor(a[..k].to_vec(), &shape), tensor(b[..k].to_vec(), &shape)],
        )?;
    }

    /// margin_ranking_loss in all three inputs, the target broadcast against the inputs.
    #[test]
    fn margin_ranking(a in smooth(6), b in smooth(6), t in smooth(3), margin in -0.5..0.5f64,
                      r in reduction()) {
        check(
            |v| loss::margin_ranking_loss(&v[0], &v[1], &v[2], margin, r),
            &[tensor(a, &[2, 3]), tensor(b, &[2, 3]), tensor(t, &[1, 3])],
        )?;
    }

    /// triplet_margin_loss in anchor, positive and negative for p in {1, 2, 3, ∞}, with
    /// and without the distance swap, batched or one triplet.
    #[test]
    fn triplet_margin((n, d) in rows(), batched in any::<bool>(),
                      p in prop_oneof![Just(1.0), Just(2.0), Just(3.0), Just(f64::INFINITY)],
                      swap in any::<bool>(), margin in 0.1..2.0f64, r in reduction(),
                      x in distinct(48)) {
        let shape = if batched { vec![n, d] } else { vec![d] };
        let k = numel(&shape);
        let options = TripletMarginLoss { margin, p, swap, reduction: r, ..Default::default() };
        check(
            |v| options.forward(&v[0], &v[1], &v[2]),
            &[tensor(x[..k].to_vec(), &shape), tensor(x[16..16 + k].to_vec(), &shape),
              tensor(x[32..32 + k].to_vec(), &shape)],
        )?;
    }

    /// hinge_embedding_loss in its input, away from the hinge at `margin`.
    #[test]
    fn hinge_embedding(x in nonzero(6), y in labels(6), margin in 0.5..1.5f64, r in reduction()) {
        let x: Vec<f64> = x.into_iter().map(|v| v + margin).collect();
        let y = Var::new(tensor(y, &[2, 3]));
        check(|v| loss::hinge_embedding_loss(&v[0], &y, margin, r), &[tensor(x, &[2, 3])])?;
    }

    /// multilabel_soft_margin_loss in input and target, with and without class weights.
    #[test]
    fn multilabel_soft_margin((n, c) in rows(), x in smooth(16), y in vec(0.0..1.0f64, 16),
                              w in positive(4), weighted in any::<bool>(), r in reduction()) {
        let k = n * c;
        let w = tensor(w[..c].to_vec(), &[c]);
        check(
            |v| loss::multilabel_soft_margin_loss(&v[0], &v[1], weighted.then_some(&w), r),
            &[tensor(x[..k].to_vec(), &[n, c]), tensor(y[..k].to_vec(), &[n, c])],
        )?;
    }

    /// poisson_nll_loss in input and target: log rates, or rates with the Stirling term
    /// (targets on both sides of 1, away from it).
    #[test]
    fn poisson_nll(x in smooth(6), rate in positive(6), y in vec(prop_oneof![0.1..0.9f64, 1.1..5.0f64], 6),
                   log_input in any::<bool>(), full in any::<bool>(), r in reduction()) {
        let options = PoissonNLLLoss { log_input, full, eps: 1e-8, reduction: r };
        let input = if log_input { x } else { rate };
        check(|v| options.forward(&v[0], &v[1]), &[tensor(input, &[2, 3]), tensor(y, &[2, 3])])?;
    }

    /// gaussian_nll_loss in input, target and variance: one variance per element, per row
    /// (`[N, 1]`) or per row without the last dimension (`[N]`).
    #[test]
    fn gaussian_nll(x in smooth(6), y in smooth(6), var in positive(6), form in 0..3usize,
                    full in any::<bool>(), r in reduction()) {
        let var = match form {
            0 => tensor(var, &[2, 3]),
            1 => tensor(var[..2].to_vec(), &[2, 1]),
            _ => tensor(var[..2].to_vec(), &[2]),
        };
        let options = GaussianNLLLoss { full, eps: 1e-6, reduction: r };
        check(
            |v| options.forward(&v[0], &v[1], &v[2]),
            &[tensor(x, &[2, 3]), tensor(y, &[2, 3]), var],
        )?;
    }

    /// CTC of `log_softmax(logits)` in the logits (the gradient PyTorch's backward is exact
    /// for), first and second order: random batch, classes, blank, targets with repeats,
    /// and input lengths from the least an alignment needs up to the frames.
    #[test]
    fn ctc(case in ctc_case(), r in reduction(), padded in any::<bool>(), zero_infinity in any::<bool>()) {
        let CtcCase { logits, labels, input_lengths, blank } = case;
        let target_lengths: Vec<usize> = labels.iter().map(Vec::len).collect();
        let targets = if padded {
            let width = target_lengths.iter().copied().max().unwrap_or(0);
            let rows: Vec<i64> = labels.iter().flat_map(|l| {
                let mut row = l.clone();
                row.resize(width, 0);
                row
            }).collect();
            index(rows, &[labels.len(), width])
        } else {
            let flat: Vec<i64> = labels.concat();
            let n = flat.len();
            index(flat, &[n])
        };
        let options = CTCLoss { blank, reduction: r, zero_infinity };
        check(
            |v| options.forward(&v[0].log_softmax(-1)?, &targets, &input_lengths, &target_lengths),
            &[logits],
        )?;
    }
}

#[derive(Clone, Debug)]
struct CtcCase {
    logits: Tensor<f64>,
    labels: Vec<Vec<i64>>,
    input_lengths: Vec<usize>,
    blank: usize,
}

/// Frames needed to align `labels`: one per label and a blank between repeats.
fn needed(labels: &[i64]) -> usize {
    labels.len() + labels.windows(2).filter(|w| w[0] == w[1]).count()
}

fn ctc_case() -> impl Strategy<Value = CtcCase> {
    (1..=3usize, 2..=4usize)
        .prop_flat_map(|(batch, classes)| {
            (
                Just((batch, classes)),
                0..classes,
                vec(vec(1..classes as i64, 0..=3), batch),
            )
        })
        .prop_flat_map(|((batch, classes), blank, raw)| {
            // Labels are classes other than the blank: shift those at or above it.
            let labels: Vec<Vec<i64>> = raw
                .into_iter()
                .map(|l| {
                    l.into_iter()
                        .map(|c| if c <= blank as i64 { c - 1 } else { c })
                        .collect()
                })
                .collect();
            let need: Vec<usize> = labels.iter().map(|l| needed(l)).collect();
            let most = need.iter().copied().max().unwrap_or(0).max(1);
            (Just((batch, classes, blank, labels, need)), most..=most + 2)
        })
        .prop_flat_map(|((batch, classes, blank, labels, need), frames)| {
            let lengths: Vec<BoxedStrategy<usize>> =
                need.iter().map(|&n| (n..=frames).boxed()).collect();
            (
                Just((batch, classes, blank, labels, frames)),
                lengths,
                smooth(frames * batch * classes),
            )
        })
        .prop_map(
            |((batch, classes, blank, labels, frames), input_lengths, x)| CtcCase {
                logits: tensor(x, &[frames, batch, classes]),
                labels,
                input_lengths,
                blank,
            },
        )
}

/// The losses refuse what PyTorch refuses, with messages naming the problem.
#[test]
fn parity_losses_refuse_bad_input() {
    let v = |shape: &[usize]| Var::new(Tensor::<f64>::zeros(shape));
    let err = |r: strata_nn::Result<Var<f64>>| r.unwrap_err().to_string();
    assert!(
        err(loss::cosine_embedding_loss(
            &v(&[2, 3]),
            &v(&[2, 3]),
            &v(&[2, 1]),
            0.0,
            Reduction::Mean
        ))
        .contains("multi-target")
    );
    assert!(
        err(loss::cosine_embedding_loss(
            &v(&[2, 3]),
            &v(&[2, 3]),
            &v(&[]),
            0.0,
            Reduction::Mean
        ))
        .contains("1-D inputs")
    );
    assert!(
        err(loss::cosine_embedding_loss(
            &v(&[2, 3]),
            &v(&[2, 3]),
            &v(&[3]),
            0.0,
            Reduction::Mean
        ))
        .contains("3 entries")
    );
    assert!(
        err(loss::margin_ranking_loss(
            &v(&[3]),
            &v(&[3]),
            &v(&[1, 3]),
            0.0,
            Reduction::Mean
        ))
        .contains("same rank")
    );
    let t = TripletMarginLoss::default();
    assert!(
        err(t.forward(&v(&[2, 3]), &v(&[2, 3]), &v(&[3]))).contains("same number of dimensions")
    );
    let t = TripletMarginLoss { p: -1.0, ..t };
    assert!(err(t.forward(&v(&[2, 3]), &v(&[2, 3]), &v(&[2, 3]))).contains("non-negative"));
    assert!(
        err(loss::hinge_embedding_loss(
            &v(&[2, 3]),
            &v(&[3]),
            1.0,
            Reduction::Mean
        ))
        .contains("differs")
    );
    assert!(
        err(loss::multilabel_soft_margin_loss(
            &v(&[]),
            &v(&[]),
            None,
            Reduction::Mean
        ))
        .contains("class dimension")
    );
    let g = GaussianNLLLoss::default();
    assert!(err(g.forward(&v(&[2, 3]), &v(&[2, 3]), &v(&[3]))).contains("does not fit"));
    let negative = Var::new(Tensor::from_vec(vec![1.0, -1.0], &[2]).unwrap());
    assert!(err(g.forward(&v(&[2, 3]), &v(&[2, 3]), &negative)).contains("negative"));
    let ctc = CTCLoss::default();
    let targets = IndexTensor::from_vec(vec![1, 2], &[1, 2]).unwrap();
    assert!(err(ctc.forward(&v(&[4, 1, 3, 1]), &targets, &[4], &[2])).contains("[T, N, C]"));
    assert!(err(ctc.forward(&v(&[4, 3]), &targets, &[4], &[2])).contains("1-D targets"));
    assert!(err(ctc.forward(&v(&[4, 1, 3]), &targets, &[5], &[2])).contains("exceeds"));
}

/// Without zero_infinity an impossible alignment has an infinite loss (as in PyTorch);
/// with it, 0 and a zero gradient, while the other samples keep theirs.
#[test]
fn ctc_impossible_alignments() {
    let logits = Var::parameter(
        Tensor::<f64>::from_vec(
            (0..18).map(|i| (i as f64 * 0.7).sin()).collect(),
            &[3, 2, 3],
        )
        .unwrap(),
    );
    let lp = logits.log_softmax(-1).unwrap();
    // Sample 0: "1 1" needs 3 frames and has them; sample 1: "1 1" in 2 frames cannot.
    let targets = IndexTensor::from_vec(vec![1, 1, 1, 1], &[2, 2]).unwrap();
    let none = CTCLoss {
        reduction: Reduction::None,
        ..Default::default()
    };
    let losses = none
        .forward(&lp, &targets, &[3, 2], &[2, 2])
        .unwrap()
        .to_vec();
    assert!(losses[0].is_finite() && losses[1] == f64::INFINITY);
    let zeroed = CTCLoss {
        zero_infinity: true,
        reduction: Reduction::Sum,
        ..Default::default()
    };
    let loss = zeroed.forward(&lp, &targets, &[3, 2], &[2, 2]).unwrap();
    assert_eq!(loss.item().unwrap(), losses[0]);
    loss.backward().unwrap();
    let g = logits.grad().unwrap().to_vec();
    // [T, N, C]: sample 1's entries are at n = 1 of every frame.
    for t in 0..3 {
        assert!(g[t * 6 + 3..t * 6 + 6].iter().all(|&v| v == 0.0));
    }
    assert!(g[..3].iter().any(|&v| v != 0.0));
}
