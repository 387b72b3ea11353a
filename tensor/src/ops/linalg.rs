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
    /// or `b`'s rows differ; [`TensorError::Invalid`] when `self` is rank-deficient (a
    /// diagonal entry of R below `max(m, n) · ε` times the largest), or holds a NaN or an
    /// infinity: the solution is then not unique (or not a number), and QR would divide by
    /// rounding noise into huge or NaN coefficients without a word. (PyTorch's CPU
    /// default, `gelsy`, returns one of the solutions instead.)
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
        if let Some(v) = av
            .iter()
            .map(|&v| Element::to_f64(v))
            .find(|v| !v.is_finite())
        {
            return Err(TensorError::invalid(
                OP,
                format!("the matrix holds {v}, which has no least-squares solution"),
            ));
        }
        let qr = a.qr();
        let r = qr.thin_R();
        let diag: Vec<f64> = (0..n).map(|i| r[(i, i)].abs()).collect();
        let largest = diag.iter().copied().fold(0.0, f64::max);
        let tolerance = largest * m.max(n) as f64 * f64::EPSILON;
        if let Some(col) = diag.iter().position(|&d| d <= tolerance) {
            return Err(TensorError::invalid(
                OP,
                format!(
                    "the [{m}, {n}] matrix is rank-deficient (column {col} is a combination of \
                     the others, or zero): the least-squares solution is not unique"
                ),
            ));
        }
        let x = qr.solve_lstsq(&rhs);
        let out: Vec<T> = (0..n)
            .flat_map(|i| (0..k).map(move |j| (i, j)))
            .map(|(i, j)| T::from_f64(x[(i, j)]))
            .collect();
        let shape: &[usize] = if b.ndim() == 1 { &[n] } else { &[n, k] };
        Tensor::from_vec(out, shape)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Tensor, TensorError};

    #[test]
    fn rank_deficient_and_non_finite_matrices_are_errors() {
        // Two equal columns: x0 + x1 is determined, x0 and x1 are not.
        let a = Tensor::from_vec(vec![1.0f64, 1.0, 2.0, 2.0, 3.0, 3.0], &[3, 2]).unwrap();
        let b = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap();
        let err = a.lstsq(&b).unwrap_err();
        assert!(
            matches!(err, TensorError::Invalid { op: "lstsq", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("rank-deficient"), "{err}");
        // A zero column.
        let z = Tensor::from_vec(vec![1.0f64, 0.0, 2.0, 0.0, 3.0, 0.0], &[3, 2]).unwrap();
        assert!(z.lstsq(&b).is_err());
        let nan = Tensor::from_vec(vec![1.0f64, f64::NAN, 2.0, 1.0, 3.0, 0.0], &[3, 2]).unwrap();
        assert!(nan.lstsq(&b).unwrap_err().to_string().contains("NaN"));
    }
}
