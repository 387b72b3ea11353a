//! Matrix products through faer: 2-d, matrix–vector, and batched with broadcast batch
//! dimensions.
//!
//! Operands reach the GEMM (see `engine::gemm`) as strided views, so transposed and
//! sliced operands are multiplied without a copy; the kernel packs them as it needs.
//! A stack of matrices times one matrix (`[.., m, k] @ [k, n]`, the shape of every linear
//! layer) is folded into a single tall product when the stack's rows are evenly strided.

use faer::Par;

use crate::engine::gemm::{
    Axis, Fused, PAR_MIN_MACS, Strided, parallelism, product, product_fused,
};
use crate::engine::par;
use crate::handle::layout::{broadcast_shapes, check_shape, numel};
use crate::handle::storage::{try_alloc, try_alloc_zeroed};
use crate::{Element, Result, Tensor, TensorError};

impl<T: Element> Tensor<T> {
    /// The matrix product with PyTorch's `torch.matmul` rules: 1-d × 1-d is a dot product
    /// (0-d result), a 1-d operand is treated as a row (left) or column (right) vector and
    /// that dimension removed, and leading batch dimensions broadcast.
    ///
    /// Transposed and strided operands are read in place. The one exception: a large
    /// product (≥ 4 Mi multiply-adds) whose left operand is a transposed view uses one
    /// scratch buffer per matrix product, of `m·k` (a row-major copy of it) or `m·n`
    /// elements (the result, transposed into place), where faer would read it at half speed.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
    /// let v = Tensor::from_vec(vec![1.0f32, 1.0], &[2])?;
    /// assert_eq!(a.matmul(&v)?.to_vec(), vec![3.0, 7.0]);
    /// let batch = Tensor::<f32>::ones(&[5, 3, 2]);
    /// assert_eq!(batch.matmul(&a)?.shape(), &[5, 3, 2]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Matmul`] when the inner dimensions differ, the batch dimensions do not
    /// broadcast, or an operand is 0-d; [`TensorError::TooLarge`] or
    /// [`TensorError::OutOfMemory`] when the product cannot be allocated.
    pub fn matmul(&self, other: &Tensor<T>) -> Result<Tensor<T>> {
        let err = || TensorError::Matmul {
            op: "matmul",
            lhs: self.shape().to_vec(),
            rhs: other.shape().to_vec(),
        };
        if self.ndim() == 0 || other.ndim() == 0 {
            return Err(err());
        }
        let a = if self.ndim() == 1 {
            self.unsqueeze(0)?
        } else {
            self.clone()
        };
        let b = if other.ndim() == 1 {
            other.unsqueeze(1)?
        } else {
            other.clone()
        };
        let (ra, rb) = (a.ndim(), b.ndim());
        let (m, k) = (a.shape()[ra - 2], a.shape()[ra - 1]);
        let (k2, n) = (b.shape()[rb - 2], b.shape()[rb - 1]);
        if k != k2 {
            return Err(err());
        }
        let batch = broadcast_shapes("matmul", &a.shape()[..ra - 2], &b.shape()[..rb - 2])
            .map_err(|_| err())?;
        let mut out_shape = batch.clone();
        if self.ndim() > 1 {
            out_shape.push(m);
        }
        if other.ndim() > 1 {
            out_shape.push(n);
        }
        // The result's count is checked before anything is multiplied: `[2^40, 0] @ [0, 2^40]`
        // is a valid product of two empty tensors whose result cannot exist.
        let total = check_shape::<T>("matmul", &out_shape)?;
        let batch_n = numel(&batch);
        if total == 0 || k == 0 {
            return Ok(Tensor::from_contiguous(
                try_alloc_zeroed("matmul", &out_shape)?,
                &out_shape,
            ));
        }
        let mut out = try_alloc::<T>("matmul", &out_shape)?;
        let sa = a.strides();
        let sb = b.strides();

        // [.., m, k] @ [k, n] with evenly strided rows: one tall [(batch * m), k] product.
        if rb == 2
            && ra > 2
            && let Some(strides) = a.layout().view_strides(&[batch_n * m, k])
        {
            let la = Strided {
                offset: a.layout().offset(),
                rs: strides[0],
                cs: strides[1],
            };
            let lb = Strided {
                offset: b.layout().offset(),
                rs: sb[0],
                cs: sb[1],
            };
            let macs = total.saturating_mul(k);
            product(
                &mut out,
                (batch_n * m, n, k),
                a.storage(),
                la,
                b.storage(),
                lb,
                false,
                parallelism(macs),
            );
            return Ok(Tensor::from_contiguous(out, &out_shape));
        }

        // General case: one product per batch index, the operands' batch strides broadcast.
        let la_batch = a.layout().broadcast_batch(&batch, ra);
        let lb_batch = b.layout().broadcast_batch(&batch, rb);
        let operand = |i: usize, base: usize, strides: &[usize], rs: usize, cs: usize| {
            let mut rem = i;
            let mut offset = base;
            for (d, &size) in batch.iter().enumerate().rev() {
                offset += (rem % size) * strides[d];
                rem /= size;
            }
            Strided { offset, rs, cs }
        };
        let (a_off, b_off) = (a.layout().offset(), b.layout().offset());
        let (ad, bd) = (a.storage(), b.storage());
        let job = |i: usize, o: &mut [T], par: Par| {
            let la = operand(i, a_off, &la_batch, sa[ra - 2], sa[ra - 1]);
            let lb = operand(i, b_off, &lb_batch, sb[rb - 2], sb[rb - 1]);
            product(o, (m, n, k), ad, la, bd, lb, false, par);
        };
        let macs = (m * n).saturating_mul(k);
        // Many products: one thread per product, each run serially (no fork-join per
        // product), when they split evenly enough across the threads or are too small to
        // split themselves.
        let threads = par::threads();
        let by_batch =
            macs < PAR_MIN_MACS || batch_n.is_multiple_of(threads) || batch_n >= 4 * threads;
        if batch_n > 1 && by_batch && batch_n.saturating_mul(macs) >= PAR_MIN_MACS {
            par::chunks_mut(&mut out, m * n, true, |i, o| job(i, o, Par::Seq));
        } else {
            let par = parallelism(macs);
            for (i, o) in out.chunks_mut(m * n).enumerate() {
                job(i, o, par);
            }
        }
        Ok(Tensor::from_contiguous(out, &out_shape))
    }
}

