//! Losses with PyTorch's semantics, as functions (`mse_loss`, `cross_entropy`, …) and as
//! small structs holding their options (`MSELoss`, `CrossEntropyLoss`, …).
//!
//! Where PyTorch broadcasts a target of another shape with only a warning (which usually
//! means a bug, like `[N, 1]` against `[N]`), strata refuses with an error.

use strata_autograd::Var;
use strata_tensor::{Element, IndexTensor, Tensor};

use crate::Result;
use crate::error::input_error;

mod ctc;
mod likelihood;
mod pairs;

pub use ctc::{CTCLoss, ctc_loss};
pub use likelihood::{
    GaussianNLLLoss, MultiLabelSoftMarginLoss, PoissonNLLLoss, gaussian_nll_loss,
    multilabel_soft_margin_loss, poisson_nll_loss,
};
pub use pairs::{
    CosineEmbeddingLoss, HingeEmbeddingLoss, MarginRankingLoss, TripletMarginLoss,
    cosine_embedding_loss, hinge_embedding_loss, margin_ranking_loss, pairwise_distance,
    triplet_margin_loss,
};

/// How a loss reduces its per-element values, like PyTorch's `reduction` argument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// Per-element losses.
    None,
    /// Their mean (PyTorch's default).
    #[default]
    Mean,
    /// Their sum.
    Sum,
}

fn reduce<T: Element>(loss: Var<T>, reduction: Reduction) -> Var<T> {
    match reduction {
        Reduction::None => loss,
        Reduction::Mean => loss.mean_all(),
        Reduction::Sum => loss.sum_all(),
    }
}

fn same_shape<T: Element>(loss: &'static str, input: &Var<T>, target: &Var<T>) -> Result<()> {
    if input.shape() != target.shape() {
        return Err(input_error(
            loss,
            format!(
                "the target's shape {:?} differs from the input's {:?}",
                target.shape(),
                input.shape()
            ),
        ));
    }
    Ok(())
}

/// Mean squared error `(x - y)²` (`F.mse_loss`).
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the shapes differ.
pub fn mse_loss<T: Element>(
    input: &Var<T>,
    target: &Var<T>,
    reduction: Reduction,
) -> Result<Var<T>> {
    same_shape("mse_loss", input, target)?;
    Ok(reduce(input.sub(target)?.square(), reduction))
}

/// Mean absolute error `|x - y|` (`F.l1_loss`).
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the shapes differ.
pub fn l1_loss<T: Element>(
    input: &Var<T>,
    target: &Var<T>,
    reduction: Reduction,
) -> Result<Var<T>> {
    same_shape("l1_loss", input, target)?;
    Ok(reduce(input.sub(target)?.abs(), reduction))
}

/// `0.5·d²/beta` where `|d| < beta`, else `|d| - 0.5·beta` (`F.smooth_l1_loss`, default
/// beta 1); `beta = 0` is the L1 loss.
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the shapes differ or `beta` is negative.
pub fn smooth_l1_loss<T: Element>(
    input: &Var<T>,
    target: &Var<T>,
    reduction: Reduction,
    beta: f64,
) -> Result<Var<T>> {
    same_shape("smooth_l1_loss", input, target)?;
    if beta < 0.0 {
        return Err(input_error(
            "smooth_l1_loss",
            format!("beta must be non-negative, got {beta}"),
        ));
    }
    let d = input.sub(target)?;
    if beta == 0.0 {
        return Ok(reduce(d.abs(), reduction));
    }
    let ad = d.abs();
    let inside = ad.value().lt_scalar(T::from_f64(beta));
    let quadratic = d.square().mul_scalar(T::from_f64(0.5 / beta));
    let linear = ad.sub_scalar(T::from_f64(0.5 * beta));
    Ok(reduce(
        Var::where_(&inside, &quadratic, &linear)?,
        reduction,
    ))
}

