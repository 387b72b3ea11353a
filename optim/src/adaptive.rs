//! The further adaptive optimizers of `torch.optim`: Adamax, NAdam, RAdam and ASGD, each
//! PyTorch's single-tensor algorithm operation for operation.

use std::collections::BTreeMap;

use strata_autograd::Var;
use strata_tensor::Element;

use crate::adam::lerp;
use crate::optimizer::{Core, ParamGroup, check_beta, check_non_negative, delegate_groups};
use crate::{OptimError, Optimizer, OptimizerState, Result};

fn flag(b: bool) -> f64 {
    f64::from(u8::from(b))
}

/// A loaded hyper-parameter, or the current value when the state lacks it.
fn loaded(state: &BTreeMap<String, f64>, key: &str, current: f64) -> f64 {
    state.get(key).copied().unwrap_or(current)
}

/// A loaded flag (0 or 1), or the current value when the state lacks it.
fn loaded_bool(
    name: &'static str,
    state: &BTreeMap<String, f64>,
    key: &str,
    current: bool,
) -> Result<bool> {
    match state.get(key) {
        None => Ok(current),
        Some(&v) if v == 0.0 || v == 1.0 => Ok(v == 1.0),
        Some(&v) => Err(OptimError::State {
            optimizer: name,
            msg: format!("the flag {key} is {v}, not 0 or 1"),
        }),
    }
}

/// Both betas in `[0, 1)` and eps non-negative.
fn check_moments(name: &'static str, betas: (f64, f64), eps: f64) -> Result<()> {
    check_beta(name, 0, betas.0)?;
    check_beta(name, 1, betas.1)?;
    check_non_negative(name, "eps", eps)
}

/// The `Optimizer` methods every optimizer of this module shares; `$hyper` lists the
/// hyper-parameters saved with the state (and restored, with the checks of `$check`).
macro_rules! optimizer_boilerplate {
    ($name:ident, $config:ident, $label:expr, $states:expr, momentum: $momentum:tt $(, $extra:ident = $init:expr)*) => {
        impl<T: Element> $name<T> {
            /// The optimizer over `params`.
            ///
            /// # Errors
            /// [`OptimError::Config`] for settings outside their ranges, or no parameters.
            pub fn new(params: Vec<Var<T>>, cfg: $config) -> Result<Self> {
                Self::with_groups(vec![ParamGroup::new(params)], cfg)
            }

            /// The optimizer over parameter groups.
            ///
            /// # Errors
            /// As [`new`](Self::new).
            pub fn with_groups(
                groups: Vec<ParamGroup<T>>,
                cfg: $config,
            ) -> Result<Self> {
                cfg.check()?;
                Ok($name {
                    core: Core::new($label, groups, cfg.lr, cfg.weight_decay, $states)?,
                    cfg,
                    $($extra: $init,)*
                })
            }
        }

        impl<T: Element> Optimizer<T> for $name<T> {
            fn step(&mut self) -> Result<()> {
                self.update()
            }

            delegate_groups!();

            optimizer_boilerplate!(@momentum $momentum, $label);

            fn state_dict(&self) -> OptimizerState<T> {
                self.core.state_dict(self.cfg.hyper())
            }

            fn load_state_dict(&mut self, state: &OptimizerState<T>) -> Result<()> {
                let cfg = self.cfg.restored(&state.hyper)?;
                cfg.check().map_err(|e| OptimError::State {
                    optimizer: $label,
                    msg: format!("its hyper-parameters are invalid: {e}"),
                })?;
                self.core.load_state_dict(state, $states)?;
                self.cfg = cfg;
                Ok(())
            }
        }
    };
    (@momentum betas, $label:expr) => {
        fn momentum(&self) -> Option<f64> {
            Some(self.cfg.betas.0)
        }

        fn set_momentum(&mut self, momentum: f64) -> Result<()> {
            check_beta($label, 0, momentum)?;
            self.cfg.betas.0 = momentum;
            Ok(())
        }
    };
    (@momentum none, $label:expr) => {};
}

