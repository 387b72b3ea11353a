//! Gradchecks of every loss of strata-nn over random options, in f64: the gradients with
//! respect to the input and, where the target is a float tensor, to the target. Each
//! property also checks the loss's value against a direct transcription of PyTorch's
//! definition, and the loss struct (`MSELoss`, `CrossEntropyLoss`, …) against the
//! function.

use crate::common;

use common::*;
use proptest::prelude::*;
use strata_autograd::Var;
use strata_nn::loss::{
    self, BCELoss, BCEWithLogitsLoss, ClassLossOptions, CrossEntropyLoss, HuberLoss, KLDivLoss,
    KlReduction, L1Loss, MSELoss, NLLLoss, Reduction, SmoothL1Loss,
};
use strata_tensor::{IndexTensor, Tensor};

fn reduction() -> impl Strategy<Value = Reduction> {
    prop_oneof![
        Just(Reduction::None),
        Just(Reduction::Mean),
        Just(Reduction::Sum)
    ]
}

/// Per-element losses `terms` of `shape` reduced as `r` says, divided by `divisor` for
/// the mean.
fn reduced(terms: Vec<f64>, shape: &[usize], r: Reduction, divisor: f64) -> Tensor<f64> {
    match r {
        Reduction::None => tensor(terms, shape),
        Reduction::Sum => Tensor::scalar(terms.iter().sum()),
        Reduction::Mean => Tensor::scalar(terms.iter().sum::<f64>() / divisor),
    }
}

// ---------------------------------------------------------------------------------------
// Pointwise regression losses.
// ---------------------------------------------------------------------------------------

/// A regression loss with its parameter.
#[derive(Clone, Copy, Debug)]
enum Pointwise {
    Mse,
    L1,
    SmoothL1 { beta: f64 },
    Huber { delta: f64 },
}

impl Pointwise {
    fn apply(self, x: &Var<f64>, y: &Var<f64>, r: Reduction) -> strata_nn::Result<Var<f64>> {
        match self {
            Pointwise::Mse => loss::mse_loss(x, y, r),
            Pointwise::L1 => loss::l1_loss(x, y, r),
            Pointwise::SmoothL1 { beta } => loss::smooth_l1_loss(x, y, r, beta),
            Pointwise::Huber { delta } => loss::huber_loss(x, y, r, delta),
        }
    }

    fn apply_struct(
        self,
        x: &Var<f64>,
        y: &Var<f64>,
        reduction: Reduction,
    ) -> strata_nn::Result<Var<f64>> {
        match self {
            Pointwise::Mse => MSELoss { reduction }.forward(x, y),
            Pointwise::L1 => L1Loss { reduction }.forward(x, y),
            Pointwise::SmoothL1 { beta } => SmoothL1Loss { reduction, beta }.forward(x, y),
            Pointwise::Huber { delta } => HuberLoss { reduction, delta }.forward(x, y),
        }
    }

    /// PyTorch's per-element loss of a difference `d`.
    fn term(self, d: f64) -> f64 {
        let a = d.abs();
        match self {
            Pointwise::Mse => d * d,
            Pointwise::L1 => a,
            Pointwise::SmoothL1 { beta } if a < beta => 0.5 * d * d / beta,
            Pointwise::SmoothL1 { beta } => a - 0.5 * beta,
            Pointwise::Huber { delta } if a < delta => 0.5 * d * d,
            Pointwise::Huber { delta } => delta * (a - 0.5 * delta),
        }
    }

    /// Where `|d|` has a kink: 0 (L1, and smooth L1 with beta 0) and the switch from the
    /// quadratic to the linear piece (`beta`, `delta`). MSE has none; at 0 smooth L1
    /// (beta > 0) and Huber are quadratic, but their abs-based form still meets 0, so
    /// it is avoided for them too.
    fn switch(self) -> Option<f64> {
        match self {
            Pointwise::Mse | Pointwise::L1 => None,
            Pointwise::SmoothL1 { beta } => (beta > 0.0).then_some(beta),
            Pointwise::Huber { delta } => Some(delta),
        }
    }
}

fn pointwise() -> impl Strategy<Value = Pointwise> {
    prop_oneof![
        Just(Pointwise::Mse),
        Just(Pointwise::L1),
        prop_oneof![Just(0.0), 0.2..2.0f64].prop_map(|beta| Pointwise::SmoothL1 { beta }),
        (0.2..2.0f64).prop_map(|delta| Pointwise::Huber { delta }),
    ]
}