/// `0.5·d²` where `|d| < delta`, else `delta·(|d| - 0.5·delta)` (`F.huber_loss`, default
/// delta 1).
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the shapes differ or `delta` is not positive.
pub fn huber_loss<T: Element>(
    input: &Var<T>,
    target: &Var<T>,
    reduction: Reduction,
    delta: f64,
) -> Result<Var<T>> {
    same_shape("huber_loss", input, target)?;
    if delta <= 0.0 {
        return Err(input_error(
            "huber_loss",
            format!("delta must be positive, got {delta}"),
        ));
    }
    let d = input.sub(target)?;
    let ad = d.abs();
    let inside = ad.value().lt_scalar(T::from_f64(delta));
    let quadratic = d.square().mul_scalar(T::from_f64(0.5));
    let linear = ad
        .sub_scalar(T::from_f64(0.5 * delta))
        .mul_scalar(T::from_f64(delta));
    Ok(reduce(
        Var::where_(&inside, &quadratic, &linear)?,
        reduction,
    ))
}

/// The options of [`cross_entropy`] and [`nll_loss`], PyTorch's defaults by
/// [`Default`]: no class weights, `ignore_index = -100`, mean reduction, no label
/// smoothing.
#[derive(Clone, Debug)]
pub struct ClassLossOptions<T: Element = f32> {
    /// A weight per class, `[C]`.
    pub weight: Option<Tensor<T>>,
    /// A target value that contributes nothing (not to the mean's divisor either).
    pub ignore_index: i64,
    /// The reduction.
    pub reduction: Reduction,
    /// Mixes the target with the uniform distribution: `(1 - ε)·target + ε/C`.
    pub label_smoothing: f64,
}

impl<T: Element> Default for ClassLossOptions<T> {
    fn default() -> Self {
        ClassLossOptions {
            weight: None,
            ignore_index: -100,
            reduction: Reduction::Mean,
            label_smoothing: 0.0,
        }
    }
}

/// The class dimension and count of a classification input `[N, C, d…]` or `[C]`.
fn class_dim<T: Element>(loss: &'static str, input: &Var<T>) -> Result<(usize, usize)> {
    match input.ndim() {
        0 => Err(input_error(
            loss,
            "expected input [N, C, ...] or [C], got a 0-d tensor",
        )),
        1 => Ok((0, input.shape()[0])),
        _ => Ok((1, input.shape()[1])),
    }
}

fn check_weight<T: Element>(
    loss: &'static str,
    weight: Option<&Tensor<T>>,
    classes: usize,
) -> Result<()> {
    if let Some(w) = weight
        && w.shape() != [classes]
    {
        return Err(input_error(
            loss,
            format!(
                "the class weight must have shape [{classes}], got {:?}",
                w.shape()
            ),
        ));
    }
    Ok(())
}

/// The shape a weight `[C]` takes to broadcast along the class dimension.
fn class_broadcast_shape(ndim: usize, cdim: usize, classes: usize) -> Vec<usize> {
    let mut s = vec![1; ndim];
    s[cdim] = classes;
    s
}

/// The negative log-likelihood of class-index targets given log-probabilities
/// (`F.nll_loss`): `-weight[t]·logp[t]`, the mean divided by the total weight of the
/// targets that are not `ignore_index` (NaN when all are ignored, as in PyTorch).
/// `label_smoothing` is ignored here (it is a cross-entropy option).
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the target's shape is not the input's without the class
/// dimension, a target is out of range, or the weight is not `[C]`.
pub fn nll_loss<T: Element>(
    input: &Var<T>,
    target: &IndexTensor,
    options: &ClassLossOptions<T>,
) -> Result<Var<T>> {
    nll("nll_loss", input, target, options)
}

