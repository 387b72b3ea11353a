//! Broadcasting binary ops equal the same op on explicitly expanded operands and a naive
//! index loop; in-place updates equal their out-of-place versions.

use crate::common;

use common::*;
use proptest::prelude::*;
use strata_tensor::{Result, Tensor};

type Method = fn(&Tensor<f64>, &Tensor<f64>) -> Result<Tensor<f64>>;

/// An op's definition on one pair of elements.
type Definition = fn(f64, f64) -> f64;

/// Each broadcasting method with its definition on one pair of elements.
fn binary_ops() -> Vec<(&'static str, Method, Definition)> {
    vec![
        ("add", Tensor::add, |a, b| a + b),
        ("sub", Tensor::sub, |a, b| a - b),
        ("mul", Tensor::mul, |a, b| a * b),
        ("div", Tensor::div, |a, b| a / b),
        // torch.maximum/minimum: NaN if either is NaN, else the larger (smaller) value.
        ("maximum", Tensor::maximum, |a, b| {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else if a > b {
                a
            } else {
                b
            }
        }),
        ("minimum", Tensor::minimum, |a, b| {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else if a < b {
                a
            } else {
                b
            }
        }),
        ("eq", Tensor::eq, |a, b| f64::from(u8::from(a == b))),
        ("ne", Tensor::ne, |a, b| f64::from(u8::from(a != b))),
        ("lt", Tensor::lt, |a, b| f64::from(u8::from(a < b))),
        ("le", Tensor::le, |a, b| f64::from(u8::from(a <= b))),
        ("gt", Tensor::gt, |a, b| f64::from(u8::from(a > b))),
        ("ge", Tensor::ge, |a, b| f64::from(u8::from(a >= b))),
    ]
}

/// Two broadcast-compatible operands with values and layouts.
#[allow(clippy::type_complexity)]
fn operands() -> impl Strategy<
    Value = (
        (Vec<usize>, Vec<f64>, ViewKind),
        (Vec<usize>, Vec<f64>, ViewKind),
    ),
> {
    broadcast_pair().prop_flat_map(|(sa, sb)| {
        let (na, nb) = (numel(&sa), numel(&sb));
        (
            (Just(sa), values(na), view_kind()),
            (Just(sb), values(nb), view_kind()),
        )
    })
}

fn as_isize(shape: &[usize]) -> Vec<isize> {
    shape.iter().map(|&d| d as isize).collect()
}

