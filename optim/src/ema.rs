//! [`ExponentialMovingAverage`]: an average of the parameters along training, for
//! evaluation (PyTorch's `AveragedModel` with `get_ema_multi_avg_fn`).

use strata_autograd::Var;
use strata_tensor::{Element, Tensor};

use crate::{OptimError, Result};

fn config(msg: String) -> OptimError {
    OptimError::Config {
        optimizer: NAME,
        msg,
    }
}

const NAME: &str = "ExponentialMovingAverage";

/// An exponential moving average of parameters: after each optimizer step,
/// [`update`](ExponentialMovingAverage::update) moves the average toward the parameters,
/// `avg ← avg + (1 − d)·(p − avg)` (PyTorch's `torch.lerp`, as `AveragedModel` with
/// `get_ema_multi_avg_fn(d)` computes it), and the average is what gets evaluated
/// ([`swap`](ExponentialMovingAverage::swap) it into the parameters and back).
///
/// The first update copies the parameters (as `AveragedModel`'s does). With
/// [`warmup`](ExponentialMovingAverage::warmup) the decay of the update after `n` updates
/// is `min(d, (1 + n)/(10 + n))`, so a short training does not average over its first,
/// poor steps (the `torch_ema` package's `use_num_updates`).
///
/// The average is post-processing of the trained parameters: under DP-SGD it costs no
/// privacy, and it cancels part of the noise of the last steps.
///
/// ```
/// use strata_autograd::Var;
/// use strata_optim::ExponentialMovingAverage;
/// use strata_tensor::Tensor;
///
/// let w = Var::parameter(Tensor::from_vec(vec![0.0f32], &[1])?);
/// let mut ema = ExponentialMovingAverage::new(vec![w.clone()], 0.5)?;
/// ema.update()?; // the first update copies: avg = 0
/// w.set_value(Tensor::from_vec(vec![4.0], &[1])?)?;
/// ema.update()?; // avg = 0 + 0.5·(4 − 0) = 2
/// ema.swap()?; // evaluate with the average…
/// assert_eq!(w.to_vec(), [2.0]);
/// ema.swap()?; // …and train on from the parameters
/// assert_eq!(w.to_vec(), [4.0]);
/// # Ok::<(), strata_optim::OptimError>(())
/// ```
#[derive(Debug)]
pub struct ExponentialMovingAverage<T: Element = f32> {
    params: Vec<Var<T>>,
    average: Vec<Tensor<T>>,
    decay: f64,
    warmup: bool,
    updates: u64,
    swapped: bool,
}

impl<T: Element> ExponentialMovingAverage<T> {
    /// An average of `params` with decay `decay` (in `[0, 1]`; the weight of the past),
    /// starting at their current values, before any update.
    ///
    /// # Errors
    /// [`OptimError::Config`] for a decay outside `[0, 1]` or not finite.
    pub fn new(params: Vec<Var<T>>, decay: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&decay) {
            return Err(config(format!("the decay must be in [0, 1], got {decay}")));
        }
        let average = params.iter().map(Var::value).collect();
        Ok(ExponentialMovingAverage {
            params,
            average,
            decay,
            warmup: false,
            updates: 0,
            swapped: false,
        })
    }

    /// With the warm-up: the decay after `n` updates is `min(decay, (1 + n)/(10 + n))`.
    #[must_use]
    pub fn warmup(mut self, warmup: bool) -> Self {
        self.warmup = warmup;
        self
    }

    /// The decay it was built with.
    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// Whether the warm-up is on.
    pub fn has_warmup(&self) -> bool {
        self.warmup
    }

    /// The updates so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The decay the next update uses.
    pub fn next_decay(&self) -> f64 {
        if self.warmup {
            let n = self.updates as f64;
            self.decay.min((1.0 + n) / (10.0 + n))
        } else {
            self.decay
        }
    }

    /// The values held aside, one per parameter in the order given: the average, or,
    /// while [`is_swapped`](ExponentialMovingAverage::is_swapped), the parameters'
    /// own values (the parameters then hold the average).
    pub fn held(&self) -> &[Tensor<T>] {
        &self.average
    }

    /// Whether the parameters hold the average (an odd number of
    /// [`swap`](ExponentialMovingAverage::swap)s).
    pub fn is_swapped(&self) -> bool {
        self.swapped
    }

    /// Moves the average toward the parameters' current values (the first update copies
    /// them).
    ///
    /// # Errors
    /// [`OptimError::Config`] while the parameters hold the average (swap back first), or
    /// when a parameter's shape changed since the average began.
    pub fn update(&mut self) -> Result<()> {
        if self.swapped {
            return Err(config(
                "update while the parameters hold the average: swap back first".into(),
            ));
        }
        let first = self.updates == 0;
        let weight = T::from_f64(1.0 - self.next_decay());
        let half = T::from_f64(0.5);
        for (avg, p) in self.average.iter_mut().zip(&self.params) {
            let value = p.value();
            check_shape(avg.shape(), value.shape())?;
            if first {
                *avg = value.contiguous();
                continue;
            }
            let value = value.contiguous();
            let src = value.as_slice().expect("contiguous");
            // torch.lerp: start + w·(end − start) for w < 0.5, end − (end − start)·(1 − w)
            // otherwise (exact at w = 1).
            for (a, &v) in avg.as_mut_slice().iter_mut().zip(src) {
                let diff = v - *a;
                *a = if weight < half {
                    *a + weight * diff
                } else {
                    v - diff * (T::one() - weight)
                };
            }
        }
        self.updates += 1;
        Ok(())
    }

    /// Exchanges the parameters' values and the average: call it before evaluating, and
    /// again after, to train on.
    ///
    /// # Errors
    /// [`OptimError::Config`] when a parameter's shape changed since the average began.
    pub fn swap(&mut self) -> Result<()> {
        for (avg, p) in self.average.iter_mut().zip(&self.params) {
            check_shape(avg.shape(), p.shape())?;
            let live = p.value();
            p.set_value(std::mem::replace(avg, live))?;
        }
        self.swapped = !self.swapped;
        Ok(())
    }

    /// Replaces the values held aside (see [`held`](ExponentialMovingAverage::held)) and
    /// the count of updates, as a checkpoint saved them, in the parameters' order.
    ///
    /// # Errors
    /// [`OptimError::Config`] for a different number of tensors or a shape that is not the
    /// parameter's.
    pub fn load(&mut self, held: Vec<Tensor<T>>, updates: u64) -> Result<()> {
        let average = held;
        if average.len() != self.params.len() {
            return Err(config(format!(
                "{} averaged tensors for {} parameters",
                average.len(),
                self.params.len()
            )));
        }
        for (a, p) in average.iter().zip(&self.params) {
            check_shape(p.shape(), a.shape())?;
        }
        self.average = average;
        self.updates = updates;
        Ok(())
    }
}

