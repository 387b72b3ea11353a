//! Hostile arguments through the tensor ops added for PyTorch parity: offsets, shifts,
//! counts, `k`s and dims at the ends of their types, einsum equations made of the
//! characters an equation uses, sorted sequences full of NaN, CTC lengths and blanks that
//! do not fit, SVDs of matrices no decomposition exists for. Each call returns an error
//! or a result whose size is what the arguments say (and small: nothing here may allocate
//! beyond a few megabytes, which the allocation limit enforces) — never a panic.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use strata_tensor::{IndexTensor, MatrixNorm, Tensor, with_allocation_limit};

/// Runs `f` under a 64 MiB allocation budget, failing the case on a panic or on an
/// allocation past the budget (a size computed from a hostile argument).
fn bounded<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, TestCaseError> {
    match with_allocation_limit(64 << 20, f) {
        Ok(r) => Ok(r),
        Err(e) => Err(TestCaseError::fail(format!("{what}: {e:?}"))),
    }
}

/// A signed amount: small, or at the ends of `isize`.
fn signed() -> impl Strategy<Value = isize> {
    prop_oneof![
        4 => -4isize..5,
        1 => Just(isize::MIN),
        1 => Just(isize::MAX),
        1 => Just(isize::MIN + 1),
        1 => Just(1isize << 40),
    ]
}

/// A count: small, or one no memory holds.
fn count() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..5,
        1 => Just(1usize << 40),
        1 => Just(usize::MAX / 2 + 1),
        1 => Just(usize::MAX),
    ]
}

