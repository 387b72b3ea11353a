//! Gradchecks of the view ops (reshape, view, flatten, (un)squeeze, transpose, t,
//! permute, narrow, slice with a step, select, broadcast_to, expand, contiguous), each
//! applied on top of a random layout of its input. All are linear, so any values do.

use crate::common;

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// An input of rank `ranks` with at most 24 elements, any values, any layout.
fn input(ranks: std::ops::RangeInclusive<usize>) -> BoxedStrategy<Arg> {
    shaped(ranks, 24, smooth, true)
}

/// The prime factors of `n`, smallest first.
fn prime_factors(mut n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut p = 2;
    while n > 1 {
        while n.is_multiple_of(p) {
            out.push(p);
            n /= p;
        }
        p += 1;
    }
    out
}

/// A shape with `n` elements for `reshape`: the prime factors of `n` dealt into up to 4
/// dims (size-1 dims included, rank 0 when `n` is 1), one of them -1 half the time.
fn reshape_target(n: usize) -> BoxedStrategy<Vec<isize>> {
    let factors = prime_factors(n);
    let ranks = if n == 1 { 0..=3usize } else { 1..=4 };
    (
        ranks,
        vec(any::<Index>(), factors.len()),
        any::<Option<Index>>(),
    )
        .prop_map(move |(rank, bins, infer)| {
            let mut dims = vec![1isize; rank];
            for (f, bin) in factors.iter().zip(&bins) {
                dims[bin.index(rank)] *= *f as isize;
            }
            if let (Some(i), false) = (infer, dims.is_empty()) {
                let k = i.index(dims.len());
                dims[k] = -1;
            }
            dims
        })
        .boxed()
}

/// An input of rank `ranks` and one of its dims.
fn with_dim(ranks: std::ops::RangeInclusive<usize>) -> BoxedStrategy<(Arg, isize)> {
    input(ranks)
        .prop_flat_map(|a| {
            let r = a.shape.len();
            (Just(a), dim(r))
        })
        .boxed()
}

