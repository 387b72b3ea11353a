//! Constructors: filled, ranged and identity tensors.

use crate::engine::par;
use crate::handle::layout::check_shape;
use crate::handle::storage::{alloc, alloc_zeroed, try_alloc, try_alloc_zeroed, uncountable};
use crate::{Element, Result, Tensor, TensorError};

/// The count of a shape given to an infallible constructor, or a panic naming `op` and
/// the shape (see "Panics" on [`Tensor::zeros`]).
#[track_caller]
fn count<T>(op: &'static str, shape: &[usize]) -> usize {
    match check_shape::<T>(op, shape) {
        Ok(n) => n,
        Err(e) => uncountable(
            e,
            "use Tensor::try_full or Tensor::try_zeros for shapes from input",
        ),
    }
}

impl<T: Element> Tensor<T> {
    /// A tensor of zeros, like `torch.zeros`.
    ///
    /// # Panics
    /// When the shape's element count overflows or its bytes exceed `isize::MAX`, and when
    /// the allocator refuses the memory, as `Vec::with_capacity` does (but never aborting:
    /// the panic names the shape). For a shape that comes from input, use
    /// [`try_zeros`](Tensor::try_zeros), which returns these as errors; the same holds for
    /// [`ones`](Tensor::ones), [`full`](Tensor::full), [`rand`](Tensor::rand) and
    /// [`randn`](Tensor::randn), whose fallible forms are [`try_full`](Tensor::try_full),
    /// [`uniform`](Tensor::uniform) and [`normal`](Tensor::normal).
    #[track_caller]
    pub fn zeros(shape: &[usize]) -> Self {
        Self::from_contiguous(alloc_zeroed(count::<T>("zeros", shape)), shape)
    }

    /// A tensor of zeros, or an error for a shape that cannot be allocated.
    ///
    /// ```
    /// use strata_tensor::{Tensor, TensorError};
    /// assert_eq!(Tensor::<f32>::try_zeros(&[2, 3])?.numel(), 6);
    /// let err = Tensor::<f32>::try_zeros(&[3, usize::MAX / 2]).unwrap_err();
    /// assert!(matches!(err, TensorError::TooLarge { op: "zeros", .. }));
    /// # Ok::<(), TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::TooLarge`] when the element count overflows or its bytes exceed
    /// `isize::MAX`, [`TensorError::OutOfMemory`] when the allocator refuses.
    pub fn try_zeros(shape: &[usize]) -> Result<Self> {
        Ok(Self::from_contiguous(
            try_alloc_zeroed("zeros", shape)?,
            shape,
        ))
    }

    /// A tensor of ones, like `torch.ones`.
    ///
    /// # Panics
    /// As [`zeros`](Tensor::zeros).
    #[track_caller]
    pub fn ones(shape: &[usize]) -> Self {
        Self::filled("ones", shape, T::one())
    }

    /// A tensor filled with `value`, like `torch.full`.
    ///
    /// # Panics
    /// As [`zeros`](Tensor::zeros); [`try_full`](Tensor::try_full) returns errors instead.
    #[track_caller]
    pub fn full(shape: &[usize], value: T) -> Self {
        Self::filled("full", shape, value)
    }

    #[track_caller]
    fn filled(op: &'static str, shape: &[usize], value: T) -> Self {
        let mut buf = alloc(count::<T>(op, shape));
        par::fill(&mut buf, value);
        Self::from_contiguous(buf, shape)
    }

    /// A tensor filled with `value`, or an error for a shape that cannot be allocated.
    ///
    /// # Errors
    /// As [`try_zeros`](Tensor::try_zeros).
    pub fn try_full(shape: &[usize], value: T) -> Result<Self> {
        let mut buf = try_alloc("full", shape)?;
        par::fill(&mut buf, value);
        Ok(Self::from_contiguous(buf, shape))
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
    /// the range; [`TensorError::TooLarge`] or [`TensorError::OutOfMemory`] for a range
    /// of more values than memory holds (`arange(0, 1e300, 1)`).
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
        let count = ((end - start) / step).ceil();
        // `as usize` saturates: a count past usize::MAX (or an infinite one, from a range
        // wider than f64 holds) becomes usize::MAX and is refused by `try_alloc`.
        let n = if count.is_finite() {
            count as usize
        } else {
            usize::MAX
        };
        let mut data = try_alloc::<T>("arange", &[n])?;
        for (i, x) in data.iter_mut().enumerate() {
            *x = T::from_f64(start + step * i as f64);
        }
        Ok(Self::from_contiguous(data, &[n]))
    }

    /// `steps` evenly spaced values from `start` to `end` inclusive, like `torch.linspace`
    /// (computed as PyTorch does: from `start` for the first half, from `end` for the rest).
    ///
    /// # Errors
    /// [`TensorError::TooLarge`] or [`TensorError::OutOfMemory`] for more steps than
    /// memory holds.
    pub fn linspace(start: T, end: T, steps: usize) -> Result<Self> {
        let mut data = try_alloc::<T>("linspace", &[steps])?;
        if steps == 1 {
            data[0] = start;
            return Ok(Self::from_contiguous(data, &[1]));
        }
        let step = (end - start) / T::from_usize(steps.saturating_sub(1).max(1));
        let half = steps / 2;
        for (i, x) in data.iter_mut().enumerate() {
            *x = if i < half {
                start + step * T::from_usize(i)
            } else {
                end - step * T::from_usize(steps - i - 1)
            };
        }
        Ok(Self::from_contiguous(data, &[steps]))
    }

    /// The `n × m` matrix with ones on the diagonal, like `torch.eye(n, m)`.
    ///
    /// # Errors
    /// [`TensorError::TooLarge`] when `n · m` overflows, [`TensorError::OutOfMemory`]
    /// when the matrix cannot be allocated.
    pub fn eye(n: usize, m: usize) -> Result<Self> {
        let mut data = try_alloc_zeroed::<T>("eye", &[n, m])?;
        for i in 0..n.min(m) {
            data[i * m + i] = T::one();
        }
        Ok(Self::from_contiguous(data, &[n, m]))
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
            Tensor::<f32>::eye(2, 3).unwrap().to_vec(),
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
        let t = Tensor::<f32>::linspace(0.0, 1.0, 5).unwrap();
        assert_eq!(t.to_vec(), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(
            Tensor::<f32>::linspace(3.0, 3.0, 1).unwrap().to_vec(),
            vec![3.0]
        );
        assert_eq!(Tensor::<f32>::linspace(0.0, 1.0, 0).unwrap().numel(), 0);
    }
}