/// The targets of a class loss, checked against `input`: the positions' shape (`input`'s
/// without the class dimension), the targets with `ignore_index` replaced by class 0, and
/// each position's weight (the class weight of its target, 0 where ignored).
fn class_targets<T: Element>(
    loss: &'static str,
    input: &Var<T>,
    target: &IndexTensor,
    o: &ClassLossOptions<T>,
) -> Result<(usize, IndexTensor, Tensor<T>)> {
    let (cdim, classes) = class_dim(loss, input)?;
    check_weight(loss, o.weight.as_ref(), classes)?;
    let mut expected = input.shape().to_vec();
    expected.remove(cdim);
    if target.shape() != expected.as_slice() {
        return Err(input_error(
            loss,
            format!(
                "expected a target of shape {expected:?} for input {:?}, got {:?}",
                input.shape(),
                target.shape()
            ),
        ));
    }
    let t = target.as_slice();
    if let Some(&bad) = t
        .iter()
        .find(|&&c| c != o.ignore_index && (c < 0 || c as usize >= classes))
    {
        return Err(input_error(
            loss,
            format!("target {bad} is out of bounds for {classes} classes"),
        ));
    }
    let weights: Vec<T> = t
        .iter()
        .map(|&c| match (&o.weight, c == o.ignore_index) {
            (_, true) => T::zero(),
            (Some(w), false) => w.get(&[c as usize]).expect("checked in range"),
            (None, false) => T::one(),
        })
        .collect();
    let safe: Vec<i64> = t
        .iter()
        .map(|&c| if c == o.ignore_index { 0 } else { c })
        .collect();
    Ok((
        cdim,
        IndexTensor::from_vec(safe, &expected)?,
        Tensor::from_vec(weights, &expected)?,
    ))
}

/// The reduction of a class loss's per-position terms: the mean divides by the total
/// weight of the targets that are not ignored.
fn reduce_class_terms<T: Element>(
    losses: Var<T>,
    w: &Tensor<T>,
    reduction: Reduction,
) -> Result<Var<T>> {
    Ok(match reduction {
        Reduction::None => losses,
        Reduction::Sum => losses.sum_all(),
        Reduction::Mean => losses.sum_all().div(&Var::new(w.sum_all()))?,
    })
}

fn nll<T: Element>(
    loss: &'static str,
    logp: &Var<T>,
    target: &IndexTensor,
    o: &ClassLossOptions<T>,
) -> Result<Var<T>> {
    let (cdim, safe, w) = class_targets(loss, logp, target, o)?;
    let mut index_shape = safe.shape().to_vec();
    index_shape.insert(cdim, 1);
    let index = safe.reshape(&index_shape)?;
    let picked = logp.gather(cdim as isize, &index)?.reshape(safe.shape())?;
    let losses = picked.mul(&Var::new(w.clone()))?.neg();
    reduce_class_terms(losses, &w, o.reduction)
}

/// Cross-entropy of logits `[N, C, d…]` (or `[C]`) and class indices `[N, d…]` (or `[]`)
/// (`F.cross_entropy`), through a fused, stable log-softmax; with class weights,
/// `ignore_index` and label smoothing exactly as PyTorch combines them.
///
/// ```
/// use strata_nn::loss::{ClassLossOptions, cross_entropy};
/// use strata_autograd::Var;
/// use strata_tensor::{IndexTensor, Tensor};
///
/// let logits = Var::parameter(Tensor::from_vec(vec![2.0f64, 0.0, 0.0, 0.0, 3.0, 0.0], &[2, 3])?);
/// let target = IndexTensor::from_vec(vec![0, 1], &[2])?;
/// let loss = cross_entropy(&logits, &target, &ClassLossOptions::default())?;
/// let expected = ((1.0 + 2.0 * (-2.0f64).exp()).ln() + (1.0 + 2.0 * (-3.0f64).exp()).ln()) / 2.0;
/// assert!((loss.item()? - expected).abs() < 1e-12);
/// # Ok::<(), strata_nn::NnError>(())
/// ```
///
/// # Errors
/// As [`nll_loss`], and for a label smoothing outside `[0, 1]`.
pub fn cross_entropy<T: Element>(
    input: &Var<T>,
    target: &IndexTensor,
    o: &ClassLossOptions<T>,
) -> Result<Var<T>> {
    const LOSS: &str = "cross_entropy";
    let (cdim, classes) = class_dim(LOSS, input)?;
    check_smoothing(LOSS, o.label_smoothing)?;
    let eps = o.label_smoothing;
    if eps == 0.0 {
        // The log-softmax and the pick as one op, with a one-pass backward.
        let (cdim, safe, w) = class_targets(LOSS, input, target, o)?;
        let terms = input.cross_entropy_terms(cdim, &safe, &w)?;
        return reduce_class_terms(terms, &w, o.reduction);
    }
    let logp = input.log_softmax(cdim as isize)?;
    let nll_loss = nll(LOSS, &logp, target, o)?;
    // PyTorch's smoothing term: -Σ_c w_c·logp_c per element, zero where ignored, reduced
    // with the same divisor as the NLL term.
    let weighted = match &o.weight {
        Some(w) => logp.mul(&Var::new(
            w.reshape(class_broadcast_shape(logp.ndim(), cdim, classes).as_slice())?,
        ))?,
        None => logp,
    };
    let ignored: Vec<T> = target
        .as_slice()
        .iter()
        .map(|&c| {
            if c == o.ignore_index {
                T::one()
            } else {
                T::zero()
            }
        })
        .collect();
    let ignored = Tensor::from_vec(ignored, target.shape())?;
    let smooth = weighted
        .sum(&[cdim as isize], false)?
        .neg()
        .masked_fill(&ignored, T::zero())?;
    let smooth = match o.reduction {
        Reduction::None => smooth,
        Reduction::Sum => smooth.sum_all(),
        Reduction::Mean => {
            let divisor: T = match &o.weight {
                Some(w) => target
                    .as_slice()
                    .iter()
                    .filter(|&&c| c != o.ignore_index)
                    .map(|&c| w.get(&[c as usize]).expect("checked in range"))
                    .fold(T::zero(), |a, b| a + b),
                None => T::from_f64(
                    target
                        .as_slice()
                        .iter()
                        .filter(|&&c| c != o.ignore_index)
                        .count() as f64,
                ),
            };
            smooth.sum_all().div_scalar(divisor)
        }
    };
    Ok(nll_loss
        .mul_scalar(T::from_f64(1.0 - eps))
        .add(&smooth.mul_scalar(T::from_f64(eps / classes as f64)))?)
}

