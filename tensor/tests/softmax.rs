//! softmax and log_softmax along any dimension (negative too), on any layout: rows sum to
//! one, softmax is exp(log_softmax), both equal the shifted naive formula and stay finite
//! for inputs around 1000; the fused backward kernels equal their naive formulas.

use crate::common;

use common::*;
use proptest::prelude::*;
use strata_tensor::{Element, Tensor, TensorError};

/// The row-major positions of every row along dimension `d` of `shape` (one row holding
/// the single element of a 0-d tensor).
fn rows(shape: &[usize], d: usize) -> Vec<Vec<usize>> {
    if shape.is_empty() {
        return vec![vec![0]];
    }
    let mut rest = shape.to_vec();
    rest[d] = 1;
    indices(&rest)
        .map(|r| {
            (0..shape[d])
                .map(|k| {
                    let mut i = r.clone();
                    i[d] = k;
                    ravel(&i, shape)
                })
                .collect()
        })
        .collect()
}

/// `f` applied to every row along dimension `d` of `y` and `g` (row-major, of `shape`),
/// the results written back in place of the row.
fn per_row2(
    y: &[f64],
    g: &[f64],
    shape: &[usize],
    d: usize,
    f: impl Fn(&[f64], &[f64]) -> Vec<f64>,
) -> Vec<f64> {
    let mut out = vec![0.0; y.len()];
    for pos in rows(shape, d) {
        let yr: Vec<f64> = pos.iter().map(|&p| y[p]).collect();
        let gr: Vec<f64> = pos.iter().map(|&p| g[p]).collect();
        for (&p, v) in pos.iter().zip(f(&yr, &gr)) {
            out[p] = v;
        }
    }
    out
}

/// `f` applied to every row along dimension `d` of `data`.
fn per_row(data: &[f64], shape: &[usize], d: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    per_row2(data, data, shape, d, |r, _| f(r))
}

