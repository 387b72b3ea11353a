//! The rearranging ops on vars (`flip`, `roll`, `diagonal`, `diag`, `repeat_interleave`,
//! `meshgrid`, `outer`, `clamp_tensor`): the index plans of strata-tensor run through
//! differentiable ops, so every order of derivative comes with them.

use strata_tensor::{Element, Indexing, Tensor, plans};

use crate::ops::linear_unary;
use crate::{Result, Var};

impl<T: Element> Var<T> {
    /// The elements in reverse order along each of `dims`, like `torch.flip`; the
    /// gradient flips back.
    ///
    /// # Errors
    /// As [`Tensor::flip`].
    pub fn flip(&self, dims: &[isize]) -> Result<Var<T>> {
        let value = self.value().flip(dims)?;
        let dims = dims.to_vec();
        Ok(linear_unary!(self, "flip", value, [dims], |g| g.flip(&dims)?))
    }

    /// The elements shifted along `dims` with wrap-around, like `torch.roll`; the gradient
    /// rolls back.
    ///
    /// # Errors
    /// As [`Tensor::roll`].
    pub fn roll(&self, shifts: &[isize], dims: &[isize]) -> Result<Var<T>> {
        let value = self.value().roll(shifts, dims)?;
        let back: Vec<isize> = shifts.iter().map(|s| s.wrapping_neg()).collect();
        let dims = dims.to_vec();
        Ok(linear_unary!(self, "roll", value, [back, dims], |g| g
            .roll(&back, &dims)?))
    }

    /// The diagonal of `dim1` × `dim2`, like `torch.diagonal` (see
    /// [`Tensor::diagonal`]).
    ///
    /// # Errors
    /// As [`Tensor::diagonal`].
    pub fn diagonal(&self, offset: isize, dim1: isize, dim2: isize) -> Result<Var<T>> {
        let plan = plans::diagonal(self.shape(), offset, dim1, dim2)?;
        self.permute(&plan.permutation)?
            .reshape(plan.flat_shape.as_slice())?
            .index_select(-1, &plan.positions)?
            .reshape(plan.shape.as_slice())
    }

    /// Like `torch.diag`: a 1-D var onto diagonal `offset` of a square matrix, or the
    /// diagonal of a 2-D one.
    ///
    /// # Errors
    /// As [`Tensor::diag`].
    pub fn diag(&self, offset: isize) -> Result<Var<T>> {
        if self.ndim() != 1 {
            // 2-D takes the diagonal; other ranks get the tensor op's error.
            self.value().diag(offset)?;
            return self.diagonal(offset, 0, 1);
        }
        let n = self.numel() + offset.unsigned_abs();
        let plan = plans::diagonal(&[n, n], offset, 0, 1)?;
        Var::new(Tensor::zeros(&[n * n]))
            .index_add(0, &plan.positions, self)?
            .reshape(&[n, n][..])
    }

    /// Each element repeated along `dim`, like `torch.repeat_interleave` (see
    /// [`Tensor::repeat_interleave`]); the gradient sums the copies.
    ///
    /// # Errors
    /// As [`Tensor::repeat_interleave`].
    pub fn repeat_interleave(&self, repeats: &[usize], dim: Option<isize>) -> Result<Var<T>> {
        let x = match dim {
            Some(_) => self.clone(),
            None => self.reshape(&[self.numel()][..])?,
        };
        let d = dim.unwrap_or(0);
        let n = x.value().size(d)?;
        x.index_select(d, &plans::interleaved(n, repeats)?)
    }

    /// Coordinate grids of 0-D or 1-D vars, like `torch.meshgrid` (see
    /// [`Tensor::meshgrid`]).
    ///
    /// # Errors
    /// As [`Tensor::meshgrid`].
    pub fn meshgrid(vars: &[&Var<T>], indexing: Indexing) -> Result<Vec<Var<T>>> {
        let shapes: Vec<&[usize]> = vars.iter().map(|v| v.shape()).collect();
        let (grid, views) = plans::meshgrid_shapes(&shapes, indexing)?;
        vars.iter()
            .zip(views)
            .map(|(v, view)| v.reshape(view.as_slice())?.broadcast_to(&grid))
            .collect()
    }

    /// The outer product of two 1-D vars, like `torch.outer`.
    ///
    /// # Errors
    /// As [`Tensor::outer`].
    pub fn outer(&self, other: &Var<T>) -> Result<Var<T>> {
        plans::check_outer(self.shape(), other.shape())?;
        self.reshape(&[self.numel(), 1][..])?
            .mul(&other.reshape(&[1, other.numel()][..])?)
    }

    /// Values limited by var bounds, like `torch.clamp(x, min, max)` with tensors:
    /// `minimum(maximum(x, min), max)`. As in PyTorch, a value equal to a bound sends half
    /// its gradient to each, and `max` takes all of it where `min > max`.
    ///
    /// # Errors
    /// As [`Tensor::clamp_tensor`].
    pub fn clamp_tensor(&self, min: Option<&Var<T>>, max: Option<&Var<T>>) -> Result<Var<T>> {
        plans::check_clamp_bounds(min.is_some(), max.is_some())?;
        let lower = match min {
            Some(m) => self.maximum(m)?,
            None => self.clone(),
        };
        match max {
            Some(m) => lower.minimum(m),
            None => Ok(lower),
        }
    }
}

impl<T: Element> plans::EinsumOperand for Var<T> {
    type Error = crate::AutogradError;
    fn dims(&self) -> Vec<usize> {
        self.shape().to_vec()
    }
    fn permute_to(&self, order: &[isize]) -> Result<Self> {
        self.permute(order)
    }
    fn reshape_to(&self, shape: &[usize]) -> Result<Self> {
        self.reshape(shape)
    }
    fn diagonal_of(&self, d1: usize, d2: usize) -> Result<Self> {
        self.diagonal(0, d1 as isize, d2 as isize)
    }
    fn sum_over(&self, dims: &[isize]) -> Result<Self> {
        self.sum(dims, false)
    }
    fn broadcast_as(&self, shape: &[usize]) -> Result<Self> {
        self.broadcast_to(shape)
    }
    fn bmm(&self, other: &Self) -> Result<Self> {
        self.matmul(other)
    }
}

/// Einstein summation on vars, like `torch.einsum` (see
/// [`Tensor::einsum`](strata_tensor::Tensor::einsum)): the same plan run through
/// differentiable ops, so gradients of every order follow.
///
/// ```
/// use strata_autograd::{Var, einsum};
/// use strata_tensor::Tensor;
///
/// let a = Var::parameter(Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3])?);
/// let b = Var::new(Tensor::from_vec(vec![4.0f64, 5.0, 6.0], &[3])?);
/// let dot = einsum("i,i->", &[a.clone(), b])?;
/// dot.backward()?;
/// assert_eq!(dot.item()?, 32.0);
/// assert_eq!(a.grad().unwrap().to_vec(), vec![4.0, 5.0, 6.0]);
/// # Ok::<(), strata_autograd::AutogradError>(())
/// ```
///
/// # Errors
/// As [`Tensor::einsum`](strata_tensor::Tensor::einsum).
pub fn einsum<T: Element>(equation: &str, operands: &[Var<T>]) -> Result<Var<T>> {
    plans::einsum(equation, operands)
}
