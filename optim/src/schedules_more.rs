//! The further learning-rate schedules of `torch.optim.lr_scheduler`: `LambdaLR`,
//! `MultiplicativeLR`, `PolynomialLR`, `CosineAnnealingWarmRestarts`, `CyclicLR` and
//! `ChainedScheduler`, as closed forms of the epoch (so they resume from `last_epoch`).

use std::f64::consts::PI;
use std::sync::Mutex;

use crate::error::config;
use crate::schedule::Schedule;
use crate::{Optimizer, Result};

/// The factor of a [`LambdaLR`] or [`MultiplicativeLR`] at an epoch.
pub type LrLambda = Box<dyn Fn(usize) -> f64 + Send + Sync>;

/// `base_lr · f(epoch)`, like `LambdaLR(optimizer, lr_lambda)` (one function for all
/// groups).
pub struct LambdaLR {
    /// The factor.
    pub lr_lambda: LrLambda,
}

impl Schedule for LambdaLR {
    fn name(&self) -> &'static str {
        "LambdaLR"
    }

    fn lr_at(&self, epoch: usize, base: f64) -> f64 {
        base * (self.lr_lambda)(epoch)
    }
}

/// The previous learning rate times `f(epoch)` from epoch 1 on, like
/// `MultiplicativeLR(optimizer, lr_lambda)`: `base_lr · Π_{k=1..=epoch} f(k)`.
pub struct MultiplicativeLR {
    lr_lambda: LrLambda,
    /// The last `(epoch, product)` computed, so that stepping one epoch multiplies once.
    memo: Mutex<(usize, f64)>,
}

impl MultiplicativeLR {
    /// The schedule of `lr_lambda`.
    pub fn new(lr_lambda: LrLambda) -> Self {
        MultiplicativeLR {
            lr_lambda,
            memo: Mutex::new((0, 1.0)),
        }
    }
}

impl Schedule for MultiplicativeLR {
    fn name(&self) -> &'static str {
        "MultiplicativeLR"
    }

    fn lr_at(&self, epoch: usize, base: f64) -> f64 {
        let mut m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if m.0 > epoch {
            *m = (0, 1.0);
        }
        while m.0 < epoch {
            m.0 += 1;
            m.1 *= (self.lr_lambda)(m.0);
        }
        base * m.1
    }
}

/// Polynomial decay to 0 over `total_iters` epochs, like `PolynomialLR(optimizer,
/// total_iters=5, power=1.0)`: `base_lr · (1 - min(epoch, total)/total)^power`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolynomialLR {
    /// Epochs to reach 0.
    pub total_iters: usize,
    /// The power of the decay.
    pub power: f64,
}

impl Default for PolynomialLR {
    fn default() -> Self {
        PolynomialLR {
            total_iters: 5,
            power: 1.0,
        }
    }
}

impl Schedule for PolynomialLR {
    fn name(&self) -> &'static str {
        "PolynomialLR"
    }

    fn lr_at(&self, epoch: usize, base: f64) -> f64 {
        if self.total_iters == 0 {
            return base;
        }
        let t = epoch.min(self.total_iters) as f64 / self.total_iters as f64;
        base * (1.0 - t).powf(self.power)
    }
}

/// Cosine annealing with warm restarts (SGDR), like
/// `CosineAnnealingWarmRestarts(optimizer, T_0, T_mult=1, eta_min=0)`: cycles of `T_0`,
/// `T_0·T_mult`, … epochs, each annealing from the base lr to `eta_min`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineAnnealingWarmRestarts {
    t_0: usize,
    t_mult: usize,
    eta_min: f64,
}

impl CosineAnnealingWarmRestarts {
    /// The schedule.
    ///
    /// # Errors
    /// [`OptimError::Config`](crate::OptimError::Config) when `t_0` or `t_mult` is below 1
    /// or `eta_min` is not finite, as PyTorch refuses them.
    pub fn new(t_0: usize, t_mult: usize, eta_min: f64) -> Result<Self> {
        if t_0 < 1 || t_mult < 1 || !eta_min.is_finite() {
            return Err(config(
                "CosineAnnealingWarmRestarts",
                format!(
                    "expected T_0 >= 1, T_mult >= 1 and a finite eta_min, got {t_0}, {t_mult}, {eta_min}"
                ),
            ));
        }
        Ok(CosineAnnealingWarmRestarts {
            t_0,
            t_mult,
            eta_min,
        })
    }

    /// `(T_cur, T_i)`: the position in the current cycle and its length.
    fn cycle(&self, epoch: usize) -> (f64, f64) {
        let (t0, m) = (self.t_0 as f64, self.t_mult as f64);
        let e = epoch as f64;
        if self.t_mult == 1 {
            return ((epoch % self.t_0) as f64, t0);
        }
        // The cycle n with T_0·(m^n - 1)/(m - 1) <= e, by integer steps (no log rounding).
        let (mut start, mut len) = (0.0, t0);
        while start + len <= e {
            start += len;
            len *= m;
        }
        (e - start, len)
    }
}

impl Schedule for CosineAnnealingWarmRestarts {
    fn name(&self) -> &'static str {
        "CosineAnnealingWarmRestarts"
    }

    fn lr_at(&self, epoch: usize, base: f64) -> f64 {
        let (t_cur, t_i) = self.cycle(epoch);
        self.eta_min + (base - self.eta_min) * (1.0 + (PI * t_cur / t_i).cos()) / 2.0
    }
}