// ---------------------------------------------------------------------------------------
// Adamax
// ---------------------------------------------------------------------------------------

/// The settings of [`Adamax`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamaxConfig {
    /// Learning rate (2e-3).
    pub lr: f64,
    /// Decay of the first moment and of the infinity norm ((0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to `|g|` in the norm (1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient (0).
    pub weight_decay: f64,
    /// Maximise the objective instead.
    pub maximize: bool,
}

impl Default for AdamaxConfig {
    fn default() -> Self {
        AdamaxConfig {
            lr: 2e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

impl AdamaxConfig {
    fn check(&self) -> Result<()> {
        check_moments("Adamax", self.betas, self.eps)
    }

    fn hyper(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("beta1".into(), self.betas.0),
            ("beta2".into(), self.betas.1),
            ("eps".into(), self.eps),
            ("maximize".into(), flag(self.maximize)),
        ])
    }

    fn restored(&self, h: &BTreeMap<String, f64>) -> Result<Self> {
        Ok(AdamaxConfig {
            betas: (
                loaded(h, "beta1", self.betas.0),
                loaded(h, "beta2", self.betas.1),
            ),
            eps: loaded(h, "eps", self.eps),
            maximize: loaded_bool("Adamax", h, "maximize", self.maximize)?,
            ..*self
        })
    }
}

/// Adamax, like `torch.optim.Adamax`: Adam with the infinity norm,
/// `m ← lerp(m, g, 1-β1)`, `u ← max(β2·u, |g| + ε)`, `θ ← θ - lr/(1-β1ᵗ) · m/u`.
pub struct Adamax<T: Element = f32> {
    core: Core<T>,
    cfg: AdamaxConfig,
}

impl<T: Element> Adamax<T> {
    fn update(&mut self) -> Result<()> {
        let c = self.cfg;
        self.core.update(
            |_| T::zero(),
            |group, step| {
                let wd = T::from_f64(group.weight_decay);
                let w1 = T::from_f64(1.0 - c.betas.0);
                let b2 = T::from_f64(c.betas.1);
                let eps = T::from_f64(c.eps);
                let clr = T::from_f64(group.lr / (1.0 - c.betas.0.powf(step as f64)));
                move |p: &mut T, g: T, s: &mut [T]| {
                    let mut g = if c.maximize { -g } else { g };
                    if wd != T::zero() {
                        g += wd * *p;
                    }
                    s[0] = lerp(s[0], g, w1);
                    let a = s[1] * b2;
                    let b = g.abs() + eps;
                    // torch.amax: NaN wins.
                    s[1] = if a.is_nan() || a > b { a } else { b };
                    *p -= clr * (s[0] / s[1]);
                }
            },
        )
    }
}

optimizer_boilerplate!(Adamax, AdamaxConfig, "Adamax", &["exp_avg", "exp_inf"], momentum: betas);

// ---------------------------------------------------------------------------------------
// NAdam
// ---------------------------------------------------------------------------------------

/// The settings of [`NAdam`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NAdamConfig {
    /// Learning rate (2e-3).
    pub lr: f64,
    /// Decay rates of the moments ((0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (1e-8).
    pub eps: f64,
    /// Weight decay (0): L2 on the gradient, or decoupled (AdamW-style) when
    /// `decoupled_weight_decay`.
    pub weight_decay: f64,
    /// ψ of the momentum schedule `μ_t = β1·(1 - ½·0.96^(t·ψ))` (4e-3).
    pub momentum_decay: f64,
    /// Decay the weights directly instead of through the gradient.
    pub decoupled_weight_decay: bool,
    /// Maximise the objective instead.
    pub maximize: bool,
}

