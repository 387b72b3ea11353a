//! Seeded random tensors. Every random op takes an explicit RNG, so the same seed gives the
//! same numbers on every run and every thread count.

use rand::Rng;

use crate::handle::element::Kernels as _;
use crate::handle::layout::check_shape;
use crate::handle::storage::{alloc, try_alloc, uncountable};
use crate::{Element, Result, Tensor, TensorError};

/// A seeded, portable random number generator (ChaCha12, from `rand`'s `StdRng`).
///
/// ```
/// use strata_tensor::{Tensor, seeded_rng};
/// let a = Tensor::<f32>::randn(&[3], &mut seeded_rng(7));
/// let b = Tensor::<f32>::randn(&[3], &mut seeded_rng(7));
/// assert_eq!(a.to_vec(), b.to_vec());
/// ```
pub fn seeded_rng(seed: u64) -> rand::rngs::StdRng {
    rand::SeedableRng::seed_from_u64(seed)
}

fn unit<T: Element, R: Rng + ?Sized>(rng: &mut R) -> T {
    T::unit_from_bits(rng.next_u64())
}

/// One standard normal sample pair by the Box–Muller transform, in f64.
fn normal_pair<R: Rng + ?Sized>(rng: &mut R) -> (f64, f64) {
    // u1 in (0, 1] so that ln(u1) is finite.
    let u1 = 1.0 - f64::unit_from_bits(rng.next_u64());
    let u2 = f64::unit_from_bits(rng.next_u64());
    let r = (-2.0 * u1.ln()).sqrt();
    let theta = 2.0 * std::f64::consts::PI * u2;
    (r * theta.cos(), r * theta.sin())
}

/// Fills `data` with standard normal samples, drawn in pairs.
fn fill_normal<T: Element, R: Rng + ?Sized>(data: &mut [T], rng: &mut R) {
    for pair in data.chunks_mut(2) {
        let (a, b) = normal_pair(rng);
        pair[0] = T::from_f64(a);
        if let Some(x) = pair.get_mut(1) {
            *x = T::from_f64(b);
        }
    }
}

/// The count of a shape given to an infallible random constructor (see
/// [`Tensor::zeros`]'s panics).
#[track_caller]
fn count<T>(op: &'static str, shape: &[usize]) -> usize {
    match check_shape::<T>(op, shape) {
        Ok(n) => n,
        Err(e) => uncountable(
            e,
            "use Tensor::uniform or Tensor::normal for shapes from input",
        ),
    }
}

impl<T: Element> Tensor<T> {
    /// Uniform samples in `[0, 1)`, like `torch.rand`.
    ///
    /// # Panics
    /// As [`zeros`](Tensor::zeros); [`uniform`](Tensor::uniform) returns errors instead.
    #[track_caller]
    pub fn rand<R: Rng + ?Sized>(shape: &[usize], rng: &mut R) -> Self {
        let mut data = alloc::<T>(count::<T>("rand", shape));
        data.iter_mut().for_each(|x| *x = unit(rng));
        Self::from_contiguous(data, shape)
    }

    /// Uniform samples in `[low, high)`, like `torch.empty(shape).uniform_(low, high)`.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] when `low > high` or either bound is not finite;
    /// [`TensorError::TooLarge`] or [`TensorError::OutOfMemory`] for a shape that cannot
    /// be allocated.
    pub fn uniform<R: Rng + ?Sized>(shape: &[usize], low: T, high: T, rng: &mut R) -> Result<Self> {
        if !low.is_finite() || !high.is_finite() || low > high {
            return Err(TensorError::invalid(
                "uniform",
                format!("expected finite low <= high, got low {low} and high {high}"),
            ));
        }
        let mut data = try_alloc::<T>("uniform", shape)?;
        let width = high - low;
        data.iter_mut()
            .for_each(|x| *x = low + width * unit::<T, R>(rng));
        Ok(Self::from_contiguous(data, shape))
    }

