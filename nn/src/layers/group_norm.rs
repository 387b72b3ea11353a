//! Normalisations over groups of channels and single instances: `GroupNorm`,
//! `InstanceNorm1d`, `InstanceNorm2d`. Each normalises with the fused layer-norm kernel
//! over the right reshaping of its input (so both derivative orders come with it), then
//! applies the per-channel affine map.

use strata_autograd::{Var, no_grad};
use strata_tensor::{Element, Tensor};

use crate::error::{config_error, input_error};
use crate::{Forward, Module, Result, StateKind};

/// `x · w + b` with `w`, `b` of shape `[C]` broadcast over `[N, C, *]`.
fn channel_affine<T: Element>(
    x: Var<T>,
    weight: Option<&Var<T>>,
    bias: Option<&Var<T>>,
) -> Result<Var<T>> {
    let spatial = x.ndim().saturating_sub(2);
    let per_channel = |p: &Var<T>| -> Result<Var<T>> {
        let mut shape = vec![p.numel()];
        shape.extend(std::iter::repeat_n(1, spatial));
        Ok(p.reshape(shape.as_slice())?)
    };
    let mut y = x;
    if let Some(w) = weight {
        y = y.mul(&per_channel(w)?)?;
    }
    if let Some(b) = bias {
        y = y.add(&per_channel(b)?)?;
    }
    Ok(y)
}

/// Normalises each row of the last dimension to mean 0 and variance 1 (biased).
fn normalize_rows<T: Element>(x: &Var<T>, eps: f64) -> Result<Var<T>> {
    let d = *x.shape().last().expect("rows");
    Ok(x.layer_norm(d, None, None, eps)?)
}

/// Group normalisation, like `nn.GroupNorm(num_groups, num_channels, eps=1e-5,
/// affine=True)`: the channels of each sample split into `num_groups` groups, each
/// normalised over its channels and positions; then a per-channel scale and shift.
/// Input `[N, C, *]`. Unlike batch norm it does not mix samples (so DP-SGD accepts it).
///
/// ```
/// use strata_autograd::Var;
/// use strata_nn::{Forward, GroupNorm};
/// use strata_tensor::Tensor;
///
/// let gn = GroupNorm::<f64>::new(2, 4)?;
/// let y = gn.forward(&Var::new(Tensor::from_vec((0..16).map(f64::from).collect(), &[2, 4, 2])?))?;
/// let first_group = &y.to_vec()[..4]; // sample 0, channels 0-1
/// assert!(first_group.iter().sum::<f64>().abs() < 1e-12);
/// # Ok::<(), strata_nn::NnError>(())
/// ```
pub struct GroupNorm<T: Element = f32> {
    /// `[num_channels]`, ones initially (when affine).
    pub weight: Option<Var<T>>,
    /// `[num_channels]`, zeros initially (when affine).
    pub bias: Option<Var<T>>,
    num_groups: usize,
    num_channels: usize,
    eps: f64,
}

impl<T: Element> GroupNorm<T> {
    /// PyTorch's defaults: eps 1e-5, affine.
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) when `num_groups` is 0 or does not
    /// divide `num_channels`.
    pub fn new(num_groups: usize, num_channels: usize) -> Result<Self> {
        Self::with_options(num_groups, num_channels, 1e-5, true)
    }

    /// Explicit eps and affine.
    ///
    /// # Errors
    /// As [`new`](GroupNorm::new).
    pub fn with_options(
        num_groups: usize,
        num_channels: usize,
        eps: f64,
        affine: bool,
    ) -> Result<Self> {
        if num_groups == 0 || !num_channels.is_multiple_of(num_groups) {
            return Err(config_error(
                "GroupNorm",
                format!(
                    "num_channels ({num_channels}) must be divisible by num_groups ({num_groups})"
                ),
            ));
        }
        Ok(GroupNorm {
            weight: affine.then(|| Var::parameter(Tensor::ones(&[num_channels]))),
            bias: affine.then(|| Var::parameter(Tensor::zeros(&[num_channels]))),
            num_groups,
            num_channels,
            eps,
        })
    }
}

impl<T: Element> GroupNorm<T> {
    /// The number of groups the channels are split into.
    pub fn num_groups(&self) -> usize {
        self.num_groups
    }

    /// The epsilon added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }
}

impl<T: Element> Module<T> for GroupNorm<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        if let Some(w) = &self.weight {
            f("weight", w, StateKind::Parameter);
        }
        if let Some(b) = &self.bias {
            f("bias", b, StateKind::Parameter);
        }
    }
}

