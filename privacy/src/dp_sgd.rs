//! The DP-SGD step (Abadi et al. 2016): clip each sample's gradient, sum, add Gaussian
//! noise, divide by the expected batch size — then any strata optimizer takes the step.

use strata_autograd::Var;
use strata_nn::Module;
use strata_tensor::{Element, Tensor};

use crate::accountant::{Accountant, AccountantKind};
use crate::error::config;
use crate::grad_sample::{GradSampler, LossReduction, NormMethod};
use crate::group::ProcessGroup;
use crate::noise::GaussianNoise;
use crate::{PrivacyError, Result};

/// How per-sample gradients are clipped.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Clipping {
    /// The whole gradient of a sample, all parameters together, to `max_grad_norm`.
    #[default]
    Flat,
    /// Each parameter separately, to `max_grad_norm / √k` for `k` parameters, so that a
    /// sample's whole gradient still has norm at most `max_grad_norm`.
    PerLayer,
    /// Each parameter to its own threshold (in the model's parameter order); the
    /// sensitivity is the root of the sum of their squares.
    PerLayerThresholds(Vec<f64>),
}

/// The settings of [`DpSgd`].
#[derive(Clone, Debug, PartialEq)]
pub struct DpSgdConfig {
    /// `C`: the largest norm a sample's gradient may contribute.
    pub max_grad_norm: f64,
    /// `σ`: the noise has standard deviation `σ·C`.
    pub noise_multiplier: f64,
    /// `q`: each sample's probability of being in a (logical) batch.
    pub sample_rate: f64,
    /// `q·n`, what the noisy sum is divided by (for a mean loss).
    pub expected_batch_size: f64,
    /// Flat or per-layer clipping.
    pub clipping: Clipping,
    /// How the per-sample norms are computed (ghost where cheaper, by default).
    pub norm_method: NormMethod,
    /// How the loss the forward returns is reduced over the batch.
    pub loss_reduction: LossReduction,
    /// Whether activations have the batch first.
    pub batch_first: bool,
    /// Which accountant tracks the steps.
    pub accountant: AccountantKind,
}

impl DpSgdConfig {
    /// Flat clipping, ghost norms where cheaper, a mean loss, batch first, RDP accounting.
    pub fn new(
        max_grad_norm: f64,
        noise_multiplier: f64,
        sample_rate: f64,
        expected_batch_size: f64,
    ) -> Self {
        DpSgdConfig {
            max_grad_norm,
            noise_multiplier,
            sample_rate,
            expected_batch_size,
            clipping: Clipping::Flat,
            norm_method: NormMethod::Auto,
            loss_reduction: LossReduction::Mean,
            batch_first: true,
            accountant: AccountantKind::Rdp,
        }
    }

    fn validate(&self, parameters: usize) -> Result<()> {
        let positive = |what: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(config(
                    what,
                    format!("must be positive and finite, got {v}"),
                ))
            }
        };
        positive("max_grad_norm", self.max_grad_norm)?;
        positive("expected_batch_size", self.expected_batch_size)?;
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0) {
            return Err(config(
                "noise_multiplier",
                format!(
                    "must be finite and non-negative, got {}",
                    self.noise_multiplier
                ),
            ));
        }
        if !(self.sample_rate > 0.0 && self.sample_rate <= 1.0) {
            return Err(config(
                "sample_rate",
                format!("must be within (0, 1], got {}", self.sample_rate),
            ));
        }
        if let Clipping::PerLayerThresholds(t) = &self.clipping {
            if t.len() != parameters {
                return Err(config(
                    "clipping",
                    format!("{} thresholds for {parameters} parameters", t.len()),
                ));
            }
            for &v in t {
                positive("clipping threshold", v)?;
            }
        }
        Ok(())
    }
}

