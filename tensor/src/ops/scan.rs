//! Running products and running log-sum-exps along a dimension (`cumprod`,
//! `logcumsumexp`) with their backwards; `cumsum` lives with the reductions.

use crate::handle::layout::resolve_dim;
use crate::{Element, Result, Tensor};

/// Runs `f` on every lane of `shape` along `d` (with `inner` the stride between a lane's
/// elements): `f(base, n, inner)` addresses element `k` of the lane at `base + k·inner`.
fn for_each_lane(shape: &[usize], d: usize, mut f: impl FnMut(usize, usize, usize)) {
    if shape.is_empty() {
        f(0, 1, 1);
        return;
    }
    let (outer, n, inner) = (
        shape[..d].iter().product::<usize>(),
        shape[d],
        shape[d + 1..].iter().product::<usize>(),
    );
    for o in 0..outer {
        for i in 0..inner {
            f(o * n * inner + i, n, inner);
        }
    }
}

impl<T: Element> Tensor<T> {
    /// The running product along `dim`, like `torch.cumprod` (accumulated in f64).
    ///
    /// ```
    /// use strata_tensor::Tensor;
    ///
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[4])?;
    /// assert_eq!(x.cumprod(0)?.to_vec(), vec![1.0, 2.0, 6.0, 24.0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Dim`](crate::TensorError::Dim) for a dimension out of range.
    pub fn cumprod(&self, dim: isize) -> Result<Tensor<T>> {
        let d = resolve_dim("cumprod", dim, self.shape())?;
        let xs = self.contiguous().to_vec();
        let mut out = xs.clone();
        for_each_lane(self.shape(), d, |base, n, inner| {
            let mut acc = 1.0f64;
            for k in 0..n {
                let at = base + k * inner;
                acc *= xs[at].to_f64();
                out[at] = T::from_f64(acc);
            }
        });
        Tensor::from_vec(out, self.shape())
    }

    /// The gradient of [`cumprod`](Tensor::cumprod) for input `x` and output gradient
    /// `grad`: `Σ_{k≥i} grad_k · Π_{j≤k, j≠i} x_j`, exact also where `x` has zeros.
    ///
    /// # Errors
    /// [`TensorError::Dim`](crate::TensorError::Dim) for a dimension out of range;
    /// [`TensorError::Shape`](crate::TensorError::Shape) when the shapes differ.
    #[doc(hidden)]
    pub fn cumprod_backward(grad: &Tensor<T>, x: &Tensor<T>, dim: isize) -> Result<Tensor<T>> {
        let d = resolve_dim("cumprod_backward", dim, x.shape())?;
        let g = grad.broadcast_to(x.shape())?.contiguous().to_vec();
        let xs = x.contiguous().to_vec();
        let mut out = vec![T::zero(); xs.len()];
        for_each_lane(x.shape(), d, |base, n, inner| {
            let at = |k: usize| base + k * inner;
            let first_zero = (0..n).find(|&k| xs[at(k)] == T::zero()).unwrap_or(n);
            // Before the first zero: Σ_{k≥i} g_k·y_k / x_i, by a suffix sum; y_k = 0
            // from the zero on, so only k below it contribute.
            let mut prefix = 1.0f64;
            let mut products = vec![0.0f64; first_zero];
            for (k, p) in products.iter_mut().enumerate() {
                prefix *= xs[at(k)].to_f64();
                *p = prefix;
            }
            let mut suffix = 0.0f64;
            for k in (0..first_zero).rev() {
                suffix += g[at(k)].to_f64() * products[k];
                out[at(k)] = T::from_f64(suffix / xs[at(k)].to_f64());
            }
            // At the first zero: the product of the others, running forward from it.
            if first_zero < n {
                let mut p = if first_zero == 0 {
                    1.0
                } else {
                    products[first_zero - 1]
                };
                let mut sum = g[at(first_zero)].to_f64() * p;
                for k in first_zero + 1..n {
                    p *= xs[at(k)].to_f64();
                    sum += g[at(k)].to_f64() * p;
                }
                out[at(first_zero)] = T::from_f64(sum);
            }
        });
        Tensor::from_vec(out, x.shape())
    }

    /// `log Σ_{j≤k} e^{x_j}` along `dim`, like `torch.logcumsumexp`, computed stably in
    /// f64 (`-inf` while every element so far is `-inf`).
    ///
    /// ```
    /// use strata_tensor::Tensor;
    ///
    /// let x = Tensor::from_vec(vec![0.0f64, 0.0, 1000.0], &[3])?;
    /// let y = x.logcumsumexp(0)?.to_vec();
    /// assert!((y[1] - 2f64.ln()).abs() < 1e-15 && y[2] == 1000.0);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Dim`](crate::TensorError::Dim) for a dimension out of range.
    pub fn logcumsumexp(&self, dim: isize) -> Result<Tensor<T>> {
        let d = resolve_dim("logcumsumexp", dim, self.shape())?;
        let xs = self.contiguous().to_vec();
        let mut out = xs.clone();
        for_each_lane(self.shape(), d, |base, n, inner| {
            let mut acc = f64::NEG_INFINITY;
            for k in 0..n {
                let at = base + k * inner;
                acc = log_add_exp(acc, xs[at].to_f64());
                out[at] = T::from_f64(acc);
            }
        });
        Tensor::from_vec(out, self.shape())
    }

    /// The gradient of [`logcumsumexp`](Tensor::logcumsumexp) for input `x`, output `y`
    /// and output gradient `grad`: `Σ_{k≥i} grad_k·e^{x_i - y_k}`, by the recursion
    /// `q_i = grad_i + e^{y_i - y_{i+1}}·q_{i+1}`, `grad_x_i = e^{x_i - y_i}·q_i`, whose
    /// factors are all at most 1 (y never decreases).
    ///
    /// # Errors
    /// [`TensorError::Dim`](crate::TensorError::Dim) for a dimension out of range;
    /// [`TensorError::Shape`](crate::TensorError::Shape) when the shapes differ.
    #[doc(hidden)]
    pub fn logcumsumexp_backward(
        grad: &Tensor<T>,
        x: &Tensor<T>,
        y: &Tensor<T>,
        dim: isize,
    ) -> Result<Tensor<T>> {
        let d = resolve_dim("logcumsumexp_backward", dim, x.shape())?;
        let g = grad.broadcast_to(x.shape())?.contiguous().to_vec();
        let (xs, ys) = (x.contiguous().to_vec(), y.contiguous().to_vec());
        let mut out = vec![T::zero(); xs.len()];
        for_each_lane(x.shape(), d, |base, n, inner| {
            let mut q = 0.0f64;
            let mut next_y = f64::NEG_INFINITY;
            for k in (0..n).rev() {
                let at = base + k * inner;
                let yk = ys[at].to_f64();
                let carry = if k + 1 < n && yk > f64::NEG_INFINITY {
                    (yk - next_y).exp()
                } else {
                    0.0
                };
                q = g[at].to_f64() + carry * q;
                let xk = xs[at].to_f64();
                let weight = if xk == f64::NEG_INFINITY {
                    0.0
                } else {
                    (xk - yk).exp()
                };
                out[at] = T::from_f64(weight * q);
                next_y = yk;
            }
        });
        Tensor::from_vec(out, x.shape())
    }
}

