//! Walking strided layouts in row-major order, one contiguous run at a time.
//!
//! Every kernel that accepts non-contiguous operands goes through here: the operands'
//! layouts (broadcast to a common shape) are first *coalesced* — size-1 dimensions dropped
//! and neighbouring dimensions merged wherever every operand steps through them as one —
//! and then walked as runs along the innermost remaining dimension. A kernel only writes the
//! inner loop, specialised for the inner strides it meets (1, 0, or anything), which the
//! compiler vectorises.

use crate::Dims;

/// Coalesced shape and per-operand strides.
pub(crate) struct Coalesced<const N: usize> {
    pub shape: Dims,
    pub strides: [Dims; N],
}

impl<const N: usize> Coalesced<N> {
    /// Coalesces `N` operands that share `shape`.
    pub fn new(shape: &[usize], strides: [&[usize]; N]) -> Self {
        let mut out_shape = Dims::new();
        let mut out_strides: [Dims; N] = std::array::from_fn(|_| Dims::new());
        for (d, &size) in shape.iter().enumerate() {
            if size == 1 {
                continue;
            }
            let mergeable = !out_shape.is_empty()
                && (0..N).all(|k| out_strides[k].last() == Some(&(strides[k][d] * size)));
            if mergeable {
                *out_shape.last_mut().expect("non-empty") *= size;
                for k in 0..N {
                    *out_strides[k].last_mut().expect("non-empty") = strides[k][d];
                }
            } else {
                out_shape.push(size);
                for k in 0..N {
                    out_strides[k].push(strides[k][d]);
                }
            }
        }
        Coalesced {
            shape: out_shape,
            strides: out_strides,
        }
    }

    /// Stride of each operand along the innermost dimension (0 for a 0-d walk).
    #[inline]
    pub fn inner_strides(&self) -> [usize; N] {
        std::array::from_fn(|k| self.strides[k].last().copied().unwrap_or(0))
    }

    /// Calls `f(position, offsets, len)` for each run of the row-major element range
    /// `start..end`: `position` is the linear index of the run's first element, `offsets`
    /// the storage index of that element in each operand (`base` added), `len` the run
    /// length. Runs never cross the innermost dimension.
    #[allow(clippy::needless_range_loop)] // parallel index arrays read clearer indexed
    pub fn for_each_run(
        &self,
        base: [usize; N],
        start: usize,
        end: usize,
        mut f: impl FnMut(usize, [usize; N], usize),
    ) {
        if start >= end {
            return;
        }
        let ndim = self.shape.len();
        if ndim == 0 {
            f(start, base, end - start);
            return;
        }
        let inner = self.shape[ndim - 1];
        // Multi-index and offsets of `start`.
        let mut index = Dims::zeros(ndim);
        let mut rem = start;
        for d in (0..ndim).rev() {
            index[d] = rem % self.shape[d];
            rem /= self.shape[d];
        }
        let mut offsets = base;
        for k in 0..N {
            for d in 0..ndim {
                offsets[k] += index[d] * self.strides[k][d];
            }
        }
        let mut pos = start;
        while pos < end {
            let len = (inner - index[ndim - 1]).min(end - pos);
            f(pos, offsets, len);
            pos += len;
            if pos >= end {
                break;
            }
            // Step to the start of the next row, carrying into outer dimensions.
            for k in 0..N {
                offsets[k] -= index[ndim - 1] * self.strides[k][ndim - 1];
            }
            index[ndim - 1] = 0;
            for d in (0..ndim - 1).rev() {
                index[d] += 1;
                for k in 0..N {
                    offsets[k] += self.strides[k][d];
                }
                if index[d] < self.shape[d] {
                    break;
                }
                for k in 0..N {
                    offsets[k] -= self.shape[d] * self.strides[k][d];
                }
                index[d] = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_merges_contiguous_dims() {
        let c = Coalesced::new(&[2, 3, 4], [&[12, 4, 1], &[0, 0, 1]]);
        assert_eq!(c.shape, vec![6, 4]);
        assert_eq!(c.strides, [vec![4, 1], vec![0, 1]]);
        let c = Coalesced::new(&[2, 1, 3], [&[3, 3, 1]]);
        assert_eq!(c.shape, vec![6]);
    }

    #[test]
    fn runs_cover_a_range_in_order() {
        // A transposed [3, 2] view of a contiguous [2, 3].
        let c = Coalesced::new(&[3, 2], [&[1, 3]]);
        let mut seen = vec![];
        c.for_each_run([0], 1, 6, |pos, [off], len| {
            for i in 0..len {
                seen.push((pos + i, off + i * 3));
            }
        });
        assert_eq!(seen, vec![(1, 3), (2, 1), (3, 4), (4, 2), (5, 5)]);
    }
}
