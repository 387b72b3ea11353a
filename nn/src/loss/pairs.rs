//! Losses on pairs and triplets of inputs (metric learning and ranking):
//! `cosine_embedding_loss`, `margin_ranking_loss`, `triplet_margin_loss` and
//! `hinge_embedding_loss`, with PyTorch's definitions and defaults.

use strata_autograd::Var;
use strata_tensor::{Element, Tensor};

use super::{Reduction, reduce, same_shape};
use crate::Result;
use crate::error::input_error;

/// `where(mask == value, on, 0)` for a ±1 label mask.
fn where_label<T: Element>(labels: &Tensor<T>, label: f64, on: &Var<T>) -> Result<Var<T>> {
    let mask = labels.eq_scalar(T::from_f64(label));
    let zero = Var::new(Tensor::scalar(T::zero()));
    Ok(Var::where_(&mask, on, &zero)?)
}

/// The cosine embedding loss (`F.cosine_embedding_loss`): with `cos` the cosine
/// similarity of `x1` and `x2` along their last dimension, `1 - cos` where the target is
/// 1 and `max(0, cos - margin)` where it is -1 (0 for any other target value, as in
/// PyTorch). Inputs `[N, D]` with a target `[N]`, or `[D]` with a 0-d target. PyTorch's
/// default margin is 0.
///
/// ```
/// use strata_autograd::Var;
/// use strata_nn::loss::{Reduction, cosine_embedding_loss};
/// use strata_tensor::Tensor;
///
/// let a = Var::new(Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[2, 2])?);
/// let b = Var::new(Tensor::from_vec(vec![1.0f32, 0.0, 1.0, 0.0], &[2, 2])?);
/// let y = Var::new(Tensor::from_vec(vec![1.0f32, -1.0], &[2])?);
/// // Row 0: the same direction, target 1: 0. Row 1: orthogonal, target -1: max(0, 0 - 0).
/// let loss = cosine_embedding_loss(&a, &b, &y, 0.0, Reduction::Sum)?;
/// assert!(loss.item()?.abs() < 1e-6);
/// # Ok::<(), strata_nn::NnError>(())
/// ```
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the ranks or shapes do not fit.
pub fn cosine_embedding_loss<T: Element>(
    x1: &Var<T>,
    x2: &Var<T>,
    target: &Var<T>,
    margin: f64,
    reduction: Reduction,
) -> Result<Var<T>> {
    const LOSS: &str = "cosine_embedding_loss";
    let expected = match target.shape().len() {
        0 => 1,
        1 => 2,
        _ => {
            return Err(input_error(
                LOSS,
                format!(
                    "0-D or 1-D target expected, multi-target not supported (got shape {:?})",
                    target.shape()
                ),
            ));
        }
    };
    if x1.shape().len() != expected || x2.shape() != x1.shape() {
        return Err(input_error(
            LOSS,
            format!(
                "a {}-D target expects two {expected}-D inputs of one shape, got {:?} and {:?}",
                target.shape().len(),
                x1.shape(),
                x2.shape()
            ),
        ));
    }
    if expected == 2 && target.shape()[0] != x1.shape()[0] {
        return Err(input_error(
            LOSS,
            format!(
                "the target's {} entries do not match the inputs' {} rows",
                target.shape()[0],
                x1.shape()[0]
            ),
        ));
    }
    let eps = T::from_f64(1e-12);
    let dot = x1.mul(x2)?.sum(&[-1], false)?;
    let m1 = x1.square().sum(&[-1], false)?.add_scalar(eps);
    let m2 = x2.square().sum(&[-1], false)?.add_scalar(eps);
    let cos = dot.div(&m1.mul(&m2)?.sqrt())?;
    let labels = target.value();
    let pos = cos.rsub_scalar(T::one());
    let neg = cos
        .sub_scalar(T::from_f64(margin))
        .clamp(Some(T::zero()), None);
    let terms = where_label(&labels, 1.0, &pos)?.add(&where_label(&labels, -1.0, &neg)?)?;
    Ok(reduce(terms, reduction))
}