    /// Standard normal samples, like `torch.randn`.
    ///
    /// # Panics
    /// As [`zeros`](Tensor::zeros); [`normal`](Tensor::normal) returns errors instead.
    #[track_caller]
    pub fn randn<R: Rng + ?Sized>(shape: &[usize], rng: &mut R) -> Self {
        let mut data = alloc::<T>(count::<T>("randn", shape));
        fill_normal(&mut data, rng);
        Self::from_contiguous(data, shape)
    }

    /// Normal samples with mean `mean` and standard deviation `std`, like
    /// `torch.empty(shape).normal_(mean, std)`.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] when `std` is negative or either argument is not finite;
    /// [`TensorError::TooLarge`] or [`TensorError::OutOfMemory`] for a shape that cannot
    /// be allocated.
    pub fn normal<R: Rng + ?Sized>(shape: &[usize], mean: T, std: T, rng: &mut R) -> Result<Self> {
        if !mean.is_finite() || !std.is_finite() || std < T::zero() {
            return Err(TensorError::invalid(
                "normal",
                format!("expected a finite mean and std >= 0, got mean {mean} and std {std}"),
            ));
        }
        let mut data = try_alloc::<T>("normal", shape)?;
        fill_normal(&mut data, rng);
        let z = Self::from_contiguous(data, shape);
        Ok(z.map_cost(crate::engine::par::Cost::Cheap, |x| mean + std * x))
    }

    /// Ones with probability `p`, zeros otherwise, like `torch.bernoulli(torch.full(shape, p))`.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] when `p` is outside `[0, 1]`; [`TensorError::TooLarge`] or
    /// [`TensorError::OutOfMemory`] for a shape that cannot be allocated.
    pub fn bernoulli<R: Rng + ?Sized>(shape: &[usize], p: f64, rng: &mut R) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(TensorError::invalid(
                "bernoulli",
                format!("probability {p} is outside [0, 1]"),
            ));
        }
        let mut data = try_alloc::<T>("bernoulli", shape)?;
        data.iter_mut().for_each(|x| {
            *x = if f64::unit_from_bits(rng.next_u64()) < p {
                T::one()
            } else {
                T::zero()
            }
        });
        Ok(Self::from_contiguous(data, shape))
    }

    /// Uniform samples in `[0, 1)` with the shape of `self`.
    pub fn rand_like<R: Rng + ?Sized>(&self, rng: &mut R) -> Self {
        Self::rand(self.shape(), rng)
    }

    /// Standard normal samples with the shape of `self`.
    pub fn randn_like<R: Rng + ?Sized>(&self, rng: &mut R) -> Self {
        Self::randn(self.shape(), rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers() {
        let a = Tensor::<f64>::uniform(&[100], -2.0, 3.0, &mut seeded_rng(1)).unwrap();
        let b = Tensor::<f64>::uniform(&[100], -2.0, 3.0, &mut seeded_rng(1)).unwrap();
        assert_eq!(a.to_vec(), b.to_vec());
        assert!(a.to_vec().iter().all(|&x| (-2.0..3.0).contains(&x)));
        let c = Tensor::<f64>::uniform(&[100], -2.0, 3.0, &mut seeded_rng(2)).unwrap();
        assert_ne!(a.to_vec(), c.to_vec());
    }

    #[test]
    fn normal_moments() {
        let x = Tensor::<f64>::normal(&[20_001], 1.0, 2.0, &mut seeded_rng(3))
            .unwrap()
            .to_vec();
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        assert!((mean - 1.0).abs() < 0.05, "mean {mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.05, "std {}", var.sqrt());
    }

    #[test]
    fn bernoulli_rate_and_errors() {
        let x = Tensor::<f32>::bernoulli(&[10_000], 0.3, &mut seeded_rng(4)).unwrap();
        let rate = x.to_vec().iter().sum::<f32>() / 10_000.0;
        assert!((rate - 0.3).abs() < 0.02, "rate {rate}");
        assert!(Tensor::<f32>::bernoulli(&[1], 1.5, &mut seeded_rng(4)).is_err());
        assert!(Tensor::<f32>::normal(&[1], 0.0, -1.0, &mut seeded_rng(4)).is_err());
        assert!(Tensor::<f32>::uniform(&[1], 1.0, 0.0, &mut seeded_rng(4)).is_err());
    }
}
