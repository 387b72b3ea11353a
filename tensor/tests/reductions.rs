//! Reductions over random sets of dimensions, with and without `keepdim`, on any layout,
//! equal naive loops over the row-major values: sum, mean, prod, var/std (biased and
//! unbiased), amax/amin, logsumexp; max_dim/min_dim and argmax/argmin follow PyTorch (first
//! index of the extreme, NaN propagates); empty and all-dimension reductions.

use crate::common;

use common::*;
use proptest::prelude::*;
use strata_tensor::{IndexTensor, Result, Tensor, TensorError};

/// The dimensions to reduce, from `mask` bits (each written negative when its `sign` bit is
/// set), in the order `keys` gives. Returns the mask over `0..ndim` and the list.
fn dims_from(
    ndim: usize,
    mask: &[bool],
    sign: &[bool],
    keys: &[u32; 6],
) -> (Vec<bool>, Vec<isize>) {
    let m: Vec<bool> = mask[..ndim].to_vec();
    let mut dims: Vec<isize> = (0..ndim)
        .filter(|&d| m[d])
        .map(|d| {
            if sign[d] {
                d as isize - ndim as isize
            } else {
                d as isize
            }
        })
        .collect();
    let order = perm_from_keys(keys, dims.len());
    dims = order.iter().map(|&i| dims[i]).collect();
    (m, dims)
}

/// The values of `data` (row-major, of `shape`) grouped by output position when the
/// dimensions in `mask` are reduced: one `Vec` per output element, in row-major order of the
/// kept shape, each holding its inputs in row-major order.
fn groups(data: &[f64], shape: &[usize], mask: &[bool]) -> (Vec<Vec<f64>>, Vec<usize>) {
    let kept: Vec<usize> = shape
        .iter()
        .zip(mask)
        .map(|(&d, &m)| if m { 1 } else { d })
        .collect();
    let mut out = vec![Vec::new(); numel(&kept)];
    for (k, i) in indices(shape).enumerate() {
        let o: Vec<usize> = i
            .iter()
            .zip(mask)
            .map(|(&v, &m)| if m { 0 } else { v })
            .collect();
        out[ravel(&o, &kept)].push(data[k]);
    }
    (out, kept)
}

/// The output shape: reduced dimensions kept as 1 or dropped.
fn out_shape(kept: &[usize], mask: &[bool], keepdim: bool) -> Vec<usize> {
    kept.iter()
        .zip(mask)
        .filter(|&(_, &m)| keepdim || !m)
        .map(|(&d, _)| d)
        .collect()
}

fn naive_var(g: &[f64], correction: f64) -> f64 {
    let n = g.len() as f64;
    let mean = g.iter().sum::<f64>() / n;
    g.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - correction).max(0.0)
}

/// torch.amax: NaN if any element is NaN.
fn naive_extreme(g: &[f64], max: bool) -> f64 {
    if g.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    g.iter().copied().fold(
        if max {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        },
        |a, b| {
            if max { a.max(b) } else { a.min(b) }
        },
    )
}

fn naive_logsumexp(g: &[f64]) -> f64 {
    let m = naive_extreme(g, true);
    if g.is_empty() {
        return f64::NEG_INFINITY;
    }
    let shift = if m.is_finite() { m } else { 0.0 };
    g.iter().map(|v| (v - shift).exp()).sum::<f64>().ln() + shift
}

/// `torch.max(x, dim)`'s pair for one row: the first NaN if any, else the first maximum.
fn naive_arg_extreme(row: &[f64], max: bool) -> (f64, i64) {
    if let Some(i) = row.iter().position(|v| v.is_nan()) {
        return (f64::NAN, i as i64);
    }
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if (max && v > row[best]) || (!max && v < row[best]) {
            best = i;
        }
    }
    (row[best], best as i64)
}

/// The rows along dimension `d` of `data`: for each position of the other dimensions (row
/// major), the values along `d`.
fn rows_along(data: &[f64], shape: &[usize], d: usize) -> (Vec<Vec<f64>>, Vec<usize>) {
    let mut mask = vec![false; shape.len()];
    mask[d] = true;
    let (g, kept) = groups(data, shape, &mask);
    (g, kept)
}

type Reduction = fn(&Tensor<f64>, &[isize], bool) -> Result<Tensor<f64>>;

/// A reduction's definition on one group of values.
type Naive = fn(&[f64]) -> f64;