/// The margin ranking loss (`F.margin_ranking_loss`): `max(0, -y·(x1 - x2) + margin)`,
/// the three tensors of one rank and broadcast together. PyTorch's default margin is 0.
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the ranks differ or the shapes do not
/// broadcast.
pub fn margin_ranking_loss<T: Element>(
    x1: &Var<T>,
    x2: &Var<T>,
    target: &Var<T>,
    margin: f64,
    reduction: Reduction,
) -> Result<Var<T>> {
    const LOSS: &str = "margin_ranking_loss";
    let ranks = [x1.shape().len(), x2.shape().len(), target.shape().len()];
    if ranks[0] != ranks[1] || ranks[1] != ranks[2] {
        return Err(input_error(
            LOSS,
            format!(
                "all input tensors should have the same rank, got input1 {:?}, input2 {:?}, target {:?}",
                x1.shape(),
                x2.shape(),
                target.shape()
            ),
        ));
    }
    let terms = target
        .neg()
        .mul(&x1.sub(x2)?)?
        .add_scalar(T::from_f64(margin))
        .clamp(Some(T::zero()), None);
    Ok(reduce(terms, reduction))
}

/// The p-norm of `x` along its last dimension, like `torch.norm(x, p, -1)`: `p = ∞` is
/// the largest magnitude, `p = 0` the count of non-zeros (a constant).
fn norm_last<T: Element>(x: &Var<T>, p: f64) -> Result<Var<T>> {
    Ok(if p == f64::INFINITY {
        x.abs().amax(&[-1], false)?
    } else if p == 0.0 {
        Var::new(x.value().ne_scalar(T::zero()).sum(&[-1], false)?)
    } else if p == 1.0 {
        x.abs().sum(&[-1], false)?
    } else if p == 2.0 {
        x.square().sum(&[-1], false)?.sqrt()
    } else {
        x.abs()
            .pow_scalar(T::from_f64(p))
            .sum(&[-1], false)?
            .pow_scalar(T::from_f64(1.0 / p))
    })
}

/// `‖x1 - x2 + eps‖_p` along the last dimension, like `F.pairwise_distance` (PyTorch's
/// defaults: p = 2, eps = 1e-6).
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when `p` is negative or NaN, or the shapes do
/// not broadcast.
pub fn pairwise_distance<T: Element>(x1: &Var<T>, x2: &Var<T>, p: f64, eps: f64) -> Result<Var<T>> {
    if p.is_nan() || p < 0.0 {
        return Err(input_error(
            "pairwise_distance",
            format!("p must be non-negative, got {p}"),
        ));
    }
    norm_last(&x1.sub(x2)?.add_scalar(T::from_f64(eps)), p)
}

/// The options of [`triplet_margin_loss`], PyTorch's defaults by [`Default`]: margin 1,
/// p = 2, eps = 1e-6, no swap, mean reduction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TripletMarginLoss {
    /// The margin between the positive and the negative distance.
    pub margin: f64,
    /// The norm of the distances.
    pub p: f64,
    /// Added to the differences before the norm, for stability.
    pub eps: f64,
    /// Use the smaller of the anchor–negative and positive–negative distances
    /// ("distance swap", Balntas et al. 2016).
    pub swap: bool,
    /// The reduction.
    pub reduction: Reduction,
}

impl Default for TripletMarginLoss {
    fn default() -> Self {
        TripletMarginLoss {
            margin: 1.0,
            p: 2.0,
            eps: 1e-6,
            swap: false,
            reduction: Reduction::Mean,
        }
    }
}

impl TripletMarginLoss {
    /// The loss of the triplets.
    ///
    /// # Errors
    /// As [`triplet_margin_loss`].
    pub fn forward<T: Element>(
        &self,
        anchor: &Var<T>,
        positive: &Var<T>,
        negative: &Var<T>,
    ) -> Result<Var<T>> {
        triplet_margin_loss(anchor, positive, negative, self)
    }
}

