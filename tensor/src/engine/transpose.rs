//! Cache-blocked transposing copies.
//!
//! Copying a transposed view element by element reads one element per cache line, and at
//! power-of-two strides every read maps to the same few cache sets: a `[1024, 2048]` f32
//! `t().contiguous()` ran at ~1.5 GB/s that way. Copying square tiles keeps both the rows
//! read and the rows written in L1.

use crate::Element;
use crate::engine::par::{self, Disjoint, PAR_MIN_WORK};

/// Tile edge, in elements: 32 rows of 32 f32 are 4 KiB on each side.
const TILE: usize = 32;

/// A 2-D transfer: `dst[i·dst_rs + j] = src[i + j·src_cs]` for `i < rows`, `j < cols`
/// (or `+=` with `accumulate`), i.e. `src` holds the transpose of the block, row-major
/// with rows `src_cs` apart.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Transfer {
    pub rows: usize,
    pub cols: usize,
    pub src_cs: usize,
    pub dst_rs: usize,
}

/// Runs the transfer `t` once for every `(src offset, dst offset)` pair of `blocks`, in
/// parallel when large.
///
/// # Safety
/// The blocks do not share elements of `dst` (their rows are written from different
/// tasks; see `engine::par`).
///
/// # Panics
/// When a block reaches outside `src` or `dst`.
pub(crate) unsafe fn transpose_blocks<T: Element>(
    src: &[T],
    dst: &mut [T],
    t: Transfer,
    blocks: &[(usize, usize)],
    accumulate: bool,
) {
    if t.rows == 0 || t.cols == 0 || blocks.is_empty() {
        return;
    }
    let span = |last_row: Option<usize>, last_col: Option<usize>| {
        last_row?.checked_add(last_col?)?.checked_add(1)
    };
    let src_span = span(Some(t.rows - 1), (t.cols - 1).checked_mul(t.src_cs));
    let dst_span = span((t.rows - 1).checked_mul(t.dst_rs), Some(t.cols - 1));
    for &(s, d) in blocks {
        let fits = |start: usize, span: Option<usize>, len: usize| {
            span.and_then(|n| start.checked_add(n))
                .is_some_and(|end| end <= len)
        };
        assert!(
            fits(s, src_span, src.len()) && fits(d, dst_span, dst.len()),
            "transpose: a block reaches outside its buffer"
        );
    }
    let shared = Disjoint::new(dst);
    // One task per band of TILE rows of one block.
    let bands = t.rows.div_ceil(TILE);
    let task = |task: usize| {
        let (s, d) = blocks[task / bands];
        let r0 = (task % bands) * TILE;
        let r1 = (r0 + TILE).min(t.rows);
        for c0 in (0..t.cols).step_by(TILE) {
            let c1 = (c0 + TILE).min(t.cols);
            for i in r0..r1 {
                // SAFETY: row i of this block, which only this task writes (the blocks are
                // disjoint in dst, the caller says; bands split a block's rows).
                let out = unsafe { shared.slice_mut(d + i * t.dst_rs + c0, c1 - c0) };
                let inp = &src[s + i..];
                if accumulate {
                    for (o, j) in out.iter_mut().zip(c0..c1) {
                        *o += inp[j * t.src_cs];
                    }
                } else {
                    for (o, j) in out.iter_mut().zip(c0..c1) {
                        *o = inp[j * t.src_cs];
                    }
                }
            }
        }
    };
    let tasks = blocks.len() * bands;
    let work = blocks.len() * t.rows * t.cols;
    par::run(tasks, work >= PAR_MIN_WORK, task);
}

/// `dst` (`[rows, cols]` row-major, contiguous) `=` (or `+=`) the transpose of `src`
/// (`[cols, rows]` row-major, contiguous).
pub(crate) fn transpose_into<T: Element>(
    src: &[T],
    dst: &mut [T],
    (rows, cols): (usize, usize),
    accumulate: bool,
) {
    let t = Transfer {
        rows,
        cols,
        src_cs: rows,
        dst_rs: cols,
    };
    // SAFETY: a single block.
    unsafe { transpose_blocks(src, dst, t, &[(0, 0)], accumulate) };
}

