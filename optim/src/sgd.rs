//! Stochastic gradient descent with momentum, dampening and Nesterov momentum.

use std::collections::BTreeMap;

use strata_autograd::Var;
use strata_tensor::Element;

use crate::error::config;
use crate::optimizer::{
    Core, ParamGroup, check_non_negative, delegate_groups, invalid_loaded, loaded_flag,
    loaded_value,
};
use crate::{Optimizer, OptimizerState, Result};

/// The settings of [`Sgd`]; the defaults are PyTorch's except `lr`, which PyTorch also
/// defaults to 1e-3.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0: plain SGD).
    pub momentum: f64,
    /// Dampening of the momentum's new gradient.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum (needs `momentum > 0` and no dampening).
    pub nesterov: bool,
    /// Maximise the objective instead.
    pub maximize: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
        }
    }
}

/// SGD, like `torch.optim.SGD`: `g ← ∇ + λθ`; with momentum `b ← μb + (1 - τ)g` (`b ← g`
/// on the first step) and `g ← b` (or `g + μb` with Nesterov); `θ ← θ - lr·g`.
///
/// ```
/// use strata_optim::{Optimizer, Sgd, SgdConfig};
/// use strata_autograd::Var;
/// use strata_tensor::Tensor;
///
/// let w = Var::parameter(Tensor::from_vec(vec![1.0f32, -2.0], &[2])?);
/// let mut opt = Sgd::new(vec![w.clone()], SgdConfig { lr: 0.1, ..SgdConfig::default() })?;
/// w.square().sum_all().backward()?;
/// opt.step()?;
/// assert_eq!(w.to_vec(), vec![0.8, -1.6]);
/// # Ok::<(), strata_optim::OptimError>(())
/// ```
pub struct Sgd<T: Element = f32> {
    core: Core<T>,
    cfg: SgdConfig,
}

const NAME: &str = "SGD";

fn state_names(cfg: &SgdConfig) -> &'static [&'static str] {
    if cfg.momentum != 0.0 {
        &["momentum_buffer"]
    } else {
        &[]
    }
}

impl<T: Element> Sgd<T> {
    /// SGD over `params`.
    ///
    /// # Errors
    /// [`OptimError::Config`](crate::OptimError::Config) for a negative lr, momentum or
    /// weight decay, Nesterov without momentum or with dampening, or no parameters.
    pub fn new(params: Vec<Var<T>>, cfg: SgdConfig) -> Result<Self> {
        Self::with_groups(vec![ParamGroup::new(params)], cfg)
    }

    /// SGD over parameter groups.
    ///
    /// # Errors
    /// As [`new`](Sgd::new).
    pub fn with_groups(groups: Vec<ParamGroup<T>>, cfg: SgdConfig) -> Result<Self> {
        check_config(&cfg)?;
        let names: &'static [&'static str] = if cfg.momentum != 0.0 {
            &["momentum_buffer"]
        } else {
            &[]
        };
        Ok(Sgd {
            core: Core::new(NAME, groups, cfg.lr, cfg.weight_decay, names)?,
            cfg,
        })
    }
}

/// The checks of [`Sgd::with_groups`] besides the groups', also applied to loaded states.
fn check_config(cfg: &SgdConfig) -> Result<()> {
    check_non_negative(NAME, "momentum", cfg.momentum)?;
    check_non_negative(NAME, "dampening", cfg.dampening)?;
    if cfg.nesterov && (cfg.momentum <= 0.0 || cfg.dampening != 0.0) {
        return Err(config(
            NAME,
            "Nesterov momentum requires a momentum and zero dampening",
        ));
    }
    Ok(())
}

impl<T: Element> Optimizer<T> for Sgd<T> {
    fn step(&mut self) -> Result<()> {
        let c = self.cfg;
        self.core.update(
            |_| T::zero(),
            |group, step| {
                let lr = T::from_f64(group.lr);
                let wd = T::from_f64(group.weight_decay);
                let momentum = T::from_f64(c.momentum);
                let keep = T::from_f64(1.0 - c.dampening);
                let first = step == 1;
                move |p: &mut T, g: T, s: &mut [T]| {
                    let mut g = if c.maximize { -g } else { g };
                    if wd != T::zero() {
                        g += wd * *p;
                    }
                    if let Some(buf) = s.first_mut() {
                        *buf = if first { g } else { *buf * momentum + keep * g };
                        g = if c.nesterov {
                            g + momentum * *buf
                        } else {
                            *buf
                        };
                    }
                    *p -= lr * g;
                }
            },
        )
    }

    delegate_groups!();

    fn momentum(&self) -> Option<f64> {
        Some(self.cfg.momentum)
    }

    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        if self.cfg.momentum == 0.0 {
            return Err(config(
                NAME,
                "momentum cannot be cycled on SGD built without momentum",
            ));
        }
        check_non_negative(NAME, "momentum", momentum)?;
        self.cfg.momentum = momentum;
        Ok(())
    }

    fn state_dict(&self) -> OptimizerState<T> {
        let c = &self.cfg;
        let hyper = BTreeMap::from([
            ("momentum".to_string(), c.momentum),
            ("dampening".to_string(), c.dampening),
            ("nesterov".to_string(), f64::from(u8::from(c.nesterov))),
            ("maximize".to_string(), f64::from(u8::from(c.maximize))),
        ]);
        self.core.state_dict(hyper)
    }

    fn load_state_dict(&mut self, state: &OptimizerState<T>) -> Result<()> {
        let mut cfg = self.cfg;
        cfg.momentum = loaded_value(state, "momentum", cfg.momentum);
        cfg.dampening = loaded_value(state, "dampening", cfg.dampening);
        cfg.nesterov = loaded_flag(NAME, state, "nesterov", cfg.nesterov)?;
        cfg.maximize = loaded_flag(NAME, state, "maximize", cfg.maximize)?;
        check_config(&cfg).map_err(invalid_loaded)?;
        self.core.load_state_dict(state, state_names(&cfg))?;
        self.cfg = cfg;
        Ok(())
    }
}
