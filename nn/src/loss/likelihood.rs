//! Likelihood losses: `multilabel_soft_margin_loss`, `poisson_nll_loss`,
//! `gaussian_nll_loss`, with PyTorch's definitions and defaults.

use strata_autograd::Var;
use strata_tensor::{Element, Tensor};

use super::{Reduction, check_weight_broadcast, reduce, same_shape};
use crate::Result;
use crate::error::input_error;

/// `log σ(x) = min(x, 0) - log(1 + e^{-|x|})`, exact for every `x`.
fn log_sigmoid<T: Element>(x: &Var<T>) -> Result<Var<T>> {
    let zero = Var::new(Tensor::scalar(T::zero()));
    Ok(x.minimum(&zero)?.sub(&x.abs().neg().exp().log1p())?)
}

/// The multi-label soft-margin loss (`F.multilabel_soft_margin_loss`): per sample, the
/// mean over the `C` classes (the last dimension) of
/// `-w_c·(y·log σ(x) + (1 - y)·log σ(-x))`, then reduced over the samples (`None` gives
/// one loss per sample).
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the shapes differ, the input is 0-d, or
/// the weight does not broadcast.
pub fn multilabel_soft_margin_loss<T: Element>(
    input: &Var<T>,
    target: &Var<T>,
    weight: Option<&Tensor<T>>,
    reduction: Reduction,
) -> Result<Var<T>> {
    const LOSS: &str = "multilabel_soft_margin_loss";
    same_shape(LOSS, input, target)?;
    check_weight_broadcast(LOSS, weight, input)?;
    let Some(&classes) = input.shape().last() else {
        return Err(input_error(LOSS, "the input must have a class dimension"));
    };
    let terms = target
        .mul(&log_sigmoid(input)?)?
        .add(
            &target
                .rsub_scalar(T::one())
                .mul(&log_sigmoid(&input.neg())?)?,
        )?
        .neg();
    let terms = match weight {
        Some(w) => terms.mul(&Var::new(w.clone()))?,
        None => terms,
    };
    let per_sample = terms
        .sum(&[-1], false)?
        .div_scalar(T::from_f64(classes as f64));
    Ok(reduce(per_sample, reduction))
}

/// `nn.MultiLabelSoftMarginLoss`: see [`multilabel_soft_margin_loss`].
#[derive(Clone, Debug, Default)]
pub struct MultiLabelSoftMarginLoss<T: Element = f32> {
    /// A weight per class (broadcast against the input).
    pub weight: Option<Tensor<T>>,
    /// The reduction.
    pub reduction: Reduction,
}

impl<T: Element> MultiLabelSoftMarginLoss<T> {
    /// The loss of `input` against the 0/1 `target`.
    ///
    /// # Errors
    /// As [`multilabel_soft_margin_loss`].
    pub fn forward(&self, input: &Var<T>, target: &Var<T>) -> Result<Var<T>> {
        multilabel_soft_margin_loss(input, target, self.weight.as_ref(), self.reduction)
    }
}

/// The options of [`poisson_nll_loss`], PyTorch's defaults by [`Default`]: the input is
/// the log of the rate, no Stirling term, eps 1e-8, mean reduction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoissonNLLLoss {
    /// The input is `log λ` (`e^x - y·x`); otherwise it is `λ` (`x - y·log(x + eps)`).
    pub log_input: bool,
    /// Add the Stirling approximation of `log y!` (where the target is above 1).
    pub full: bool,
    /// Keeps `log` away from 0 when `log_input` is false.
    pub eps: f64,
    /// The reduction.
    pub reduction: Reduction,
}

impl Default for PoissonNLLLoss {
    fn default() -> Self {
        PoissonNLLLoss {
            log_input: true,
            full: false,
            eps: 1e-8,
            reduction: Reduction::Mean,
        }
    }
}

impl PoissonNLLLoss {
    /// The loss of `input` against the counts `target`.
    ///
    /// # Errors
    /// As [`poisson_nll_loss`].
    pub fn forward<T: Element>(&self, input: &Var<T>, target: &Var<T>) -> Result<Var<T>> {
        poisson_nll_loss(input, target, self)
    }
}