fn naive_softmax(row: &[f64]) -> Vec<f64> {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn naive_log_softmax(row: &[f64]) -> Vec<f64> {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = row.iter().map(|v| (v - m).exp()).sum::<f64>().ln() + m;
    row.iter().map(|v| v - lse).collect()
}

/// A tensor with a layout and a dimension (written negative half the time).
fn case() -> impl Strategy<Value = ((Vec<usize>, Vec<f64>, ViewKind), usize)> {
    (viewed(shape(0..=4)), any::<usize>())
}

/// softmax and log_softmax in `T` on `data` (scaled by `scale`, shifted by `shift`) against
/// the naive formulas.
fn check_forward<T: Element>(
    (shape, data, kind): &(Vec<usize>, Vec<f64>, ViewKind),
    dim: usize,
    scale: f64,
    shift: f64,
    t: Tol,
) -> TestResult {
    let data: Vec<f64> = data
        .iter()
        .map(|v| T::from_f64(v * scale + shift).to_f64())
        .collect();
    let x = make_view::<T>(&data, shape, kind);
    let (d, sd) = pick_dim(dim, shape.len());
    // log_softmax subtracts `max + log(sum)` from each value: an absolute error of a few
    // ulps of the largest input, which exp turns into a relative one
    let eps = if size_of::<T>() == 4 {
        f64::from(f32::EPSILON)
    } else {
        f64::EPSILON
    };
    let ulps = 4.0 * eps * (1.0 + shift.abs() + 2.0 * scale);
    let tl = Tol {
        rel: t.rel.max(ulps),
        abs: t.abs.max(ulps),
    };
    let y = x.softmax(sd).or_fail("softmax")?;
    let l = x.log_softmax(sd).or_fail("log_softmax")?;
    assert_tensor(
        &format!("softmax({sd})"),
        &y,
        shape,
        &per_row(&data, shape, d, naive_softmax),
        t,
    )?;
    assert_tensor(
        &format!("log_softmax({sd})"),
        &l,
        shape,
        &per_row(&data, shape, d, naive_log_softmax),
        tl,
    )?;
    // rows sum to one
    let sums = per_row(&to_f64(&y), shape, d, |r| {
        vec![r.iter().sum::<f64>(); r.len()]
    });
    let ones: Vec<f64> = sums.iter().map(|_| 1.0).collect();
    assert_close(
        &format!("rows of softmax({sd}) sum to one"),
        shape,
        &sums,
        &ones,
        t,
    )?;
    // softmax = exp(log_softmax)
    let e: Vec<f64> = to_f64(&l).iter().map(|v| v.exp()).collect();
    assert_close(
        &format!("exp(log_softmax({sd}))"),
        shape,
        &to_f64(&y),
        &e,
        tl,
    )?;
    prop_assert!(
        to_f64(&y).iter().chain(&to_f64(&l)).all(|v| v.is_finite()),
        "non-finite output"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// f64, values in [-2, 2]: equal the naive formulas along any dimension and layout.
    #[test]
    fn softmax_and_log_softmax_equal_naive_formulas((x, dim) in case()) {
        check_forward::<f64>(&x, dim, 1.0, 0.0, tol(1e-14))?;
    }

    /// Large inputs (spread over ±600 around 1000 or -1000) neither overflow nor underflow
    /// to NaN: the maximum is subtracted first.
    #[test]
    fn softmax_is_stable_for_large_inputs((x, dim) in case(), sign in prop_oneof![Just(1.0), Just(-1.0)]) {
        check_forward::<f64>(&x, dim, 300.0, 1000.0 * sign, tol(1e-12))?;
        check_forward::<f32>(&x, dim, 300.0, 1000.0 * sign, Tol { rel: 1e-5, abs: 1e-5 })?;
    }

    /// f32 on ordinary values.
    #[test]
    fn softmax_f32_equals_naive_formulas((x, dim) in case()) {
        check_forward::<f32>(&x, dim, 1.0, 0.0, Tol { rel: 1e-6, abs: 1e-6 })?;
    }

    /// `softmax_backward` is `y * (g - sum(g * y))` and `log_softmax_backward` is
    /// `g - exp(y) * sum(g)`, row by row, whatever the layout of `y` and `g`.
    #[test]
    fn backward_kernels_equal_naive_formulas(
        ((shape, data, kind), dim) in case(),
        gkind in view_kind(),
        seed in any::<u64>(),
    ) {
        let (d, sd) = pick_dim(dim, shape.len());
        let dg = seeded_values(seed, data.len());
        let g = make_view::<f64>(&dg, &shape, &gkind);
        // y: a softmax output (positive rows summing to one) and a log_softmax output
        let ys = per_row(&data, &shape, d, naive_softmax);
        let yl = per_row(&data, &shape, d, naive_log_softmax);
        let want = per_row2(&ys, &dg, &shape, d, |y, g| {
            let dot: f64 = y.iter().zip(g).map(|(a, b)| a * b).sum();
            y.iter().zip(g).map(|(y, g)| y * (g - dot)).collect()
        });
        let y = make_view::<f64>(&ys, &shape, &kind);
        let got = y.softmax_backward(&g, sd).or_fail("softmax_backward")?;
        assert_tensor(&format!("softmax_backward({sd})"), &got, &shape, &want, tol(1e-14))?;
        let want = per_row2(&yl, &dg, &shape, d, |y, g| {
            let total: f64 = g.iter().sum();
            y.iter().zip(g).map(|(y, g)| g - y.exp() * total).collect()
        });
        let y = make_view::<f64>(&yl, &shape, &kind);
        let got = y.log_softmax_backward(&g, sd).or_fail("log_softmax_backward")?;
        assert_tensor(&format!("log_softmax_backward({sd})"), &got, &shape, &want, tol(1e-14))?;
        // mismatched shapes and bad dimensions
        let other = Tensor::<f64>::zeros(&[shape.iter().product::<usize>() + 1]);
        assert_err!(y.softmax_backward(&other, sd), TensorError::Shape { .. });
        let n = shape.len().max(1) as isize;
        assert_err!(y.softmax(n), TensorError::Dim { .. });
        assert_err!(y.log_softmax(-n - 1), TensorError::Dim { .. });
    }
}

/// By hand: `torch.softmax(torch.tensor([1000., 1000.]), 0)` is `[0.5, 0.5]`; a row of all
/// `-inf` gives NaN as in PyTorch; `log_softmax` of `[0, -1000]` is exact.
#[test]
fn softmax_by_hand() {
    let x = Tensor::<f32>::from_vec(vec![1000.0, 1000.0], &[2]).unwrap();
    assert_eq!(x.softmax(0).unwrap().to_vec(), vec![0.5, 0.5]);
    assert_eq!(x.softmax(-1).unwrap().to_vec(), vec![0.5, 0.5]);
    let x = Tensor::<f64>::from_vec(vec![f64::NEG_INFINITY; 4], &[2, 2]).unwrap();
    assert!(x.softmax(0).unwrap().to_vec().iter().all(|v| v.is_nan()));
    let x = Tensor::<f64>::from_vec(vec![0.0, -1000.0], &[2]).unwrap();
    assert_eq!(x.log_softmax(0).unwrap().to_vec(), vec![0.0, -1000.0]);
    // a 0-d tensor is one row of one element
    assert_eq!(
        Tensor::<f64>::scalar(5.0)
            .softmax(0)
            .unwrap()
            .item()
            .unwrap(),
        1.0
    );
    assert_eq!(
        Tensor::<f64>::scalar(5.0)
            .log_softmax(-1)
            .unwrap()
            .item()
            .unwrap(),
        0.0
    );
}

/// Infinities and NaN inside rows long enough for the vectorised paths, along the last
/// dimension and along the first (the column kernel), as PyTorch gives them: a `+inf`
/// makes its row NaN (`inf - inf`), a `-inf` gets probability 0 (log-probability `-inf`)
/// and leaves the rest of its row a distribution, a NaN makes its row NaN.
#[test]
fn softmax_f32_special_values_in_long_rows() {
    let n = 100;
    let mut data: Vec<f32> = (0..3 * n)
        .map(|i| ((i * 37) % 101) as f32 * 0.5 - 25.0)
        .collect();
    data[3] = f32::INFINITY;
    data[n + 7] = f32::NEG_INFINITY;
    data[n + 50] = -200.0;
    data[2 * n + 99] = f32::NAN;
    let x = Tensor::<f32>::from_vec(data, &[3, n]).unwrap();
    for (t, dim) in [
        (x.clone(), 1isize),
        (x.transpose(0, 1).unwrap().contiguous(), 0),
    ] {
        let p = t.softmax(dim).unwrap();
        let lp = t.log_softmax(dim).unwrap();
        let row = |y: &Tensor<f32>, r: usize| -> Vec<f32> {
            let y = if dim == 1 {
                y.clone()
            } else {
                y.transpose(0, 1).unwrap()
            };
            y.contiguous().to_vec()[r * n..(r + 1) * n].to_vec()
        };
        assert!(row(&p, 0).iter().all(|v| v.is_nan()), "dim {dim}");
        assert!(row(&p, 2).iter().all(|v| v.is_nan()), "dim {dim}");
        let p1 = row(&p, 1);
        assert_eq!(p1[7], 0.0);
        assert_eq!(p1[50], 0.0);
        assert!(p1.iter().all(|v| v.is_finite() && *v >= 0.0));
        assert!((p1.iter().sum::<f32>() - 1.0).abs() < 1e-5, "dim {dim}");
        let lp1 = row(&lp, 1);
        assert_eq!(lp1[7], f32::NEG_INFINITY);
        assert!(lp1.iter().enumerate().all(|(i, v)| i == 7 || v.is_finite()));
        assert!(row(&lp, 0).iter().all(|v| v.is_nan()), "dim {dim}");
    }
}