/// What one (micro-)batch contributed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchStats {
    /// The samples in it.
    pub batch_size: usize,
    /// The loss the forward returned (NaN for an empty batch).
    pub loss: f64,
    /// How many samples had a gradient above the clipping threshold.
    pub clipped: usize,
    /// The mean norm of the samples' unclipped gradients.
    pub mean_norm: f64,
}

/// The (ε, δ) guarantee of a run so far, with everything it rests on: what a checkpoint's
/// provenance record states.
#[derive(Clone, Debug, PartialEq)]
pub struct Guarantee {
    /// ε at `delta`.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// The accountant (`"rdp"` or `"prv"`).
    pub accountant: &'static str,
    /// The noise multiplier σ asked for.
    pub noise_multiplier: f64,
    /// The noise multiplier accounted for, after the grid's sensitivity margin.
    pub effective_noise_multiplier: f64,
    /// The clipping bound C.
    pub max_grad_norm: f64,
    /// `"flat"` or `"per-layer"`.
    pub clipping: &'static str,
    /// The sample rate q.
    pub sample_rate: f64,
    /// The noisy steps taken.
    pub steps: u64,
    /// Whether the noise came from the OS-seeded generator (rank 0's, across ranks);
    /// `false` means seeded noise and no privacy at all.
    pub secure_noise: bool,
    /// The processes each step was shared among (1 for one process); the noise was added
    /// once, by rank 0, to the sum over all of them (see [`ProcessGroup`]).
    pub world_size: usize,
}

/// DP-SGD over a model's parameters (see the module docs).
///
/// Each [`accumulate`](DpSgd::accumulate) runs a forward and backward on a (micro-)batch,
/// clips every sample's gradient and adds the clipped sum to the step's; one
/// [`finish_step`](DpSgd::finish_step) adds the noise once, divides by the expected batch
/// size, writes each parameter's `.grad`, and records the step with the accountant. The
/// optimizer then steps as usual. [`step`](DpSgd::step) is both for a batch that fits.
///
/// ```
/// use strata_autograd::Var;
/// use strata_nn::loss::{ClassLossOptions, cross_entropy};
/// use strata_nn::{Forward, Linear, Module, ReLU, Sequential};
/// use strata_optim::{Optimizer, Sgd, SgdConfig};
/// use strata_privacy::{DpSgd, DpSgdConfig, GaussianNoise};
/// use strata_tensor::{IndexTensor, Tensor, seeded_rng};
///
/// let mut rng = seeded_rng(0);
/// let model = Sequential::<f32>::new()
///     .push(Linear::new(4, 8, true, &mut rng))
///     .push(ReLU)
///     .push(Linear::new(8, 2, true, &mut rng));
/// let config = DpSgdConfig::new(1.0, 1.1, 0.01, 16.0); // C, σ, q, q·n
/// let mut dp = DpSgd::new(&model, config, GaussianNoise::secure()?)?;
/// let mut opt = Sgd::new(model.parameters(), SgdConfig { lr: 0.1, ..SgdConfig::default() })?;
/// let x = Var::new(Tensor::randn(&[16, 4], &mut rng));
/// let y = IndexTensor::from_vec((0..16).map(|i| i % 2).collect(), &[16])?;
/// dp.step(16, || cross_entropy(&model.forward(&x)?, &y, &ClassLossOptions::default()))?;
/// opt.step()?;
/// let eps = dp.epsilon(1e-5)?;
/// assert!(eps > 0.0 && eps < 1.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DpSgd<T: Element = f32> {
    sampler: GradSampler<T>,
    config: DpSgdConfig,
    noise: GaussianNoise,
    sums: Vec<Option<Tensor<f64>>>,
    thresholds: Vec<f64>,
    sensitivity: f64,
    effective_sigma: f64,
    accountant: Box<dyn Accountant>,
    pending: bool,
    /// The ranks the step is shared with, and whether rank 0's noise is secure; `None`
    /// for one process.
    group: Option<(Box<dyn ProcessGroup>, bool)>,
}