fn check_smoothing(loss: &'static str, eps: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&eps) {
        return Err(input_error(
            loss,
            format!("label_smoothing must be between 0.0 and 1.0, got {eps}"),
        ));
    }
    Ok(())
}

/// Cross-entropy with class-probability targets of the input's shape
/// (`F.cross_entropy(input, probs)`): `-Σ_c w_c·target_c·logp_c`, the mean taken over the
/// `N·d…` positions (not the weights), label smoothing applied to the target first.
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the shapes differ or the weight is not `[C]`.
pub fn cross_entropy_probs<T: Element>(
    input: &Var<T>,
    target: &Var<T>,
    o: &ClassLossOptions<T>,
) -> Result<Var<T>> {
    const LOSS: &str = "cross_entropy";
    let (cdim, classes) = class_dim(LOSS, input)?;
    same_shape(LOSS, input, target)?;
    check_weight(LOSS, o.weight.as_ref(), classes)?;
    check_smoothing(LOSS, o.label_smoothing)?;
    let logp = input.log_softmax(cdim as isize)?;
    let eps = o.label_smoothing;
    let target = if eps > 0.0 {
        target
            .mul_scalar(T::from_f64(1.0 - eps))
            .add_scalar(T::from_f64(eps / classes as f64))
    } else {
        target.clone()
    };
    let mut terms = logp.mul(&target)?;
    if let Some(w) = &o.weight {
        terms = terms.mul(&Var::new(
            w.reshape(class_broadcast_shape(logp.ndim(), cdim, classes).as_slice())?,
        ))?;
    }
    let per_position = terms.sum(&[cdim as isize], false)?.neg();
    Ok(match o.reduction {
        Reduction::None => per_position,
        Reduction::Sum => per_position.sum_all(),
        Reduction::Mean => per_position
            .sum_all()
            .div_scalar(T::from_f64((input.numel() / classes.max(1)) as f64)),
    })
}

fn check_weight_broadcast<T: Element>(
    loss: &'static str,
    w: Option<&Tensor<T>>,
    input: &Var<T>,
) -> Result<()> {
    if let Some(w) = w
        && w.broadcast_to(input.shape()).is_err()
    {
        return Err(input_error(
            loss,
            format!(
                "the weight of shape {:?} does not broadcast to the input's {:?}",
                w.shape(),
                input.shape()
            ),
        ));
    }
    Ok(())
}