fn check_shape(average: &[usize], param: &[usize]) -> Result<()> {
    if average == param {
        Ok(())
    } else {
        Err(config(format!(
            "a parameter of shape {param:?} is averaged as {average:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(v: &[f64]) -> Var<f64> {
        Var::parameter(Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap())
    }

    #[test]
    fn the_average_follows_pytorchs_lerp_and_the_first_update_copies() {
        let w = param(&[1.0, -2.0]);
        let mut ema = ExponentialMovingAverage::new(vec![w.clone()], 0.9).unwrap();
        ema.update().unwrap();
        assert_eq!(ema.held()[0].to_vec(), [1.0, -2.0]);
        w.set_value(Tensor::from_vec(vec![3.0, 0.0], &[2]).unwrap())
            .unwrap();
        ema.update().unwrap();
        let avg = ema.held()[0].to_vec();
        assert!((avg[0] - 1.2).abs() < 1e-12 && (avg[1] + 1.8).abs() < 1e-12);
        assert_eq!(ema.updates(), 2);
        // decay 0: the average is the parameters.
        let mut copy = ExponentialMovingAverage::new(vec![w.clone()], 0.0).unwrap();
        copy.update().unwrap();
        w.set_value(Tensor::from_vec(vec![5.0, 7.0], &[2]).unwrap())
            .unwrap();
        copy.update().unwrap();
        assert_eq!(copy.held()[0].to_vec(), [5.0, 7.0]);
    }

    #[test]
    fn the_warmup_caps_the_decay_early_on() {
        let w = param(&[0.0]);
        let mut ema = ExponentialMovingAverage::new(vec![w.clone()], 0.999)
            .unwrap()
            .warmup(true);
        assert!((ema.next_decay() - 0.1).abs() < 1e-15);
        ema.update().unwrap();
        assert!((ema.next_decay() - 2.0 / 11.0).abs() < 1e-15);
        for _ in 0..100_000 {
            ema.updates += 1;
        }
        assert_eq!(ema.next_decay(), 0.999);
        let plain = ExponentialMovingAverage::new(vec![w], 0.999).unwrap();
        assert_eq!(plain.next_decay(), 0.999);
    }

    #[test]
    fn swap_exchanges_and_restores_and_shapes_are_checked() {
        let w = param(&[1.0]);
        let mut ema = ExponentialMovingAverage::new(vec![w.clone()], 0.5).unwrap();
        ema.update().unwrap();
        w.set_value(Tensor::from_vec(vec![3.0], &[1]).unwrap())
            .unwrap();
        ema.update().unwrap();
        ema.swap().unwrap();
        assert_eq!(w.to_vec(), [2.0]);
        assert!(ema.is_swapped());
        assert_eq!(ema.held()[0].to_vec(), [3.0]);
        assert!(ema.update().is_err(), "no update of a swapped average");
        ema.swap().unwrap();
        assert_eq!(w.to_vec(), [3.0]);
        assert!(!ema.is_swapped());
        assert!(ExponentialMovingAverage::new(vec![w.clone()], 1.5).is_err());
        assert!(ExponentialMovingAverage::new(vec![w.clone()], f64::NAN).is_err());
        let bad = vec![Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap()];
        assert!(ema.load(bad, 3).is_err());
        assert!(ema.load(vec![], 3).is_err());
        ema.load(vec![Tensor::from_vec(vec![9.0], &[1]).unwrap()], 7)
            .unwrap();
        assert_eq!((ema.held()[0].to_vec(), ema.updates()), (vec![9.0], 7));
    }
}
