//! Shared helpers for the gradcheck property tests (STYLE §7): strategies for shapes,
//! values, layouts and dims, and [`check`], which runs [`gradcheck`] and turns a mismatch
//! into a proptest failure.
//!
//! Every input is drawn as an [`Arg`]: a logical shape, a [`ViewKind`] and the values of a
//! contiguous *storage* tensor. The gradcheck closure rebuilds the view on the tracked
//! storage ([`Arg::apply`]: transpose, permute, slice with a step, expand) before it calls
//! the op under test, so the op runs on non-contiguous data and its gradient has to flow
//! back through the view. gradcheck itself perturbs the contiguous storage, never an
//! expanded view whose elements share memory (STYLE §7, PyTorch's overlapping-memory
//! warning).
//!
//! Values come from strategies that stay away from the points where an op is not
//! differentiable (kinks, poles, ties); each one's doc says which points and why. "Away"
//! means far beyond gradcheck's step of 1e-6: the central difference must never straddle
//! the bad point.
#![allow(dead_code)]

use std::ops::RangeInclusive;

use proptest::collection::vec;
use proptest::prelude::*;
use strata_autograd::{Result, Var};
use strata_tensor::Tensor;
pub use strata_testing::*;

/// Cases per property: every op is checked on at least this many random draws.
pub const CASES: u32 = 64;

/// A value strategy for `n` elements.
pub type Values = fn(usize) -> BoxedStrategy<Vec<f64>>;

// ---------------------------------------------------------------------------------------
// Running gradcheck.
// ---------------------------------------------------------------------------------------

/// Which inputs of a two-input op are tracked: both, or one of them with the other a
/// constant (`Var::new`), so the op's backward also runs with a "needs no gradient" flag.
#[derive(Clone, Copy, Debug)]
pub enum Tracked {
    /// Both inputs are gradchecked.
    Both,
    /// Only the first; the second is a constant.
    First,
    /// Only the second; the first is a constant.
    Second,
}

/// Both inputs tracked half the time, otherwise one of them.
pub fn tracked() -> BoxedStrategy<Tracked> {
    prop_oneof![
        2 => Just(Tracked::Both),
        1 => Just(Tracked::First),
        1 => Just(Tracked::Second),
    ]
    .boxed()
}

/// Gradchecks `op(a, b)` in the inputs `tracked` names; the other becomes a constant.
pub fn check_pair<F>(a: &Arg, b: &Arg, tracked: Tracked, op: F) -> TestResult
where
    F: Fn(&Var<f64>, &Var<f64>) -> Result<Var<f64>>,
{
    match tracked {
        Tracked::Both => check(
            |v| op(&a.apply(&v[0])?, &b.apply(&v[1])?),
            &[a.tensor(), b.tensor()],
        ),
        Tracked::First => {
            let b = b.apply(&Var::new(b.tensor()))?;
            check(|v| op(&a.apply(&v[0])?, &b), &[a.tensor()])
        }
        Tracked::Second => {
            let a = a.apply(&Var::new(a.tensor()))?;
            check(|v| op(&a, &b.apply(&v[0])?), &[b.tensor()])
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shapes and dims.
// ---------------------------------------------------------------------------------------

/// A shape of rank in `ranks`, each dimension in 1..=5 (size-1 and odd sizes included),
/// shrunk to at most `max_numel` elements by lowering the largest dimensions: gradcheck
/// costs two forward passes per input element.
pub fn shape(ranks: RangeInclusive<usize>, max_numel: usize) -> BoxedStrategy<Vec<usize>> {
    ranks
        .prop_flat_map(|r| vec(1..=5usize, r))
        .prop_map(move |mut s| {
            fit(&mut s, max_numel);
            s
        })
        .boxed()
}

/// A shape of rank in `ranks` (at least 1) with one dim of size 0: an empty input, whose
/// gradient is empty but whose backward must still run (and give partners of other
/// shapes a zero gradient).
pub fn empty_shape(ranks: RangeInclusive<usize>) -> BoxedStrategy<Vec<usize>> {
    shape(ranks, 24)
        .prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r)
        })
        .prop_map(|(mut s, k)| {
            s[k] = 0;
            s
        })
        .boxed()
}

/// `out` with `lead` leading dimensions dropped and the dimensions flagged in `ones` set
/// to 1: a shape that broadcasts to `out`.
fn broadcastable(out: &[usize], lead: usize, ones: &[bool]) -> Vec<usize> {
    (lead..out.len())
        .map(|k| if ones[k] { 1 } else { out[k] })
        .collect()
}