impl Default for NAdamConfig {
    fn default() -> Self {
        NAdamConfig {
            lr: 2e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            momentum_decay: 4e-3,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

impl NAdamConfig {
    fn check(&self) -> Result<()> {
        check_moments("NAdam", self.betas, self.eps)?;
        check_non_negative("NAdam", "momentum_decay", self.momentum_decay)
    }

    fn hyper(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("beta1".into(), self.betas.0),
            ("beta2".into(), self.betas.1),
            ("eps".into(), self.eps),
            ("momentum_decay".into(), self.momentum_decay),
            (
                "decoupled_weight_decay".into(),
                flag(self.decoupled_weight_decay),
            ),
            ("maximize".into(), flag(self.maximize)),
        ])
    }

    fn restored(&self, h: &BTreeMap<String, f64>) -> Result<Self> {
        Ok(NAdamConfig {
            betas: (
                loaded(h, "beta1", self.betas.0),
                loaded(h, "beta2", self.betas.1),
            ),
            eps: loaded(h, "eps", self.eps),
            momentum_decay: loaded(h, "momentum_decay", self.momentum_decay),
            decoupled_weight_decay: loaded_bool(
                "NAdam",
                h,
                "decoupled_weight_decay",
                self.decoupled_weight_decay,
            )?,
            maximize: loaded_bool("NAdam", h, "maximize", self.maximize)?,
            ..*self
        })
    }

    /// `μ_t`.
    fn mu(&self, t: u64) -> f64 {
        self.betas.0 * (1.0 - 0.5 * 0.96f64.powf(t as f64 * self.momentum_decay))
    }
}

/// NAdam, like `torch.optim.NAdam`: Adam with Nesterov momentum on the schedule
/// `μ_t = β1·(1 - ½·0.96^(t·ψ))`, the product `Π μ` (PyTorch's `mu_product`, here computed
/// from the step count) in the bias corrections.
pub struct NAdam<T: Element = f32> {
    core: Core<T>,
    cfg: NAdamConfig,
    /// The last `(step, Π_{t≤step} μ_t)` computed: parameters mostly share a step, and the
    /// next step multiplies once more instead of redoing the product.
    mu_product: std::sync::Mutex<(u64, f64)>,
}

impl<T: Element> NAdam<T> {
    fn update(&mut self) -> Result<()> {
        let c = self.cfg;
        let memo = &self.mu_product;
        self.core.update(
            |_| T::zero(),
            |group, step| {
                let lr = group.lr;
                let wd = T::from_f64(group.weight_decay);
                let decay = T::from_f64(1.0 - lr * group.weight_decay);
                // mu_product as PyTorch accumulates it, one step at a time.
                let mu_product = {
                    let mut m = memo.lock().unwrap_or_else(|e| e.into_inner());
                    if m.0 > step {
                        *m = (0, 1.0);
                    }
                    while m.0 < step {
                        m.0 += 1;
                        m.1 *= c.mu(m.0);
                    }
                    m.1
                };
                let (mu, mu_next) = (c.mu(step), c.mu(step + 1));
                let bc2 = T::from_f64(1.0 - c.betas.1.powf(step as f64));
                let grad_scale = T::from_f64(-lr * (1.0 - mu) / (1.0 - mu_product));
                let avg_scale = T::from_f64(-lr * mu_next / (1.0 - mu_product * mu_next));
                let w1 = T::from_f64(1.0 - c.betas.0);
                let b2 = T::from_f64(c.betas.1);
                let w2 = T::from_f64(1.0 - c.betas.1);
                let eps = T::from_f64(c.eps);
                move |p: &mut T, g: T, s: &mut [T]| {
                    let mut g = if c.maximize { -g } else { g };
                    if wd != T::zero() {
                        if c.decoupled_weight_decay {
                            *p *= decay;
                        } else {
                            g += wd * *p;
                        }
                    }
                    s[0] = lerp(s[0], g, w1);
                    s[1] = s[1] * b2 + w2 * g * g;
                    let denom = (s[1] / bc2).sqrt() + eps;
                    *p += grad_scale * (g / denom);
                    *p += avg_scale * (s[0] / denom);
                }
            },
        )
    }
}

optimizer_boilerplate!(NAdam, NAdamConfig, "NAdam", &["exp_avg", "exp_avg_sq"], momentum: betas, mu_product = std::sync::Mutex::new((0, 1.0)));

// ---------------------------------------------------------------------------------------
// RAdam
// ---------------------------------------------------------------------------------------

/// The settings of [`RAdam`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RAdamConfig {
    /// Learning rate (1e-3).
    pub lr: f64,
    /// Decay rates of the moments ((0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (1e-8).
    pub eps: f64,
    /// Weight decay (0): L2, or decoupled with `decoupled_weight_decay`.
    pub weight_decay: f64,
    /// Decay the weights directly instead of through the gradient.
    pub decoupled_weight_decay: bool,
    /// Maximise the objective instead.
    pub maximize: bool,
}