/// The shapes of [`CyclicLR`]'s cycles.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CyclicMode {
    /// A triangle of constant height.
    Triangular,
    /// A triangle whose height halves every cycle.
    Triangular2,
    /// A triangle scaled by `gamma^iteration`.
    ExpRange {
        /// The decay per iteration.
        gamma: f64,
    },
}

/// Cyclical learning rates (Smith 2017), like `CyclicLR(optimizer, base_lr, max_lr,
/// step_size_up=2000, step_size_down=None, mode, gamma, cycle_momentum=True,
/// base_momentum=0.8, max_momentum=0.9)`, stepped per batch: the lr climbs from `base_lr`
/// to `max_lr` in `step_size_up` steps and back in `step_size_down`; with
/// `cycle_momentum`, the momentum moves the opposite way between `max_momentum` and
/// `base_momentum`. As in PyTorch, the optimizer's own lr is replaced by `base_lr`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CyclicLR {
    /// The lower bound of the cycle.
    pub base_lr: f64,
    /// The upper bound.
    pub max_lr: f64,
    /// Steps of the increasing half (2000).
    pub step_size_up: usize,
    /// Steps of the decreasing half (`None`: as many as up).
    pub step_size_down: Option<usize>,
    /// The cycle's shape.
    pub mode: CyclicMode,
    /// Cycle the momentum (or β1) inversely.
    pub cycle_momentum: bool,
    /// The momentum at the lr's peak.
    pub base_momentum: f64,
    /// The momentum at the lr's trough.
    pub max_momentum: f64,
}

impl CyclicLR {
    /// The schedule with PyTorch's defaults for everything but the bounds.
    pub fn new(base_lr: f64, max_lr: f64) -> Self {
        CyclicLR {
            base_lr,
            max_lr,
            step_size_up: 2000,
            step_size_down: None,
            mode: CyclicMode::Triangular,
            cycle_momentum: true,
            base_momentum: 0.8,
            max_momentum: 0.9,
        }
    }

    /// A scheduler on `optimizer`, after checking that the settings fit (and, with
    /// `cycle_momentum`, that the optimizer has a momentum to cycle, as PyTorch checks).
    ///
    /// # Errors
    /// [`OptimError::Config`](crate::OptimError::Config) for non-finite or negative bounds,
    /// a cycle of 0 steps, or `cycle_momentum` with an optimizer without momentum.
    pub fn scheduler<T: strata_tensor::Element>(
        self,
        optimizer: &mut (impl Optimizer<T> + ?Sized),
    ) -> Result<crate::schedule::Scheduler<Self>> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !ok(self.base_lr) || !ok(self.max_lr) {
            return Err(config(
                "CyclicLR",
                "base_lr and max_lr must be finite and non-negative",
            ));
        }
        if self.step_size_up + self.step_size_down.unwrap_or(self.step_size_up) == 0 {
            return Err(config("CyclicLR", "a cycle needs at least one step"));
        }
        if self.cycle_momentum && optimizer.momentum().is_none() {
            return Err(config(
                "CyclicLR",
                "optimizer must support momentum or beta1 with `cycle_momentum` enabled",
            ));
        }
        Ok(crate::schedule::Scheduler::new(self, optimizer))
    }

    /// `(scale_factor, scale)` at `epoch`: where in the triangle, and the mode's factor.
    fn position(&self, epoch: usize) -> (f64, f64) {
        let up = self.step_size_up as f64;
        let down = self.step_size_down.unwrap_or(self.step_size_up) as f64;
        let total = up + down;
        let ratio = up / total;
        let t = epoch as f64;
        let cycle = (1.0 + t / total).floor();
        let x = 1.0 + t / total - cycle;
        let factor = if x <= ratio {
            x / ratio
        } else {
            (x - 1.0) / (ratio - 1.0)
        };
        let scale = match self.mode {
            CyclicMode::Triangular => 1.0,
            CyclicMode::Triangular2 => 1.0 / 2f64.powf(cycle - 1.0),
            CyclicMode::ExpRange { gamma } => gamma.powf(t),
        };
        (factor, scale)
    }
}

impl Schedule for CyclicLR {
    fn name(&self) -> &'static str {
        "CyclicLR"
    }

    fn lr_at(&self, epoch: usize, _base: f64) -> f64 {
        let (factor, scale) = self.position(epoch);
        self.base_lr + (self.max_lr - self.base_lr) * factor * scale
    }

    fn momentum_at(&self, epoch: usize) -> Option<f64> {
        self.cycle_momentum.then(|| {
            let (factor, scale) = self.position(epoch);
            self.max_momentum - (self.max_momentum - self.base_momentum) * factor * scale
        })
    }
}

/// Several schedules at once, like `ChainedScheduler([s1, s2, …])`: each multiplies the
/// learning rate by its own factor, `base_lr · Π_i lr_i(epoch)/base_lr`. This is PyTorch's
/// result for schedules that change the lr by factors (step, multi-step, exponential,
/// linear, constant, polynomial, lambda and multiplicative ones); for others (cosine,
/// cyclic) PyTorch's chained result depends on the order of the updates and this closed
/// form does not reproduce it.
pub struct ChainedScheduler {
    /// The schedules, whose factors multiply.
    pub schedules: Vec<Box<dyn Schedule>>,
}

impl Schedule for ChainedScheduler {
    fn name(&self) -> &'static str {
        "ChainedScheduler"
    }

    fn lr_at(&self, epoch: usize, base: f64) -> f64 {
        if base == 0.0 {
            return 0.0;
        }
        self.schedules
            .iter()
            .fold(base, |lr, s| lr * s.lr_at(epoch, base) / base)
    }
}