/// A contiguous copy of the strided view (`shape`, `strides`, `offset`) of `src`, when one
/// of its dimensions other than the last has unit stride and both that dimension and the
/// last are long enough for tiles to pay; `None` otherwise.
pub(crate) fn contiguous_copy<T: Element>(
    src: &[T],
    shape: &[usize],
    strides: &[usize],
    offset: usize,
) -> Option<crate::handle::storage::Buffer<T>> {
    let nd = shape.len();
    // A last dimension of stride 1 copies in runs already, and one of stride 0 (a broadcast
    // row) fills in runs.
    if nd < 2 || strides[nd - 1] <= 1 || shape[nd - 1] < 8 {
        return None;
    }
    let p = (0..nd - 1).find(|&d| strides[d] == 1 && shape[d] >= 8)?;
    let out_strides = crate::handle::layout::contiguous_dims(shape);
    let t = Transfer {
        rows: shape[p],
        cols: shape[nd - 1],
        src_cs: strides[nd - 1],
        dst_rs: out_strides[p],
    };
    // Every index of the other dimensions: one block each.
    let others: Vec<usize> = (0..nd - 1).filter(|&d| d != p).collect();
    let count: usize = others.iter().map(|&d| shape[d]).product();
    let mut blocks = Vec::with_capacity(count);
    let mut idx = vec![0usize; others.len()];
    for _ in 0..count {
        let (mut s, mut d) = (offset, 0);
        for (k, &dim) in others.iter().enumerate() {
            s += idx[k] * strides[dim];
            d += idx[k] * out_strides[dim];
        }
        blocks.push((s, d));
        for k in (0..others.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[others[k]] {
                break;
            }
            idx[k] = 0;
        }
    }
    let mut out = crate::handle::storage::alloc::<T>(crate::handle::layout::numel(shape));
    // SAFETY: each block is a distinct index of the other dimensions of the contiguous
    // output, so the blocks share no element of it.
    unsafe { transpose_blocks(src, &mut out, t, &blocks, false) };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    fn naive(t: &Tensor<f64>) -> Vec<f64> {
        let shape = t.shape().to_vec();
        let n: usize = shape.iter().product();
        (0..n)
            .map(|mut flat| {
                let mut idx = vec![0; shape.len()];
                for d in (0..shape.len()).rev() {
                    idx[d] = flat % shape[d];
                    flat /= shape[d];
                }
                t.get(&idx).unwrap()
            })
            .collect()
    }

    #[test]
    fn transposed_views_copy_exactly() {
        let base = Tensor::<f64>::arange(0.0, (3 * 37 * 45) as f64, 1.0).unwrap();
        let a = base.reshape([3, 37, 45]).unwrap();
        for perm in [[0, 2, 1], [2, 0, 1], [1, 2, 0], [2, 1, 0]] {
            let v = a.permute(&perm).unwrap();
            let c = v.contiguous();
            assert!(c.is_contiguous());
            assert_eq!(c.shape(), v.shape());
            assert_eq!(c.to_vec(), naive(&v), "perm {perm:?}");
        }
        // A sliced, transposed view with an offset.
        let m = Tensor::<f64>::arange(0.0, 100.0 * 90.0, 1.0)
            .unwrap()
            .reshape([100, 90])
            .unwrap();
        let v = m
            .narrow(0, 7, 80)
            .unwrap()
            .narrow(1, 3, 50)
            .unwrap()
            .t()
            .unwrap();
        assert_eq!(v.contiguous().to_vec(), naive(&v));
    }

    #[test]
    fn transpose_into_accumulates() {
        let (rows, cols) = (70, 33);
        let src: Vec<f64> = (0..rows * cols).map(|i| i as f64).collect();
        let mut dst = vec![1.0; rows * cols];
        transpose_into(&src, &mut dst, (rows, cols), true);
        for i in 0..rows {
            for j in 0..cols {
                assert_eq!(dst[i * cols + j], 1.0 + src[j * rows + i]);
            }
        }
    }
}