/// Binary cross-entropy of probabilities (`F.binary_cross_entropy`):
/// `-w·(y·log x + (1 - y)·log(1 - x))` with each log clamped at -100 as PyTorch does, and
/// PyTorch's gradient `w·(x - y) / max(x·(1 - x), 1e-12)`.
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the shapes differ, an input is outside `[0, 1]`, or the weight
/// does not broadcast.
pub fn binary_cross_entropy<T: Element>(
    input: &Var<T>,
    target: &Var<T>,
    weight: Option<&Tensor<T>>,
    reduction: Reduction,
) -> Result<Var<T>> {
    const LOSS: &str = "binary_cross_entropy";
    same_shape(LOSS, input, target)?;
    check_weight_broadcast(LOSS, weight, input)?;
    let x = input.value();
    if x.to_vec()
        .iter()
        .any(|&v| !(v >= T::zero() && v <= T::one()))
    {
        return Err(input_error(
            LOSS,
            "all elements of the input should be between 0 and 1",
        ));
    }
    let losses = input.binary_cross_entropy_terms(target, weight)?;
    Ok(reduce(losses, reduction))
}

/// Binary cross-entropy of logits (`F.binary_cross_entropy_with_logits`), computed
/// stably as `(1 - y)·x + (1 + (p - 1)·y)·softplus(-x)` with `p` the positive-class
/// weight (`pos_weight`, broadcast along the last dimension), times `weight`.
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the shapes differ or a weight does not broadcast.
pub fn binary_cross_entropy_with_logits<T: Element>(
    input: &Var<T>,
    target: &Var<T>,
    weight: Option<&Tensor<T>>,
    pos_weight: Option<&Tensor<T>>,
    reduction: Reduction,
) -> Result<Var<T>> {
    const LOSS: &str = "binary_cross_entropy_with_logits";
    same_shape(LOSS, input, target)?;
    check_weight_broadcast(LOSS, weight, input)?;
    check_weight_broadcast(LOSS, pos_weight, input)?;
    let losses = input.binary_cross_entropy_with_logits_terms(target, weight, pos_weight)?;
    Ok(reduce(losses, reduction))
}

/// The reduction of [`kl_div`]: PyTorch's `reduction` for `KLDivLoss`, where
/// `BatchMean` (the sum divided by the batch size) is the mathematically correct KL
/// divergence and `Mean` divides by every element.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KlReduction {
    /// Per-element terms.
    None,
    /// Mean over all elements (PyTorch's default, with a warning there).
    #[default]
    Mean,
    /// Sum.
    Sum,
    /// Sum divided by `input.shape()[0]`.
    BatchMean,
}

/// The Kullback–Leibler divergence `target·(log target - input)` of log-probabilities
/// `input` from `target` (`F.kl_div`), a term 0 where the target is 0; with `log_target`
/// the target is given as log-probabilities: `e^t·(t - input)`.
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the shapes differ.
pub fn kl_div<T: Element>(
    input: &Var<T>,
    target: &Var<T>,
    reduction: KlReduction,
    log_target: bool,
) -> Result<Var<T>> {
    const LOSS: &str = "kl_div";
    same_shape(LOSS, input, target)?;
    let terms = input.kl_div_terms(target, log_target)?;
    Ok(match reduction {
        KlReduction::None => terms,
        KlReduction::Mean => terms.mean_all(),
        KlReduction::Sum => terms.sum_all(),
        KlReduction::BatchMean => {
            let n = input.shape().first().copied().unwrap_or(1);
            terms.sum_all().div_scalar(T::from_f64(n as f64))
        }
    })
}

/// Loss structs: the options of a loss held for repeated use, like `nn.MSELoss()`.
macro_rules! pointwise_loss_struct {
    ($(#[$doc:meta])* $name:ident, $f:ident $(, $extra:ident : $ty:ty = $default:expr)?) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name {
            /// The reduction.
            pub reduction: Reduction,
            $(
                #[doc = concat!("The `", stringify!($extra), "` argument.")]
                pub $extra: $ty,
            )?
        }

        impl Default for $name {
            fn default() -> Self {
                $name { reduction: Reduction::Mean $(, $extra: $default)? }
            }
        }

        impl $name {
            /// The loss of `input` against `target`.
            ///
            /// # Errors
            #[doc = concat!("As [`", stringify!($f), "`].")]
            pub fn forward<T: Element>(&self, input: &Var<T>, target: &Var<T>) -> Result<Var<T>> {
                $f(input, target, self.reduction $(, self.$extra)?)
            }
        }
    };
}

