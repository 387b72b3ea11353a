//! Gradchecks of the reductions over random dim sets (given as positive or negative
//! indices, in any order, empty for all dims), with and without `keepdim`, on inputs of
//! rank 0 to 4 in random layouts.

use crate::common;

use common::*;
use proptest::prelude::*;
use strata_autograd::{GradcheckOptions, Var, gradcheck};
use strata_tensor::Tensor;

/// An input of rank 0..=4 (at most 24 elements), a dim set of it and `keepdim`.
fn reduction(values: Values, expand: bool) -> BoxedStrategy<(Arg, Vec<isize>, bool)> {
    shaped(0..=4, 24, values, expand)
        .prop_flat_map(|a| {
            let r = a.shape.len();
            (Just(a), dim_set(r), any::<bool>())
        })
        .boxed()
}

/// An input of rank 0..=4, one dim of it and `keepdim`.
fn along_dim(values: Values, expand: bool) -> BoxedStrategy<(Arg, isize, bool)> {
    shaped(0..=4, 24, values, expand)
        .prop_flat_map(|a| {
            let r = a.shape.len();
            (Just(a), dim(r), any::<bool>())
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn sum((a, dims, keepdim) in reduction(smooth, true)) {
        check(|v| a.apply(&v[0])?.sum(&dims, keepdim), &[a.tensor()])?;
    }

    #[test]
    fn sum_all(a in shaped(0..=4, 24, smooth, true)) {
        check(|v| Ok(a.apply(&v[0])?.sum_all()), &[a.tensor()])?;
    }

    /// cumsum in any layout and along any dim; its forward against running sums written
    /// out by hand.
    #[test]
    fn cumsum((a, dim, _) in along_dim(smooth, true)) {
        check(|v| a.apply(&v[0])?.cumsum(dim), &[a.tensor()])?;
        let x = a.apply(&Var::new(a.tensor()))?;
        let got = x.cumsum(dim)?.to_vec();
        let shape = a.shape.clone();
        let d = resolve(dim, shape.len());
        let data = a.logical();
        let want: Vec<f64> = (0..data.len())
            .map(|flat| {
                if shape.is_empty() {
                    return data[0];
                }
                let idx = unravel(flat, &shape);
                (0..=idx[d])
                    .map(|k| {
                        let mut j = idx.clone();
                        j[d] = k;
                        data[ravel(&j, &shape)]
                    })
                    .sum()
            })
            .collect();
        for (g, w) in got.iter().zip(&want) {
            prop_assert!((g - w).abs() < 1e-12, "cumsum {:?} along {}: {:?} vs {:?}", shape, dim, got, want);
        }
    }

    #[test]
    fn mean((a, dims, keepdim) in reduction(smooth, true)) {
        check(|v| a.apply(&v[0])?.mean(&dims, keepdim), &[a.tensor()])?;
    }

    #[test]
    fn mean_all(a in shaped(0..=4, 24, smooth, true)) {
        check(|v| Ok(a.apply(&v[0])?.mean_all()), &[a.tensor()])?;
    }

    // Inputs with exact zeros, often several in one group: the gradient must be the
    // product of the other elements, not prod / x.
    #[test]
    fn prod((a, dims, keepdim) in reduction(with_zeros, true)) {
        check(|v| a.apply(&v[0])?.prod(&dims, keepdim), &[a.tensor()])?;
    }

    // var is smooth everywhere; only the unbiased estimate needs two elements per group.
    #[test]
    fn var(
        (a, dims, keepdim) in reduction(smooth, true),
        unbiased in any::<bool>(),
    ) {
        prop_assume!(!unbiased || group_size(&a.shape, &dims) >= 2);
        check(|v| a.apply(&v[0])?.var(&dims, unbiased, keepdim), &[a.tensor()])?;
    }

    // std has a pole at zero spread: distinct values (no broadcast views, which repeat
    // values) keep every group of two or more spread out. A group of one has std 0 and
    // gradient 0 (biased only; the unbiased estimate is NaN there).
    #[test]
    fn std(
        (a, dims, keepdim) in reduction(distinct, false),
        unbiased in any::<bool>(),
    ) {
        prop_assume!(!unbiased || group_size(&a.shape, &dims) >= 2);
        check(|v| a.apply(&v[0])?.std(&dims, unbiased, keepdim), &[a.tensor()])?;
    }

    // amax, amin, max_dim and min_dim: distinct values, so the extreme is unique.
    #[test]
    fn amax((a, dims, keepdim) in reduction(distinct, false)) {
        check(|v| a.apply(&v[0])?.amax(&dims, keepdim), &[a.tensor()])?;
    }

    #[test]
    fn amin((a, dims, keepdim) in reduction(distinct, false)) {
        check(|v| a.apply(&v[0])?.amin(&dims, keepdim), &[a.tensor()])?;
    }

    #[test]
    fn max_dim((a, d, keepdim) in along_dim(distinct, false)) {
        check(|v| Ok(a.apply(&v[0])?.max_dim(d, keepdim)?.0), &[a.tensor()])?;
    }

    #[test]
    fn min_dim((a, d, keepdim) in along_dim(distinct, false)) {
        check(|v| Ok(a.apply(&v[0])?.min_dim(d, keepdim)?.0), &[a.tensor()])?;
    }

    // An input with a dim of size 0: sum gives 0, prod 1, mean NaN, logsumexp -inf over
    // an empty group; the (empty) gradient must still come back. Contiguous: a view's
    // storage may hold elements the empty view does not show, and perturbing them moves
    // a NaN to a NaN.
    #[test]
    fn empty_inputs(
        (a, dims, keepdim) in empty_shape(1..=3).prop_flat_map(|s| {
            let r = s.len();
            (contiguous(s, smooth), dim_set(r), any::<bool>())
        }),
    ) {
        check(|v| a.apply(&v[0])?.sum(&dims, keepdim), &[a.tensor()])?;
        check(|v| a.apply(&v[0])?.mean(&dims, keepdim), &[a.tensor()])?;
        check(|v| a.apply(&v[0])?.prod(&dims, keepdim), &[a.tensor()])?;
        check(|v| a.apply(&v[0])?.logsumexp(&dims, keepdim), &[a.tensor()])?;
        check(|v| Ok(a.apply(&v[0])?.sum_all()), &[a.tensor()])?;
        check(|v| Ok(a.apply(&v[0])?.mean_all()), &[a.tensor()])?;
    }

    #[test]
    fn logsumexp((a, dims, keepdim) in reduction(smooth, true)) {
        check(|v| a.apply(&v[0])?.logsumexp(&dims, keepdim), &[a.tensor()])?;
    }
}

/// prod with one zero: x = [2, 0, 3, 0.5], so ∂prod/∂x = [0, 2·3·0.5, 0, 0] = [0, 3, 0, 0];
/// with two zeros, x = [2, 0, 3, 0]: every other-element product contains a zero, so the
/// gradient is 0 everywhere. Along dim 1 of [[2, 0, 3], [0, 4, 0]] the rows give
/// [0, 6, 0] and [0, 0, 0].
#[test]
fn prod_gradient_with_one_and_two_zeros() -> Result<(), Box<dyn std::error::Error>> {
    // (x, shape, dims, expected gradient of prod(x, dims).sum())
    type Case = (Vec<f64>, &'static [usize], Vec<isize>, Vec<f64>);
    let cases: [Case; 3] = [
        (
            vec![2.0, 0.0, 3.0, 0.5],
            &[4],
            vec![],
            vec![0.0, 3.0, 0.0, 0.0],
        ),
        (vec![2.0, 0.0, 3.0, 0.0], &[4], vec![0], vec![0.0; 4]),
        (
            vec![2.0, 0.0, 3.0, 0.0, 4.0, 0.0],
            &[2, 3],
            vec![1],
            vec![0.0, 6.0, 0.0, 0.0, 0.0, 0.0],
        ),
    ];
    for (data, shape, dims, expected) in cases {
        let x = Var::parameter(Tensor::from_vec(data.clone(), shape)?);
        x.prod(&dims, false)?.sum_all().backward()?;
        assert_eq!(x.grad().expect("x requires grad").to_vec(), expected);
        gradcheck(
            |v| v[0].prod(&dims, false),
            &[Tensor::from_vec(data, shape)?],
            &GradcheckOptions::default(),
        )?;
    }
    Ok(())
}
