//! Learning-rate schedules acting on an optimizer, like `torch.optim.lr_scheduler`.
//!
//! A [`Schedule`] is a closed-form rule `lr(epoch, base_lr)`; a [`Scheduler`] drives one
//! over an optimizer: created at epoch 0 (setting each group's lr as PyTorch's schedulers
//! do on construction), then `step` once per epoch (or per batch).
//!
//! ```
//! use strata_optim::schedule::{CosineAnnealingLR, LinearLR, Scheduler, SequentialLR};
//! use strata_optim::{Optimizer, Sgd, SgdConfig};
//! use strata_autograd::Var;
//! use strata_tensor::Tensor;
//!
//! let w = Var::parameter(Tensor::<f32>::zeros(&[3]));
//! let mut opt = Sgd::new(vec![w], SgdConfig { lr: 0.1, ..SgdConfig::default() })?;
//! // Five epochs of linear warm-up from 0.1·lr, then cosine annealing over 15.
//! let warmup_then_cosine = SequentialLR::new(
//!     vec![Box::new(LinearLR::new(0.1, 1.0, 5)), Box::new(CosineAnnealingLR::new(15, 0.0))],
//!     vec![5],
//! );
//! let mut sched = Scheduler::new(warmup_then_cosine, &mut opt);
//! assert!((opt.lr() - 0.01).abs() < 1e-12);
//! for _ in 0..5 {
//!     sched.step(&mut opt)?;
//! }
//! assert!((opt.lr() - 0.1).abs() < 1e-12);
//! # Ok::<(), strata_optim::OptimError>(())
//! ```

use std::f64::consts::PI;

use strata_tensor::Element;

use crate::error::config;
use crate::{Optimizer, Result};

/// A closed-form learning-rate rule.
pub trait Schedule: Send + Sync {
    /// The learning rate at `epoch` for a group whose initial lr is `base_lr`.
    fn lr_at(&self, epoch: usize, base_lr: f64) -> f64;

    /// The momentum (or β1) at `epoch`, for schedules that cycle it.
    fn momentum_at(&self, _epoch: usize) -> Option<f64> {
        None
    }

    /// The last epoch the schedule is defined for, for schedules with an end
    /// ([`OneCycleLR`]'s `total_steps`): stepping past it is an error, as in PyTorch.
    fn total_steps(&self) -> Option<usize> {
        None
    }

    /// The schedule's name, for errors.
    fn name(&self) -> &'static str {
        "Scheduler"
    }
}

/// Drives a [`Schedule`] over an optimizer's groups.
pub struct Scheduler<S: Schedule> {
    schedule: S,
    base_lrs: Vec<f64>,
    last_epoch: usize,
}

/// The resumable state of a [`Scheduler`].
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerState {
    /// The epoch reached.
    pub last_epoch: usize,
    /// Each group's initial learning rate.
    pub base_lrs: Vec<f64>,
}

impl<S: Schedule> Scheduler<S> {
    /// Records each group's current lr as its base lr and sets the epoch-0 lr.
    pub fn new<T: Element>(schedule: S, optimizer: &mut (impl Optimizer<T> + ?Sized)) -> Self {
        let base_lrs = (0..optimizer.num_groups())
            .map(|g| optimizer.group_lr(g))
            .collect();
        let s = Scheduler {
            schedule,
            base_lrs,
            last_epoch: 0,
        };
        s.apply(optimizer);
        s
    }

    fn apply<T: Element>(&self, optimizer: &mut (impl Optimizer<T> + ?Sized)) {
        for (g, &base) in self.base_lrs.iter().enumerate() {
            optimizer.set_group_lr(g, self.schedule.lr_at(self.last_epoch, base));
        }
        if let Some(m) = self.schedule.momentum_at(self.last_epoch) {
            // Optimizers without momentum were refused when the schedule was built.
            let _ = optimizer.set_momentum(m);
        }
    }

    /// Advances one epoch and sets the new learning rates.
    ///
    /// # Errors
    /// [`OptimError::Config`](crate::OptimError::Config) when the schedule has an end and
    /// this step goes past it (PyTorch's "Tried to step 1001 times. The specified number of
    /// total steps is 1000"); the learning rates are left as they were.
    pub fn step<T: Element>(&mut self, optimizer: &mut (impl Optimizer<T> + ?Sized)) -> Result<()> {
        self.check_epoch(self.last_epoch + 1)?;
        self.last_epoch += 1;
        self.apply(optimizer);
        Ok(())
    }