impl<T: Element> DpSgd<T> {
    /// DP-SGD over `model`'s trainable parameters.
    ///
    /// # Errors
    /// [`PrivacyError::Config`] for settings out of range; [`PrivacyError::BatchNorm`] for a
    /// model with BatchNorm.
    pub fn new<M: Module<T> + ?Sized>(
        model: &M,
        config: DpSgdConfig,
        noise: GaussianNoise,
    ) -> Result<Self> {
        let sampler = GradSampler::new(model)?
            .loss_reduction(config.loss_reduction)
            .batch_first(config.batch_first);
        let k = sampler.parameters().len();
        config.validate(k)?;
        let thresholds = match &config.clipping {
            Clipping::Flat => vec![config.max_grad_norm; k],
            Clipping::PerLayer => vec![config.max_grad_norm / (k.max(1) as f64).sqrt(); k],
            Clipping::PerLayerThresholds(t) => t.clone(),
        };
        let sensitivity = match &config.clipping {
            Clipping::Flat | Clipping::PerLayer => config.max_grad_norm,
            Clipping::PerLayerThresholds(t) => t.iter().map(|c| c * c).sum::<f64>().sqrt(),
        };
        let dims: usize = sampler.parameters().iter().map(|(_, p)| p.numel()).sum();
        let effective_sigma =
            GaussianNoise::effective_noise_multiplier(config.noise_multiplier, sensitivity, dims);
        Ok(DpSgd {
            sampler,
            accountant: config.accountant.make(),
            config,
            noise,
            sums: vec![None; k],
            thresholds,
            sensitivity,
            effective_sigma,
            pending: false,
            group: None,
        })
    }

    /// Shares every step with the other processes of `group` (DP-SGD across ranks, see
    /// [`ProcessGroup`] for the mechanism and its sample rate): each process accumulates
    /// the clipped gradients of its own samples, [`finish_step`](DpSgd::finish_step) sums
    /// them over the processes, rank 0 alone adds the noise, and every process gets the
    /// same noisy gradient. Every process calls it, with the same settings (checked:
    /// σ, C, q, `q·n`, clipping and the parameters' sizes must agree with rank 0's); only
    /// rank 0's noise source is used, and the guarantee records whether it is secure.
    ///
    /// # Errors
    /// [`PrivacyError::Config`] on every process when any process's settings differ from
    /// rank 0's; communication errors.
    pub fn across(mut self, group: impl ProcessGroup + 'static) -> Result<Self> {
        let dims: usize = self
            .sampler
            .parameters()
            .iter()
            .map(|(_, p)| p.numel())
            .sum();
        let mine = [
            self.config.noise_multiplier,
            self.sensitivity,
            self.config.sample_rate,
            self.config.expected_batch_size,
            self.thresholds.iter().sum::<f64>(),
            self.sums.len() as f64,
            dims as f64,
            match self.config.loss_reduction {
                LossReduction::Mean => 0.0,
                LossReduction::Sum => 1.0,
            },
            if self.noise.is_secure() { 1.0 } else { 0.0 },
        ];
        let mut root = mine;
        group.broadcast(&mut root, 0)?;
        // Every rank learns whether any differs, so that all fail together rather than
        // leave the others waiting in the first step's collective.
        let differs = mine[..mine.len() - 1] != root[..root.len() - 1];
        let mut flags = [f64::from(u8::from(differs))];
        group.sum(&mut flags)?;
        if flags[0] > 0.0 {
            return Err(config(
                "DpSgd::across",
                format!(
                    "the ranks' DP-SGD settings differ (σ, C, q, q·n, clipping thresholds,                      parameters, coordinates, reduction): rank 0 has {:?}, rank {} has {:?}{}",
                    &root[..root.len() - 1],
                    group.rank(),
                    &mine[..mine.len() - 1],
                    if differs {
                        ""
                    } else {
                        " (another rank differs)"
                    }
                ),
            ));
        }
        let secure = root[root.len() - 1] > 0.0;
        self.group = Some((Box::new(group), secure));
        Ok(self)
    }