/// Differences `input - target` that stay away from the kinks of `loss`: for MSE any
/// value in [-2, 2]; otherwise `|d|` at least 0.05 from 0 and, for smooth L1 and Huber,
/// at least 0.05·s from the switch point s (either inside, `|d| ∈ s·[0.05, 0.95]`, or
/// outside, `|d| ∈ [s + 0.05, s + 2]`).
fn differences(loss: Pointwise, n: usize) -> BoxedStrategy<Vec<f64>> {
    if let Pointwise::Mse = loss {
        return smooth(n);
    }
    let switch = loss.switch();
    prop::collection::vec((any::<bool>(), any::<bool>(), 0.0..1.0f64), n)
        .prop_map(move |draws| {
            draws
                .into_iter()
                .map(|(negative, inside, u)| {
                    let m = match switch {
                        Some(s) if inside => s * (0.05 + 0.9 * u),
                        Some(s) => s + 0.05 + 2.0 * u,
                        None => 0.05 + 2.0 * u,
                    };
                    if negative { -m } else { m }
                })
                .collect()
        })
        .boxed()
}

#[derive(Clone, Debug)]
struct PointwiseCase {
    loss: Pointwise,
    input: Tensor<f64>,
    target: Tensor<f64>,
    reduction: Reduction,
}

fn pointwise_case() -> impl Strategy<Value = PointwiseCase> {
    (pointwise(), shape(0..=3, 3, 12), reduction())
        .prop_flat_map(|(loss, shape, reduction)| {
            let n = numel(&shape);
            (
                Just((loss, shape, reduction)),
                smooth(n),
                differences(loss, n),
            )
        })
        .prop_map(|((loss, shape, reduction), target, d)| {
            let input = target.iter().zip(&d).map(|(t, d)| t + d).collect();
            PointwiseCase {
                loss,
                input: tensor(input, &shape),
                target: tensor(target, &shape),
                reduction,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CHEAP_CASES))]

    /// mse, l1, smooth_l1 (random beta, 0 included) and huber (random delta) in input and
    /// target, every reduction, inputs of rank 0..=3.
    #[test]
    fn pointwise_losses(c in pointwise_case()) {
        let (l, r) = (c.loss, c.reduction);
        check(|v| l.apply(&v[0], &v[1], r), &[c.input.clone(), c.target.clone()])?;

        let (x, y) = (Var::new(c.input.clone()), Var::new(c.target.clone()));
        let value = l.apply(&x, &y, r)?;
        let terms: Vec<f64> = c.input.to_vec().iter().zip(c.target.to_vec()).map(|(a, b)| l.term(a - b)).collect();
        let expected = reduced(terms, c.input.shape(), r, c.input.numel() as f64);
        assert_close(&value.value(), &expected, &format!("{l:?} value"))?;
        assert_close(&l.apply_struct(&x, &y, r)?.value(), &value.value(), "loss struct")?;
    }
}

// ---------------------------------------------------------------------------------------
// Classification losses with class-index targets.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct ClassCase {
    input: Tensor<f64>,
    target: IndexTensor,
    options: ClassLossOptions<f64>,
}

impl ClassCase {
    fn classes(&self) -> usize {
        self.input.shape()[class_dim(&self.input)]
    }

    fn class_weight(&self, class: usize) -> f64 {
        class_weight(&self.options, class)
    }
}

/// The class dim of a classification input: 0 for `[C]`, else 1.
fn class_dim(input: &Tensor<f64>) -> usize {
    usize::from(input.ndim() > 1)
}

/// The weight of `class`: 1 without class weights.
fn class_weight(options: &ClassLossOptions<f64>, class: usize) -> f64 {
    options.weight.as_ref().map_or(1.0, |w| w.to_vec()[class])
}

/// A classification tensor `[C]` or `[N, C, d…]` as rows along the class dim, one per
/// position `(n, d…)` in row-major order (the order of the targets).
fn class_rows(t: &Tensor<f64>) -> Vec<Vec<f64>> {
    let s = t.shape();
    let data = t.to_vec();
    if s.len() == 1 {
        return vec![data];
    }
    let (n, c) = (s[0], s[1]);
    let inner: usize = s[2..].iter().product();
    let mut rows = Vec::new();
    for i in 0..n {
        for j in 0..inner {
            rows.push((0..c).map(|k| data[(i * c + k) * inner + j]).collect());
        }
    }
    rows
}

