//! Adam and AdamW.

use std::collections::BTreeMap;

use strata_autograd::Var;
use strata_tensor::Element;

use crate::optimizer::{
    Core, ParamGroup, check_beta, check_non_negative, invalid_loaded, loaded_flag, loaded_value,
};
use crate::{Optimizer, OptimizerState, Result};

/// The settings of [`Adam`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate (1e-3).
    pub lr: f64,
    /// Decay rates of the first and second moments ((0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient (0).
    pub weight_decay: f64,
    /// Use the maximum of past second moments (AMSGrad).
    pub amsgrad: bool,
    /// Maximise the objective instead.
    pub maximize: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            maximize: false,
        }
    }
}

/// The settings of [`AdamW`]: Adam's, with decoupled weight decay defaulting to 1e-2.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate (1e-3).
    pub lr: f64,
    /// Decay rates of the moments ((0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (1e-8).
    pub eps: f64,
    /// Decoupled weight decay: `θ ← θ·(1 - lr·λ)` before the step (1e-2).
    pub weight_decay: f64,
    /// AMSGrad.
    pub amsgrad: bool,
    /// Maximise the objective instead.
    pub maximize: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            amsgrad: false,
            maximize: false,
        }
    }
}

/// The update shared by Adam and AdamW.
struct AdamCore<T: Element> {
    core: Core<T>,
    cfg: AdamConfig,
    decoupled: bool,
}

const STATE: &[&str] = &["exp_avg", "exp_avg_sq"];
const STATE_AMSGRAD: &[&str] = &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"];

impl<T: Element> AdamCore<T> {
    fn new(
        name: &'static str,
        groups: Vec<ParamGroup<T>>,
        cfg: AdamConfig,
        decoupled: bool,
    ) -> Result<Self> {
        check_config(name, &cfg)?;
        let names = if cfg.amsgrad { STATE_AMSGRAD } else { STATE };
        Ok(AdamCore {
            core: Core::new(name, groups, cfg.lr, cfg.weight_decay, names)?,
            cfg,
            decoupled,
        })
    }

    /// PyTorch's single-tensor Adam, operation for operation.
    fn step(&mut self) -> Result<()> {
        let c = self.cfg;
        let decoupled = self.decoupled;
        self.core.update(
            |_| T::zero(),
            |group, step| {
                let (beta1, beta2) = c.betas;
                let lr = group.lr;
                let wd = T::from_f64(group.weight_decay);
                let decay_factor = T::from_f64(1.0 - lr * group.weight_decay);
                let bias_correction1 = 1.0 - beta1.powf(step as f64);
                let bias_correction2 = 1.0 - beta2.powf(step as f64);
                let step_size = T::from_f64(lr / bias_correction1);
                let bc2_sqrt = T::from_f64(bias_correction2.sqrt());
                let w1 = T::from_f64(1.0 - beta1);
                let b2 = T::from_f64(beta2);
                let w2 = T::from_f64(1.0 - beta2);
                let eps = T::from_f64(c.eps);
                move |p: &mut T, g: T, s: &mut [T]| {
                    let mut g = if c.maximize { -g } else { g };
                    if wd != T::zero() {
                        if decoupled {
                            *p *= decay_factor;
                        } else {
                            g += wd * *p;
                        }
                    }
                    s[0] = lerp(s[0], g, w1);
                    s[1] = s[1] * b2 + w2 * g * g;
                    let second = if c.amsgrad {
                        s[2] = s[2].max(s[1]);
                        s[2]
                    } else {
                        s[1]
                    };
                    let denom = second.sqrt() / bc2_sqrt + eps;
                    *p -= step_size * (s[0] / denom);
                }
            },
        )
    }

    fn hyper(&self) -> BTreeMap<String, f64> {
        let c = &self.cfg;
        BTreeMap::from([
            ("beta1".to_string(), c.betas.0),
            ("beta2".to_string(), c.betas.1),
            ("eps".to_string(), c.eps),
            ("amsgrad".to_string(), f64::from(u8::from(c.amsgrad))),
            ("maximize".to_string(), f64::from(u8::from(c.maximize))),
        ])
    }

    fn load(&mut self, state: &OptimizerState<T>) -> Result<()> {
        let name = self.core.name;
        let get = |k: &str, d: f64| loaded_value(state, k, d);
        let mut cfg = self.cfg;
        cfg.betas = (get("beta1", cfg.betas.0), get("beta2", cfg.betas.1));
        cfg.eps = get("eps", cfg.eps);
        cfg.amsgrad = loaded_flag(name, state, "amsgrad", cfg.amsgrad)?;
        cfg.maximize = loaded_flag(name, state, "maximize", cfg.maximize)?;
        check_config(name, &cfg).map_err(invalid_loaded)?;
        let names = if cfg.amsgrad { STATE_AMSGRAD } else { STATE };
        self.core.load_state_dict(state, names)?;
        self.cfg = cfg;
        Ok(())
    }
}

