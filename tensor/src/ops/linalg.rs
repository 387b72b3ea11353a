//! Least squares through faer's QR factorisation, and the singular value decomposition
//! through faer's SVD.

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

/// The most elements `svd` takes in one call (a bound on the f64 copies it makes).
const SVD_MAX_ELEMENTS: usize = 1 << 26;

impl<T: Element> Tensor<T> {
    /// The reduced singular value decomposition of each matrix in the last two dimensions,
    /// like `torch.linalg.svd(A, full_matrices=False)`: `(U, S, Vh)` with `U` `[…, m, k]`,
    /// `S` `[…, k]` (non-negative, in descending order) and `Vh` `[…, k, n]`, `k = min(m,
    /// n)`, such that `A = U·diag(S)·Vh`. Computed in f64 by faer whatever `T` is. As in
    /// PyTorch, the columns of `U` and rows of `Vh` are unique only up to sign (and, for
    /// repeated singular values, up to a rotation).
    ///
    /// ```
    /// use strata_tensor::Tensor;
    ///
    /// let a = Tensor::from_vec(vec![3.0f64, 0.0, 0.0, -2.0], &[2, 2])?;
    /// let (u, s, vh) = a.svd()?;
    /// assert_eq!(s.to_vec(), vec![3.0, 2.0]);
    /// let back = u.mul(&s.unsqueeze(-2)?)?.matmul(&vh)?;
    /// assert!(back.to_vec().iter().zip(a.to_vec()).all(|(x, y)| (x - y).abs() < 1e-12));
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Shape`] for fewer than two dimensions; [`TensorError::Invalid`] for
    /// a NaN or an infinity (the decomposition does not exist), more than 2^26 elements, or
    /// an iteration that does not converge.
    pub fn svd(&self) -> Result<(Tensor<T>, Tensor<T>, Tensor<T>)> {
        self.svd_impl(true).map(|(u, s, vh)| {
            (
                u.expect("vectors asked for"),
                s,
                vh.expect("vectors asked for"),
            )
        })
    }

    /// The singular values of each matrix in the last two dimensions, `[…, min(m, n)]` in
    /// descending order, like `torch.linalg.svdvals`.
    ///
    /// # Errors
    /// As [`svd`](Tensor::svd).
    pub fn svdvals(&self) -> Result<Tensor<T>> {
        self.svd_impl(false).map(|(_, s, _)| s)
    }

    #[allow(clippy::type_complexity)]
    fn svd_impl(&self, vectors: bool) -> Result<(Option<Tensor<T>>, Tensor<T>, Option<Tensor<T>>)> {
        const OP: &str = "svd";
        let shape = self.shape();
        let nd = shape.len();
        if nd < 2 {
            return Err(TensorError::shape(
                OP,
                format!("expects a matrix or a batch of matrices, got shape {shape:?}"),
            ));
        }
        if self.numel() > SVD_MAX_ELEMENTS {
            return Err(TensorError::invalid(
                OP,
                format!(
                    "{} elements exceed the {SVD_MAX_ELEMENTS} svd takes",
                    self.numel()
                ),
            ));
        }
        let (m, n) = (shape[nd - 2], shape[nd - 1]);
        let k = m.min(n);
        let batch: usize = shape[..nd - 2].iter().product();
        let values = self.contiguous().to_vec();
        if let Some(v) = values
            .iter()
            .map(|&v| Element::to_f64(v))
            .find(|v| !v.is_finite())
        {
            return Err(TensorError::invalid(
                OP,
                format!("the matrix holds {v}: the decomposition does not exist"),
            ));
        }
        let (mut u, mut s, mut vh) = (
            Vec::with_capacity(if vectors { batch * m * k } else { 0 }),
            Vec::with_capacity(batch * k),
            Vec::with_capacity(if vectors { batch * k * n } else { 0 }),
        );
        let failed = |e| TensorError::invalid(OP, format!("faer's SVD failed: {e:?}"));
        for b in 0..batch {
            if k == 0 {
                break;
            }
            let off = b * m * n;
            let a = Mat::<f64>::from_fn(m, n, |i, j| values[off + i * n + j].to_f64());
            if vectors {
                let d = a.thin_svd().map_err(failed)?;
                let (du, ds, dv) = (d.U(), d.S().column_vector(), d.V());
                s.extend((0..k).map(|i| T::from_f64(ds[i])));
                u.extend(
                    (0..m)
                        .flat_map(|i| (0..k).map(move |j| (i, j)))
                        .map(|(i, j)| T::from_f64(du[(i, j)])),
                );
                vh.extend(
                    (0..k)
                        .flat_map(|i| (0..n).map(move |j| (i, j)))
                        .map(|(i, j)| T::from_f64(dv[(j, i)])),
                );
            } else {
                s.extend(
                    a.singular_values()
                        .map_err(failed)?
                        .into_iter()
                        .map(T::from_f64),
                );
            }
        }
        let lead = &shape[..nd - 2];
        let with = |tail: &[usize]| [lead, tail].concat();
        let s = Tensor::from_vec(s, &with(&[k]))?;
        if !vectors {
            return Ok((None, s, None));
        }
        Ok((
            Some(Tensor::from_vec(u, &with(&[m, k]))?),
            s,
            Some(Tensor::from_vec(vh, &with(&[k, n]))?),
        ))
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

    #[test]
    fn svd_reconstructs_batches_of_wide_and_tall_matrices() {
        let mut rng = crate::seeded_rng(7);
        for shape in [[2usize, 4, 3], [2, 3, 5], [1, 1, 4], [3, 2, 2]] {
            let a = Tensor::<f64>::randn(&shape, &mut rng);
            let (u, s, vh) = a.svd().unwrap();
            let k = shape[1].min(shape[2]);
            assert_eq!(u.shape(), &[shape[0], shape[1], k]);
            assert_eq!(s.shape(), &[shape[0], k]);
            assert_eq!(vh.shape(), &[shape[0], k, shape[2]]);
            let back = u
                .mul(&s.unsqueeze(-2).unwrap())
                .unwrap()
                .matmul(&vh)
                .unwrap();
            for (x, y) in back.to_vec().iter().zip(a.to_vec()) {
                assert!((x - y).abs() < 1e-12, "{x} vs {y}");
            }
            // Orthonormal columns of U, rows of Vh; descending non-negative values.
            let utu = u.transpose(-2, -1).unwrap().matmul(&u).unwrap().to_vec();
            for (i, v) in utu.iter().enumerate() {
                let want = if (i % (k * k)) % (k + 1) == 0 {
                    1.0
                } else {
                    0.0
                };
                assert!((v - want).abs() < 1e-12);
            }
            assert_eq!(a.svdvals().unwrap().to_vec(), s.to_vec());
            for row in s.to_vec().chunks(k) {
                assert!(row.windows(2).all(|w| w[0] >= w[1]) && row[k - 1] >= 0.0);
            }
        }
        let empty = Tensor::<f32>::zeros(&[2, 0, 3]);
        assert_eq!(empty.svdvals().unwrap().shape(), &[2, 0]);
        assert!(Tensor::<f32>::zeros(&[3]).svd().is_err());
        let inf = Tensor::from_vec(vec![1.0f32, f32::INFINITY, 0.0, 1.0], &[2, 2]).unwrap();
        assert!(inf.svd().unwrap_err().to_string().contains("inf"));
    }
}