fn log_softmax(row: &[f64]) -> Vec<f64> {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    row.iter().map(|v| v - lse).collect()
}

/// The input layouts: `[C]` (kind 0), `[N, C]`, `[N, C, d]`, `[N, C, d1, d2]`; 2..=4
/// classes, N 1..=3, d 1..=3 (1..=2 for two extra dims).
fn class_input_shape() -> impl Strategy<Value = Vec<usize>> {
    (0..4usize, 2..=4usize, 1..=3usize, 1..=3usize, 1..=2usize).prop_map(|(kind, c, n, d, e)| {
        match kind {
            0 => vec![c],
            1 => vec![n, c],
            2 => vec![n, c, d],
            _ => vec![n, c, e, e],
        }
    })
}

/// Options for a `classes`-way loss: class weights in [0.2, 2] half the time; an
/// ignore index that is PyTorch's default -100 (not among the targets), a real class, or
/// -1; label smoothing 0 a third of the time, else in [0.05, 1]; any reduction.
fn class_options(classes: usize) -> impl Strategy<Value = ClassLossOptions<f64>> {
    (
        optional_weight(classes),
        prop_oneof![Just(-100i64), 0..classes as i64, Just(-1i64)],
        prop_oneof![1 => Just(0.0), 2 => 0.05..=1.0f64],
        reduction(),
    )
        .prop_map(
            |(weight, ignore_index, label_smoothing, reduction)| ClassLossOptions {
                weight,
                ignore_index,
                reduction,
                label_smoothing,
            },
        )
}

fn optional_weight(classes: usize) -> BoxedStrategy<Option<Tensor<f64>>> {
    prop::option::of(within(classes, 0.2, 2.0).prop_map(move |w| tensor(w, &[classes]))).boxed()
}

/// Logits (or log-probabilities) in [-3, 3], class-index targets, options. About a third
/// of the targets after the first are the ignore index (whatever it is); the first never
/// is, so a mean never divides by a zero total weight (PyTorch's NaN).
fn class_case() -> impl Strategy<Value = ClassCase> {
    class_input_shape()
        .prop_flat_map(|shape| {
            let cdim = usize::from(shape.len() > 1);
            let c = shape[cdim];
            let mut target_shape = shape.clone();
            target_shape.remove(cdim);
            let n = numel(&target_shape);
            (
                filled(shape, |n| within(n, -3.0, 3.0)),
                prop::collection::vec((0..c as i64, prop::bool::weighted(0.3)), n),
                Just(target_shape),
                class_options(c),
            )
        })
        .prop_map(|(input, draws, target_shape, options)| {
            let t = draws
                .iter()
                .enumerate()
                .map(|(i, &(class, ignored))| {
                    if ignored && i > 0 {
                        options.ignore_index
                    } else {
                        class
                    }
                })
                .collect::<Vec<_>>();
            let mut t = t;
            if t[0] == options.ignore_index {
                t[0] = (t[0] + 1) % input.shape()[usize::from(input.ndim() > 1)] as i64;
            }
            ClassCase {
                input,
                target: index(t, &target_shape),
                options,
            }
        })
}