impl<T: Element> Tensor<T> {
    /// `x·Wᵀ + b` like `F.linear`: `self` `[*, in]`, `weight` `[out, in]`, an optional
    /// `bias` `[out]`; the result is `[*, out]`.
    ///
    /// One product over the batch dimensions folded into rows, the weight read transposed
    /// in place; the bias is added as the product stores its result, not in a pass of its
    /// own.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], &[1, 2])?;
    /// let w = Tensor::from_vec(vec![1.0f32, 1.0, 1.0, -1.0], &[2, 2])?;
    /// let b = Tensor::from_vec(vec![0.5f32, 0.5], &[2])?;
    /// assert_eq!(x.linear(&w, Some(&b))?.to_vec(), vec![3.5, -0.5]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the weight is not 2-d, `self` does not end in `in`
    /// features, or the bias is not `[out]`; [`TensorError::TooLarge`] or
    /// [`TensorError::OutOfMemory`] when the result cannot be allocated.
    pub fn linear(&self, weight: &Tensor<T>, bias: Option<&Tensor<T>>) -> Result<Tensor<T>> {
        self.linear_with("linear", weight, bias, false)
    }

    /// `relu(x·Wᵀ + b)` ([`linear`](Tensor::linear) then [`relu`](Tensor::relu)) in one
    /// pass: the bias and the clamp are applied as the product stores its result.
    ///
    /// ```
    /// use strata_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], &[1, 2])?;
    /// let w = Tensor::from_vec(vec![1.0f32, 1.0, 1.0, -1.0], &[2, 2])?;
    /// assert_eq!(x.linear_relu(&w, None)?.to_vec(), vec![3.0, 0.0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// As [`linear`](Tensor::linear).
    pub fn linear_relu(&self, weight: &Tensor<T>, bias: Option<&Tensor<T>>) -> Result<Tensor<T>> {
        self.linear_with("linear_relu", weight, bias, true)
    }