impl Default for RAdamConfig {
    fn default() -> Self {
        RAdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

impl RAdamConfig {
    fn check(&self) -> Result<()> {
        check_moments("RAdam", self.betas, self.eps)
    }

    fn hyper(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("beta1".into(), self.betas.0),
            ("beta2".into(), self.betas.1),
            ("eps".into(), self.eps),
            (
                "decoupled_weight_decay".into(),
                flag(self.decoupled_weight_decay),
            ),
            ("maximize".into(), flag(self.maximize)),
        ])
    }

    fn restored(&self, h: &BTreeMap<String, f64>) -> Result<Self> {
        Ok(RAdamConfig {
            betas: (
                loaded(h, "beta1", self.betas.0),
                loaded(h, "beta2", self.betas.1),
            ),
            eps: loaded(h, "eps", self.eps),
            decoupled_weight_decay: loaded_bool(
                "RAdam",
                h,
                "decoupled_weight_decay",
                self.decoupled_weight_decay,
            )?,
            maximize: loaded_bool("RAdam", h, "maximize", self.maximize)?,
            ..*self
        })
    }
}

/// RAdam, like `torch.optim.RAdam`: Adam whose adaptive step is rectified by the variance
/// of its estimate, `r_t = √((ρ_t-4)(ρ_t-2)ρ_∞ / ((ρ_∞-4)(ρ_∞-2)ρ_t))`, and replaced by
/// plain momentum while `ρ_t ≤ 5` (the first steps).
pub struct RAdam<T: Element = f32> {
    core: Core<T>,
    cfg: RAdamConfig,
}

impl<T: Element> RAdam<T> {
    fn update(&mut self) -> Result<()> {
        let c = self.cfg;
        self.core.update(
            |_| T::zero(),
            |group, step| {
                let lr = group.lr;
                let wd = T::from_f64(group.weight_decay);
                let decay = T::from_f64(1.0 - lr * group.weight_decay);
                let (beta1, beta2) = c.betas;
                let t = step as f64;
                let bc1 = 1.0 - beta1.powf(t);
                let bc2 = 1.0 - beta2.powf(t);
                let rho_inf = 2.0 / (1.0 - beta2) - 1.0;
                let rho_t = rho_inf - 2.0 * t * beta2.powf(t) / bc2;
                let rect = (rho_t > 5.0).then(|| {
                    ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                        / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                        .sqrt()
                });
                let (bc1, lr_t) = (T::from_f64(bc1), T::from_f64(lr));
                let bc2_sqrt = T::from_f64(bc2.sqrt());
                let rect = rect.map(T::from_f64);
                let w1 = T::from_f64(1.0 - beta1);
                let b2 = T::from_f64(beta2);
                let w2 = T::from_f64(1.0 - beta2);
                let eps = T::from_f64(c.eps);
                move |p: &mut T, g: T, s: &mut [T]| {
                    let mut g = if c.maximize { -g } else { g };
                    if wd != T::zero() {
                        if c.decoupled_weight_decay {
                            *p *= decay;
                        } else {
                            g += wd * *p;
                        }
                    }
                    s[0] = lerp(s[0], g, w1);
                    s[1] = s[1] * b2 + w2 * g * g;
                    let corrected = s[0] / bc1;
                    match rect {
                        Some(r) => {
                            let adaptive = bc2_sqrt / (s[1].sqrt() + eps);
                            *p -= corrected * lr_t * adaptive * r;
                        }
                        None => *p -= corrected * lr_t,
                    }
                }
            },
        )
    }
}