fn x234() -> Tensor<f32> {
    Tensor::from_vec(
        (0..24).map(|v| (v as f32 * 0.37).sin()).collect(),
        &[2, 3, 4],
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Offsets, shifts, dims and counts at the ends of their types.
    #[test]
    fn rearrangements_take_extreme_arguments(off in signed(), d1 in signed(), d2 in signed(),
                                             n in count(), m in count(), k in count()) {
        let x = x234();
        let v = Tensor::from_vec(vec![1.0f32, -2.0, 3.0], &[3]).unwrap();
        if let Ok(y) = bounded("diag", || v.diag(off))? {
            let size = 3 + off.unsigned_abs();
            prop_assert_eq!(y.shape(), &[size, size][..]);
        }
        if let Ok(y) = bounded("diag of a matrix", || x.narrow(0, 0, 1).unwrap().squeeze(0).unwrap().diag(off))? {
            prop_assert!(y.numel() <= 3);
        }
        if let Ok(y) = bounded("diagonal", || x.diagonal(off, d1, d2))? {
            prop_assert!(y.numel() <= 24);
        }
        if let Ok(y) = bounded("roll", || x.roll(&[off, d1], &[0, -1]))? {
            prop_assert_eq!(y.shape(), x.shape());
        }
        if let Ok(y) = bounded("flat roll", || x.roll(&[off], &[]))? {
            prop_assert_eq!(y.shape(), x.shape());
        }
        if let Ok(y) = bounded("flip", || x.flip(&[d1, d2]))? {
            prop_assert_eq!(y.shape(), x.shape());
        }
        if let Ok(y) = bounded("tril", || x.tril(off))? {
            prop_assert_eq!(y.shape(), x.shape());
        }
        if let Ok(y) = bounded("triu", || x.triu(off))? {
            prop_assert_eq!(y.shape(), x.shape());
        }
        let r = bounded("repeat_interleave", || v.repeat_interleave(&[n, m, k], Some(0)))?;
        if let Ok(y) = r {
            prop_assert_eq!(y.numel(), n + m + k);
        }
        if let Ok(y) = bounded("repeat_interleave one count", || x.repeat_interleave(&[n], Some(d1)))? {
            prop_assert_eq!(y.numel(), 24 * n);
        }
        if let Ok(y) = bounded("repeat_interleave flat", || x.repeat_interleave(&[n], None))? {
            prop_assert_eq!(y.numel(), 24 * n);
        }
        if let Ok(y) = bounded("cumprod", || x.cumprod(d1))? {
            prop_assert_eq!(y.shape(), x.shape());
        }
        if let Ok(y) = bounded("logcumsumexp", || x.logcumsumexp(d1))? {
            prop_assert_eq!(y.shape(), x.shape());
        }
    }

    /// `k` beyond the dimension (or at the ends of `usize`), dims out of range.
    #[test]
    fn selections_take_extreme_k(k in count(), d in signed(), largest in any::<bool>()) {
        let x = x234();
        if let Ok((v, i)) = bounded("topk", || x.topk(k, d, largest))? {
            prop_assert_eq!(v.shape(), i.shape());
            prop_assert!(k <= 4 && v.numel() <= 24);
        }
        if let Ok((v, i)) = bounded("kthvalue", || x.kthvalue(k, d, largest))? {
            prop_assert_eq!(v.shape(), i.shape());
            prop_assert!((1..=4).contains(&k));
        }
        if let Ok((v, i)) = bounded("sort", || x.sort(d, largest))? {
            prop_assert_eq!(v.shape(), x.shape());
            prop_assert_eq!(i.shape(), x.shape());
        }
        for ord in [f64::NAN, f64::INFINITY, -0.0, 1e300, -1e-300] {
            if let Ok(y) = bounded("vector_norm", || x.vector_norm(ord, &[d], largest))? {
                prop_assert!(y.numel() <= 24);
            }
        }
    }

    /// Equations drawn from the characters equations are made of: an einsum result, or an
    /// error naming what is wrong.
    #[test]
    fn einsum_parses_any_equation(eq in "[ab.,\\->iI ]{0,14}", ops in 1..4usize) {
        let operands: Vec<Tensor<f32>> = [vec![2usize, 2], vec![2, 3], vec![3]]
            .iter()
            .take(ops)
            .map(|s| Tensor::ones(s))
            .collect();
        if let Ok(y) = bounded("einsum", || Tensor::einsum(&eq, &operands))? {
            prop_assert!(y.numel() <= 64, "{eq}: {:?}", y.shape());
        }
    }

    /// Sorted sequences with NaN and infinities, values of other shapes, CTC inputs whose
    /// lengths and blank do not fit.
    #[test]
    fn searching_and_ctc_take_hostile_inputs(
        seq in prop::collection::vec(prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(-1.0f32), Just(2.0f32)], 0..6),
        right in any::<bool>(),
        lens in prop::collection::vec(count(), 0..3),
        tlens in prop::collection::vec(count(), 0..3),
        blank in count(),
        target in prop::collection::vec(prop_oneof![Just(-1i64), 0i64..5, Just(i64::MAX), Just(i64::MIN)], 0..6),
    ) {
        let sorted = Tensor::from_vec(seq.clone(), &[seq.len()]).unwrap();
        let values = Tensor::from_vec(vec![0.5f32, f32::NAN, f32::NEG_INFINITY], &[3]).unwrap();
        if let Ok(i) = bounded("searchsorted", || sorted.searchsorted(&values, right))? {
            prop_assert_eq!(i.shape(), &[3][..]);
            prop_assert!(i.to_vec().iter().all(|&p| (0..=seq.len() as i64).contains(&p)));
        }
        if let Ok(i) = bounded("bucketize", || values.bucketize(&sorted, right))? {
            prop_assert_eq!(i.shape(), &[3][..]);
        }
        let (u, inverse, counts) = bounded("unique", || sorted.unique())?;
        prop_assert_eq!(inverse.numel(), seq.len());
        prop_assert_eq!(u.numel(), counts.numel());
        prop_assert_eq!(counts.to_vec().iter().sum::<i64>(), seq.len() as i64);
        // log-probabilities [T = 4, N = 2, C = 3]
        let logp = Tensor::<f32>::full(&[4, 2, 3], (1.0f32 / 3.0).ln());
        let n = target.len();
        let Ok(targets) = IndexTensor::from_vec(target, &[1, n]) else {
            return Ok(());
        };
        if let Ok(l) = bounded("ctc_loss", || logp.ctc_loss(&targets, &lens, &tlens, blank))? {
            prop_assert!(l.numel() <= 2);
        }
    }

    /// The SVD and the norms of singular values of matrices with NaN, infinities, zeros,
    /// empty sides and huge values.
    #[test]
    fn svd_takes_hostile_matrices(
        m in 0usize..4, n in 0usize..4,
        v in prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(0.0f32), Just(f32::MAX), Just(1e-38f32), -2.0f32..2.0],
        ord in prop_oneof![Just(MatrixNorm::Nuc), Just(MatrixNorm::Two), Just(MatrixNorm::NegTwo)],
    ) {
        let a = Tensor::<f32>::full(&[2, m, n], v);
        if let Ok((u, s, vh)) = bounded("svd", || a.svd())? {
            let k = m.min(n);
            prop_assert_eq!(u.shape(), &[2, m, k][..]);
            prop_assert_eq!(s.shape(), &[2, k][..]);
            prop_assert_eq!(vh.shape(), &[2, k, n][..]);
            prop_assert!(v.is_finite() || m * n == 0);
        }
        if let Ok(y) = bounded("matrix_norm", || a.matrix_norm(ord, false))? {
            prop_assert_eq!(y.shape(), &[2][..]);
            prop_assert!(v.is_finite() || m * n == 0);
        }
    }
}