/// PyTorch's `cross_entropy` of class indices: `(1-ε)·nll + ε/C·smooth`, with per position
/// `nll = -w[t]·logp[t]` and `smooth = -Σ_c w[c]·logp[c]`, both zero where the target is
/// ignored; the mean divides both sums by the total weight `Σ w[t]` of the targets not
/// ignored. With `smoothing = false` it is `nll_loss` of log-softmaxed rows.
fn cross_entropy_reference(c: &ClassCase, smoothing: bool) -> Tensor<f64> {
    let classes = c.classes();
    let eps = if smoothing {
        c.options.label_smoothing
    } else {
        0.0
    };
    let (mut terms, mut total_weight) = (Vec::new(), 0.0);
    for (row, &t) in class_rows(&c.input).iter().zip(c.target.as_slice()) {
        if t == c.options.ignore_index {
            terms.push(0.0);
            continue;
        }
        let logp = log_softmax(row);
        let nll = -c.class_weight(t as usize) * logp[t as usize];
        let smooth: f64 = -(0..classes)
            .map(|k| c.class_weight(k) * logp[k])
            .sum::<f64>();
        total_weight += c.class_weight(t as usize);
        terms.push((1.0 - eps) * nll + eps / classes as f64 * smooth);
    }
    reduced(terms, c.target.shape(), c.options.reduction, total_weight)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// cross_entropy with class indices in the input: random class weights, an ignore
    /// index present among the targets, label smoothing, every reduction, inputs `[C]`,
    /// `[N, C]`, `[N, C, d]` and `[N, C, d1, d2]`.
    #[test]
    fn cross_entropy(c in class_case()) {
        check(|v| loss::cross_entropy(&v[0], &c.target, &c.options), std::slice::from_ref(&c.input))?;

        let x = Var::new(c.input.clone());
        let value = loss::cross_entropy(&x, &c.target, &c.options)?;
        assert_close(&value.value(), &cross_entropy_reference(&c, true), "cross_entropy value")?;
        let layer = CrossEntropyLoss { options: c.options.clone() };
        assert_close(&layer.forward(&x, &c.target)?.value(), &value.value(), "CrossEntropyLoss")?;
    }

    /// nll_loss of log-probabilities (any values) in the input: class weights, an ignore
    /// index present among the targets, every reduction; `label_smoothing` is not an
    /// option of nll_loss and must change nothing.
    #[test]
    fn nll_loss(c in class_case()) {
        check(|v| loss::nll_loss(&v[0], &c.target, &c.options), std::slice::from_ref(&c.input))?;

        let x = Var::new(c.input.clone());
        let value = loss::nll_loss(&x, &c.target, &c.options)?;
        // nll_loss of log_softmax(x) is cross_entropy without smoothing.
        let logp = Var::new(c.input.log_softmax(class_dim(&c.input) as isize)?);
        let of_logp = loss::nll_loss(&logp, &c.target, &c.options)?;
        assert_close(&of_logp.value(), &cross_entropy_reference(&c, false), "nll_loss value")?;
        let layer = NLLLoss { options: c.options.clone() };
        assert_close(&layer.forward(&x, &c.target)?.value(), &value.value(), "NLLLoss")?;
    }
}

// ---------------------------------------------------------------------------------------
// Cross-entropy with class-probability targets.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct ProbsCase {
    input: Tensor<f64>,
    target: Tensor<f64>,
    options: ClassLossOptions<f64>,
}