/// Shapes that broadcast to a common shape of rank 1..=3 with at most `max_numel`
/// elements, e.g. `[3, 1, 4]` and `[2, 4]`; each may lack leading dims or have size 1
/// where the other does not.
pub fn broadcast_shapes(count: usize, max_numel: usize) -> BoxedStrategy<Vec<Vec<usize>>> {
    shape(1..=3, max_numel)
        .prop_flat_map(move |out| {
            let r = out.len();
            let operand = (0..=r, vec(prop::bool::weighted(0.3), r));
            (Just(out), vec(operand, count))
        })
        .prop_map(|(out, operands)| {
            operands
                .iter()
                .map(|(lead, ones)| broadcastable(&out, *lead, ones))
                .collect()
        })
        .boxed()
}

/// One dim of a rank-`rank` tensor, as a positive or a negative index (0 or -1 for 0-d).
pub fn dim(rank: usize) -> BoxedStrategy<isize> {
    let n = rank.max(1) as isize;
    (-n..n).boxed()
}

/// A set of distinct dims of a rank-`rank` tensor in random order, each as a positive or a
/// negative index; empty (which reduces every dim) about one time in `rank + 1`.
pub fn dim_set(rank: usize) -> BoxedStrategy<Vec<isize>> {
    (
        Just((0..rank).collect::<Vec<usize>>()).prop_shuffle(),
        0..=rank,
        vec(any::<bool>(), rank),
    )
        .prop_map(move |(order, k, negative)| {
            order[..k]
                .iter()
                .map(|&d| {
                    if negative[d] {
                        d as isize - rank as isize
                    } else {
                        d as isize
                    }
                })
                .collect()
        })
        .boxed()
}

/// How many elements each output of a reduction over `dims` of `shape` combines.
pub fn group_size(shape: &[usize], dims: &[isize]) -> usize {
    if dims.is_empty() {
        return numel(shape);
    }
    dims.iter()
        .map(|&d| shape[resolve(d, shape.len())])
        .product()
}

// ---------------------------------------------------------------------------------------
// Layouts.
// ---------------------------------------------------------------------------------------

/// How an input's logical shape is laid out over its contiguous storage, and the view op
/// that rebuilds it inside the gradcheck closure.
#[derive(Clone, Debug)]
pub enum ViewKind {
    /// The storage is the input.
    Contiguous,
    /// Stored with the two dims swapped; rebuilt by `transpose(dim0, dim1)`.
    Transposed(isize, isize),
    /// Rebuilt by `permute(perm)`: logical dim `k` is storage dim `perm[k]`.
    Permuted(Vec<isize>),
    /// Every `step`-th element of `dim` from `start`; the storage is longer along `dim`.
    Stepped {
        /// The sliced dim.
        dim: usize,
        /// First element taken.
        start: usize,
        /// Distance between taken elements.
        step: usize,
    },
    /// A broadcast: stored without `lead` leading dims and with size 1 at the dims in
    /// `ones`; rebuilt by `expand`. Its elements share memory, so values repeat: not for
    /// inputs that must be distinct.
    Expanded {
        /// Leading dims added by the expand.
        lead: usize,
        /// Dims stored with size 1.
        ones: Vec<usize>,
    },
}

impl ViewKind {
    /// The shape of the storage that becomes `shape` under this view.
    pub fn storage(&self, shape: &[usize]) -> Vec<usize> {
        let r = shape.len();
        match self {
            ViewKind::Contiguous => shape.to_vec(),
            ViewKind::Transposed(a, b) => {
                let mut s = shape.to_vec();
                s.swap(resolve(*a, r), resolve(*b, r));
                s
            }
            ViewKind::Permuted(perm) => {
                let mut s = vec![0; r];
                for (k, &d) in perm.iter().enumerate() {
                    s[resolve(d, r)] = shape[k];
                }
                s
            }
            ViewKind::Stepped { dim, start, step } => {
                let mut s = shape.to_vec();
                s[*dim] = start + step * shape[*dim];
                s
            }
            ViewKind::Expanded { lead, ones } => (*lead..r)
                .map(|k| if ones.contains(&k) { 1 } else { shape[k] })
                .collect(),
        }
    }

    /// The view op on the tracked storage `v`, giving a var of `shape`.
    pub fn apply(&self, v: &Var<f64>, shape: &[usize]) -> Result<Var<f64>> {
        match self {
            ViewKind::Contiguous => Ok(v.clone()),
            ViewKind::Transposed(a, b) => v.transpose(*a, *b),
            ViewKind::Permuted(perm) => v.permute(perm),
            ViewKind::Stepped { dim, start, step } => {
                // The end of the storage: exactly `shape[dim]` elements are taken.
                let end = start + step * shape[*dim];
                v.slice(*dim as isize, *start as isize, end as isize, *step)
            }
            ViewKind::Expanded { lead, ones } => {
                let sizes: Vec<isize> = (0..shape.len())
                    .map(|k| {
                        if k < *lead || ones.contains(&k) {
                            shape[k] as isize
                        } else {
                            -1
                        }
                    })
                    .collect();
                v.expand(&sizes)
            }
        }
    }
}

