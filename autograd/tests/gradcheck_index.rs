//! Gradchecks of indexing and joining: index_select, gather, scatter_add, index_add, cat,
//! stack, split, split_with_sizes, chunk, pad (negative pads included), repeat, tril and
//! triu. All are linear in their tensor inputs, so any values do; indices repeat, so
//! gradients must accumulate.

use crate::common;

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use strata_autograd::{GradcheckOptions, Result, Var, gradcheck};
use strata_tensor::Tensor;

/// An input of rank `ranks` with at most 24 elements in any layout, and one of its dims.
fn with_dim(ranks: std::ops::RangeInclusive<usize>) -> BoxedStrategy<(Arg, isize)> {
    shaped(ranks, 24, smooth, true)
        .prop_flat_map(|a| {
            let r = a.shape.len();
            (Just(a), dim(r))
        })
        .boxed()
}

/// The size of dim `d` of `a`.
fn size(a: &Arg, d: isize) -> usize {
    a.shape[resolve(d, a.shape.len())]
}

/// The pieces (split off `x`) whose positions are not `skip`, flattened and joined: every
/// element of a kept piece reaches the output at its own position, the skipped piece's
/// elements get no gradient.
fn join_pieces(pieces: Vec<Var<f64>>, skip: usize) -> Result<Var<f64>> {
    let kept = pieces
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != skip % pieces.len().max(1) || pieces.len() == 1)
        .map(|(_, p)| p.flatten(0, -1))
        .collect::<Result<Vec<_>>>()?;
    Var::cat(&kept, 0)
}

