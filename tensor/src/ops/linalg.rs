//! Least squares through faer's QR factorisation.

use faer::Mat;
use faer::linalg::solvers::SolveLstsq;

use crate::{Element, Result, Tensor, TensorError};

impl<T: Element> Tensor<T> {
    /// The `x` minimising `‖self·x − b‖₂` for `self` `[m, n]` with `m ≥ n` and full column
    /// rank, by Householder QR (faer), like `torch.linalg.lstsq(A, b).solution`. `b` is `[m]`
    /// (giving `[n]`) or `[m, k]` (giving `[n, k]`). Computed in f64 whatever `T` is.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    /// // Fit y = 1 + 2x through three points.
    /// let a = Tensor::from_vec(vec![1.0f64, 0.0, 1.0, 1.0, 1.0, 2.0], &[3, 2])?;
    /// let y = Tensor::from_vec(vec![1.0, 3.0, 5.0], &[3])?;
    /// let x = a.lstsq(&y)?.to_vec();
    /// assert!((x[0] - 1.0).abs() < 1e-12 && (x[1] - 2.0).abs() < 1e-12);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Shape`] when `self` is not 2-d with at least as many rows as columns,
    /// or `b`'s rows differ.
    pub fn lstsq(&self, b: &Tensor<T>) -> Result<Tensor<T>> {
        const OP: &str = "lstsq";
        let (m, n) = match self.shape() {
            &[m, n] if m >= n && n > 0 => (m, n),
            s => {
                return Err(TensorError::shape(
                    OP,
                    format!("expected a matrix [m, n] with m >= n >= 1, got {s:?}"),
                ));
            }
        };
        let k = match b.shape() {
            &[r] if r == m => 1,
            &[r, k] if r == m => k,
            s => {
                return Err(TensorError::shape(
                    OP,
                    format!(
                        "expected b of shape [{m}] or [{m}, k] for A of shape [{m}, {n}], got {s:?}"
                    ),
                ));
            }
        };
        let av = self.contiguous().to_vec();
        let bv = b.contiguous().to_vec();
        let a = Mat::<f64>::from_fn(m, n, |i, j| av[i * n + j].to_f64());
        let rhs = Mat::<f64>::from_fn(m, k, |i, j| bv[i * k + j].to_f64());
        let x = a.qr().solve_lstsq(&rhs);
        let out: Vec<T> = (0..n)
            .flat_map(|i| (0..k).map(move |j| (i, j)))
            .map(|(i, j)| T::from_f64(x[(i, j)]))
            .collect();
        let shape: &[usize] = if b.ndim() == 1 { &[n] } else { &[n, k] };
        Tensor::from_vec(out, shape)
    }
}