impl<T: Element> Forward<T> for GroupNorm<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let shape = x.shape().to_vec();
        if shape.len() < 2 || shape[1] != self.num_channels {
            return Err(input_error(
                "GroupNorm",
                format!(
                    "expected input [N, {}, *], got {shape:?}",
                    self.num_channels
                ),
            ));
        }
        let n = shape[0];
        let per_group = x.numel().checked_div(n * self.num_groups).unwrap_or(0);
        if per_group == 0 {
            return Ok(x.clone());
        }
        let grouped = x.reshape(&[n, self.num_groups, per_group][..])?;
        let y = normalize_rows(&grouped, self.eps)?.reshape(shape.as_slice())?;
        channel_affine(y, self.weight.as_ref(), self.bias.as_ref())
    }
}

/// The settings of the instance-norm layers; the defaults are PyTorch's (eps 1e-5,
/// momentum 0.1, no affine map, no running statistics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InstanceNormConfig {
    /// Added to the variance.
    pub eps: f64,
    /// Weight of the new batch in the running averages.
    pub momentum: f64,
    /// A learnable per-channel scale and shift.
    pub affine: bool,
    /// Keep running mean and variance (averaged over the instances) for eval mode.
    pub track_running_stats: bool,
}

impl Default for InstanceNormConfig {
    fn default() -> Self {
        InstanceNormConfig {
            eps: 1e-5,
            momentum: 0.1,
            affine: false,
            track_running_stats: false,
        }
    }
}

struct InstanceNormCore<T: Element> {
    weight: Option<Var<T>>,
    bias: Option<Var<T>>,
    running_mean: Option<Var<T>>,
    running_var: Option<Var<T>>,
    num_batches_tracked: Option<Var<T>>,
    config: InstanceNormConfig,
    num_features: usize,
    training: bool,
}

impl<T: Element> InstanceNormCore<T> {
    fn new(c: usize, config: InstanceNormConfig) -> Self {
        let track = config.track_running_stats;
        InstanceNormCore {
            weight: config.affine.then(|| Var::parameter(Tensor::ones(&[c]))),
            bias: config.affine.then(|| Var::parameter(Tensor::zeros(&[c]))),
            running_mean: track.then(|| Var::new(Tensor::zeros(&[c]))),
            running_var: track.then(|| Var::new(Tensor::ones(&[c]))),
            num_batches_tracked: track.then(|| Var::new(Tensor::scalar(T::zero()))),
            config,
            num_features: c,
            training: true,
        }
    }

    fn visit(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        let entries = [
            ("weight", &self.weight, StateKind::Parameter),
            ("bias", &self.bias, StateKind::Parameter),
            ("running_mean", &self.running_mean, StateKind::Buffer),
            ("running_var", &self.running_var, StateKind::Buffer),
            (
                "num_batches_tracked",
                &self.num_batches_tracked,
                StateKind::Counter,
            ),
        ];
        for (name, var, kind) in entries {
            if let Some(v) = var {
                f(name, v, kind);
            }
        }
    }

