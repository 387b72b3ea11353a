//! Normalisation layers: `LayerNorm`, `RMSNorm`, `BatchNorm1d`, `BatchNorm2d`.

use strata_autograd::{Var, no_grad};
use strata_tensor::{Element, Tensor};

use crate::error::input_error;
use crate::functional;
use crate::{Forward, Module, Result, StateKind};

/// Layer normalisation over the trailing `normalized_shape` dimensions, like
/// `nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)`.
pub struct LayerNorm<T: Element = f32> {
    /// `normalized_shape`, ones initially (when affine).
    pub weight: Option<Var<T>>,
    /// `normalized_shape`, zeros initially (when affine with bias).
    pub bias: Option<Var<T>>,
    normalized_shape: Vec<usize>,
    eps: f64,
}

impl<T: Element> LayerNorm<T> {
    /// PyTorch's defaults: eps 1e-5, with weight and bias.
    pub fn new(normalized_shape: &[usize]) -> Self {
        Self::with_options(normalized_shape, 1e-5, true, true)
    }

    /// Explicit eps, `elementwise_affine` and `bias`.
    pub fn with_options(
        normalized_shape: &[usize],
        eps: f64,
        elementwise_affine: bool,
        bias: bool,
    ) -> Self {
        LayerNorm {
            weight: elementwise_affine.then(|| Var::parameter(Tensor::ones(normalized_shape))),
            bias: (elementwise_affine && bias)
                .then(|| Var::parameter(Tensor::zeros(normalized_shape))),
            normalized_shape: normalized_shape.to_vec(),
            eps,
        }
    }
}

impl<T: Element> LayerNorm<T> {
    /// The trailing dimensions it normalises over.
    pub fn normalized_shape(&self) -> &[usize] {
        &self.normalized_shape
    }

    /// The epsilon added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }
}

impl<T: Element> Module<T> for LayerNorm<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        if let Some(w) = &self.weight {
            f("weight", w, StateKind::Parameter);
        }
        if let Some(b) = &self.bias {
            f("bias", b, StateKind::Parameter);
        }
    }
}

impl<T: Element> Forward<T> for LayerNorm<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        functional::layer_norm(
            x,
            &self.normalized_shape,
            self.weight.as_ref(),
            self.bias.as_ref(),
            self.eps,
        )
    }
}

/// Root-mean-square normalisation, like `nn.RMSNorm(normalized_shape, eps=None,
/// elementwise_affine=True)`; `eps = None` means the machine epsilon of the element type,
/// as in PyTorch.
pub struct RMSNorm<T: Element = f32> {
    /// `normalized_shape`, ones initially (when affine).
    pub weight: Option<Var<T>>,
    normalized_shape: Vec<usize>,
    eps: Option<f64>,
}

impl<T: Element> RMSNorm<T> {
    /// PyTorch's defaults: eps from the element type, with weight.
    pub fn new(normalized_shape: &[usize]) -> Self {
        Self::with_options(normalized_shape, None, true)
    }

    /// Explicit eps and `elementwise_affine`.
    pub fn with_options(
        normalized_shape: &[usize],
        eps: Option<f64>,
        elementwise_affine: bool,
    ) -> Self {
        RMSNorm {
            weight: elementwise_affine.then(|| Var::parameter(Tensor::ones(normalized_shape))),
            normalized_shape: normalized_shape.to_vec(),
            eps,
        }
    }
}

impl<T: Element> RMSNorm<T> {
    /// The trailing dimensions it normalises over.
    pub fn normalized_shape(&self) -> &[usize] {
        &self.normalized_shape
    }

    /// The epsilon added to the mean square as given (`None`: the element type's machine
    /// epsilon).
    pub fn eps(&self) -> Option<f64> {
        self.eps
    }
}

impl<T: Element> Module<T> for RMSNorm<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        if let Some(w) = &self.weight {
            f("weight", w, StateKind::Parameter);
        }
    }
}

impl<T: Element> Forward<T> for RMSNorm<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        functional::rms_norm(x, &self.normalized_shape, self.weight.as_ref(), self.eps)
    }
}

/// The settings of a batch-norm layer; the defaults are PyTorch's (eps 1e-5, momentum
/// 0.1, affine, tracking running statistics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance.
    pub eps: f64,
    /// Weight of the new batch in the running averages; `None` is a cumulative average.
    pub momentum: Option<f64>,
    /// Learnable weight and bias.
    pub affine: bool,
    /// Keep running mean and variance for eval mode.
    pub track_running_stats: bool,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig {
            eps: 1e-5,
            momentum: Some(0.1),
            affine: true,
            track_running_stats: true,
        }
    }
}