    /// The number of processes each step is shared among (1 without
    /// [`across`](DpSgd::across)).
    pub fn world_size(&self) -> usize {
        self.group.as_ref().map_or(1, |(g, _)| g.size())
    }

    /// The settings.
    pub fn config(&self) -> &DpSgdConfig {
        &self.config
    }

    /// The per-sample gradient engine (parameters, batch layout).
    pub fn sampler(&self) -> &GradSampler<T> {
        &self.sampler
    }

    /// Runs `forward` (the loss of a batch of `batch_size` samples) and adds the batch's
    /// clipped per-sample gradients to the step's sum. An empty batch (possible under
    /// Poisson sampling) contributes nothing and does not call `forward`.
    ///
    /// # Errors
    /// As [`GradSampler::capture`].
    pub fn accumulate<E>(
        &mut self,
        batch_size: usize,
        forward: impl FnOnce() -> std::result::Result<Var<T>, E>,
    ) -> Result<BatchStats>
    where
        PrivacyError: From<E>,
    {
        self.pending = true;
        if batch_size == 0 {
            return Ok(BatchStats {
                batch_size: 0,
                loss: f64::NAN,
                clipped: 0,
                mean_norm: 0.0,
            });
        }
        let captured = self.sampler.capture(batch_size, forward)?;
        let k = self.sums.len();
        let mut norms: Vec<Vec<f64>> = Vec::with_capacity(k);
        for i in 0..k {
            norms.push(captured.norms_sq(i, self.config.norm_method)?);
        }
        let total: Vec<f64> = (0..batch_size)
            .map(|n| norms.iter().map(|v| v[n]).sum::<f64>().sqrt())
            .collect();
        let clip = |norm: f64, c: f64| (c / (norm + 1e-6)).min(1.0);
        let flat = matches!(self.config.clipping, Clipping::Flat);
        let mut clipped = 0;
        let flat_factors: Vec<f64> = total
            .iter()
            .map(|&n| clip(n, self.config.max_grad_norm))
            .collect();
        if flat {
            clipped = total
                .iter()
                .filter(|&&n| n > self.config.max_grad_norm)
                .count();
        }
        for (i, param_norms) in norms.iter().enumerate() {
            let factors: Vec<f64> = if flat {
                flat_factors.clone()
            } else {
                let t = self.thresholds[i];
                let per: Vec<f64> = param_norms.iter().map(|s| clip(s.sqrt(), t)).collect();
                clipped += param_norms.iter().filter(|s| s.sqrt() > t).count();
                per
            };
            let part = captured.weighted_sum(i, &factors)?.cast::<f64>();
            self.sums[i] = Some(match self.sums[i].take() {
                None => part,
                Some(acc) => acc.add(&part)?,
            });
        }
        Ok(BatchStats {
            batch_size,
            loss: captured.loss(),
            clipped,
            mean_norm: total.iter().sum::<f64>() / batch_size as f64,
        })
    }

