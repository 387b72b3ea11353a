//! `matmul` equals the naive triple loop of `reference::matmul` for every operand rank
//! PyTorch accepts (1-d·1-d, 1-d·2-d, 2-d·1-d, 2-d·2-d, batched with broadcast batch
//! dimensions), on transposed, strided and permuted operands, in f64 and f32; shapes that
//! do not fit give `TensorError::Matmul` naming both shapes.

use crate::common;

use common::reference;
use common::*;
use proptest::prelude::*;
use strata_tensor::{Element, Tensor, TensorError};

/// Operand shapes for `torch.matmul`: `[m, k]`-like and `[k, n]`-like with the given ranks
/// (1 drops the row or column dimension), batch dimensions from a broadcast pair for
/// ranks above 2.
fn operand_shapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    let size = prop_oneof![8 => 1..=7usize, 1 => Just(0usize), 1 => 8..=19usize];
    (
        size.clone(),
        size.clone(),
        size,
        1..=4usize,
        1..=4usize,
        broadcast_pair(),
    )
        .prop_map(|(m, k, n, ra, rb, (ba, bb))| {
            // the batch shapes: at most rank - 2 dimensions of each broadcast operand
            let ba = &ba[ba.len() - ba.len().min(ra.saturating_sub(2))..];
            let bb = &bb[bb.len() - bb.len().min(rb.saturating_sub(2))..];
            let mut sa = ba.to_vec();
            if ra == 1 {
                sa = vec![k];
            } else {
                sa.extend([m, k]);
            }
            let mut sb = bb.to_vec();
            if rb == 1 {
                sb = vec![k];
            } else {
                sb.extend([k, n]);
            }
            (sa, sb)
        })
}

/// Two operands with values and layouts.
#[allow(clippy::type_complexity)]
fn operands() -> impl Strategy<
    Value = (
        (Vec<usize>, Vec<f64>, ViewKind),
        (Vec<usize>, Vec<f64>, ViewKind),
    ),
> {
    operand_shapes().prop_flat_map(|(sa, sb)| {
        let (na, nb) = (numel(&sa), numel(&sb));
        (
            (Just(sa), values(na), view_kind()),
            (Just(sb), values(nb), view_kind()),
        )
    })
}