fn probs_case() -> impl Strategy<Value = ProbsCase> {
    class_input_shape()
        .prop_flat_map(|shape| {
            let c = shape[usize::from(shape.len() > 1)];
            (
                filled(shape.clone(), |n| within(n, -3.0, 3.0)),
                filled(shape, |n| within(n, 0.0, 1.0)),
                class_options(c),
            )
        })
        .prop_map(|(input, target, options)| ProbsCase {
            input,
            target,
            options,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// cross_entropy with probability targets in input and target: class weights, label
    /// smoothing, every reduction, the same layouts as with class indices. Per position
    /// the loss is `-Σ_c w_c·t'_c·logp_c` with `t' = (1-ε)·t + ε/C`; the mean divides by
    /// the number of positions.
    #[test]
    fn cross_entropy_probs(c in probs_case()) {
        check(|v| loss::cross_entropy_probs(&v[0], &v[1], &c.options), &[c.input.clone(), c.target.clone()])?;

        let (x, t) = (Var::new(c.input.clone()), Var::new(c.target.clone()));
        let value = loss::cross_entropy_probs(&x, &t, &c.options)?;
        let cdim = class_dim(&c.input);
        let classes = c.input.shape()[cdim];
        let eps = c.options.label_smoothing;
        let w = |k: usize| class_weight(&c.options, k);
        let terms: Vec<f64> = class_rows(&c.input)
            .iter()
            .zip(&class_rows(&c.target))
            .map(|(row, t)| {
                let logp = log_softmax(row);
                -(0..classes)
                    .map(|k| w(k) * ((1.0 - eps) * t[k] + eps / classes as f64) * logp[k])
                    .sum::<f64>()
            })
            .collect();
        let mut position_shape = c.input.shape().to_vec();
        position_shape.remove(cdim);
        let positions = terms.len() as f64;
        let expected = reduced(terms, &position_shape, c.options.reduction, positions);
        assert_close(&value.value(), &expected, "cross_entropy_probs value")?;
        let layer = CrossEntropyLoss { options: c.options.clone() };
        assert_close(&layer.forward_probs(&x, &t)?.value(), &value.value(), "CrossEntropyLoss::forward_probs")?;
    }
}

// ---------------------------------------------------------------------------------------
// Binary cross-entropy.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct BinaryCase {
    input: Tensor<f64>,
    target: Tensor<f64>,
    weight: Option<Tensor<f64>>,
    pos_weight: Option<Tensor<f64>>,
    reduction: Reduction,
}

/// The shape `[d]` of the last dim `d` of `shape`; `[]` for a 0-d shape.
fn last_dim(shape: &[usize]) -> Vec<usize> {
    shape.last().map(|&d| vec![d]).unwrap_or_default()
}

/// A weight in [0.2, 2] that broadcasts to `shape`: none, of the full shape, of its last
/// dim only, or a single element (`[1]`, or `[]` for a 0-d shape).
fn broadcast_weight(shape: Vec<usize>) -> BoxedStrategy<Option<Tensor<f64>>> {
    let last = last_dim(&shape);
    let single = vec![1; shape.len().min(1)];
    prop_oneof![
        Just(None::<Vec<usize>>),
        Just(Some(shape)),
        Just(Some(last)),
        Just(Some(single))
    ]
    .prop_flat_map(|s| match s {
        None => Just(None).boxed(),
        Some(s) => filled(s, |n| within(n, 0.2, 2.0)).prop_map(Some).boxed(),
    })
    .boxed()
}

/// Inputs from `input_values` of rank 0..=3, targets in [0, 1], a broadcast weight, a
/// positive-class weight of the last dim's size (used by the logits form only), any
/// reduction.
fn binary_case(
    input_values: fn(usize) -> BoxedStrategy<Vec<f64>>,
) -> impl Strategy<Value = BinaryCase> {
    (shape(0..=3, 3, 12), reduction())
        .prop_flat_map(move |(shape, reduction)| {
            let last = last_dim(&shape);
            (
                filled(shape.clone(), input_values),
                filled(shape.clone(), |n| within(n, 0.0, 1.0)),
                broadcast_weight(shape),
                prop::option::of(filled(last, |n| within(n, 0.2, 3.0))),
                Just(reduction),
            )
        })
        .prop_map(
            |(input, target, weight, pos_weight, reduction)| BinaryCase {
                input,
                target,
                weight,
                pos_weight,
                reduction,
            },
        )
}

impl BinaryCase {
    /// `f(x, y, w, p)` per element, with `w` and `p` broadcast (1 when absent).
    fn terms(&self, f: impl Fn(f64, f64, f64, f64) -> f64) -> Vec<f64> {
        let shape = self.input.shape();
        let expand = |t: &Option<Tensor<f64>>| -> Vec<f64> {
            t.as_ref().map_or(vec![1.0; self.input.numel()], |t| {
                t.broadcast_to(shape)
                    .expect("broadcasts")
                    .contiguous()
                    .to_vec()
            })
        };
        let (w, p) = (expand(&self.weight), expand(&self.pos_weight));
        let (x, y) = (self.input.to_vec(), self.target.to_vec());
        (0..x.len()).map(|i| f(x[i], y[i], w[i], p[i])).collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CHEAP_CASES))]

    /// binary_cross_entropy in input and target, with a broadcast weight and every
    /// reduction. The inputs stay in [0.05, 0.95]: the loss has poles at 0 and 1 (and
    /// PyTorch clamps its logs at -100 there).
    #[test]
    fn binary_cross_entropy(c in binary_case(|n| within(n, 0.05, 0.95))) {
        let (w, r) = (c.weight.as_ref(), c.reduction);
        check(|v| loss::binary_cross_entropy(&v[0], &v[1], w, r), &[c.input.clone(), c.target.clone()])?;

        let (x, y) = (Var::new(c.input.clone()), Var::new(c.target.clone()));
        let value = loss::binary_cross_entropy(&x, &y, w, r)?;
        let terms = c.terms(|x, y, w, _| -w * (y * x.ln() + (1.0 - y) * (1.0 - x).ln()));
        let expected = reduced(terms, c.input.shape(), r, c.input.numel() as f64);
        assert_close(&value.value(), &expected, "binary_cross_entropy value")?;
        let layer = BCELoss { weight: c.weight.clone(), reduction: r };
        assert_close(&layer.forward(&x, &y)?.value(), &value.value(), "BCELoss")?;
    }

    /// binary_cross_entropy_with_logits in input and target, with a broadcast weight, a
    /// positive-class weight along the last dim, and every reduction.
    #[test]
    fn binary_cross_entropy_with_logits(c in binary_case(|n| within(n, -4.0, 4.0))) {
        let (w, p, r) = (c.weight.as_ref(), c.pos_weight.as_ref(), c.reduction);
        check(
            |v| loss::binary_cross_entropy_with_logits(&v[0], &v[1], w, p, r),
            &[c.input.clone(), c.target.clone()],
        )?;

        let (x, y) = (Var::new(c.input.clone()), Var::new(c.target.clone()));
        let value = loss::binary_cross_entropy_with_logits(&x, &y, w, p, r)?;
        // -w·(p·y·log σ(x) + (1 - y)·log(1 - σ(x)))
        let terms = c.terms(|x, y, w, p| {
            let s = 1.0 / (1.0 + (-x).exp());
            -w * (p * y * s.ln() + (1.0 - y) * (1.0 - s).ln())
        });
        let expected = reduced(terms, c.input.shape(), r, c.input.numel() as f64);
        prop_assert_eq!(value.shape(), expected.shape());
        for (a, b) in value.to_vec().iter().zip(expected.to_vec()) {
            // The reference is the naive formula: close, not bit-for-bit.
            prop_assert!((a - b).abs() <= 1e-9 * (1.0 + b.abs()), "bce_with_logits {} vs {}", a, b);
        }
        let layer = BCEWithLogitsLoss { weight: c.weight.clone(), pos_weight: c.pos_weight.clone(), reduction: r };
        assert_close(&layer.forward(&x, &y)?.value(), &value.value(), "BCEWithLogitsLoss")?;
    }
}