    fn check_epoch(&self, epoch: usize) -> Result<()> {
        match self.schedule.total_steps() {
            Some(total) if epoch > total => Err(config(
                self.schedule.name(),
                format!(
                    "tried to step {epoch} times; the specified number of total steps is {total}"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The learning rates set last, per group (`get_last_lr()`).
    pub fn last_lr(&self) -> Vec<f64> {
        self.base_lrs
            .iter()
            .map(|&b| self.schedule.lr_at(self.last_epoch, b))
            .collect()
    }

    /// The epoch reached.
    pub fn last_epoch(&self) -> usize {
        self.last_epoch
    }

    /// The state to save for resuming.
    pub fn state(&self) -> SchedulerState {
        SchedulerState {
            last_epoch: self.last_epoch,
            base_lrs: self.base_lrs.clone(),
        }
    }

    /// Restores a saved state and sets the optimizer's lrs accordingly.
    ///
    /// # Errors
    /// [`OptimError::State`](crate::OptimError::State) when the group count differs, a
    /// base lr is not a finite number >= 0, or the epoch is past the schedule's end.
    pub fn load_state<T: Element>(
        &mut self,
        state: &SchedulerState,
        optimizer: &mut (impl Optimizer<T> + ?Sized),
    ) -> Result<()> {
        if state.base_lrs.len() != optimizer.num_groups() {
            return Err(crate::OptimError::State {
                optimizer: "Scheduler",
                msg: format!(
                    "{} groups saved, the optimizer has {}",
                    state.base_lrs.len(),
                    optimizer.num_groups()
                ),
            });
        }
        if let Some(lr) = state
            .base_lrs
            .iter()
            .find(|lr| !(lr.is_finite() && **lr >= 0.0))
        {
            return Err(crate::OptimError::State {
                optimizer: "Scheduler",
                msg: format!("a base learning rate is {lr}"),
            });
        }
        self.check_epoch(state.last_epoch)
            .map_err(crate::optimizer::invalid_loaded)?;
        self.last_epoch = state.last_epoch;
        self.base_lrs = state.base_lrs.clone();
        self.apply(optimizer);
        Ok(())
    }
}

/// Multiplies the lr by `gamma` every `step_size` epochs (`StepLR`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLR {
    /// Epochs between decays.
    pub step_size: usize,
    /// The decay factor (PyTorch's default 0.1).
    pub gamma: f64,
}

impl Schedule for StepLR {
    fn lr_at(&self, epoch: usize, base: f64) -> f64 {
        base * self.gamma.powi((epoch / self.step_size.max(1)) as i32)
    }
}

/// Multiplies the lr by `gamma` at each milestone (`MultiStepLR`).
#[derive(Clone, Debug, PartialEq)]
pub struct MultiStepLR {
    /// Epochs at which to decay, increasing.
    pub milestones: Vec<usize>,
    /// The decay factor (PyTorch's default 0.1).
    pub gamma: f64,
}

impl Schedule for MultiStepLR {
    fn lr_at(&self, epoch: usize, base: f64) -> f64 {
        let passed = self.milestones.iter().filter(|&&m| m <= epoch).count();
        base * self.gamma.powi(passed as i32)
    }
}

/// Multiplies the lr by `gamma` every epoch (`ExponentialLR`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExponentialLR {
    /// The decay factor.
    pub gamma: f64,
}

impl Schedule for ExponentialLR {
    fn lr_at(&self, epoch: usize, base: f64) -> f64 {
        base * self.gamma.powi(epoch as i32)
    }
}

/// Cosine annealing from the base lr to `eta_min` over `t_max` epochs
/// (`CosineAnnealingLR`; it continues as a cosine beyond `t_max`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineAnnealingLR {
    /// Half-period in epochs.
    pub t_max: usize,
    /// The minimum lr.
    pub eta_min: f64,
}

impl CosineAnnealingLR {
    /// `CosineAnnealingLR(T_max, eta_min)`.
    pub fn new(t_max: usize, eta_min: f64) -> Self {
        CosineAnnealingLR { t_max, eta_min }
    }
}

impl Schedule for CosineAnnealingLR {
    fn lr_at(&self, epoch: usize, base: f64) -> f64 {
        let t = self.t_max.max(1) as f64;
        self.eta_min + (base - self.eta_min) * (1.0 + (PI * epoch as f64 / t).cos()) / 2.0
    }
}

/// The lr factor moves linearly from `start_factor` to `end_factor` over `total_iters`
/// epochs, then stays (`LinearLR`, PyTorch's defaults 1/3, 1, 5): the usual warm-up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearLR {
    /// The factor at epoch 0.
    pub start_factor: f64,
    /// The factor from `total_iters` on.
    pub end_factor: f64,
    /// The length of the ramp.
    pub total_iters: usize,
}

impl LinearLR {
    /// `LinearLR(start_factor, end_factor, total_iters)`.
    pub fn new(start_factor: f64, end_factor: f64, total_iters: usize) -> Self {
        LinearLR {
            start_factor,
            end_factor,
            total_iters,
        }
    }
}

impl Default for LinearLR {
    fn default() -> Self {
        LinearLR::new(1.0 / 3.0, 1.0, 5)
    }
}

impl Schedule for LinearLR {
    fn lr_at(&self, epoch: usize, base: f64) -> f64 {
        let n = self.total_iters.max(1) as f64;
        let t = epoch.min(self.total_iters) as f64;
        base * (self.start_factor + (self.end_factor - self.start_factor) * t / n)
    }
}

/// One schedule after another (`SequentialLR`): schedule `i` runs from milestone `i-1`,
/// restarted at its own epoch 0.
pub struct SequentialLR {
    schedules: Vec<Box<dyn Schedule>>,
    milestones: Vec<usize>,
}

impl SequentialLR {
    /// `SequentialLR(schedulers, milestones)`: one fewer milestone than schedules.
    ///
    /// # Panics
    /// When `milestones.len() + 1 != schedules.len()`; use [`SequentialLR::try_new`]
    /// to get an error instead.
    pub fn new(schedules: Vec<Box<dyn Schedule>>, milestones: Vec<usize>) -> Self {
        Self::try_new(schedules, milestones).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`new`](SequentialLR::new), with an error for mismatched lengths or
    /// decreasing milestones.
    ///
    /// # Errors
    /// [`OptimError::Config`](crate::OptimError::Config).
    pub fn try_new(schedules: Vec<Box<dyn Schedule>>, milestones: Vec<usize>) -> Result<Self> {
        if schedules.is_empty() || milestones.len() + 1 != schedules.len() {
            return Err(config(
                "SequentialLR",
                format!(
                    "expected {} milestones for {} schedules, got {}",
                    schedules.len().saturating_sub(1),
                    schedules.len(),
                    milestones.len()
                ),
            ));
        }
        if milestones.windows(2).any(|w| w[0] > w[1]) {
            return Err(config(
                "SequentialLR",
                format!("milestones must increase, got {milestones:?}"),
            ));
        }
        Ok(SequentialLR {
            schedules,
            milestones,
        })
    }