optimizer_boilerplate!(RAdam, RAdamConfig, "RAdam", &["exp_avg", "exp_avg_sq"], momentum: betas);

// ---------------------------------------------------------------------------------------
// ASGD
// ---------------------------------------------------------------------------------------

/// The settings of [`Asgd`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AsgdConfig {
    /// Learning rate (1e-2).
    pub lr: f64,
    /// Decay term λ (1e-4).
    pub lambd: f64,
    /// Power of the step-size decay (0.75).
    pub alpha: f64,
    /// The step after which averaging starts (1e6).
    pub t0: f64,
    /// L2 penalty added to the gradient (0).
    pub weight_decay: f64,
    /// Maximise the objective instead.
    pub maximize: bool,
}

impl Default for AsgdConfig {
    fn default() -> Self {
        AsgdConfig {
            lr: 1e-2,
            lambd: 1e-4,
            alpha: 0.75,
            t0: 1e6,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

impl AsgdConfig {
    fn check(&self) -> Result<()> {
        check_non_negative("ASGD", "lambd", self.lambd)?;
        check_non_negative("ASGD", "alpha", self.alpha)?;
        check_non_negative("ASGD", "t0", self.t0)
    }

    fn hyper(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("lambd".into(), self.lambd),
            ("alpha".into(), self.alpha),
            ("t0".into(), self.t0),
            ("maximize".into(), flag(self.maximize)),
        ])
    }

    fn restored(&self, h: &BTreeMap<String, f64>) -> Result<Self> {
        Ok(AsgdConfig {
            lambd: loaded(h, "lambd", self.lambd),
            alpha: loaded(h, "alpha", self.alpha),
            t0: loaded(h, "t0", self.t0),
            maximize: loaded_bool("ASGD", h, "maximize", self.maximize)?,
            ..*self
        })
    }
}

/// Averaged SGD, like `torch.optim.ASGD`: `θ ← θ·(1 - λη) - η·g` with
/// `η_t = lr / (1 + λ·lr·(t-1))^α`, and the running average `ax` of the iterates from step
/// `t0` on (kept in the state as `ax`; read it with [`Asgd::averaged`]). PyTorch keeps `η`
/// and `μ` as state; here they follow from the step count and the current learning rate.
pub struct Asgd<T: Element = f32> {
    core: Core<T>,
    cfg: AsgdConfig,
}

impl<T: Element> Asgd<T> {
    fn update(&mut self) -> Result<()> {
        let c = self.cfg;
        self.core.update(
            |_| T::zero(),
            |group, step| {
                let lr = group.lr;
                let prev = (step - 1) as f64;
                let eta = lr / (1.0 + c.lambd * lr * prev).powf(c.alpha);
                let mu = 1.0 / (prev - c.t0).max(1.0);
                let wd = T::from_f64(group.weight_decay);
                let shrink = T::from_f64(1.0 - c.lambd * eta);
                let (eta, mu) = (T::from_f64(eta), T::from_f64(mu));
                move |p: &mut T, g: T, s: &mut [T]| {
                    let mut g = if c.maximize { -g } else { g };
                    if wd != T::zero() {
                        g += wd * *p;
                    }
                    *p *= shrink;
                    *p -= eta * g;
                    if mu != T::one() {
                        s[0] += (*p - s[0]) * mu;
                    } else {
                        s[0] = *p;
                    }
                }
            },
        )
    }

    /// The averaged parameters `ax` (one tensor per parameter that has taken a step),
    /// PyTorch's `state['ax']`.
    pub fn averaged(&self) -> Vec<Option<strata_tensor::Tensor<T>>> {
        let state = self.core.state_dict(BTreeMap::new());
        let total: usize = self.core.groups.iter().map(|g| g.params.len()).sum();
        (0..total)
            .map(|i| state.get(&format!("state.{i}.ax")).cloned())
            .collect()
    }
}

optimizer_boilerplate!(Asgd, AsgdConfig, "ASGD", &["ax"], momentum: none);