// ---------------------------------------------------------------------------------------
// KL divergence.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct KlCase {
    input: Tensor<f64>,
    target: Tensor<f64>,
    reduction: KlReduction,
    log_target: bool,
}

/// Log-probability inputs (any value in [-2, 2]) of rank 0..=3; targets strictly positive
/// ([0.05, 2], away from the pole of `log t` at 0) or, with `log_target`, any value in
/// [-2, 2]; every reduction.
fn kl_case() -> impl Strategy<Value = KlCase> {
    (
        shape(0..=3, 3, 12),
        prop_oneof![
            Just(KlReduction::None),
            Just(KlReduction::Mean),
            Just(KlReduction::Sum),
            Just(KlReduction::BatchMean)
        ],
        any::<bool>(),
    )
        .prop_flat_map(|(shape, reduction, log_target)| {
            let targets: fn(usize) -> BoxedStrategy<Vec<f64>> = if log_target {
                smooth
            } else {
                |n| within(n, 0.05, 2.0)
            };
            (
                filled(shape.clone(), smooth),
                filled(shape, targets),
                Just((reduction, log_target)),
            )
        })
        .prop_map(|(input, target, (reduction, log_target))| KlCase {
            input,
            target,
            reduction,
            log_target,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CHEAP_CASES))]

    /// kl_div in input and target, every KlReduction, log_target both ways. Terms are
    /// `t·(log t - x)`, or `e^t·(t - x)` with log_target; BatchMean divides the sum by the
    /// first dim.
    #[test]
    fn kl_div(c in kl_case()) {
        let (r, lt) = (c.reduction, c.log_target);
        check(|v| loss::kl_div(&v[0], &v[1], r, lt), &[c.input.clone(), c.target.clone()])?;

        let (x, t) = (Var::new(c.input.clone()), Var::new(c.target.clone()));
        let value = loss::kl_div(&x, &t, r, lt)?;
        let terms: Vec<f64> = c
            .input
            .to_vec()
            .iter()
            .zip(c.target.to_vec())
            .map(|(x, t)| if lt { t.exp() * (t - x) } else { t * (t.ln() - x) })
            .collect();
        let n = c.input.numel() as f64;
        let shape = c.input.shape();
        let expected = match r {
            KlReduction::None => reduced(terms, shape, Reduction::None, n),
            KlReduction::Mean => reduced(terms, shape, Reduction::Mean, n),
            KlReduction::Sum => reduced(terms, shape, Reduction::Sum, n),
            // PyTorch divides a 0-d input's sum by nothing.
            KlReduction::BatchMean => {
                reduced(terms, shape, Reduction::Mean, shape.first().map_or(1.0, |&b| b as f64))
            }
        };
        assert_close(&value.value(), &expected, "kl_div value")?;
        let layer = KLDivLoss { reduction: r, log_target: lt };
        assert_close(&layer.forward(&x, &t)?.value(), &value.value(), "KLDivLoss")?;
    }
}
