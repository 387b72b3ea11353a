//! RMSprop.

use std::collections::BTreeMap;

use strata_autograd::Var;
use strata_tensor::Element;

use crate::adam::lerp;
use crate::optimizer::{
    Core, ParamGroup, check_non_negative, delegate_groups, invalid_loaded, loaded_flag,
    loaded_value,
};
use crate::{Optimizer, OptimizerState, Result};

/// The settings of [`RmsProp`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropConfig {
    /// Learning rate (1e-2).
    pub lr: f64,
    /// Smoothing constant of the squared-gradient average (0.99).
    pub alpha: f64,
    /// Added to the denominator (1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient (0).
    pub weight_decay: f64,
    /// Momentum factor (0).
    pub momentum: f64,
    /// Normalise by the estimated variance instead of the second moment.
    pub centered: bool,
    /// Maximise the objective instead.
    pub maximize: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            maximize: false,
        }
    }
}

/// RMSprop, like `torch.optim.RMSprop`: `s ← α·s + (1-α)·g²`, the denominator
/// `√s + ε` (or `√(s - ḡ²) + ε` when centered, `ḡ ← lerp(ḡ, g, 1-α)`), with optional
/// momentum `b ← μb + g/denom`.
pub struct RmsProp<T: Element = f32> {
    core: Core<T>,
    cfg: RmsPropConfig,
}

const NAME: &str = "RMSprop";

fn state_names(cfg: &RmsPropConfig) -> &'static [&'static str] {
    match (cfg.momentum > 0.0, cfg.centered) {
        (false, false) => &["square_avg"],
        (true, false) => &["square_avg", "momentum_buffer"],
        (false, true) => &["square_avg", "grad_avg"],
        (true, true) => &["square_avg", "momentum_buffer", "grad_avg"],
    }
}

impl<T: Element> RmsProp<T> {
    /// RMSprop over `params`.
    ///
    /// # Errors
    /// [`OptimError::Config`](crate::OptimError::Config) for a negative lr, alpha, eps,
    /// momentum or weight decay, or no parameters.
    pub fn new(params: Vec<Var<T>>, cfg: RmsPropConfig) -> Result<Self> {
        Self::with_groups(vec![ParamGroup::new(params)], cfg)
    }

    /// RMSprop over parameter groups.
    ///
    /// # Errors
    /// As [`new`](RmsProp::new).
    pub fn with_groups(groups: Vec<ParamGroup<T>>, cfg: RmsPropConfig) -> Result<Self> {
        check_config(&cfg)?;
        Ok(RmsProp {
            core: Core::new(NAME, groups, cfg.lr, cfg.weight_decay, state_names(&cfg))?,
            cfg,
        })
    }
}

/// The checks of [`RmsProp::with_groups`] besides the groups', also applied to loaded
/// states.
fn check_config(cfg: &RmsPropConfig) -> Result<()> {
    check_non_negative(NAME, "alpha", cfg.alpha)?;
    check_non_negative(NAME, "epsilon", cfg.eps)?;
    check_non_negative(NAME, "momentum", cfg.momentum)
}

impl<T: Element> Optimizer<T> for RmsProp<T> {
    fn step(&mut self) -> Result<()> {
        let c = self.cfg;
        let with_momentum = c.momentum > 0.0;
        let grad_avg_slot = if with_momentum { 2 } else { 1 };
        self.core.update(
            |_| T::zero(),
            |group, _| {
                let lr = T::from_f64(group.lr);
                let wd = T::from_f64(group.weight_decay);
                let alpha = T::from_f64(c.alpha);
                let w = T::from_f64(1.0 - c.alpha);
                let eps = T::from_f64(c.eps);
                let momentum = T::from_f64(c.momentum);
                move |p: &mut T, g: T, s: &mut [T]| {
                    let mut g = if c.maximize { -g } else { g };
                    if wd != T::zero() {
                        g += wd * *p;
                    }
                    s[0] = s[0] * alpha + w * g * g;
                    let avg = if c.centered {
                        s[grad_avg_slot] = lerp(s[grad_avg_slot], g, w);
                        let ga = s[grad_avg_slot];
                        (s[0] - ga * ga).sqrt()
                    } else {
                        s[0].sqrt()
                    } + eps;
                    if with_momentum {
                        s[1] = s[1] * momentum + g / avg;
                        *p -= lr * s[1];
                    } else {
                        *p -= lr * (g / avg);
                    }
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
            return Err(crate::error::config(
                NAME,
                "momentum cannot be cycled on RMSprop built without momentum",
            ));
        }
        check_non_negative(NAME, "momentum", momentum)?;
        self.cfg.momentum = momentum;
        Ok(())
    }

    fn state_dict(&self) -> OptimizerState<T> {
        let c = &self.cfg;
        self.core.state_dict(BTreeMap::from([
            ("alpha".to_string(), c.alpha),
            ("eps".to_string(), c.eps),
            ("momentum".to_string(), c.momentum),
            ("centered".to_string(), f64::from(u8::from(c.centered))),
            ("maximize".to_string(), f64::from(u8::from(c.maximize))),
        ]))
    }

    fn load_state_dict(&mut self, state: &OptimizerState<T>) -> Result<()> {
        let get = |k: &str, d: f64| loaded_value(state, k, d);
        let mut cfg = self.cfg;
        cfg.alpha = get("alpha", cfg.alpha);
        cfg.eps = get("eps", cfg.eps);
        cfg.momentum = get("momentum", cfg.momentum);
        cfg.centered = loaded_flag(NAME, state, "centered", cfg.centered)?;
        cfg.maximize = loaded_flag(NAME, state, "maximize", cfg.maximize)?;
        check_config(&cfg).map_err(invalid_loaded)?;
        self.core.load_state_dict(state, state_names(&cfg))?;
        self.cfg = cfg;
        Ok(())
    }
}