/// Gradchecks `join` (cat or stack) of `args`: input `k` is tracked when `tracked[k]`
/// (the first one when none is), a constant otherwise.
fn check_joined<F>(args: &[Arg], tracked: &[bool], join: F) -> TestResult
where
    F: Fn(&[Var<f64>]) -> Result<Var<f64>>,
{
    let tracked: Vec<bool> = (0..args.len())
        .map(|k| tracked[k] || (k == 0 && !tracked[..args.len()].contains(&true)))
        .collect();
    let constants: Vec<Var<f64>> = args.iter().map(|a| Var::new(a.tensor())).collect();
    let inputs: Vec<_> = args
        .iter()
        .zip(&tracked)
        .filter(|&(_, &t)| t)
        .map(|(a, _)| a.tensor())
        .collect();
    check(
        |v| {
            let mut next = v.iter();
            let xs = args
                .iter()
                .zip(&tracked)
                .zip(&constants)
                .map(|((a, &t), c)| {
                    if t {
                        a.apply(next.next().expect("one var per tracked input"))
                    } else {
                        a.apply(c)
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            join(&xs)
        },
        &inputs,
    )
}

/// `n` split into consecutive sizes (some may be 0): cut points drawn in `0..=n`.
fn composition(n: usize) -> BoxedStrategy<Vec<usize>> {
    vec(0..=n, 0..=3)
        .prop_map(move |mut cuts| {
            cuts.push(0);
            cuts.push(n);
            cuts.sort_unstable();
            cuts.windows(2).map(|w| w[1] - w[0]).collect()
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn index_select(
        (a, d, idx) in with_dim(1..=3).prop_flat_map(|(a, d)| {
            let n = size(&a, d);
            (Just(a), Just(d), 1..=5usize).prop_flat_map(move |(a, d, k)| {
                (Just(a), Just(d), index_values(vec![k], n))
            })
        }),
    ) {
        check(|v| a.apply(&v[0])?.index_select(d, &idx), &[a.tensor()])?;
    }

    // The index may be smaller than the input in every dim but `d`, and of any size
    // along `d`.
    #[test]
    fn gather(
        (a, d, idx) in with_dim(1..=3).prop_flat_map(|(a, d)| {
            let r = a.shape.len();
            let dd = resolve(d, r);
            let sizes: Vec<BoxedStrategy<usize>> = (0..r)
                .map(|k| if k == dd { (1..=4usize).boxed() } else { (1..=a.shape[k]).boxed() })
                .collect();
            let n = a.shape[dd];
            (Just(a), Just(d), sizes).prop_flat_map(move |(a, d, s)| {
                (Just(a), Just(d), index_values(s, n))
            })
        }),
    ) {
        check(|v| a.apply(&v[0])?.gather(d, &idx), &[a.tensor()])?;
    }

    // src may be larger than the index in every dim: its extra elements get no gradient.
    #[test]
    fn scatter_add(
        (a, d, idx, src) in with_dim(1..=3).prop_flat_map(|(a, d)| {
            let r = a.shape.len();
            let dd = resolve(d, r);
            let sizes: Vec<BoxedStrategy<usize>> = (0..r)
                .map(|k| if k == dd { (1..=4usize).boxed() } else { (1..=a.shape[k]).boxed() })
                .collect();
            (Just(a), Just(d), sizes, vec(0..=1usize, r))
        })
        .prop_flat_map(|(a, d, s, extra)| {
            let n = size(&a, d);
            let src: Vec<usize> = s.iter().zip(&extra).map(|(i, e)| i + e).collect();
            (Just(a), Just(d), index_values(s, n), arg(src, smooth, true))
        }),
        t in tracked(),
    ) {
        check_pair(&a, &src, t, |x, y| x.scatter_add(d, &idx, y))?;
    }

    #[test]
    fn index_add(
        (a, d, idx, source) in with_dim(1..=3).prop_flat_map(|(a, d)| {
            (Just(a), Just(d), 1..=4usize)
        })
        .prop_flat_map(|(a, d, k)| {
            let n = size(&a, d);
            let mut s = a.shape.clone();
            let dd = resolve(d, s.len());
            s[dd] = k;
            (Just(a), Just(d), index_values(vec![k], n), arg(s, smooth, true))
        }),
        t in tracked(),
    ) {
        check_pair(&a, &source, t, |x, y| x.index_add(d, &idx, y))?;
    }

    // Two or three inputs of sizes 0..=3 along the joined dim.
    #[test]
    fn cat(
        (args, d) in (shape(1..=3, 8), 2..=3usize).prop_flat_map(|(s, count)| {
            let r = s.len();
            (Just(s), vec(0..=3usize, count), dim(r))
        })
        .prop_filter("a non-empty result", |(_, sizes, _)| sizes.iter().sum::<usize>() > 0)
        .prop_flat_map(|(s, sizes, d)| {
            let dd = resolve(d, s.len());
            let args: Vec<BoxedStrategy<Arg>> = sizes
                .iter()
                .map(|&k| {
                    let mut piece = s.clone();
                    piece[dd] = k;
                    arg(piece, smooth, true)
                })
                .collect();
            (args, Just(d))
        }),
        tracked in prop::collection::vec(prop::bool::weighted(0.75), 3),
    ) {
        check_joined(&args, &tracked, |xs| Var::cat(xs, d))?;
    }

    #[test]
    fn stack(
        (args, d) in (shape(0..=3, 8), 2..=3usize).prop_flat_map(|(s, count)| {
            let r = s.len() as isize;
            (vec(arg(s, smooth, true), count), -(r + 1)..=r)
        }),
        tracked in prop::collection::vec(prop::bool::weighted(0.75), 3),
    ) {
        check_joined(&args, &tracked, |xs| Var::stack(xs, d))?;
    }

    #[test]
    fn split(
        (a, d, piece, skip) in with_dim(1..=3).prop_flat_map(|(a, d)| {
            let n = size(&a, d);
            (Just(a), Just(d), 1..=n + 1, 0..4usize)
        }),
    ) {
        check(|v| join_pieces(a.apply(&v[0])?.split(piece, d)?, skip), &[a.tensor()])?;
    }

    #[test]
    fn split_with_sizes(
        (a, d, sizes, skip) in with_dim(1..=3).prop_flat_map(|(a, d)| {
            let n = size(&a, d);
            (Just(a), Just(d), composition(n), 0..4usize)
        }),
    ) {
        check(
            |v| join_pieces(a.apply(&v[0])?.split_with_sizes(&sizes, d)?, skip),
            &[a.tensor()],
        )?;
    }

    #[test]
    fn chunk(
        (a, d, chunks, skip) in with_dim(1..=3).prop_flat_map(|(a, d)| {
            let n = size(&a, d);
            (Just(a), Just(d), 1..=n + 1, 0..4usize)
        }),
    ) {
        check(|v| join_pieces(a.apply(&v[0])?.chunk(chunks, d)?, skip), &[a.tensor()])?;
    }

    // (before, after) pairs for the last 1..=rank dims, each in -2..=2: negative amounts
    // crop (together at most the whole dim, as PyTorch requires); a dim may end up empty.
    #[test]
    fn pad(
        (a, pads, value) in shaped(1..=3, 24, smooth, true).prop_flat_map(|a| {
            let r = a.shape.len();
            (Just(a), (1..=r).prop_flat_map(|k| vec(-2isize..=2, 2 * k)), -2.0..2.0f64)
        })
        .prop_filter("crops within each dim", |(a, pads, _)| {
            pads.chunks(2).enumerate().all(|(k, p)| {
                a.shape[a.shape.len() - 1 - k] as isize + p[0].min(0) + p[1].min(0) >= 0
            })
        }),
    ) {
        check(|v| a.apply(&v[0])?.pad(&pads, value), &[a.tensor()])?;
    }

    // Up to two new leading dims; a repeat of 0 (an empty result) now and then.
    #[test]
    fn repeat(
        (a, repeats) in shaped(0..=3, 12, smooth, true).prop_flat_map(|a| {
            let r = a.shape.len();
            (Just(a), (r..=r + 2).prop_flat_map(|n| {
                vec(prop_oneof![10 => 1..=3usize, 1 => Just(0usize)], n)
            }))
        }),
    ) {
        check(|v| a.apply(&v[0])?.repeat(&repeats), &[a.tensor()])?;
    }

    #[test]
    fn tril(a in shaped(2..=3, 24, smooth, true), diagonal in -3isize..=3) {
        check(|v| a.apply(&v[0])?.tril(diagonal), &[a.tensor()])?;
    }

    #[test]
    fn triu(a in shaped(2..=3, 24, smooth, true), diagonal in -3isize..=3) {
        check(|v| a.apply(&v[0])?.triu(diagonal), &[a.tensor()])?;
    }
}

/// As in PyTorch, a 1-d empty tensor may join a cat of any rank and takes no part in it
/// (a legacy rule); it gets an empty gradient, the others theirs.
#[test]
fn cat_with_a_legacy_empty_1d_input() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let x = Tensor::from_vec(vec![0.5, -1.0, 2.0, 1.5, -0.5, 0.25], &[2, 3])?;
    let empty = Tensor::<f64>::zeros(&[0]);
    gradcheck(
        |v| Var::cat(&[&v[0], &v[1], &v[0]], 1),
        &[x, empty],
        &GradcheckOptions::default(),
    )?;
    Ok(())
}