    fn phase(&self, epoch: usize) -> (usize, usize) {
        let i = self.milestones.iter().filter(|&&m| m <= epoch).count();
        let start = if i == 0 { 0 } else { self.milestones[i - 1] };
        (i, epoch - start)
    }
}

impl Schedule for SequentialLR {
    fn lr_at(&self, epoch: usize, base: f64) -> f64 {
        let (i, e) = self.phase(epoch);
        self.schedules[i].lr_at(e, base)
    }

    fn momentum_at(&self, epoch: usize) -> Option<f64> {
        let (i, e) = self.phase(epoch);
        self.schedules[i].momentum_at(e)
    }
}

/// How [`OneCycleLR`] interpolates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anneal {
    /// Cosine (PyTorch's default).
    Cos,
    /// Linear.
    Linear,
}

/// The 1cycle policy (`OneCycleLR`): from `max_lr / div_factor` up to `max_lr` over
/// `pct_start` of `total_steps`, then down to `initial / final_div_factor`; momentum
/// cycles inversely between `max_momentum` and `base_momentum`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneCycleLR {
    /// The peak lr.
    pub max_lr: f64,
    /// The number of steps in the cycle.
    pub total_steps: usize,
    /// Fraction of the cycle spent increasing (0.3).
    pub pct_start: f64,
    /// Interpolation (cosine).
    pub anneal: Anneal,
    /// Whether to cycle momentum (true).
    pub cycle_momentum: bool,
    /// Lowest momentum (0.85).
    pub base_momentum: f64,
    /// Highest momentum (0.95).
    pub max_momentum: f64,
    /// `initial_lr = max_lr / div_factor` (25).
    pub div_factor: f64,
    /// `min_lr = initial_lr / final_div_factor` (1e4).
    pub final_div_factor: f64,
    /// Three phases (up, down to initial, annihilate) instead of two.
    pub three_phase: bool,
}