/// The triplet margin loss (`F.triplet_margin_loss`):
/// `max(0, margin + d(a, p) - d(a, n))` with `d` the [`pairwise_distance`] along the last
/// dimension (with `swap`, `d(a, n)` becomes `min(d(a, n), d(p, n))`).
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the three ranks differ, the shapes do not
/// broadcast, or `p` is negative.
pub fn triplet_margin_loss<T: Element>(
    anchor: &Var<T>,
    positive: &Var<T>,
    negative: &Var<T>,
    options: &TripletMarginLoss,
) -> Result<Var<T>> {
    let ranks = [anchor, positive, negative].map(|v| v.shape().len());
    if ranks[0] != ranks[1] || ranks[1] != ranks[2] || ranks[0] == 0 {
        return Err(input_error(
            "triplet_margin_loss",
            format!(
                "the anchor, positive and negative tensors must have the same number of dimensions (at least 1), got {}-D, {}-D and {}-D",
                ranks[0], ranks[1], ranks[2]
            ),
        ));
    }
    let (p, eps) = (options.p, options.eps);
    let d_pos = pairwise_distance(anchor, positive, p, eps)?;
    let mut d_neg = pairwise_distance(anchor, negative, p, eps)?;
    if options.swap {
        d_neg = d_neg.minimum(&pairwise_distance(positive, negative, p, eps)?)?;
    }
    let terms = d_pos
        .sub(&d_neg)?
        .add_scalar(T::from_f64(options.margin))
        .clamp(Some(T::zero()), None);
    Ok(reduce(terms, options.reduction))
}

/// The hinge embedding loss (`F.hinge_embedding_loss`): `x` where the target is 1,
/// `max(0, margin - x)` where it is -1 (both terms for any other value, as in PyTorch).
/// PyTorch's default margin is 1.
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the shapes differ.
pub fn hinge_embedding_loss<T: Element>(
    input: &Var<T>,
    target: &Var<T>,
    margin: f64,
    reduction: Reduction,
) -> Result<Var<T>> {
    same_shape("hinge_embedding_loss", input, target)?;
    let labels = target.value();
    let zero = Var::new(Tensor::scalar(T::zero()));
    let hinge = input
        .rsub_scalar(T::from_f64(margin))
        .clamp(Some(T::zero()), None);
    let not_pos = labels.ne_scalar(T::one());
    let not_neg = labels.ne_scalar(-T::one());
    let terms = Var::where_(&not_pos, &hinge, &zero)?.add(&Var::where_(&not_neg, input, &zero)?)?;
    Ok(reduce(terms, reduction))
}

/// Loss structs of the two-input losses with a margin (0 by default):
/// `nn.CosineEmbeddingLoss` and `nn.MarginRankingLoss`.
macro_rules! margin_loss_struct {
    ($(#[$doc:meta])* $name:ident, $f:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name {
            /// The margin.
            pub margin: f64,
            /// The reduction.
            pub reduction: Reduction,
        }

        impl Default for $name {
            fn default() -> Self {
                $name { margin: 0.0, reduction: Reduction::Mean }
            }
        }

        impl $name {
            /// The loss of `x1` and `x2` against the ±1 `target`.
            ///
            /// # Errors
            #[doc = concat!("As [`", stringify!($f), "`].")]
            pub fn forward<T: Element>(&self, x1: &Var<T>, x2: &Var<T>, target: &Var<T>) -> Result<Var<T>> {
                $f(x1, x2, target, self.margin, self.reduction)
            }
        }
    };
}

margin_loss_struct!(
    /// `nn.CosineEmbeddingLoss` (margin 0): see [`cosine_embedding_loss`].
    CosineEmbeddingLoss, cosine_embedding_loss
);
margin_loss_struct!(
    /// `nn.MarginRankingLoss` (margin 0): see [`margin_ranking_loss`].
    MarginRankingLoss, margin_ranking_loss
);

/// `nn.HingeEmbeddingLoss` (margin 1): see [`hinge_embedding_loss`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HingeEmbeddingLoss {
    /// The margin.
    pub margin: f64,
    /// The reduction.
    pub reduction: Reduction,
}

impl Default for HingeEmbeddingLoss {
    fn default() -> Self {
        HingeEmbeddingLoss {
            margin: 1.0,
            reduction: Reduction::Mean,
        }
    }
}

impl HingeEmbeddingLoss {
    /// The loss of `input` against the ±1 `target`.
    ///
    /// # Errors
    /// As [`hinge_embedding_loss`].
    pub fn forward<T: Element>(&self, input: &Var<T>, target: &Var<T>) -> Result<Var<T>> {
        hinge_embedding_loss(input, target, self.margin, self.reduction)
    }
}
