//! In-place updates, for optimizers and gradient accumulation.
//!
//! These are the only methods that write into existing storage. They write in place when
//! this handle owns its storage alone (the usual case for a parameter after `backward` has
//! released the graph) and copy first otherwise, so no other handle ever sees a change
//! (invariant 3 of [`Tensor`]).

use crate::engine::par::{self, Cost};
use crate::engine::simd::dispatch;
use crate::{Element, Result, Tensor};

impl<T: Element> Tensor<T> {
    /// `self += other` in place, `other` broadcast to `self`'s shape, like `Tensor.add_`.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    /// let mut grad = Tensor::<f32>::zeros(&[2, 2]);
    /// grad.add_(&Tensor::ones(&[2]))?;
    /// assert_eq!(grad.to_vec(), vec![1.0; 4]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Broadcast`](crate::TensorError::Broadcast) when `other` does not
    /// broadcast to `self`'s shape.
    pub fn add_(&mut self, other: &Tensor<T>) -> Result<()> {
        self.zip_assign(other, "add_", |a, b| a + b)
    }

    /// `self -= other` in place (broadcasting `other`), like `Tensor.sub_`.
    ///
    /// # Errors
    /// As [`add_`](Tensor::add_).
    pub fn sub_(&mut self, other: &Tensor<T>) -> Result<()> {
        self.zip_assign(other, "sub_", |a, b| a - b)
    }

    /// `self *= other` in place (broadcasting `other`), like `Tensor.mul_`.
    ///
    /// # Errors
    /// As [`add_`](Tensor::add_).
    pub fn mul_(&mut self, other: &Tensor<T>) -> Result<()> {
        self.zip_assign(other, "mul_", |a, b| a * b)
    }

    /// `self /= other` in place (broadcasting `other`), like `Tensor.div_`.
    ///
    /// # Errors
    /// As [`add_`](Tensor::add_).
    pub fn div_(&mut self, other: &Tensor<T>) -> Result<()> {
        self.zip_assign(other, "div_", |a, b| a / b)
    }

    /// `self += alpha * x` in place (BLAS `axpy`, `Tensor.add_(x, alpha=alpha)`), one pass
    /// over memory.
    ///
    /// # Errors
    /// As [`add_`](Tensor::add_).
    pub fn axpy_(&mut self, alpha: T, x: &Tensor<T>) -> Result<()> {
        self.zip_assign(x, "axpy_", move |a, b| a + alpha * b)
    }

    /// Every element replaced by `src`'s (broadcast to `self`'s shape), like `Tensor.copy_`.
    ///
    /// # Errors
    /// As [`add_`](Tensor::add_).
    pub fn copy_(&mut self, src: &Tensor<T>) -> Result<()> {
        self.zip_assign(src, "copy_", |_, b| b)
    }

    /// `self *= alpha` in place, like `Tensor.mul_(alpha)`.
    pub fn scale_(&mut self, alpha: T) {
        self.apply_(move |x| x * alpha);
    }

    /// Every element set to `value`, like `Tensor.fill_`.
    pub fn fill_(&mut self, value: T) {
        par::fill(self.as_mut_slice(), value);
    }

    /// Every element set to zero, like `Tensor.zero_`.
    pub fn zero_(&mut self) {
        self.fill_(T::zero());
    }

    /// `x = f(x)` for every element in place: the building block of fused optimizer
    /// updates. Runs in parallel for large tensors, so `f` must be `Sync`.
    pub fn apply_(&mut self, f: impl Fn(T) -> T + Sync + Send) {
        let f = &f;
        par::for_each_chunk_mut(self.as_mut_slice(), Cost::Cheap, |_, chunk| {
            dispatch(
                #[inline(always)]
                || {
                    for x in chunk.iter_mut() {
                        *x = f(*x);
                    }
                },
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::Tensor;

    #[test]
    fn in_place_updates_write_in_place_when_unique() {
        let mut p = Tensor::<f32>::from_vec(vec![1.0, 2.0], &[2]).unwrap();
        let before = p.as_slice().unwrap().as_ptr();
        p.axpy_(-0.5, &Tensor::from_vec(vec![2.0, 4.0], &[2]).unwrap())
            .unwrap();
        assert_eq!(p.to_vec(), vec![0.0, 0.0]);
        assert_eq!(p.as_slice().unwrap().as_ptr(), before);
    }

    #[test]
    fn in_place_updates_never_change_other_handles() {
        let mut p = Tensor::<f32>::from_vec(vec![1.0, 2.0], &[2]).unwrap();
        let view = p.clone();
        p.add_(&Tensor::scalar(1.0)).unwrap();
        assert_eq!(p.to_vec(), vec![2.0, 3.0]);
        assert_eq!(view.to_vec(), vec![1.0, 2.0]);
        // adding a tensor to itself reads the old values
        let mut q = view.clone();
        q.add_(&view).unwrap();
        assert_eq!(q.to_vec(), vec![2.0, 4.0]);
        // an expanded view is materialised before it is written
        let mut e = Tensor::<f32>::scalar(1.0).expand(&[3]).unwrap();
        e.mul_(&Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap())
            .unwrap();
        assert_eq!(e.to_vec(), vec![1.0, 2.0, 3.0]);
        assert!(e.add_(&Tensor::zeros(&[2])).is_err());
    }

    #[test]
    fn fill_scale_apply() {
        let mut t = Tensor::<f64>::ones(&[2, 2]);
        t.scale_(3.0);
        assert_eq!(t.to_vec(), vec![3.0; 4]);
        t.apply_(|x| x * x);
        assert_eq!(t.to_vec(), vec![9.0; 4]);
        t.zero_();
        assert_eq!(t.to_vec(), vec![0.0; 4]);
    }
}