/// `log(e^a + e^b)`, exact at infinities.
fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if hi.is_infinite() {
        return hi + if lo.is_nan() { lo } else { 0.0 };
    }
    hi + (lo - hi).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumprod_gradient_with_zeros_matches_the_definition() {
        // Brute force: d/dx_i Σ_k g_k Π_{j≤k} x_j.
        for xs in [
            vec![2.0, 3.0, -1.5, 0.5],
            vec![2.0, 0.0, 4.0, 5.0],
            vec![0.0, 3.0, 0.0, 2.0],
            vec![1.0, 2.0, 3.0, 0.0],
        ] {
            let g = [0.3, -1.0, 2.0, 0.7];
            let x = Tensor::from_vec(xs.clone(), &[4]).unwrap();
            let got = Tensor::cumprod_backward(&Tensor::from_vec(g.to_vec(), &[4]).unwrap(), &x, 0)
                .unwrap()
                .to_vec();
            for (i, got) in got.iter().enumerate() {
                let want: f64 = (i..4)
                    .map(|k| g[k] * (0..=k).filter(|&j| j != i).map(|j| xs[j]).product::<f64>())
                    .sum();
                assert!((got - want).abs() < 1e-12, "{xs:?}[{i}]: {got} vs {want}");
            }
        }
    }

    #[test]
    fn logcumsumexp_is_stable_and_its_gradient_exact() {
        let x = Tensor::from_vec(vec![-1000.0, 0.5, 800.0, f64::NEG_INFINITY], &[2, 2]).unwrap();
        let y = x.logcumsumexp(0).unwrap().to_vec();
        assert_eq!(y, [-1000.0, 0.5, 800.0, 0.5]);
        let all_neg_inf = Tensor::from_vec(vec![f64::NEG_INFINITY; 2], &[2]).unwrap();
        assert_eq!(
            all_neg_inf.logcumsumexp(0).unwrap().to_vec(),
            [f64::NEG_INFINITY; 2]
        );
        let xs = [0.3f64, -0.2, 1.1, 0.4];
        let g = [1.0, -0.5, 0.25, 2.0];
        let x = Tensor::from_vec(xs.to_vec(), &[4]).unwrap();
        let y = x.logcumsumexp(0).unwrap();
        let yv = y.to_vec();
        let got =
            Tensor::logcumsumexp_backward(&Tensor::from_vec(g.to_vec(), &[4]).unwrap(), &x, &y, 0)
                .unwrap()
                .to_vec();
        for (i, got) in got.iter().enumerate() {
            let want: f64 = (i..4).map(|k| g[k] * (xs[i] - yv[k]).exp()).sum();
            assert!((got - want).abs() < 1e-12);
        }
    }
}