    fn linear_with(
        &self,
        op: &'static str,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        relu: bool,
    ) -> Result<Tensor<T>> {
        let shape_error = |msg: String| TensorError::shape(op, msg);
        let &[out_f, in_f] = weight.shape() else {
            return Err(shape_error(format!(
                "the weight must be [out, in], got {:?}",
                weight.shape()
            )));
        };
        if self.ndim() == 0 || self.shape().last() != Some(&in_f) {
            return Err(shape_error(format!(
                "the input {:?} must end in {in_f} features",
                self.shape()
            )));
        }
        if let Some(b) = bias
            && b.shape() != [out_f]
        {
            return Err(shape_error(format!(
                "the bias must be [{out_f}], got {:?}",
                b.shape()
            )));
        }
        let mut out_shape = self.shape().to_vec();
        *out_shape.last_mut().expect("checked non-empty") = out_f;
        let mut out = try_alloc::<T>(op, &out_shape)?;
        let rows = out_shape[..out_shape.len() - 1].iter().product::<usize>();
        if out.is_empty() {
            return Ok(Tensor::from_contiguous(out, &out_shape));
        }
        // The rows of x as one strided matrix (a copy only when they are not evenly
        // strided), and Wᵀ as a view of the weight.
        let x = match self.layout().view_strides(&[rows, in_f]) {
            Some(_) => self.clone(),
            None => self.contiguous(),
        };
        let xs = x
            .layout()
            .view_strides(&[rows, in_f])
            .expect("a contiguous tensor folds");
        let la = Strided {
            offset: x.layout().offset(),
            rs: xs[0],
            cs: xs[1],
        };
        let ws = weight.strides();
        let lb = Strided {
            offset: weight.layout().offset(),
            rs: ws[1],
            cs: ws[0],
        };
        let bias = bias.map(Tensor::contiguous);
        let epi = Fused {
            bias: bias
                .as_ref()
                .map(|b| (b.as_slice().expect("contiguous"), Axis::Cols)),
            relu,
        };
        let macs = (rows * out_f).saturating_mul(in_f);
        product_fused(
            &mut out,
            (rows, out_f, in_f),
            x.storage(),
            la,
            weight.storage(),
            lb,
            false,
            epi,
            parallelism(macs),
        );
        Ok(Tensor::from_contiguous(out, &out_shape))
    }
}