/// State shared by the batch-norm layers.
struct BatchNormCore<T: Element> {
    weight: Option<Var<T>>,
    bias: Option<Var<T>>,
    running_mean: Option<Var<T>>,
    running_var: Option<Var<T>>,
    num_batches_tracked: Option<Var<T>>,
    config: BatchNormConfig,
    num_features: usize,
    training: bool,
}

impl<T: Element> BatchNormCore<T> {
    fn new(num_features: usize, config: BatchNormConfig) -> Self {
        let c = num_features;
        let track = config.track_running_stats;
        BatchNormCore {
            weight: config.affine.then(|| Var::parameter(Tensor::ones(&[c]))),
            bias: config.affine.then(|| Var::parameter(Tensor::zeros(&[c]))),
            running_mean: track.then(|| Var::new(Tensor::zeros(&[c]))),
            running_var: track.then(|| Var::new(Tensor::ones(&[c]))),
            num_batches_tracked: track.then(|| Var::new(Tensor::scalar(T::zero()))),
            config,
            num_features,
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

    fn forward(
        &self,
        layer: &'static str,
        expected: &str,
        ranks: &[usize],
        x: &Var<T>,
    ) -> Result<Var<T>> {
        if !ranks.contains(&x.ndim()) || x.shape()[1] != self.num_features {
            return Err(input_error(
                layer,
                format!(
                    "expected input {expected} with C = {}, got {:?}",
                    self.num_features,
                    x.shape()
                ),
            ));
        }
        let use_batch_stats = self.training || self.running_mean.is_none();
        // The running averages' weight: momentum, or 1/n for a cumulative average.
        let mut factor = self.config.momentum.unwrap_or(0.0);
        if self.training
            && let Some(count) = &self.num_batches_tracked
        {
            let n = no_grad(|| count.value().add_scalar(T::one()));
            let tracked = Element::to_f64(n.item()?);
            count.set_value(n)?;
            if self.config.momentum.is_none() {
                factor = 1.0 / tracked;
            }
        }
        functional::batch_norm(
            x,
            self.running_mean.as_ref(),
            self.running_var.as_ref(),
            self.weight.as_ref(),
            self.bias.as_ref(),
            use_batch_stats,
            factor,
            self.config.eps,
        )
    }
}

macro_rules! batch_norm_layer {
    ($(#[$doc:meta])* $name:ident, $expected:literal, $ranks:expr) => {
        $(#[$doc])*
        pub struct $name<T: Element = f32> {
            core: BatchNormCore<T>,
        }

        impl<T: Element> $name<T> {
            /// PyTorch's defaults.
            pub fn new(num_features: usize) -> Self {
                Self::with_config(num_features, BatchNormConfig::default())
            }

            /// Explicit settings.
            pub fn with_config(num_features: usize, config: BatchNormConfig) -> Self {
                $name {
                    core: BatchNormCore::new(num_features, config),
                }
            }

            /// The learnable scale, when affine.
            pub fn weight(&self) -> Option<&Var<T>> {
                self.core.weight.as_ref()
            }

            /// The learnable shift, when affine.
            pub fn bias(&self) -> Option<&Var<T>> {
                self.core.bias.as_ref()
            }

            /// The running mean, when tracked.
            pub fn running_mean(&self) -> Option<Tensor<T>> {
                self.core.running_mean.as_ref().map(Var::value)
            }

            /// The running (unbiased) variance, when tracked.
            pub fn running_var(&self) -> Option<Tensor<T>> {
                self.core.running_var.as_ref().map(Var::value)
            }

            /// The settings.
            pub fn config(&self) -> &BatchNormConfig {
                &self.core.config
            }

            /// Whether it is in train mode (batch statistics).
            pub fn is_training(&self) -> bool {
                self.core.training
            }

            /// The number of batches seen in train mode, when tracked.
            pub fn num_batches_tracked(&self) -> Option<u64> {
                self.core
                    .num_batches_tracked
                    .as_ref()
                    .and_then(|v| v.item().ok())
                    .map(|n| Element::to_f64(n) as u64)
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
                self.core.forward(stringify!($name), $expected, $ranks, x)
            }
        }
    };
}

batch_norm_layer!(
    /// Batch normalisation over `[N, C]` or `[N, C, L]`, like `nn.BatchNorm1d(num_features)`:
    /// batch statistics in train mode (updating the running mean and the unbiased running
    /// variance with `momentum`), running statistics in eval mode.
    BatchNorm1d,
    "[N, C] or [N, C, L]",
    &[2, 3]
);

batch_norm_layer!(
    /// Batch normalisation over `[N, C, H, W]`, like `nn.BatchNorm2d(num_features)`.
    BatchNorm2d,
    "[N, C, H, W]",
    &[4]
);