/// A layout for a rank-`rank` input: contiguous a fifth of the time, otherwise a
/// transpose, a permutation, a stepped slice, or (when `expand`) a broadcast.
pub fn view_kind(rank: usize, expand: bool) -> BoxedStrategy<ViewKind> {
    let r = rank as isize;
    let transposed = (0..rank, 0..rank, any::<bool>()).prop_map(move |(a, b, neg)| {
        let (a, b) = (a as isize, b as isize);
        if neg {
            ViewKind::Transposed(a - r, b)
        } else {
            ViewKind::Transposed(a, b - r)
        }
    });
    let permuted = Just((0..r).collect::<Vec<isize>>())
        .prop_shuffle()
        .prop_map(ViewKind::Permuted);
    let stepped = (0..rank, 0..=1usize, 2..=3usize)
        .prop_map(|(dim, start, step)| ViewKind::Stepped { dim, start, step });
    let expanded =
        (0..=rank.min(1), vec(prop::bool::weighted(0.4), rank)).prop_map(|(lead, flags)| {
            ViewKind::Expanded {
                lead,
                ones: (0..flags.len()).filter(|&k| flags[k]).collect(),
            }
        });
    match (rank, expand) {
        (0, _) => Just(ViewKind::Contiguous).boxed(),
        (1, false) => prop_oneof![1 => Just(ViewKind::Contiguous), 2 => stepped].boxed(),
        (1, true) => {
            prop_oneof![1 => Just(ViewKind::Contiguous), 2 => stepped, 1 => expanded].boxed()
        }
        (_, false) => prop_oneof![
            1 => Just(ViewKind::Contiguous),
            1 => transposed,
            1 => permuted,
            1 => stepped,
        ]
        .boxed(),
        (_, true) => prop_oneof![
            1 => Just(ViewKind::Contiguous),
            1 => transposed,
            1 => permuted,
            1 => stepped,
            1 => expanded,
        ]
        .boxed(),
    }
}

/// One gradcheck input: a logical shape, its layout, and the values of its storage.
#[derive(Clone, Debug)]
pub struct Arg {
    /// The shape the op sees.
    pub shape: Vec<usize>,
    /// How that shape is laid out over the storage.
    pub view: ViewKind,
    /// The storage's values, row-major.
    pub data: Vec<f64>,
}

impl Arg {
    /// The contiguous storage, the tensor gradcheck perturbs.
    pub fn tensor(&self) -> Tensor<f64> {
        tensor(self.data.clone(), &self.view.storage(&self.shape))
    }

    /// The logical input: the view rebuilt on the tracked storage `v`.
    pub fn apply(&self, v: &Var<f64>) -> Result<Var<f64>> {
        self.view.apply(v, &self.shape)
    }

    /// The logical input's values, row-major, computed without tracking.
    pub fn logical(&self) -> Vec<f64> {
        self.apply(&Var::new(self.tensor()))
            .expect("the view fits its storage")
            .to_vec()
    }
}

/// An input of `shape` with `values` in any layout ([`view_kind`]).
pub fn arg(shape: Vec<usize>, values: Values, expand: bool) -> BoxedStrategy<Arg> {
    view_kind(shape.len(), expand)
        .prop_flat_map(move |view| {
            let n = numel(&view.storage(&shape));
            (Just(shape.clone()), Just(view), values(n))
        })
        .prop_map(|(shape, view, data)| Arg { shape, view, data })
        .boxed()
}

/// A contiguous input of `shape` with `values`.
pub fn contiguous(shape: Vec<usize>, values: Values) -> BoxedStrategy<Arg> {
    let n = numel(&shape);
    values(n)
        .prop_map(move |data| Arg {
            shape: shape.clone(),
            view: ViewKind::Contiguous,
            data,
        })
        .boxed()
}

/// An input of a random shape (rank in `ranks`, at most `max_numel` elements) in any
/// layout.
pub fn shaped(
    ranks: RangeInclusive<usize>,
    max_numel: usize,
    values: Values,
    expand: bool,
) -> BoxedStrategy<Arg> {
    shape(ranks, max_numel)
        .prop_flat_map(move |s| arg(s, values, expand))
        .boxed()
}