    /// Ends a logical step: adds N(0, (σ·C)²) to each coordinate of the clipped sum,
    /// divides by the expected batch size (for a mean loss), writes every parameter's
    /// `.grad` (replacing what was there), and records the step with the accountant.
    ///
    /// # Errors
    /// [`PrivacyError::Config`] when no batch was accumulated since the last step, or the
    /// sum is too large for exact noise (see [`GaussianNoise::add_noise`]).
    pub fn finish_step(&mut self) -> Result<()> {
        if !self.pending {
            return Err(config(
                "DpSgd::finish_step",
                "no batch was accumulated since the last step",
            ));
        }
        let std = self.config.noise_multiplier * self.sensitivity;
        let divide = match self.config.loss_reduction {
            LossReduction::Mean => self.config.expected_batch_size,
            LossReduction::Sum => 1.0,
        };
        let shapes: Vec<Vec<usize>> = self
            .sampler
            .parameters()
            .iter()
            .map(|(_, p)| p.shape().to_vec())
            .collect();
        let sums: Vec<Vec<f64>> = shapes
            .iter()
            .enumerate()
            .map(|(i, shape)| match self.sums[i].take() {
                Some(sum) => sum.contiguous().to_vec(),
                None => vec![0.0; shape.iter().product()],
            })
            .collect();
        let noisy = match &self.group {
            None => {
                let mut sums = sums;
                for values in &mut sums {
                    self.noise.add_noise(values, std)?;
                }
                sums
            }
            Some((group, _)) => {
                // One flat buffer: the clipped sums are summed over the ranks, rank 0 adds
                // the noise once (parameter by parameter, as one process does), and its
                // noisy sum is what every rank gets.
                let mut flat: Vec<f64> = sums.concat();
                group.sum(&mut flat)?;
                if group.rank() == 0 {
                    let mut at = 0;
                    for shape in &shapes {
                        let len: usize = shape.iter().product();
                        self.noise.add_noise(&mut flat[at..at + len], std)?;
                        at += len;
                    }
                }
                group.broadcast(&mut flat, 0)?;
                let mut at = 0;
                shapes
                    .iter()
                    .map(|shape| {
                        let len: usize = shape.iter().product();
                        at += len;
                        flat[at - len..at].to_vec()
                    })
                    .collect()
            }
        };
        for ((_, p), values) in self.sampler.parameters().iter().zip(noisy) {
            let grad: Vec<T> = values.iter().map(|v| T::from_f64(v / divide)).collect();
            p.set_grad(Some(Tensor::from_vec(grad, p.shape())?))?;
        }
        self.accountant
            .step(self.effective_sigma, self.config.sample_rate)?;
        self.pending = false;
        Ok(())
    }

    /// [`accumulate`](DpSgd::accumulate) then [`finish_step`](DpSgd::finish_step): one
    /// step on one batch.
    ///
    /// # Errors
    /// As both.
    pub fn step<E>(
        &mut self,
        batch_size: usize,
        forward: impl FnOnce() -> std::result::Result<Var<T>, E>,
    ) -> Result<BatchStats>
    where
        PrivacyError: From<E>,
    {
        let stats = self.accumulate(batch_size, forward)?;
        self.finish_step()?;
        Ok(stats)
    }

    /// The noisy steps taken.
    pub fn steps(&self) -> u64 {
        self.accountant.history().iter().map(|h| h.2).sum()
    }

    /// The accountant.
    pub fn accountant(&self) -> &dyn Accountant {
        self.accountant.as_ref()
    }

    /// ε spent so far at `delta`.
    ///
    /// # Errors
    /// As [`Accountant::epsilon`].
    pub fn epsilon(&self, delta: f64) -> Result<f64> {
        self.accountant.epsilon(delta)
    }

    /// Whether the noise is private: whether the generator that adds it (rank 0's, across
    /// ranks) is the OS-seeded one.
    pub fn secure_noise(&self) -> bool {
        match &self.group {
            Some((_, root_secure)) => *root_secure,
            None => self.noise.is_secure(),
        }
    }

    /// The guarantee so far at `delta`, with what it rests on.
    ///
    /// # Errors
    /// As [`epsilon`](DpSgd::epsilon).
    pub fn guarantee(&self, delta: f64) -> Result<Guarantee> {
        Ok(Guarantee {
            epsilon: self.epsilon(delta)?,
            delta,
            accountant: self.accountant.kind().name(),
            noise_multiplier: self.config.noise_multiplier,
            effective_noise_multiplier: self.effective_sigma,
            max_grad_norm: self.sensitivity,
            clipping: match self.config.clipping {
                Clipping::Flat => "flat",
                _ => "per-layer",
            },
            sample_rate: self.config.sample_rate,
            steps: self.steps(),
            secure_noise: self.secure_noise(),
            world_size: self.world_size(),
        })
    }
}