/// A shape that `shape` broadcasts to: up to two new leading dims, and size-1 dims grown
/// to 1..=3.
fn broadcast_target(shape: Vec<usize>) -> BoxedStrategy<Vec<usize>> {
    (vec(1..=3usize, 0..=2), vec(1..=3usize, shape.len()))
        .prop_map(move |(lead, grown)| {
            lead.into_iter()
                .chain(
                    shape
                        .iter()
                        .zip(grown)
                        .map(|(&s, g)| if s == 1 { g } else { s }),
                )
                .collect()
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn reshape(
        (a, target) in input(0..=4).prop_flat_map(|a| {
            let n = numel(&a.shape);
            (Just(a), reshape_target(n))
        }),
    ) {
        check(|v| a.apply(&v[0])?.reshape(target.as_slice()), &[a.tensor()])?;
    }

    // view needs strides that allow it: the input is made contiguous first when it is
    // not (which also checks contiguous's gradient).
    #[test]
    fn view(
        (a, target) in input(0..=4).prop_flat_map(|a| {
            let n = numel(&a.shape);
            (Just(a), reshape_target(n))
        }),
    ) {
        check(
            |v| {
                let x = a.apply(&v[0])?;
                let x = if x.value().is_contiguous() { x } else { x.contiguous() };
                x.view(target.as_slice())
            },
            &[a.tensor()],
        )?;
    }

    #[test]
    fn flatten(
        (a, start, end) in input(0..=4).prop_flat_map(|a| {
            let r = a.shape.len();
            (Just(a), dim(r), dim(r))
        }),
    ) {
        let r = a.shape.len();
        let (s, e) = (resolve(start, r.max(1)), resolve(end, r.max(1)));
        let (start, end) = if s <= e { (start, end) } else { (end, start) };
        check(|v| a.apply(&v[0])?.flatten(start, end), &[a.tensor()])?;
    }

    #[test]
    fn unsqueeze(
        (a, d) in input(0..=3).prop_flat_map(|a| {
            let r = a.shape.len() as isize;
            (Just(a), -(r + 1)..=r)
        }),
    ) {
        check(|v| a.apply(&v[0])?.unsqueeze(d), &[a.tensor()])?;
    }

    // Size-1 dims are common in the drawn shapes; squeezing a larger dim is a no-op.
    #[test]
    fn squeeze((a, d) in with_dim(0..=4)) {
        check(|v| a.apply(&v[0])?.squeeze(d), &[a.tensor()])?;
    }

    #[test]
    fn squeeze_all(a in input(0..=4)) {
        check(|v| Ok(a.apply(&v[0])?.squeeze_all()), &[a.tensor()])?;
    }

    #[test]
    fn transpose(
        (a, d0, d1) in input(1..=4).prop_flat_map(|a| {
            let r = a.shape.len();
            (Just(a), dim(r), dim(r))
        }),
    ) {
        check(|v| a.apply(&v[0])?.transpose(d0, d1), &[a.tensor()])?;
    }

    #[test]
    fn t(a in input(0..=2)) {
        check(|v| a.apply(&v[0])?.t(), &[a.tensor()])?;
    }

    #[test]
    fn permute(
        (a, perm, negative) in input(0..=4).prop_flat_map(|a| {
            let r = a.shape.len();
            (Just(a), Just((0..r).collect::<Vec<usize>>()).prop_shuffle(), vec(any::<bool>(), r))
        }),
    ) {
        let r = a.shape.len() as isize;
        let perm: Vec<isize> = perm
            .iter()
            .zip(&negative)
            .map(|(&d, &neg)| if neg { d as isize - r } else { d as isize })
            .collect();
        check(|v| a.apply(&v[0])?.permute(&perm), &[a.tensor()])?;
    }

    // length 0 included.
    #[test]
    fn narrow(
        (a, d, start, length) in with_dim(1..=4).prop_flat_map(|(a, d)| {
            let n = a.shape[resolve(d, a.shape.len())];
            (Just(a), Just(d), 0..=n)
        })
        .prop_flat_map(|(a, d, start)| {
            let n = a.shape[resolve(d, a.shape.len())];
            (Just(a), Just(d), Just(start), 0..=n - start)
        }),
    ) {
        check(|v| a.apply(&v[0])?.narrow(d, start, length), &[a.tensor()])?;
    }

    // Bounds may be negative or out of range (clamped, as in Python); empty slices too.
    #[test]
    fn slice(
        (a, d, start, end, step) in with_dim(1..=4).prop_flat_map(|(a, d)| {
            let n = a.shape[resolve(d, a.shape.len())] as isize;
            (Just(a), Just(d), -n - 2..=n + 2, -n - 2..=n + 2, 1..=3usize)
        }),
    ) {
        check(|v| a.apply(&v[0])?.slice(d, start, end, step), &[a.tensor()])?;
    }

    #[test]
    fn select(
        (a, d, i) in with_dim(1..=4).prop_flat_map(|(a, d)| {
            let n = a.shape[resolve(d, a.shape.len())] as isize;
            (Just(a), Just(d), -n..n)
        }),
    ) {
        check(|v| a.apply(&v[0])?.select(d, i), &[a.tensor()])?;
    }

    #[test]
    fn broadcast_to(
        (a, target) in input(0..=3).prop_flat_map(|a| {
            let t = broadcast_target(a.shape.clone());
            (Just(a), t)
        }),
    ) {
        check(|v| a.apply(&v[0])?.broadcast_to(&target), &[a.tensor()])?;
    }

    // expand's sizes: -1 keeps a dim (half the time for dims that are not 1).
    #[test]
    fn expand(
        (a, target, keep) in input(0..=3).prop_flat_map(|a| {
            let t = broadcast_target(a.shape.clone());
            let r = a.shape.len();
            (Just(a), t, vec(any::<bool>(), r))
        }),
    ) {
        let lead = target.len() - a.shape.len();
        let sizes: Vec<isize> = target
            .iter()
            .enumerate()
            .map(|(k, &s)| {
                if k >= lead && keep[k - lead] && a.shape[k - lead] == s {
                    -1
                } else {
                    s as isize
                }
            })
            .collect();
        check(|v| a.apply(&v[0])?.expand(&sizes), &[a.tensor()])?;
    }

    // An input with a dim of size 0 through the views that accept one.
    #[test]
    fn empty_inputs(
        (a, d0, d1) in empty_shape(1..=3).prop_flat_map(|s| {
            let r = s.len();
            (arg(s, smooth, true), dim(r), dim(r))
        }),
    ) {
        let r = a.shape.len();
        let reversed: Vec<usize> = a.shape.iter().rev().copied().collect();
        let perm: Vec<isize> = (0..r as isize).rev().collect();
        let mut grown = vec![2];
        grown.extend(&a.shape);
        let (s, e) = (resolve(d0, r), resolve(d1, r));
        let (start, end) = if s <= e { (d0, d1) } else { (d1, d0) };
        check(|v| a.apply(&v[0])?.reshape(reversed.as_slice()), &[a.tensor()])?;
        check(|v| a.apply(&v[0])?.flatten(start, end), &[a.tensor()])?;
        check(|v| a.apply(&v[0])?.unsqueeze(d0), &[a.tensor()])?;
        check(|v| Ok(a.apply(&v[0])?.squeeze_all()), &[a.tensor()])?;
        check(|v| a.apply(&v[0])?.transpose(d0, d1), &[a.tensor()])?;
        check(|v| a.apply(&v[0])?.permute(&perm), &[a.tensor()])?;
        check(|v| a.apply(&v[0])?.slice(d0, 0, 3, 2), &[a.tensor()])?;
        check(|v| a.apply(&v[0])?.narrow(d0, 0, 0), &[a.tensor()])?;
        check(|v| a.apply(&v[0])?.broadcast_to(&grown), &[a.tensor()])?;
        check(|v| Ok(a.apply(&v[0])?.contiguous()), &[a.tensor()])?;
    }

    #[test]
    fn contiguous(a in input(0..=4)) {
        check(|v| Ok(a.apply(&v[0])?.contiguous()), &[a.tensor()])?;
    }
}