pointwise_loss_struct!(
    /// `nn.MSELoss`.
    MSELoss, mse_loss
);
pointwise_loss_struct!(
    /// `nn.L1Loss`.
    L1Loss, l1_loss
);
pointwise_loss_struct!(
    /// `nn.SmoothL1Loss(beta=1.0)`.
    SmoothL1Loss, smooth_l1_loss, beta: f64 = 1.0
);
pointwise_loss_struct!(
    /// `nn.HuberLoss(delta=1.0)`.
    HuberLoss, huber_loss, delta: f64 = 1.0
);

/// `nn.CrossEntropyLoss(weight, ignore_index, reduction, label_smoothing)`.
#[derive(Clone, Debug, Default)]
pub struct CrossEntropyLoss<T: Element = f32> {
    /// The options.
    pub options: ClassLossOptions<T>,
}

impl<T: Element> CrossEntropyLoss<T> {
    /// The loss of logits against class indices.
    ///
    /// # Errors
    /// As [`cross_entropy`].
    pub fn forward(&self, input: &Var<T>, target: &IndexTensor) -> Result<Var<T>> {
        cross_entropy(input, target, &self.options)
    }

    /// The loss of logits against class probabilities.
    ///
    /// # Errors
    /// As [`cross_entropy_probs`].
    pub fn forward_probs(&self, input: &Var<T>, target: &Var<T>) -> Result<Var<T>> {
        cross_entropy_probs(input, target, &self.options)
    }
}

/// `nn.NLLLoss(weight, ignore_index, reduction)`.
#[derive(Clone, Debug, Default)]
pub struct NLLLoss<T: Element = f32> {
    /// The options (`label_smoothing` unused).
    pub options: ClassLossOptions<T>,
}

impl<T: Element> NLLLoss<T> {
    /// The loss of log-probabilities against class indices.
    ///
    /// # Errors
    /// As [`nll_loss`].
    pub fn forward(&self, input: &Var<T>, target: &IndexTensor) -> Result<Var<T>> {
        nll_loss(input, target, &self.options)
    }
}

/// `nn.BCELoss(weight, reduction)`.
#[derive(Clone, Debug, Default)]
pub struct BCELoss<T: Element = f32> {
    /// A weight broadcast to the input.
    pub weight: Option<Tensor<T>>,
    /// The reduction.
    pub reduction: Reduction,
}

impl<T: Element> BCELoss<T> {
    /// The loss of probabilities against targets.
    ///
    /// # Errors
    /// As [`binary_cross_entropy`].
    pub fn forward(&self, input: &Var<T>, target: &Var<T>) -> Result<Var<T>> {
        binary_cross_entropy(input, target, self.weight.as_ref(), self.reduction)
    }
}

/// `nn.BCEWithLogitsLoss(weight, reduction, pos_weight)`.
#[derive(Clone, Debug, Default)]
pub struct BCEWithLogitsLoss<T: Element = f32> {
    /// A weight broadcast to the input.
    pub weight: Option<Tensor<T>>,
    /// The positive-class weight, broadcast along the last dimension.
    pub pos_weight: Option<Tensor<T>>,
    /// The reduction.
    pub reduction: Reduction,
}

impl<T: Element> BCEWithLogitsLoss<T> {
    /// The loss of logits against targets.
    ///
    /// # Errors
    /// As [`binary_cross_entropy_with_logits`].
    pub fn forward(&self, input: &Var<T>, target: &Var<T>) -> Result<Var<T>> {
        binary_cross_entropy_with_logits(
            input,
            target,
            self.weight.as_ref(),
            self.pos_weight.as_ref(),
            self.reduction,
        )
    }
}

/// `nn.KLDivLoss(reduction, log_target)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KLDivLoss {
    /// The reduction.
    pub reduction: KlReduction,
    /// Whether the target is given as log-probabilities.
    pub log_target: bool,
}

impl KLDivLoss {
    /// The divergence of log-probabilities `input` from `target`.
    ///
    /// # Errors
    /// As [`kl_div`].
    pub fn forward<T: Element>(&self, input: &Var<T>, target: &Var<T>) -> Result<Var<T>> {
        kl_div(input, target, self.reduction, self.log_target)
    }
}
