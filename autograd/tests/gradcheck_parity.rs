//! Gradchecks, first and second order, of the tensor ops added for PyTorch parity:
//! flip, roll, diagonal, diag, repeat_interleave, outer, meshgrid, clamp with tensor
//! bounds, sort/topk/kthvalue, cumprod (zeros included), logcumsumexp, vector and matrix
//! norms, and einsum over a set of equations with random sizes. Values that an op picks
//! among (sorts, maxima, clamps) are kept pairwise apart; the kinks of `abs` are avoided.

use crate::common;

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use strata_autograd::{Var, einsum};
use strata_tensor::{Indexing, MatrixNorm, Tensor};

/// A shape of rank 1..=3 with at most 12 elements (sizes 1..=3), and its element count.
fn small_shape() -> impl Strategy<Value = Vec<usize>> {
    vec(1..=3usize, 1..=3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// flip over any set of dims and roll by any shifts (also the flattened roll).
    #[test]
    fn flip_and_roll(shape in small_shape(), x in smooth(27), mask in vec(any::<bool>(), 3),
                     shifts in vec(-4..=4isize, 3), flat in any::<bool>()) {
        let n: usize = shape.iter().product();
        let x = tensor(x[..n].to_vec(), &shape);
        let dims: Vec<isize> = (0..shape.len()).filter(|&d| mask[d]).map(|d| d as isize).collect();
        check(|v| v[0].flip(&dims), std::slice::from_ref(&x))?;
        if flat || dims.is_empty() {
            check(|v| v[0].roll(&shifts[..1], &[]), &[x])?;
        } else {
            check(|v| v[0].roll(&shifts[..dims.len()], &dims), &[x])?;
        }
    }

    /// diagonal of any pair of dims with any offset, and diag of vectors and matrices.
    #[test]
    fn diagonals(shape in vec(1..=4usize, 2..=3), x in smooth(64), offset in -3..=3isize,
                 dims in (0..3isize, 0..3isize)) {
        let n: usize = shape.iter().product();
        let x = tensor(x[..n].to_vec(), &shape);
        let r = shape.len() as isize;
        let (d1, d2) = (dims.0 % r, dims.1 % r);
        if d1 != d2 {
            check(|v| v[0].diagonal(offset, d1, d2), std::slice::from_ref(&x))?;
        }
        let vec1 = x.reshape(&[n][..]).unwrap();
        check(|v| v[0].diag(offset), &[vec1])?;
        if shape.len() == 2 {
            check(|v| v[0].diag(offset), &[x])?;
        }
    }

    /// repeat_interleave with one count or one per element, along a dim or flattened.
    #[test]
    fn repeat_interleave(shape in small_shape(), x in smooth(27), counts in vec(0..=3usize, 3),
                         per_element in any::<bool>(), along in any::<bool>()) {
        let n: usize = shape.iter().product();
        let x = tensor(x[..n].to_vec(), &shape);
        let dim = along.then_some(0isize);
        let size = if along { shape[0] } else { n };
        let repeats: Vec<usize> = if per_element && size <= 3 { counts[..size].to_vec() } else { vec![counts[0]] };
        check(|v| v[0].repeat_interleave(&repeats, dim), &[x])?;
    }

    /// outer products and meshgrids (each grid weighted differently, summed).
    #[test]
    fn outer_and_meshgrid(a in smooth(3), b in smooth(4), c in smooth(2), xy in any::<bool>()) {
        let (a, b, c) = (tensor(a, &[3]), tensor(b, &[4]), tensor(c, &[2]));
        check(|v| v[0].outer(&v[1]), &[a.clone(), b.clone()])?;
        let indexing = if xy { Indexing::Xy } else { Indexing::Ij };
        check(|v| {
            let g = Var::meshgrid(&[&v[0], &v[1], &v[2]], indexing)?;
            g[0].add(&g[1].mul_scalar(2.0))?.add(&g[2].mul_scalar(-3.0))
        }, &[a, b, c])?;
    }

    /// clamp with tensor bounds in x, min and max, bounds in either order.
    #[test]
    fn clamp_tensor(x in distinct(24), which in 0..3usize) {
        let (lo, hi, v) = (tensor(x[..6].to_vec(), &[6]), tensor(x[6..12].to_vec(), &[6]), tensor(x[12..].to_vec(), &[2, 6]));
        match which {
            0 => check(|v| v[0].clamp_tensor(Some(&v[1]), Some(&v[2])), &[v, lo, hi])?,
            1 => check(|v| v[0].clamp_tensor(Some(&v[1]), None), &[v, lo])?,
            _ => check(|v| v[0].clamp_tensor(None, Some(&v[1])), &[v, hi])?,
        }
    }

    /// sort, topk and kthvalue along any dim.
    #[test]
    fn ordering(shape in small_shape(), x in distinct(27), d in 0..3usize, descending in any::<bool>(), k in 1..=3usize) {
        let n: usize = shape.iter().product();
        let x = tensor(x[..n].to_vec(), &shape);
        let dim = (d % shape.len()) as isize;
        let k = k.min(shape[dim as usize]);
        check(|v| Ok(v[0].sort(dim, descending)?.0), std::slice::from_ref(&x))?;
        check(|v| Ok(v[0].topk(k, dim, descending)?.0), std::slice::from_ref(&x))?;
        check(|v| Ok(v[0].kthvalue(k, dim, descending)?.0), &[x])?;
    }

    /// cumprod (with exact zeros now and then) and logcumsumexp along any dim.
    #[test]
    fn scans(shape in small_shape(), x in smooth(27), zeros in vec(any::<bool>(), 27), d in 0..3usize) {
        let n: usize = shape.iter().product();
        let with_zeros: Vec<f64> = x[..n].iter().zip(&zeros).map(|(&v, &z)| if z && v > 1.0 { 0.0 } else { v }).collect();
        let dim = (d % shape.len()) as isize;
        check(|v| v[0].cumprod(dim), &[tensor(with_zeros, &shape)])?;
        check(|v| v[0].logcumsumexp(dim), &[tensor(x[..n].to_vec(), &shape)])?;
    }

    /// vector norms of every kind over some dims, and matrix norms.
    #[test]
    fn norms(shape in vec(1..=3usize, 2..=3), x in distinct(27), ord in prop_oneof![
                Just(1.0), Just(2.0), Just(3.0), Just(0.5), Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
             mask in vec(any::<bool>(), 3), keepdim in any::<bool>(),
             m in prop_oneof![Just(MatrixNorm::Fro), Just(MatrixNorm::One), Just(MatrixNorm::NegOne),
                              Just(MatrixNorm::Inf), Just(MatrixNorm::NegInf)]) {
        let n: usize = shape.iter().product();
        // `distinct` keeps values apart; shifting by 0.05 keeps them off 0 as well.
        let x = tensor(x[..n].iter().map(|v| if *v >= 0.0 { v + 0.05 } else { v - 0.05 }).collect(), &shape);
        let dims: Vec<isize> = (0..shape.len()).filter(|&d| mask[d]).map(|d| d as isize).collect();
        check(|v| v[0].vector_norm(ord, &dims, keepdim), std::slice::from_ref(&x))?;
        check(|v| v[0].matrix_norm(m, keepdim), &[x])?;
    }

    /// The SVD through functions that do not depend on the singular vectors' signs: the
    /// singular values, the polar factor U·Vh, V·S·Vh and U·S·Uᴴ, the nuclear and spectral
    /// norms, on tall, wide and
    /// square batches (random matrices: distinct singular values almost surely).
    #[test]
    fn svd_gauge_invariant(b in 1..=2usize, m in 1..=4usize, n in 1..=4usize, x in smooth(32), which in 0..7usize,
                           keepdim in any::<bool>()) {
        let a = tensor(x[..b * m * n].to_vec(), &[b, m, n]);
        let s = a.svdvals().unwrap().to_vec();
        // Singular values too close together (or to 0, for the parts divided by them)
        // make the finite differences meaningless, as in PyTorch's own tests.
        let k = m.min(n);
        let apart = s.chunks(k).all(|r| r.windows(2).all(|w| w[0] - w[1] > 0.1) && r[k - 1] > 0.1);
        prop_assume!(apart);
        check(|v| match which {
            0 => v[0].svdvals(),
            1 => { let (u, _, vh) = v[0].svd()?; u.matmul(&vh) }
            2 => { let (_, s, vh) = v[0].svd()?; vh.transpose(-2, -1)?.matmul(&s.unsqueeze(-1)?.mul(&vh)?) }
            3 => { let (u, s, _) = v[0].svd()?; u.mul(&s.unsqueeze(-2)?)?.matmul(&u.transpose(-2, -1)?) }
            4 => v[0].matrix_norm(MatrixNorm::Nuc, keepdim),
            5 => v[0].matrix_norm(MatrixNorm::Two, keepdim),
            _ => v[0].matrix_norm(MatrixNorm::NegTwo, keepdim),
        }, &[a])?;
    }

    /// einsum on matrix products, batches with broadcast ellipses, traces, diagonals,
    /// three-operand chains, outer products and full sums.
    #[test]
    fn einsum_equations(which in 0..8usize, sizes in vec(1..=3usize, 4), x in smooth(64), y in smooth(64), z in smooth(64)) {
        let [a, b, c, d] = [sizes[0], sizes[1], sizes[2], sizes[3]];
        let (eq, shapes): (&str, Vec<Vec<usize>>) = match which {
            0 => ("ij,jk->ik", vec![vec![a, b], vec![b, c]]),
            1 => ("...ij,...jk", vec![vec![d, a, b], vec![1, b, c]]),
            2 => ("bii->b", vec![vec![a, b, b]]),
            3 => ("ii->i", vec![vec![c, c]]),
            4 => ("ab,bc,cd->ad", vec![vec![a, b], vec![b, c], vec![c, d]]),
            5 => ("i,j->", vec![vec![a], vec![b]]),
            6 => ("bn,anm,bm->ba", vec![vec![d, a], vec![b, a, c], vec![d, c]]),
            _ => ("iij,jk->ki", vec![vec![a, a, b], vec![b, c]]),
        };
        let data = [x, y, z];
        let inputs: Vec<Tensor<f64>> = shapes.iter().zip(&data).map(|(s, v)| {
            let n: usize = s.iter().product();
            tensor(v[..n].to_vec(), s)
        }).collect();
        check(|v| einsum(eq, v), &inputs)?;
    }
}
