//! Adagrad.

use std::collections::BTreeMap;

use strata_autograd::Var;
use strata_tensor::Element;

use crate::optimizer::{
    Core, ParamGroup, check_non_negative, delegate_groups, invalid_loaded, loaded_flag,
    loaded_value,
};
use crate::{Optimizer, OptimizerState, Result};

/// The settings of [`Adagrad`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdagradConfig {
    /// Learning rate (1e-2).
    pub lr: f64,
    /// Learning-rate decay per step (0).
    pub lr_decay: f64,
    /// L2 penalty added to the gradient (0).
    pub weight_decay: f64,
    /// Starting value of the squared-gradient sum (0).
    pub initial_accumulator_value: f64,
    /// Added to the denominator (1e-10).
    pub eps: f64,
    /// Maximise the objective instead.
    pub maximize: bool,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        AdagradConfig {
            lr: 1e-2,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            maximize: false,
        }
    }
}

/// Adagrad, like `torch.optim.Adagrad`: `Σ ← Σ + g²`,
/// `θ ← θ - lr/(1 + (t-1)·decay) · g / (√Σ + ε)`.
pub struct Adagrad<T: Element = f32> {
    core: Core<T>,
    cfg: AdagradConfig,
}

const NAME: &str = "Adagrad";

impl<T: Element> Adagrad<T> {
    /// Adagrad over `params`.
    ///
    /// # Errors
    /// [`OptimError::Config`](crate::OptimError::Config) for negative settings or no
    /// parameters.
    pub fn new(params: Vec<Var<T>>, cfg: AdagradConfig) -> Result<Self> {
        Self::with_groups(vec![ParamGroup::new(params)], cfg)
    }

    /// Adagrad over parameter groups.
    ///
    /// # Errors
    /// As [`new`](Adagrad::new).
    pub fn with_groups(groups: Vec<ParamGroup<T>>, cfg: AdagradConfig) -> Result<Self> {
        check_config(&cfg)?;
        Ok(Adagrad {
            core: Core::new(NAME, groups, cfg.lr, cfg.weight_decay, &["sum"])?,
            cfg,
        })
    }
}

/// The checks of [`Adagrad::with_groups`] besides the groups', also applied to loaded
/// states.
fn check_config(cfg: &AdagradConfig) -> Result<()> {
    check_non_negative(NAME, "lr_decay", cfg.lr_decay)?;
    check_non_negative(
        NAME,
        "initial_accumulator_value",
        cfg.initial_accumulator_value,
    )?;
    check_non_negative(NAME, "epsilon", cfg.eps)
}

impl<T: Element> Optimizer<T> for Adagrad<T> {
    fn step(&mut self) -> Result<()> {
        let c = self.cfg;
        let init = T::from_f64(c.initial_accumulator_value);
        self.core.update(
            move |_| init,
            |group, step| {
                let clr = T::from_f64(group.lr / (1.0 + (step - 1) as f64 * c.lr_decay));
                let wd = T::from_f64(group.weight_decay);
                let eps = T::from_f64(c.eps);
                move |p: &mut T, g: T, s: &mut [T]| {
                    let mut g = if c.maximize { -g } else { g };
                    if wd != T::zero() {
                        g += wd * *p;
                    }
                    s[0] += g * g;
                    let std = s[0].sqrt() + eps;
                    *p -= clr * (g / std);
                }
            },
        )
    }

    delegate_groups!();

    fn state_dict(&self) -> OptimizerState<T> {
        let c = &self.cfg;
        self.core.state_dict(BTreeMap::from([
            ("lr_decay".to_string(), c.lr_decay),
            (
                "initial_accumulator_value".to_string(),
                c.initial_accumulator_value,
            ),
            ("eps".to_string(), c.eps),
            ("maximize".to_string(), f64::from(u8::from(c.maximize))),
        ]))
    }

    fn load_state_dict(&mut self, state: &OptimizerState<T>) -> Result<()> {
        let get = |k: &str, d: f64| loaded_value(state, k, d);
        let mut cfg = self.cfg;
        cfg.lr_decay = get("lr_decay", cfg.lr_decay);
        cfg.initial_accumulator_value =
            get("initial_accumulator_value", cfg.initial_accumulator_value);
        cfg.eps = get("eps", cfg.eps);
        cfg.maximize = loaded_flag(NAME, state, "maximize", cfg.maximize)?;
        check_config(&cfg).map_err(invalid_loaded)?;
        self.core.load_state_dict(state, &["sum"])?;
        self.cfg = cfg;
        Ok(())
    }
}