impl OneCycleLR {
    /// PyTorch's defaults for `max_lr` and `total_steps`.
    pub fn new(max_lr: f64, total_steps: usize) -> Self {
        OneCycleLR {
            max_lr,
            total_steps,
            pct_start: 0.3,
            anneal: Anneal::Cos,
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
        }
    }

    /// A scheduler for `optimizer`, checking that it has a momentum to cycle when asked.
    ///
    /// # Errors
    /// [`OptimError::Config`](crate::OptimError::Config) for zero steps, `pct_start`
    /// outside `[0, 1]`, or `cycle_momentum` on an optimizer without momentum.
    pub fn scheduler<T: Element>(
        self,
        optimizer: &mut (impl Optimizer<T> + ?Sized),
    ) -> Result<Scheduler<Self>> {
        if self.total_steps == 0 {
            return Err(config("OneCycleLR", "total_steps must be positive"));
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.max_lr) || !positive(self.div_factor) || !positive(self.final_div_factor)
        {
            return Err(config(
                "OneCycleLR",
                format!(
                    "max_lr {}, div_factor {} and final_div_factor {} must be finite and positive",
                    self.max_lr, self.div_factor, self.final_div_factor
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.pct_start) {
            return Err(config(
                "OneCycleLR",
                format!("expected pct_start in [0, 1], got {}", self.pct_start),
            ));
        }
        if self.cycle_momentum && optimizer.momentum().is_none() {
            return Err(config(
                "OneCycleLR",
                "optimizer must support momentum or beta1 with cycle_momentum enabled",
            ));
        }
        if self.cycle_momentum {
            optimizer.set_momentum(self.max_momentum)?;
        }
        Ok(Scheduler::new(self, optimizer))
    }

    /// (end step, start lr, end lr, start momentum, end momentum) of each phase.
    fn phases(&self) -> Vec<(f64, f64, f64, f64, f64)> {
        let initial = self.max_lr / self.div_factor;
        let min_lr = initial / self.final_div_factor;
        let n = self.total_steps as f64;
        let up = self.pct_start * n - 1.0;
        let (bm, mm) = (self.base_momentum, self.max_momentum);
        if self.three_phase {
            vec![
                (up, initial, self.max_lr, mm, bm),
                (2.0 * self.pct_start * n - 2.0, self.max_lr, initial, bm, mm),
                (n - 1.0, initial, min_lr, mm, mm),
            ]
        } else {
            vec![
                (up, initial, self.max_lr, mm, bm),
                (n - 1.0, self.max_lr, min_lr, bm, mm),
            ]
        }
    }

    fn anneal(&self, start: f64, end: f64, pct: f64) -> f64 {
        match self.anneal {
            Anneal::Cos => end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0),
            Anneal::Linear => (end - start) * pct + start,
        }
    }

    fn at(&self, epoch: usize) -> (f64, f64) {
        let step = epoch as f64;
        let phases = self.phases();
        let mut start_step = 0.0;
        for (i, &(end_step, lr0, lr1, m0, m1)) in phases.iter().enumerate() {
            if step <= end_step || i == phases.len() - 1 {
                let pct = (step - start_step) / (end_step - start_step);
                return (self.anneal(lr0, lr1, pct), self.anneal(m0, m1, pct));
            }
            start_step = end_step;
        }
        unreachable!("the last phase always matches")
    }
}

impl Schedule for OneCycleLR {
    fn lr_at(&self, epoch: usize, _base: f64) -> f64 {
        self.at(epoch).0
    }

    fn momentum_at(&self, epoch: usize) -> Option<f64> {
        self.cycle_momentum.then(|| self.at(epoch).1)
    }

    fn total_steps(&self) -> Option<usize> {
        Some(self.total_steps)
    }

    fn name(&self) -> &'static str {
        "OneCycleLR"
    }
}

/// Whether [`ReduceLROnPlateau`] watches a quantity to minimise or to maximise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlateauMode {
    /// Lower is better (a loss).
    Min,
    /// Higher is better (an accuracy).
    Max,
}