/// Each reduction with its definition on one group of values, and its tolerance.
fn reductions() -> Vec<(&'static str, Reduction, Naive, Tol)> {
    let sum_tol = Tol {
        rel: 1e-12,
        abs: 1e-12,
    };
    vec![
        ("sum", Tensor::sum, |g| g.iter().sum(), sum_tol),
        (
            "mean",
            Tensor::mean,
            |g| g.iter().sum::<f64>() / g.len() as f64,
            sum_tol,
        ),
        (
            "var(unbiased)",
            |x, d, k| x.var(d, true, k),
            |g| naive_var(g, 1.0),
            tol(1e-10),
        ),
        (
            "var(biased)",
            |x, d, k| x.var(d, false, k),
            |g| naive_var(g, 0.0),
            tol(1e-10),
        ),
        (
            "std(unbiased)",
            |x, d, k| x.std(d, true, k),
            |g| naive_var(g, 1.0).sqrt(),
            tol(1e-10),
        ),
        (
            "std(biased)",
            |x, d, k| x.std(d, false, k),
            |g| naive_var(g, 0.0).sqrt(),
            tol(1e-10),
        ),
        ("logsumexp", Tensor::logsumexp, naive_logsumexp, tol(1e-12)),
    ]
}

/// A tensor of rank 0..=4 with a layout, a dimension set (mask, signs, order) and keepdim.
#[allow(clippy::type_complexity)]
fn reduction_case() -> impl Strategy<
    Value = (
        (Vec<usize>, Vec<f64>, ViewKind),
        Vec<bool>,
        Vec<bool>,
        [u32; 6],
        bool,
    ),
