//! Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

use std::collections::BTreeMap;

use strata_autograd::Var;
use strata_tensor::Element;

use crate::optimizer::{
    Core, ParamGroup, check_beta, delegate_groups, invalid_loaded, loaded_flag, loaded_value,
};
use crate::{Optimizer, OptimizerState, Result};

/// The settings of [`Lion`]; the defaults are the paper's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LionConfig {
    /// Learning rate (1e-4; typically 3–10× smaller than AdamW's).
    pub lr: f64,
    /// Interpolation for the update (β1) and for the momentum (β2): (0.9, 0.99).
    pub betas: (f64, f64),
    /// Decoupled weight decay (0).
    pub weight_decay: f64,
    /// Maximise the objective instead.
    pub maximize: bool,
}

impl Default for LionConfig {
    fn default() -> Self {
        LionConfig {
            lr: 1e-4,
            betas: (0.9, 0.99),
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

/// Lion (PyTorch has no built-in; this follows the paper's algorithm):
/// `θ ← θ·(1 - lr·λ)`, `θ ← θ - lr·sign(β1·m + (1-β1)·g)`, `m ← β2·m + (1-β2)·g`.
pub struct Lion<T: Element = f32> {
    core: Core<T>,
    cfg: LionConfig,
}

const NAME: &str = "Lion";

impl<T: Element> Lion<T> {
    /// Lion over `params`.
    ///
    /// # Errors
    /// [`OptimError::Config`](crate::OptimError::Config) for a negative lr or weight decay,
    /// betas outside `[0, 1)`, or no parameters.
    pub fn new(params: Vec<Var<T>>, cfg: LionConfig) -> Result<Self> {
        Self::with_groups(vec![ParamGroup::new(params)], cfg)
    }

    /// Lion over parameter groups.
    ///
    /// # Errors
    /// As [`new`](Lion::new).
    pub fn with_groups(groups: Vec<ParamGroup<T>>, cfg: LionConfig) -> Result<Self> {
        check_config(&cfg)?;
        Ok(Lion {
            core: Core::new(NAME, groups, cfg.lr, cfg.weight_decay, &["exp_avg"])?,
            cfg,
        })
    }
}

/// The checks of [`Lion::with_groups`] besides the groups', also applied to loaded states.
fn check_config(cfg: &LionConfig) -> Result<()> {
    check_beta(NAME, 0, cfg.betas.0)?;
    check_beta(NAME, 1, cfg.betas.1)
}

impl<T: Element> Optimizer<T> for Lion<T> {
    fn step(&mut self) -> Result<()> {
        let c = self.cfg;
        self.core.update(
            |_| T::zero(),
            |group, _| {
                let lr = T::from_f64(group.lr);
                let decay = T::from_f64(1.0 - group.lr * group.weight_decay);
                let (b1, b2) = (T::from_f64(c.betas.0), T::from_f64(c.betas.1));
                let (w1, w2) = (T::from_f64(1.0 - c.betas.0), T::from_f64(1.0 - c.betas.1));
                move |p: &mut T, g: T, s: &mut [T]| {
                    let g = if c.maximize { -g } else { g };
                    *p *= decay;
                    let update = s[0] * b1 + g * w1;
                    let sign = if update > T::zero() {
                        T::one()
                    } else if update < T::zero() {
                        -T::one()
                    } else {
                        T::zero()
                    };
                    *p -= lr * sign;
                    s[0] = s[0] * b2 + g * w2;
                }
            },
        )
    }

    delegate_groups!();

    fn momentum(&self) -> Option<f64> {
        Some(self.cfg.betas.0)
    }

    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        check_beta(NAME, 0, momentum)?;
        self.cfg.betas.0 = momentum;
        Ok(())
    }

    fn state_dict(&self) -> OptimizerState<T> {
        self.core.state_dict(BTreeMap::from([
            ("beta1".to_string(), self.cfg.betas.0),
            ("beta2".to_string(), self.cfg.betas.1),
            (
                "maximize".to_string(),
                f64::from(u8::from(self.cfg.maximize)),
            ),
        ]))
    }

    fn load_state_dict(&mut self, state: &OptimizerState<T>) -> Result<()> {
        let get = |k: &str, d: f64| loaded_value(state, k, d);
        let mut cfg = self.cfg;
        cfg.betas = (get("beta1", cfg.betas.0), get("beta2", cfg.betas.1));
        cfg.maximize = loaded_flag(NAME, state, "maximize", cfg.maximize)?;
        check_config(&cfg).map_err(invalid_loaded)?;
        self.core.load_state_dict(state, &["exp_avg"])?;
        self.cfg = cfg;
        Ok(())
    }
}