/// The negative log-likelihood of a Poisson distribution (`F.poisson_nll_loss`):
/// `e^x - y·x` for a log rate (`log_input`, the default) or `x - y·log(x + eps)` for a
/// rate; with `full`, plus `y·log y - y + ½·log(2πy)` where `y > 1`.
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the shapes differ.
pub fn poisson_nll_loss<T: Element>(
    input: &Var<T>,
    target: &Var<T>,
    options: &PoissonNLLLoss,
) -> Result<Var<T>> {
    same_shape("poisson_nll_loss", input, target)?;
    let mut terms = if options.log_input {
        input.exp().sub(&target.mul(input)?)?
    } else {
        input.sub(&target.mul(&input.add_scalar(T::from_f64(options.eps)).log())?)?
    };
    if options.full {
        // Evaluated on a safe target (1 where the term is masked), so that the masked
        // entries give zero gradients rather than the NaN of log 0.
        let above = target.value().gt_scalar(T::one());
        let one = Var::new(Tensor::scalar(T::one()));
        let y = Var::where_(&above, target, &one)?;
        let two_pi = T::from_f64(2.0 * std::f64::consts::PI);
        let stirling = y
            .mul(&y.log())?
            .sub(&y)?
            .add(&y.mul_scalar(two_pi).log().mul_scalar(T::from_f64(0.5)))?;
        let zero = Var::new(Tensor::scalar(T::zero()));
        terms = terms.add(&Var::where_(&above, &stirling, &zero)?)?;
    }
    Ok(reduce(terms, options.reduction))
}

/// The options of [`gaussian_nll_loss`], PyTorch's defaults by [`Default`]: no constant
/// term, eps 1e-6, mean reduction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GaussianNLLLoss {
    /// Add the constant `½·log 2π`.
    pub full: bool,
    /// The variance is clamped to at least this (its gradient passes unchanged).
    pub eps: f64,
    /// The reduction.
    pub reduction: Reduction,
}

impl Default for GaussianNLLLoss {
    fn default() -> Self {
        GaussianNLLLoss {
            full: false,
            eps: 1e-6,
            reduction: Reduction::Mean,
        }
    }
}

impl GaussianNLLLoss {
    /// The loss of the means `input` and variances `var` against `target`.
    ///
    /// # Errors
    /// As [`gaussian_nll_loss`].
    pub fn forward<T: Element>(
        &self,
        input: &Var<T>,
        target: &Var<T>,
        var: &Var<T>,
    ) -> Result<Var<T>> {
        gaussian_nll_loss(input, target, var, self)
    }
}

/// The negative log-likelihood of a Gaussian with means `input` and variances `var`
/// (`F.gaussian_nll_loss`): `½·(log v + (x - y)²/v)` (plus `½·log 2π` with `full`), the
/// variance clamped to at least `eps` as PyTorch does (under no-grad, so its gradient
/// passes unchanged). `var` has the input's shape (heteroscedastic), or its last dimension
/// is 1 or missing (one variance per sample, homoscedastic).
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the input and target shapes differ,
/// `var` has another shape, or a variance is negative.
pub fn gaussian_nll_loss<T: Element>(
    input: &Var<T>,
    target: &Var<T>,
    var: &Var<T>,
    options: &GaussianNLLLoss,
) -> Result<Var<T>> {
    const LOSS: &str = "gaussian_nll_loss";
    same_shape(LOSS, input, target)?;
    let (shape, vshape) = (input.shape(), var.shape());
    let var = if vshape == shape {
        var.clone()
    } else if !shape.is_empty() && vshape == &shape[..shape.len() - 1] {
        var.unsqueeze(-1)?
    } else if !shape.is_empty()
        && vshape.len() == shape.len()
        && vshape[..vshape.len() - 1] == shape[..shape.len() - 1]
        && vshape[vshape.len() - 1] == 1
    {
        var.clone()
    } else {
        return Err(input_error(
            LOSS,
            format!("var of shape {vshape:?} does not fit the input's {shape:?}"),
        ));
    };
    let v = var.value();
    if v.to_vec().iter().any(|&x| x < T::zero()) {
        return Err(input_error(LOSS, "var has negative entries"));
    }
    if options.eps.is_nan() {
        return Err(input_error(LOSS, "eps is NaN"));
    }
    // var + (clamp(var) - var) without a gradient through the difference: the clamped
    // value forward, the identity backward, like PyTorch's no-grad clamp_ of a clone.
    let shift = v.maximum_scalar(T::from_f64(options.eps)).sub(&v)?;
    let var = var.add(&Var::new(shift))?;
    let mut terms = var
        .log()
        .add(&input.sub(target)?.square().div(&var)?)?
        .mul_scalar(T::from_f64(0.5));
    if options.full {
        terms = terms.add_scalar(T::from_f64(0.5 * (2.0 * std::f64::consts::PI).ln()));
    }
    Ok(reduce(terms, options.reduction))
}
