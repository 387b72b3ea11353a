//! Constructors: filled, ranged and identity tensors.

use crate::engine::par;
use crate::handle::layout::numel;
use crate::handle::storage::{alloc, alloc_zeroed};
use crate::{Element, Result, Tensor, TensorError};

impl<T: Element> Tensor<T> {
    /// A tensor of zeros, like `torch.zeros`.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::from_contiguous(alloc_zeroed(numel(shape)), shape)
    }

    /// A tensor of ones, like `torch.ones`.
    pub fn ones(shape: &[usize]) -> Self {
        Self::full(shape, T::one())
    }

    /// A tensor filled with `value`, like `torch.full`.
    pub fn full(shape: &[usize], value: T) -> Self {
        let mut buf = alloc(numel(shape));
        par::fill(&mut buf, value);
        Self::from_contiguous(buf, shape)
    }

    /// Zeros with the shape of `self`, like `torch.zeros_like`.
    pub fn zeros_like(&self) -> Self {
        Self::zeros(self.shape())
    }

    /// Ones with the shape of `self`, like `torch.ones_like`.
    pub fn ones_like(&self) -> Self {
        Self::ones(self.shape())
    }

    /// `value` repeated in the shape of `self`, like `torch.full_like`.
    pub fn full_like(&self, value: T) -> Self {
        Self::full(self.shape(), value)
    }

    /// The 1-d tensor `start, start + step, ...` up to but excluding `end`, like
    /// `torch.arange(start, end, step)`. Values are computed in f64, then rounded.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    /// let t = Tensor::<f32>::arange(0.0, 1.0, 0.25)?;
    /// assert_eq!(t.to_vec(), vec![0.0, 0.25, 0.5, 0.75]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Invalid`] when `step` is zero, not finite, or of the wrong sign for
    /// the range.
    pub fn arange(start: f64, end: f64, step: f64) -> Result<Self> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(TensorError::invalid(
                "arange",
                format!("start {start}, end {end} and step {step} must be finite, step non-zero"),
            ));
        }
        if (end - start) * step.signum() < 0.0 {
            return Err(TensorError::invalid(
                "arange",
                format!("the range {start}..{end} is inconsistent with the sign of step {step}"),
            ));
        }
        let n = ((end - start) / step).ceil() as usize;
        let data = (0..n)
            .map(|i| T::from_f64(start + step * i as f64))
            .collect();
        Ok(Self::from_contiguous(data, &[n]))
    }

    /// `steps` evenly spaced values from `start` to `end` inclusive, like `torch.linspace`
    /// (computed as PyTorch does: from `start` for the first half, from `end` for the rest).
    pub fn linspace(start: T, end: T, steps: usize) -> Self {
        if steps == 1 {
            return Self::from_contiguous(vec![start], &[1]);
        }
        let step = (end - start) / T::from_usize(steps.saturating_sub(1).max(1));
        let half = steps / 2;
        let data = (0..steps)
            .map(|i| {
                if i < half {
                    start + step * T::from_usize(i)
                } else {
                    end - step * T::from_usize(steps - i - 1)
                }
            })
            .collect();
        Self::from_contiguous(data, &[steps])
    }

    /// The `n × m` matrix with ones on the diagonal, like `torch.eye(n, m)`.
    pub fn eye(n: usize, m: usize) -> Self {
        let mut data = alloc_zeroed(n * m);
        for i in 0..n.min(m) {
            data[i * m + i] = T::one();
        }
        Self::from_contiguous(data, &[n, m])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_fill_as_documented() {
        assert_eq!(Tensor::<f32>::zeros(&[2, 2]).to_vec(), vec![0.0; 4]);
        assert_eq!(Tensor::<f64>::full(&[3], 1.5).to_vec(), vec![1.5; 3]);
        assert_eq!(
            Tensor::<f32>::eye(2, 3).to_vec(),
            vec![1., 0., 0., 0., 1., 0.]
        );
        assert_eq!(Tensor::<f32>::zeros(&[]).shape(), &[] as &[usize]);
        assert_eq!(Tensor::<f32>::zeros(&[]).numel(), 1);
        assert_eq!(Tensor::<f32>::zeros(&[3, 0]).numel(), 0);
    }

    #[test]
    fn arange_matches_torch() {
        // torch.arange(1, 2.5, 0.5) -> [1.0, 1.5, 2.0]
        assert_eq!(
            Tensor::<f64>::arange(1.0, 2.5, 0.5).unwrap().to_vec(),
            vec![1.0, 1.5, 2.0]
        );
        // torch.arange(5, 0, -2) -> [5, 3, 1]
        assert_eq!(
            Tensor::<f32>::arange(5.0, 0.0, -2.0).unwrap().to_vec(),
            vec![5.0, 3.0, 1.0]
        );
        assert!(matches!(
            Tensor::<f32>::arange(0.0, 1.0, 0.0),
            Err(TensorError::Invalid { .. })
        ));
        assert!(Tensor::<f32>::arange(0.0, 1.0, -1.0).is_err());
    }

    #[test]
    fn linspace_is_symmetric_and_exact_at_ends() {
        let t = Tensor::<f32>::linspace(0.0, 1.0, 5);
        assert_eq!(t.to_vec(), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(Tensor::<f32>::linspace(3.0, 3.0, 1).to_vec(), vec![3.0]);
        assert_eq!(Tensor::<f32>::linspace(0.0, 1.0, 0).numel(), 0);
    }
}