/// `f` applied to the broadcast pairs of `(da, sa)` and `(db, sb)`, index by index.
fn naive_binary(
    da: &[f64],
    sa: &[usize],
    db: &[f64],
    sb: &[usize],
    out: &[usize],
    f: impl Fn(f64, f64) -> f64,
) -> Vec<f64> {
    indices(out)
        .map(|o| f(da[broadcast_source(&o, sa)], db[broadcast_source(&o, sb)]))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `a op b` == `a.expand(out).contiguous() op b.expand(out).contiguous()` == a naive
    /// loop, for every broadcasting method, on any layout of either operand.
    #[test]
    fn broadcasting_equals_explicit_expand_and_naive_loop(
        ((sa, da, ka), (sb, db, kb)) in operands()
    ) {
        let out = broadcast_shape(&sa, &sb).expect("derived from one output shape");
        let a = make_view::<f64>(&da, &sa, &ka);
        let b = make_view::<f64>(&db, &sb, &kb);
        let ae = a.expand(&as_isize(&out)).or_fail("expand a")?;
        let be = b.expand(&as_isize(&out)).or_fail("expand b")?;
        // the expanded views themselves hold the broadcast values
        assert_tensor("a.expand", &ae, &out, &naive_broadcast(&da, &sa, &out), EXACT)?;
        assert_tensor("b.expand", &be, &out, &naive_broadcast(&db, &sb, &out), EXACT)?;
        prop_assert!(ae.shares_storage(&a) && be.shares_storage(&b));
        let (ae, be) = (ae.contiguous(), be.contiguous());
        for (name, method, f) in binary_ops() {
            let want = naive_binary(&da, &sa, &db, &sb, &out, f);
            let got = method(&a, &b).or_fail(name)?;
            assert_tensor(name, &got, &out, &want, EXACT)?;
            let via_expand = method(&ae, &be).or_fail(name)?;
            assert_tensor(&format!("{name} on expanded operands"), &via_expand, &out, &want, EXACT)?;
        }
        // the operators are the methods
        assert_tensor("&a + &b", &(&a + &b), &out, &naive_binary(&da, &sa, &db, &sb, &out, |x, y| x + y), EXACT)?;
        assert_tensor("&a * &b", &(&a * &b), &out, &naive_binary(&da, &sa, &db, &sb, &out, |x, y| x * y), EXACT)?;
    }

    /// `pow` on positive bases, broadcast both ways.
    #[test]
    fn broadcast_pow_on_positive_values(((sa, da, ka), (sb, db, kb)) in operands()) {
        let out = broadcast_shape(&sa, &sb).expect("derived from one output shape");
        let base: Vec<f64> = da.iter().map(|v| v.abs() + 0.25).collect();
        let a = make_view::<f64>(&base, &sa, &ka);
        let b = make_view::<f64>(&db, &sb, &kb);
        let want = naive_binary(&base, &sa, &db, &sb, &out, f64::powf);
        assert_tensor("pow", &a.pow(&b).or_fail("pow")?, &out, &want, tol(1e-15))?;
        let ae = a.expand(&as_isize(&out)).or_fail("expand")?.contiguous();
        assert_tensor("pow on expanded", &ae.pow(&b).or_fail("pow")?, &out, &want, tol(1e-15))?;
    }

    /// In-place `add_`, `sub_`, `mul_`, `div_`, `copy_` and `axpy_` equal the out-of-place
    /// ops and a naive loop, whatever `self`'s layout; other handles keep their values.
    #[test]
    fn in_place_updates_equal_out_of_place(
        ((so, dself, kself), (sb, db, kb)) in operands(),
        alpha in -2.0..2.0f64,
    ) {
        // `self` takes the broadcast shape of the pair, so that `other` broadcasts to it.
        let full = broadcast_shape(&so, &sb).expect("compatible");
        let dfull = naive_broadcast(&dself, &so, &full);
        let s0 = make_view::<f64>(&dfull, &full, &kself);
        let b = make_view::<f64>(&db, &sb, &kb);
        let bb = naive_broadcast(&db, &sb, &full);
        type InPlace = fn(&mut Tensor<f64>, &Tensor<f64>) -> Result<()>;
        let cases: [(&str, InPlace, Method, Definition); 5] = [
            ("add_", Tensor::add_, Tensor::add, |x, y| x + y),
            ("sub_", Tensor::sub_, Tensor::sub, |x, y| x - y),
            ("mul_", Tensor::mul_, Tensor::mul, |x, y| x * y),
            ("div_", Tensor::div_, Tensor::div, |x, y| x / y),
            ("copy_", Tensor::copy_, |_, y| Ok(y.clone()), |_, y| y),
        ];
        for (name, in_place, out_of_place, f) in cases {
            let mut s = s0.clone();
            in_place(&mut s, &b).or_fail(name)?;
            let want: Vec<f64> = dfull.iter().zip(&bb).map(|(&x, &y)| f(x, y)).collect();
            assert_tensor(name, &s, &full, &want, EXACT)?;
            if name != "copy_" {
                let oop = out_of_place(&s0, &b).or_fail(name)?;
                assert_tensor(&format!("{name} vs out of place"), &s, &full, &to_f64(&oop), EXACT)?;
            }
            assert_tensor(&format!("{name}: the other handle"), &s0, &full, &dfull, EXACT)?;
        }
        let mut s = s0.clone();
        s.axpy_(alpha, &b).or_fail("axpy_")?;
        let want: Vec<f64> = dfull.iter().zip(&bb).map(|(&x, &y)| x + alpha * y).collect();
        assert_tensor("axpy_", &s, &full, &want, EXACT)?;
        let oop = s0.add(&b.mul_scalar(alpha)).or_fail("add")?;
        assert_tensor("axpy_ vs add(mul_scalar)", &s, &full, &to_f64(&oop), EXACT)?;
        assert_tensor("axpy_: the other handle", &s0, &full, &dfull, EXACT)?;
        // adding a tensor to itself reads the old values
        let mut s = s0.clone();
        s.add_(&s0).or_fail("add_ self")?;
        let twice: Vec<f64> = dfull.iter().map(|x| x + x).collect();
        assert_tensor("x.add_(x)", &s, &full, &twice, EXACT)?;
    }

    /// `m.add_(&m.transpose(0, 1))` on a square matrix: the operand is a view of the storage
    /// being written, so the update must read the old values.
    #[test]
    fn in_place_add_of_an_aliasing_view((n, d) in (1..=7usize).prop_flat_map(|n| (Just(n), values(n * n)))) {
        let mut m = Tensor::<f64>::from_vec(d.clone(), &[n, n]).or_fail("from_vec")?;
        let t = m.transpose(0, 1).or_fail("transpose")?;
        m.add_(&t).or_fail("add_")?;
        let want: Vec<f64> = indices(&[n, n]).map(|i| d[i[0] * n + i[1]] + d[i[1] * n + i[0]]).collect();
        assert_tensor("m += mᵀ", &m, &[n, n], &want, EXACT)?;
        assert_tensor("the transposed view", &t, &[n, n], &naive_permute(&d, &[n, n], &[1, 0]).0, EXACT)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Large enough (up to ~100k elements) to run the parallel chunked walk, whose chunks
    /// start in the middle of runs: a non-contiguous `a` with a broadcast `b`.
    #[test]
    fn large_broadcasts_split_across_threads(
        out in (8..=40usize, 20..=40usize, 30..=70usize),
        ones in prop::collection::vec(any::<bool>(), 3),
        drop in 0..=2usize,
        ka in view_kind(),
        seed in any::<u64>(),
    ) {
        let out = vec![out.0, out.1, out.2];
        let sb = shrink_shape(&out, drop, &ones);
        let da = seeded_values(seed, numel(&out));
        let db = seeded_values(seed ^ 0xABCD, numel(&sb));
        let a = make_view::<f64>(&da, &out, &ka);
        let b = Tensor::<f64>::from_vec(db.clone(), &sb).or_fail("from_vec")?;
        for (name, method, f) in binary_ops().into_iter().take(4) {
            let want = naive_binary(&da, &out, &db, &sb, &out, f);
            assert_tensor(name, &method(&a, &b).or_fail(name)?, &out, &want, EXACT)?;
            let want = naive_binary(&db, &sb, &da, &out, &out, f);
            assert_tensor(&format!("{name}, swapped"), &method(&b, &a).or_fail(name)?, &out, &want, EXACT)?;
        }
        let mut s = a.clone();
        s.axpy_(0.5, &b).or_fail("axpy_")?;
        let want = naive_binary(&da, &out, &db, &sb, &out, |x, y| x + 0.5 * y);
        assert_tensor("axpy_", &s, &out, &want, EXACT)?;
    }
}
