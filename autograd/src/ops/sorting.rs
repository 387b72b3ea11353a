//! Ordering ops on vars: the values of `sort`, `topk` and `kthvalue` are a `gather` of
//! the input at the indices strata-tensor's kernels choose, so their gradients (of every
//! order) scatter back to those positions, as PyTorch's do.

use strata_tensor::{Element, IndexTensor};

use crate::{Result, Var};

impl<T: Element> Var<T> {
    /// The lanes along `dim` sorted stably, and each value's index, like `torch.sort`
    /// (see [`Tensor::sort`](strata_tensor::Tensor::sort)).
    ///
    /// # Errors
    /// As [`Tensor::sort`](strata_tensor::Tensor::sort).
    pub fn sort(&self, dim: isize, descending: bool) -> Result<(Var<T>, IndexTensor)> {
        let (_, indices) = self.value().sort(dim, descending)?;
        Ok((self.gather_at(dim, &indices)?, indices))
    }

    /// The `k` largest (or smallest) elements of each lane and their indices, like
    /// `torch.topk` (see [`Tensor::topk`](strata_tensor::Tensor::topk)).
    ///
    /// # Errors
    /// As [`Tensor::topk`](strata_tensor::Tensor::topk).
    pub fn topk(&self, k: usize, dim: isize, largest: bool) -> Result<(Var<T>, IndexTensor)> {
        let (_, indices) = self.value().topk(k, dim, largest)?;
        Ok((self.gather_at(dim, &indices)?, indices))
    }

    /// The `k`-th smallest element of each lane and its index, like `torch.kthvalue`
    /// (see [`Tensor::kthvalue`](strata_tensor::Tensor::kthvalue)).
    ///
    /// # Errors
    /// As [`Tensor::kthvalue`](strata_tensor::Tensor::kthvalue).
    pub fn kthvalue(&self, k: usize, dim: isize, keepdim: bool) -> Result<(Var<T>, IndexTensor)> {
        let (_, indices) = self.value().kthvalue(k, dim, true)?;
        let values = self.gather_at(dim, &indices)?;
        if keepdim || self.ndim() == 0 {
            return Ok((values, indices));
        }
        let mut shape = indices.shape().to_vec();
        let d = crate::ops::resolve(dim, self.ndim());
        shape.remove(d);
        Ok((values.squeeze(dim)?, indices.reshape(&shape)?))
    }

    /// `gather` along `dim`, also for a 0-d var (whose only index is 0).
    fn gather_at(&self, dim: isize, indices: &IndexTensor) -> Result<Var<T>> {
        if self.ndim() == 0 {
            return Ok(self.clone());
        }
        self.gather(dim, indices)
    }
}