impl crate::Layout {
    /// Strides of this layout's leading (batch) dimensions broadcast to `batch`; the last two
    /// dimensions of a rank-`rank` layout are the matrix.
    fn broadcast_batch(&self, batch: &[usize], rank: usize) -> Vec<usize> {
        let own = &self.shape()[..rank - 2];
        let lead = batch.len() - own.len();
        (0..batch.len())
            .map(|d| {
                if d < lead || own[d - lead] == 1 {
                    0
                } else {
                    self.strides()[d - lead]
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::gemm::{COL_DST_MIN_MACS, Strided as Operand, parallelism, product as gemm};
    use crate::{Tensor, TensorError};

    fn t(data: &[f64], shape: &[usize]) -> Tensor<f64> {
        Tensor::from_slice(data, shape).unwrap()
    }

    #[test]
    fn products_by_hand() {
        let a = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        let b = t(&[1., 0., 0., 1., 1., 1.], &[3, 2]);
        assert_eq!(a.matmul(&b).unwrap().to_vec(), vec![4., 5., 10., 11.]);
        // transposed operands, no copy: a @ a^T
        let at = a.transpose(0, 1).unwrap();
        assert_eq!(a.matmul(&at).unwrap().to_vec(), vec![14., 32., 32., 77.]);
        // vector cases
        let v = t(&[1., 1., 1.], &[3]);
        assert_eq!(a.matmul(&v).unwrap().shape(), &[2]);
        assert_eq!(v.matmul(&b).unwrap().to_vec(), vec![2., 2.]);
        let dot = v.matmul(&v).unwrap();
        assert_eq!(dot.shape(), &[] as &[usize]);
        assert_eq!(dot.item().unwrap(), 3.0);
    }

    #[test]
    fn batched_with_broadcast() {
        let a = Tensor::<f64>::arange(0.0, 12.0, 1.0)
            .unwrap()
            .reshape([2, 1, 2, 3])
            .unwrap();
        let b = Tensor::<f64>::ones(&[3, 3, 1]);
        let c = a.matmul(&b).unwrap();
        assert_eq!(c.shape(), &[2, 3, 2, 1]);
        assert_eq!(c.get(&[1, 2, 1, 0]).unwrap(), 9. + 10. + 11.);
        // [.., m, k] @ [k, n] folded into one product
        let w = t(&[1., 2., 3.], &[3, 1]);
        let c = a.matmul(&w).unwrap();
        assert_eq!(c.shape(), &[2, 1, 2, 1]);
        assert_eq!(c.to_vec(), vec![8., 26., 44., 62.]);
    }

    #[test]
    fn shape_errors() {
        let a = Tensor::<f32>::zeros(&[2, 3]);
        let b = Tensor::<f32>::zeros(&[4, 5]);
        let e = a.matmul(&b).unwrap_err();
        assert_eq!(e.to_string(), "matmul: cannot multiply [2, 3] by [4, 5]");
        assert!(matches!(
            Tensor::<f32>::zeros(&[2, 2, 3]).matmul(&Tensor::zeros(&[3, 3, 4])),
            Err(TensorError::Matmul { .. })
        ));
        assert!(Tensor::<f32>::scalar(1.0).matmul(&a).is_err());
        // empty inner dimension gives zeros
        let z = Tensor::<f32>::ones(&[2, 0])
            .matmul(&Tensor::ones(&[0, 3]))
            .unwrap();
        assert_eq!(z.to_vec(), vec![0.0; 6]);
    }

    /// Products past `COL_DST_MIN_MACS` with a column-major left operand take the
    /// scratch paths (a copied `a`, or a column-major result transposed into place), with
    /// and without accumulation; they equal the triple loop.
    #[test]
    fn column_major_left_operands_past_the_threshold() {
        // (m, k, n, b column-major): copy path, column-major result (m > n), column-major
        // result (b column-major), direct.
        for (m, k, n, bt) in [
            (200, 60, 400, false),
            (300, 200, 90, false),
            (128, 256, 160, true),
            (100, 300, 150, false),
        ] {
            assert!(m * n * k >= COL_DST_MIN_MACS);
            let a: Vec<f64> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f64 - 50.0) / 64.0)
                .collect();
            let b: Vec<f64> = (0..k * n)
                .map(|i| ((i * 53 % 89) as f64 - 44.0) / 32.0)
                .collect();
            // a is stored [k, m] (column-major [m, k]); b [k, n] or stored [n, k].
            let av = |i: usize, kk: usize| a[kk * m + i];
            let bv = |kk: usize, j: usize| if bt { b[j * k + kk] } else { b[kk * n + j] };
            let lb = if bt {
                Operand::transposed(0, k)
            } else {
                Operand::row_major(0, n)
            };
            for accumulate in [false, true] {
                let mut out: Vec<f64> = (0..m * n).map(|i| (i % 7) as f64).collect();
                let par = parallelism(m * n * k);
                gemm(
                    &mut out,
                    (m, n, k),
                    &a,
                    Operand::transposed(0, m),
                    &b,
                    lb,
                    accumulate,
                    par,
                );
                for i in (0..m).step_by(7) {
                    for j in 0..n {
                        let dot: f64 = (0..k).map(|kk| av(i, kk) * bv(kk, j)).sum();
                        let want = dot
                            + if accumulate {
                                ((i * n + j) % 7) as f64
                            } else {
                                0.0
                            };
                        let got = out[i * n + j];
                        assert!(
                            (got - want).abs() < 1e-9,
                            "{m}x{k}x{n} [{i},{j}] {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// `linear` and `linear_relu` equal `matmul(wᵀ) + b` (then `relu`) on every path: f32
    /// through strata's own kernel (the epilogue in the store), f64 through faer (the
    /// epilogue as a pass) including its column-major scratch, folded batch dimensions,
    /// strided inputs and weights, an empty `in`; NaN and -0 pass the ReLU as in `relu`.
    #[test]
    fn linear_and_linear_relu_equal_the_unfused_ops() {
        fn check<T: crate::Element>(x: &Tensor<T>, w: &Tensor<T>, b: Option<&Tensor<T>>, tol: f64) {
            let mut want = x.matmul(&w.t().unwrap()).unwrap();
            if let Some(b) = b {
                want = want.add(b).unwrap();
            }
            for (got, want) in [
                (x.linear(w, b).unwrap(), want.clone()),
                (x.linear_relu(w, b).unwrap(), want.relu()),
            ] {
                assert_eq!(got.shape(), want.shape());
                for (g, v) in got.to_vec().into_iter().zip(want.to_vec()) {
                    let (g, v) = (g.to_f64(), v.to_f64());
                    assert!(
                        (g - v).abs() <= tol * (1.0 + v.abs()) || (g.is_nan() && v.is_nan()),
                        "{:?}·{:?}: {g} vs {v}",
                        x.shape(),
                        w.shape()
                    );
                    assert_eq!(g.is_sign_negative(), v.is_sign_negative(), "{g} vs {v}");
                }
            }
        }
        let mut rng = crate::seeded_rng(7);
        for (rows, inf, outf) in [(1, 1, 1), (5, 7, 3), (130, 70, 45), (64, 300, 200)] {
            let x = Tensor::<f32>::randn(&[rows, inf], &mut rng);
            let w = Tensor::<f32>::randn(&[outf, inf], &mut rng);
            let b = Tensor::<f32>::randn(&[outf], &mut rng);
            check(&x, &w, Some(&b), 1e-5);
            check(&x, &w, None, 1e-5);
            // Strided: x a transposed view, w a transposed view, batch dimensions folded.
            let xt = Tensor::<f32>::randn(&[inf, rows], &mut rng).t().unwrap();
            let wt = Tensor::<f32>::randn(&[inf, outf], &mut rng).t().unwrap();
            check(&xt, &wt, Some(&b), 1e-5);
            let x3 = Tensor::<f32>::randn(&[2, rows, inf], &mut rng);
            check(&x3, &w, Some(&b), 1e-5);
            let x64 = Tensor::<f64>::randn(&[3, rows, inf], &mut rng);
            let w64 = Tensor::<f64>::randn(&[outf, inf], &mut rng);
            let b64 = Tensor::<f64>::randn(&[outf], &mut rng);
            check(&x64, &w64, Some(&b64), 1e-12);
        }
        // f64 past the column-major threshold: faer's scratch paths, then the pass.
        let x = Tensor::<f64>::randn(&[256, 256], &mut rng).t().unwrap();
        let w = Tensor::<f64>::randn(&[256, 128], &mut rng).t().unwrap();
        let b = Tensor::<f64>::randn(&[128], &mut rng);
        check(&x, &w, Some(&b), 1e-12);
        // No input features: the bias alone.
        let b = t(&[1.0, -2.0], &[2]);
        let y = Tensor::<f64>::zeros(&[3, 0]).linear_relu(&Tensor::zeros(&[2, 0]), Some(&b));
        assert_eq!(y.unwrap().to_vec(), vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        // NaN passes through the fused ReLU; -0 stays -0.
        let x = Tensor::from_vec(vec![f32::NAN, 1.0, 0.0, -1.0], &[2, 2]).unwrap();
        let w = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[2, 2]).unwrap();
        let b = Tensor::from_vec(vec![0.0f32, -0.0], &[2]).unwrap();
        check(&x, &w, Some(&b), 0.0);
        let big = Tensor::<f32>::randn(&[40, 40], &mut rng);
        let mut xs = big.to_vec();
        xs[5] = f32::NAN;
        let xn = Tensor::from_vec(xs, &[40, 40]).unwrap();
        check(&xn, &big, None, 1e-5);
    }

    #[test]
    fn linear_shape_errors() {
        let x = Tensor::<f32>::zeros(&[2, 3]);
        let w = Tensor::<f32>::zeros(&[4, 3]);
        for e in [
            x.linear(&Tensor::zeros(&[4, 2]), None),
            x.linear(&Tensor::zeros(&[12]), None),
            x.linear(&w, Some(&Tensor::zeros(&[3]))),
            Tensor::<f32>::scalar(1.0).linear(&w, None),
            x.linear_relu(&w, Some(&Tensor::zeros(&[1, 4]))),
        ] {
            assert!(matches!(e, Err(TensorError::Shape { .. })), "{e:?}");
        }
        assert_eq!(x.linear(&w, None).unwrap().shape(), &[2, 4]);
        assert_eq!(
            Tensor::<f32>::zeros(&[0, 3])
                .linear(&w, None)
                .unwrap()
                .shape(),
            &[0, 4]
        );
    }
}