/// `a @ b` in `T` against the reference on the same (rounded) values.
fn check<T: Element>(
    (sa, da, ka): &(Vec<usize>, Vec<f64>, ViewKind),
    (sb, db, kb): &(Vec<usize>, Vec<f64>, ViewKind),
    t: Tol,
) -> TestResult {
    let round = |d: &[f64]| -> Vec<f64> { d.iter().map(|&v| T::from_f64(v).to_f64()).collect() };
    let (da, db) = (round(da), round(db));
    let a = make_view::<T>(&da, sa, ka);
    let b = make_view::<T>(&db, sb, kb);
    let (want, shape) = reference::matmul(&da, sa, &db, sb).expect("shapes built to fit");
    let got = a.matmul(&b).or_fail("matmul")?;
    assert_tensor(
        &format!("{sa:?} @ {sb:?} ({ka:?}, {kb:?})"),
        &got,
        &shape,
        &want,
        t,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// f64: every rank combination, any layout of either operand, equals the triple loop.
    #[test]
    fn matmul_equals_triple_loop((a, b) in operands()) {
        check::<f64>(&a, &b, tol(1e-12))?;
    }

    /// f32 on the same shapes, against the f64 loop over the rounded values.
    #[test]
    fn matmul_f32_equals_triple_loop((a, b) in operands()) {
        check::<f32>(&a, &b, Tol { rel: 1e-5, abs: 1e-4 })?;
    }

    /// Explicit cases: `[2, 1, m, k] @ [3, k, n]` broadcasting batches, an expanded (stride
    /// 0) batch operand, and the `[.., m, k] @ [k, n]` fold with a transposed or sliced
    /// right operand.
    #[test]
    fn broadcast_batches_and_folded_products(
        (m, k, n) in (1..=6usize, 1..=6usize, 1..=6usize),
        seed in any::<u64>(),
        kb in view_kind(),
    ) {
        let (sa, sb) = (vec![2, 1, m, k], vec![3, k, n]);
        let da = seeded_values(seed, numel(&sa));
        let db = seeded_values(seed ^ 1, numel(&sb));
        let a = tensor::<f64>(&da, &sa);
        let b = make_view::<f64>(&db, &sb, &kb);
        let (want, shape) = reference::matmul(&da, &sa, &db, &sb).expect("fits");
        prop_assert_eq!(&shape, &vec![2, 3, m, n]);
        assert_tensor("[2, 1, m, k] @ [3, k, n]", &a.matmul(&b).or_fail("matmul")?, &shape, &want, tol(1e-12))?;
        // the same with the batch of `a` expanded (stride 0) rather than broadcast
        let ae = a.expand(&[2, 3, m as isize, k as isize]).or_fail("expand")?;
        assert_tensor("expanded batch", &ae.matmul(&b).or_fail("matmul")?, &shape, &want, tol(1e-12))?;
        // [2, 1, m, k] @ [k, n]: one tall product
        let sw = vec![k, n];
        let dw = seeded_values(seed ^ 2, k * n);
        let w = make_view::<f64>(&dw, &sw, &kb);
        let (want, shape) = reference::matmul(&da, &sa, &dw, &sw).expect("fits");
        assert_tensor("[2, 1, m, k] @ [k, n]", &a.matmul(&w).or_fail("matmul")?, &shape, &want, tol(1e-12))?;
        // and a permuted stack, whose rows are not evenly strided
        let ap = a.permute(&[1, 0, 2, 3]).or_fail("permute")?.expand(&[3, 2, m as isize, k as isize]).or_fail("expand")?;
        let (dap, sap) = naive_permute(&da, &sa, &[1, 0, 2, 3]);
        let dap = naive_broadcast(&dap, &sap, &[3, 2, m, k]);
        let (want, shape) = reference::matmul(&dap, &[3, 2, m, k], &dw, &sw).expect("fits");
        assert_tensor("expanded [3, 2, m, k] @ [k, n]", &ap.matmul(&w).or_fail("matmul")?, &shape, &want, tol(1e-12))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Products big enough for faer's threaded kernels and the batch-parallel path, on
    /// transposed and strided operands.
    #[test]
    fn large_products_equal_triple_loop(
        (m, k, n) in (40..=70usize, 40..=70usize, 40..=70usize),
        batch in 1..=4usize,
        ka in view_kind(),
        kb in view_kind(),
        seed in any::<u64>(),
    ) {
        let (sa, sb) = (vec![batch, m, k], vec![k, n]);
        let da = seeded_values(seed, numel(&sa));
        let db = seeded_values(seed ^ 7, numel(&sb));
        let a = make_view::<f64>(&da, &sa, &ka);
        let b = make_view::<f64>(&db, &sb, &kb);
        let (want, shape) = reference::matmul(&da, &sa, &db, &sb).expect("fits");
        assert_tensor("large [b, m, k] @ [k, n]", &a.matmul(&b).or_fail("matmul")?, &shape, &want, tol(1e-11))?;
        let sb3 = vec![batch, k, n];
        let db3 = seeded_values(seed ^ 9, numel(&sb3));
        let b3 = make_view::<f64>(&db3, &sb3, &kb);
        let (want, shape) = reference::matmul(&da, &sa, &db3, &sb3).expect("fits");
        assert_tensor("large [b, m, k] @ [b, k, n]", &a.matmul(&b3).or_fail("matmul")?, &shape, &want, tol(1e-11))?;
        let a32 = make_view::<f32>(&da, &sa, &ka);
        let b32 = make_view::<f32>(&db3, &sb3, &kb);
        let (want, shape) = reference::matmul(&to_f64(&a32.contiguous()), &sa, &to_f64(&b32.contiguous()), &sb3).expect("fits");
        assert_tensor("large f32", &a32.matmul(&b32).or_fail("matmul")?, &shape, &want, Tol { rel: 1e-5, abs: 1e-4 })?;
    }

    /// Shapes whose inner dimensions differ, whose batches do not broadcast, or with a 0-d
    /// operand give `Matmul` errors naming both shapes.
    #[test]
    fn mismatched_shapes_are_matmul_errors(
        (sa, sb) in operand_shapes(),
        extra in 1..=3usize,
    ) {
        // make the inner dimensions disagree
        let mut sb = sb;
        let kdim = if sb.len() == 1 { 0 } else { sb.len() - 2 };
        sb[kdim] += extra;
        let a = Tensor::<f64>::zeros(&sa);
        let b = Tensor::<f64>::zeros(&sb);
        let r = a.matmul(&b);
        let ok = matches!(&r, Err(TensorError::Matmul { op: "matmul", lhs, rhs }) if *lhs == sa && *rhs == sb);
        prop_assert!(ok, "{sa:?} @ {sb:?}: {r:?}");
        let e = r.unwrap_err().to_string();
        prop_assert_eq!(e, format!("matmul: cannot multiply {sa:?} by {sb:?}"));
        let s = Tensor::<f64>::scalar(1.0);
        assert_err!(s.matmul(&a), TensorError::Matmul { .. });
        assert_err!(a.matmul(&s), TensorError::Matmul { .. });
    }
}

/// The documented message, and batch dimensions that do not broadcast.
#[test]
fn matmul_error_messages() {
    let a = Tensor::<f32>::zeros(&[2, 3]);
    let b = Tensor::<f32>::zeros(&[4, 5]);
    let e = a.matmul(&b).unwrap_err();
    assert!(matches!(e, TensorError::Matmul { .. }));
    assert_eq!(e.to_string(), "matmul: cannot multiply [2, 3] by [4, 5]");
    let e = Tensor::<f32>::zeros(&[2, 2, 3])
        .matmul(&Tensor::zeros(&[3, 3, 4]))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul: cannot multiply [2, 2, 3] by [3, 3, 4]"
    );
    let e = Tensor::<f32>::zeros(&[3])
        .matmul(&Tensor::zeros(&[4]))
        .unwrap_err();
    assert_eq!(e.to_string(), "matmul: cannot multiply [3] by [4]");
}