/// The checks of [`AdamCore::new`] besides the groups', also applied to loaded states.
fn check_config(name: &'static str, cfg: &AdamConfig) -> Result<()> {
    check_non_negative(name, "epsilon", cfg.eps)?;
    check_beta(name, 0, cfg.betas.0)?;
    check_beta(name, 1, cfg.betas.1)
}

/// `torch.lerp` with a scalar weight, computed as ATen does: from the nearer end.
#[inline(always)]
pub(crate) fn lerp<T: Element>(start: T, end: T, weight: T) -> T {
    if weight.abs() < T::from_f64(0.5) {
        start + weight * (end - start)
    } else {
        end - (end - start) * (T::one() - weight)
    }
}

macro_rules! adam_like {
    ($(#[$doc:meta])* $name:ident, $cfg:ident, $label:literal, $decoupled:expr) => {
        $(#[$doc])*
        pub struct $name<T: Element = f32> {
            inner: AdamCore<T>,
        }

        impl<T: Element> $name<T> {
            /// The optimizer over `params`.
            ///
            /// # Errors
            /// [`OptimError::Config`](crate::OptimError::Config) for a negative lr, eps or
            /// weight decay, betas outside `[0, 1)`, or no parameters.
            pub fn new(params: Vec<Var<T>>, cfg: $cfg) -> Result<Self> {
                Self::with_groups(vec![ParamGroup::new(params)], cfg)
            }

            /// The optimizer over parameter groups.
            ///
            /// # Errors
            /// As [`new`](Self::new).
            pub fn with_groups(groups: Vec<ParamGroup<T>>, cfg: $cfg) -> Result<Self> {
                let cfg = AdamConfig {
                    lr: cfg.lr,
                    betas: cfg.betas,
                    eps: cfg.eps,
                    weight_decay: cfg.weight_decay,
                    amsgrad: cfg.amsgrad,
                    maximize: cfg.maximize,
                };
                Ok($name {
                    inner: AdamCore::new($label, groups, cfg, $decoupled)?,
                })
            }
        }

        impl<T: Element> Optimizer<T> for $name<T> {
            fn step(&mut self) -> Result<()> {
                self.inner.step()
            }

            fn zero_grad(&self) {
                self.inner.core.zero_grad();
            }
            fn num_groups(&self) -> usize {
                self.inner.core.groups.len()
            }
            fn group_lr(&self, group: usize) -> f64 {
                self.inner.core.groups[group].lr
            }
            fn set_group_lr(&mut self, group: usize, lr: f64) {
                self.inner.core.groups[group].lr = lr;
            }

            fn momentum(&self) -> Option<f64> {
                Some(self.inner.cfg.betas.0)
            }

            fn set_momentum(&mut self, momentum: f64) -> Result<()> {
                check_beta($label, 0, momentum)?;
                self.inner.cfg.betas.0 = momentum;
                Ok(())
            }

            fn state_dict(&self) -> OptimizerState<T> {
                self.inner.core.state_dict(self.inner.hyper())
            }

            fn load_state_dict(&mut self, state: &OptimizerState<T>) -> Result<()> {
                self.inner.load(state)
            }
        }
    };
}

adam_like!(
    /// Adam, like `torch.optim.Adam`: `m ← lerp(m, g, 1-β1)`, `v ← β2·v + (1-β2)·g²`,
    /// `θ ← θ - lr/(1-β1ᵗ) · m / (√v/√(1-β2ᵗ) + ε)`; weight decay is added to the gradient
    /// (L2), AMSGrad uses the running maximum of `v`.
    Adam,
    AdamConfig,
    "Adam",
    false
);

adam_like!(
    /// AdamW, like `torch.optim.AdamW`: Adam with decoupled weight decay,
    /// `θ ← θ·(1 - lr·λ)` before the Adam step.
    ///
    /// ```
    /// use strata_optim::{AdamW, AdamWConfig, Optimizer};
    /// use strata_autograd::Var;
    /// use strata_tensor::Tensor;
    ///
    /// let w = Var::parameter(Tensor::from_vec(vec![1.0f64], &[1])?);
    /// let mut opt = AdamW::new(vec![w.clone()], AdamWConfig { lr: 0.1, ..AdamWConfig::default() })?;
    /// w.square().sum_all().backward()?;
    /// opt.step()?;
    /// // The first step moves by lr (m/√v = 1), after decay by lr·λ.
    /// assert!((w.item()? - (1.0 * (1.0 - 0.1 * 0.01) - 0.1)).abs() < 1e-7);
    /// # Ok::<(), strata_optim::OptimError>(())
    /// ```
    AdamW,
    AdamWConfig,
    "AdamW",
    true
);