    /// `x` is `[N, C, *]` or, unbatched, `[C, *]` (`batched_rank` is the rank with N).
    fn forward(&self, layer: &'static str, batched_rank: usize, x: &Var<T>) -> Result<Var<T>> {
        let unbatched = x.ndim() + 1 == batched_rank;
        if !(x.ndim() == batched_rank || unbatched) {
            return Err(input_error(
                layer,
                format!(
                    "expected a {}-D (unbatched) or {batched_rank}-D (batched) input, got {:?}",
                    batched_rank - 1,
                    x.shape()
                ),
            ));
        }
        let x = if unbatched {
            x.unsqueeze(0)?
        } else {
            x.clone()
        };
        let shape = x.shape().to_vec();
        let (n, c) = (shape[0], shape[1]);
        if c != self.num_features {
            return Err(input_error(
                layer,
                format!(
                    "expected {} channels, got input {shape:?}",
                    self.num_features
                ),
            ));
        }
        let spatial: usize = shape[2..].iter().product();
        let eps = self.config.eps;
        let use_running = !self.training && self.running_mean.is_some();
        let y = if use_running {
            let (rm, rv) = (
                self.running_mean.as_ref().expect("tracked").value(),
                self.running_var.as_ref().expect("tracked").value(),
            );
            let mut cshape = vec![c];
            cshape.extend(std::iter::repeat_n(1, shape.len() - 2));
            let mean = Var::new(rm.reshape(cshape.as_slice())?);
            let inv = Var::new(
                rv.add_scalar(T::from_f64(eps))
                    .rsqrt()
                    .reshape(cshape.as_slice())?,
            );
            x.sub(&mean)?.mul(&inv)?
        } else {
            if spatial <= 1 && self.training {
                return Err(input_error(
                    layer,
                    format!(
                        "expected more than 1 spatial element per channel when training, got input {shape:?}"
                    ),
                ));
            }
            let rows = x.reshape(&[n * c, spatial][..])?;
            if self.training
                && let (Some(rm), Some(rv)) = (&self.running_mean, &self.running_var)
            {
                no_grad(|| -> Result<()> {
                    let v = rows.value().reshape(&[n, c, spatial][..])?;
                    let mean = v.mean(&[2], false)?;
                    let centred = v.sub(&mean.unsqueeze(2)?)?;
                    let var = centred
                        .square()
                        .sum(&[2], false)?
                        .div_scalar(T::from_f64((spatial - 1) as f64));
                    let m = T::from_f64(self.config.momentum);
                    let keep = T::one() - m;
                    let new_mean = rm
                        .value()
                        .mul_scalar(keep)
                        .add(&mean.mean(&[0], false)?.mul_scalar(m))?;
                    let new_var = rv
                        .value()
                        .mul_scalar(keep)
                        .add(&var.mean(&[0], false)?.mul_scalar(m))?;
                    rm.set_value(new_mean)?;
                    // PyTorch's instance norm leaves num_batches_tracked at 0.
                    rv.set_value(new_var)?;
                    Ok(())
                })?;
            }
            normalize_rows(&rows, eps)?.reshape(shape.as_slice())?
        };
        let y = channel_affine(y, self.weight.as_ref(), self.bias.as_ref())?;
        Ok(if unbatched { y.squeeze(0)? } else { y })
    }
}

macro_rules! instance_norm_layer {
    ($(#[$doc:meta])* $name:ident, $rank:literal) => {
        $(#[$doc])*
        pub struct $name<T: Element = f32> {
            core: InstanceNormCore<T>,
        }

        impl<T: Element> $name<T> {
            /// PyTorch's defaults: no affine map, no running statistics.
            pub fn new(num_features: usize) -> Self {
                Self::with_config(num_features, InstanceNormConfig::default())
            }

            /// Explicit settings.
            pub fn with_config(num_features: usize, config: InstanceNormConfig) -> Self {
                $name { core: InstanceNormCore::new(num_features, config) }
            }

            /// The running mean, when tracked.
            pub fn running_mean(&self) -> Option<Tensor<T>> {
                self.core.running_mean.as_ref().map(Var::value)
            }

            /// The running (unbiased) variance, when tracked.
            pub fn running_var(&self) -> Option<Tensor<T>> {
                self.core.running_var.as_ref().map(Var::value)
            }

            /// The settings the layer was built with.
            pub fn config(&self) -> InstanceNormConfig {
                self.core.config
            }

            /// The per-channel scale `[C]`, when affine.
            pub fn weight(&self) -> Option<&Var<T>> {
                self.core.weight.as_ref()
            }

            /// The per-channel shift `[C]`, when affine.
            pub fn bias(&self) -> Option<&Var<T>> {
                self.core.bias.as_ref()
            }

            /// Whether the layer is in train mode (instance statistics, running averages
            /// updated) rather than eval mode.
            pub fn is_training(&self) -> bool {
                self.core.training
            }
        }

        impl<T: Element> Module<T> for $name<T> {
            fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
                self.core.visit(f);
            }

            fn set_training(&mut self, training: bool) {
                self.core.training = training;
            }
        }

        impl<T: Element> Forward<T> for $name<T> {
            fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
                self.core.forward(stringify!($name), $rank, x)
            }
        }
    };
}

instance_norm_layer!(
    /// Instance normalisation of `[N, C, L]` (or unbatched `[C, L]`), like
    /// `nn.InstanceNorm1d(num_features)`: each sample's channel normalised over its
    /// positions; with `track_running_stats`, running averages for eval mode.
    InstanceNorm1d,
    3
);
instance_norm_layer!(
    /// Instance normalisation of `[N, C, H, W]` (or unbatched `[C, H, W]`), like
    /// `nn.InstanceNorm2d(num_features)`.
    InstanceNorm2d,
    4
);