> {
    (
        viewed(shape(0..=4)),
        prop::collection::vec(any::<bool>(), 4),
        prop::collection::vec(any::<bool>(), 4),
        prop::array::uniform6(any::<u32>()),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// sum, mean, var, std and logsumexp over any dimension set (an empty list meaning
    /// every dimension), with keepdim true or false, equal naive loops; amax/amin likewise
    /// where no reduced dimension is empty, and are `Invalid` errors where one is.
    #[test]
    fn reductions_equal_naive_loops(
        ((shape, data, kind), mask, sign, keys, keepdim) in reduction_case()
    ) {
        let x = make_view::<f64>(&data, &shape, &kind);
        let (mut m, dims) = dims_from(shape.len(), &mask, &sign, &keys);
        if dims.is_empty() {
            m = vec![true; shape.len()];
        }
        let (g, kept) = groups(&data, &shape, &m);
        let out = out_shape(&kept, &m, keepdim);
        for (name, f, naive, t) in reductions() {
            let want: Vec<f64> = g.iter().map(|g| naive(g)).collect();
            let got = f(&x, &dims, keepdim).or_fail(name)?;
            assert_tensor(&format!("{name}({dims:?}, keepdim={keepdim})"), &got, &out, &want, t)?;
        }
        let reduces_empty = shape.iter().zip(&m).any(|(&d, &r)| r && d == 0);
        for (name, max) in [("amax", true), ("amin", false)] {
            let got = if max { x.amax(&dims, keepdim) } else { x.amin(&dims, keepdim) };
            if reduces_empty {
                prop_assert!(matches!(got, Err(TensorError::Invalid { op, .. }) if op == name), "{name}: {got:?}");
            } else {
                let want: Vec<f64> = g.iter().map(|g| naive_extreme(g, max)).collect();
                assert_tensor(&format!("{name}({dims:?}, keepdim={keepdim})"), &got.or_fail(name)?, &out, &want, EXACT)?;
            }
        }
        // an explicit list of every dimension is the empty list
        let all: Vec<isize> = (0..shape.len() as isize).collect();
        let a = x.sum(&all, keepdim).or_fail("sum(all)")?;
        let e = x.sum(&[], keepdim).or_fail("sum([])")?;
        let total = if keepdim { vec![1; shape.len()] } else { vec![] };
        assert_tensor("sum(all dims)", &a, &total, &to_f64(&e), EXACT)?;
        prop_assert!(x.sum_all().shape().is_empty() && x.mean_all().shape().is_empty(), "sum_all/mean_all are 0-d");
    }

    /// prod over any dimension set, on values near 1 (so long products neither overflow
    /// nor vanish) with some exact zeros.
    #[test]
    fn prod_equals_naive_loop(
        ((shape, data, kind), mask, sign, keys, keepdim) in reduction_case()
    ) {
        let data: Vec<f64> = data.iter().map(|v| if *v == 0.0 { 0.0 } else { 1.0 + v / 8.0 }).collect();
        let x = make_view::<f64>(&data, &shape, &kind);
        let (mut m, dims) = dims_from(shape.len(), &mask, &sign, &keys);
        if dims.is_empty() {
            m = vec![true; shape.len()];
        }
        let (g, kept) = groups(&data, &shape, &m);
        let want: Vec<f64> = g.iter().map(|g| g.iter().product()).collect();
        let got = x.prod(&dims, keepdim).or_fail("prod")?;
        assert_tensor(&format!("prod({dims:?}, keepdim={keepdim})"), &got, &out_shape(&kept, &m, keepdim), &want, tol(1e-12))?;
    }

    /// max_dim/min_dim give the extreme along a dimension with the first index where it
    /// occurs (NaN, when present, with the index of the first NaN); argmax/argmin agree with
    /// them, and over the flattened tensor with `dim = None`.
    #[test]
    fn max_min_dim_and_argmax_follow_torch(
        (shape, data, kind) in viewed(shape(0..=4)),
        nans in prop::collection::vec(prop::bool::weighted(0.05), 6 * 6 * 6 * 6),
        dim in any::<usize>(),
        keepdim in any::<bool>(),
        with_nan in any::<bool>(),
    ) {
        let data: Vec<f64> = data
            .iter()
            .zip(&nans)
            .map(|(&v, &n)| if with_nan && n { f64::NAN } else { v })
            .collect();
        let x = make_view::<f64>(&data, &shape, &kind);
        let (d, sd) = pick_dim(dim, shape.len());
        if shape.is_empty() {
            // a 0-d tensor is its own maximum, at index 0
            let (v, i) = x.max_dim(sd, keepdim).or_fail("max_dim")?;
            assert_tensor("max_dim of 0-d", &v, &[], &data, EXACT)?;
            prop_assert_eq!(i.to_vec(), vec![0]);
            prop_assert_eq!(x.argmax(None, keepdim).or_fail("argmax")?.to_vec(), vec![0]);
            return Ok(());
        }
        for (name, max) in [("max_dim", true), ("min_dim", false)] {
            let got = if max { x.max_dim(sd, keepdim) } else { x.min_dim(sd, keepdim) };
            let arg = if max { x.argmax(Some(sd), keepdim) } else { x.argmin(Some(sd), keepdim) };
            if shape[d] == 0 {
                prop_assert!(matches!(got, Err(TensorError::Invalid { .. })), "{name}: {got:?}");
                prop_assert!(matches!(arg, Err(TensorError::Invalid { .. })), "arg of {name}: {arg:?}");
                continue;
            }
            let (rows, kept) = rows_along(&data, &shape, d);
            let mut m = vec![false; shape.len()];
            m[d] = true;
            let out = out_shape(&kept, &m, keepdim);
            let (wv, wi): (Vec<f64>, Vec<i64>) = rows.iter().map(|r| naive_arg_extreme(r, max)).unzip();
            let (v, i) = got.or_fail(name)?;
            assert_tensor(&format!("{name}({sd}) values"), &v, &out, &wv, EXACT)?;
            prop_assert_eq!(i.shape(), out.as_slice());
            prop_assert_eq!(i.to_vec(), wi.clone(), "{} indices", name);
            let a = arg.or_fail("argmax/argmin")?;
            prop_assert_eq!(a, IndexTensor::from_vec(wi, &out).or_fail("indices")?);
        }
        // over the flattened tensor
        for (name, max) in [("argmax", true), ("argmin", false)] {
            let got = if max { x.argmax(None, keepdim) } else { x.argmin(None, keepdim) };
            if data.is_empty() {
                prop_assert!(matches!(got, Err(TensorError::Invalid { .. })), "{name}: {got:?}");
                continue;
            }
            let out = if keepdim { vec![1; shape.len()] } else { vec![] };
            let want = naive_arg_extreme(&data, max).1;
            let a = got.or_fail(name)?;
            prop_assert_eq!(a.shape(), out.as_slice());
            prop_assert_eq!(a.to_vec(), vec![want], "{}", name);
        }
    }

    /// Reductions split across threads (up to ~60k elements, reduced over an outer or inner
    /// dimension) equal the naive loop, whatever the layout.
    #[test]
    fn large_reductions_equal_naive_loops(
        s in (1..=40usize, 30..=40usize, 20..=40usize),
        kind in view_kind(),
        mask in prop::collection::vec(any::<bool>(), 3),
        seed in any::<u64>(),
    ) {
        let shape = vec![s.0, s.1, s.2];
        let data = seeded_values(seed, numel(&shape));
        let x = make_view::<f64>(&data, &shape, &kind);
        let (m, dims) = dims_from(3, &mask, &[false; 3], &[0; 6]);
        let m = if dims.is_empty() { vec![true; 3] } else { m };
        let (g, kept) = groups(&data, &shape, &m);
        for (name, f, naive, t) in reductions() {
            let want: Vec<f64> = g.iter().map(|g| naive(g)).collect();
            let t = Tol { rel: t.rel.max(1e-11), abs: t.abs.max(1e-11) };
            assert_tensor(name, &f(&x, &dims, true).or_fail(name)?, &kept, &want, t)?;
        }
        let want: Vec<f64> = g.iter().map(|g| naive_extreme(g, true)).collect();
        assert_tensor("amax", &x.amax(&dims, true).or_fail("amax")?, &kept, &want, EXACT)?;
    }
}

/// Reductions over an empty set: sum 0, prod 1, mean/var NaN, logsumexp -inf, amax an
/// error; reductions that keep an empty dimension give an empty result of the right shape.
#[test]
fn empty_reductions_follow_torch() {
    let x = Tensor::<f64>::zeros(&[2, 0, 3]);
    // torch.zeros(2, 0, 3).sum(1) -> zeros(2, 3); .prod(1) -> ones(2, 3)
    assert_eq!(x.sum(&[1], false).unwrap().to_vec(), vec![0.0; 6]);
    assert_eq!(x.prod(&[1], false).unwrap().to_vec(), vec![1.0; 6]);
    assert!(
        x.mean(&[1], false)
            .unwrap()
            .to_vec()
            .iter()
            .all(|v| v.is_nan())
    );
    assert!(
        x.var(&[1], true, false)
            .unwrap()
            .to_vec()
            .iter()
            .all(|v| v.is_nan())
    );
    assert_eq!(x.logsumexp(&[1], true).unwrap().shape(), &[2, 1, 3]);
    assert!(
        x.logsumexp(&[1], false)
            .unwrap()
            .to_vec()
            .iter()
            .all(|&v| v == f64::NEG_INFINITY)
    );
    assert!(matches!(
        x.amax(&[1], false),
        Err(TensorError::Invalid { op: "amax", .. })
    ));
    assert!(matches!(
        x.amin(&[], false),
        Err(TensorError::Invalid { op: "amin", .. })
    ));
    // reducing a non-empty dimension of an empty tensor
    assert_eq!(x.sum(&[2], false).unwrap().shape(), &[2, 0]);
    assert_eq!(x.amax(&[0], true).unwrap().shape(), &[1, 0, 3]);
    assert_eq!(x.max_dim(2, false).unwrap().0.shape(), &[2, 0]);
    assert_eq!(x.sum_all().item().unwrap(), 0.0);
    // 0-d tensors take dimensions 0 and -1
    let s = Tensor::<f64>::scalar(3.0);
    assert_eq!(s.sum(&[0], false).unwrap().item().unwrap(), 3.0);
    assert_eq!(s.sum(&[-1], true).unwrap().shape(), &[] as &[usize]);
    assert!(matches!(s.sum(&[1], false), Err(TensorError::Dim { .. })));
}

/// NaN by hand: `torch.max(torch.tensor([1., nan, 3., nan]), 0)` is `(nan, 1)`, and so is
/// `torch.min`; argmax/argmin give 1; amax is NaN.
#[test]
fn nan_propagates_by_hand() {
    let x = Tensor::<f64>::from_vec(vec![1.0, f64::NAN, 3.0, f64::NAN], &[4]).unwrap();
    let (v, i) = x.max_dim(0, false).unwrap();
    assert!(v.item().unwrap().is_nan());
    assert_eq!(i.to_vec(), vec![1]);
    let (v, i) = x.min_dim(0, false).unwrap();
    assert!(v.item().unwrap().is_nan());
    assert_eq!(i.to_vec(), vec![1]);
    assert_eq!(x.argmax(None, false).unwrap().to_vec(), vec![1]);
    assert_eq!(x.argmin(Some(0), false).unwrap().to_vec(), vec![1]);
    assert!(x.amax(&[], false).unwrap().item().unwrap().is_nan());
    assert!(x.amin(&[0], false).unwrap().item().unwrap().is_nan());
    // torch.max(torch.tensor([[2., 5., 5., 1.], [1., 1., 0., 0.]]), 1) -> ([5, 1], [1, 0])
    let y = Tensor::<f64>::from_vec(vec![2., 5., 5., 1., 1., 1., 0., 0.], &[2, 4]).unwrap();
    let (v, i) = y.max_dim(1, false).unwrap();
    assert_eq!((v.to_vec(), i.to_vec()), (vec![5., 1.], vec![1, 0]));
    let (v, i) = y.min_dim(1, false).unwrap();
    assert_eq!((v.to_vec(), i.to_vec()), (vec![1., 0.], vec![3, 2]));
    assert_eq!(y.argmin(None, false).unwrap().to_vec(), vec![6]);
    assert_eq!(y.argmax(Some(1), true).unwrap().shape(), &[2, 1]);
}