/// The settings of [`ReduceLROnPlateau`]; the defaults are PyTorch's (minimise, factor
/// 0.1, patience 10, relative threshold 1e-4, no cooldown, min lr 0, eps 1e-8).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlateauConfig {
    /// Minimise or maximise.
    pub mode: PlateauMode,
    /// The lr multiplier on a plateau.
    pub factor: f64,
    /// Epochs without improvement tolerated.
    pub patience: usize,
    /// Improvement needed to count, relative (`rel`) or absolute.
    pub threshold: f64,
    /// Whether `threshold` is relative to the best value.
    pub relative_threshold: bool,
    /// Epochs to wait after a reduction.
    pub cooldown: usize,
    /// The lowest lr of every group.
    pub min_lr: f64,
    /// Reductions smaller than this are skipped.
    pub eps: f64,
}

impl Default for PlateauConfig {
    fn default() -> Self {
        PlateauConfig {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            relative_threshold: true,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        }
    }
}

/// Reduces the lr by `factor` when a metric has stopped improving for `patience` epochs
/// (`ReduceLROnPlateau`).
#[derive(Clone, Debug, PartialEq)]
pub struct ReduceLROnPlateau {
    config: PlateauConfig,
    best: Option<f64>,
    bad_epochs: usize,
    cooldown_counter: usize,
}

impl ReduceLROnPlateau {
    /// A plateau detector with `config`.
    ///
    /// # Errors
    /// [`OptimError::Config`](crate::OptimError::Config) for a factor not in `[0, 1)`.
    pub fn new(settings: PlateauConfig) -> Result<Self> {
        if !(0.0..1.0).contains(&settings.factor) {
            return Err(config("ReduceLROnPlateau", "factor should be < 1.0"));
        }
        Ok(ReduceLROnPlateau {
            config: settings,
            best: None,
            bad_epochs: 0,
            cooldown_counter: 0,
        })
    }

    fn better(&self, a: f64, best: f64) -> bool {
        let c = &self.config;
        match (c.mode, c.relative_threshold) {
            (PlateauMode::Min, true) => a < best * (1.0 - c.threshold),
            (PlateauMode::Min, false) => a < best - c.threshold,
            (PlateauMode::Max, true) => a > best * (1.0 + c.threshold),
            (PlateauMode::Max, false) => a > best + c.threshold,
        }
    }

    /// Records the epoch's metric and reduces the lrs after `patience` bad epochs.
    pub fn step<T: Element>(&mut self, metric: f64, optimizer: &mut (impl Optimizer<T> + ?Sized)) {
        match self.best {
            Some(best) if !self.better(metric, best) => self.bad_epochs += 1,
            _ => {
                self.best = Some(metric);
                self.bad_epochs = 0;
            }
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.bad_epochs = 0;
        }
        let c = self.config;
        if self.bad_epochs > c.patience {
            for g in 0..optimizer.num_groups() {
                let old = optimizer.group_lr(g);
                let new = (old * c.factor).max(c.min_lr);
                if old - new > c.eps {
                    optimizer.set_group_lr(g, new);
                }
            }
            self.cooldown_counter = c.cooldown;
            self.bad_epochs = 0;
        }
    }
}

pub use crate::schedules_more::{
    ChainedScheduler, CosineAnnealingWarmRestarts, CyclicLR, CyclicMode, LambdaLR, LrLambda,
    MultiplicativeLR, PolynomialLR,
};
