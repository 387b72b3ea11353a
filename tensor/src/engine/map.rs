//! The elementwise engines behind unary, binary and ternary ops.
//!
//! Each engine has a contiguous fast path (plain slice loops the compiler vectorises) and a
//! strided path over coalesced runs (see [`crate::engine::iter`]); both split the output into
//! thread-count-independent chunks (see [`crate::engine::par`]). Outputs are fresh contiguous
//! buffers, so an op on contiguous inputs allocates nothing but its output.

use crate::engine::iter::Coalesced;
use crate::engine::par::{self, Cost};
use crate::engine::simd::{dispatch, prefetch};
use crate::handle::layout::broadcast_dims;
use crate::handle::storage::{alloc, try_alloc};
use crate::{Dims, Element, Result, Tensor};

/// Elements per step of a transcendental map, and how many steps ahead it prefetches its
/// input. Such a map is slow enough per element that the hardware prefetchers fall behind
/// its stream (or do not follow it at all, depending on how the operands sit in memory):
/// on Sapphire Rapids, one thread over 16M floats took 20–36 ms for GELU and 10.3 ms for
/// exp without these hints, 16.1 and 7.4–8 ms with them.
const BLOCK: usize = 128;
/// See [`BLOCK`].
const AHEAD: usize = 2;

/// Writes `f(x)` for every element of `src`, in row-major order, into `out`.
pub(crate) fn map_into<T: Element, U: Copy + Send + Sync>(
    src: &Tensor<T>,
    out: &mut [U],
    cost: Cost,
    f: impl Fn(T) -> U + Sync + Send,
) {
    debug_assert_eq!(out.len(), src.numel());
    let data = src.storage();
    if let Some(range) = src.layout().contiguous_range() {
        let input = &data[range];
        par::for_each_chunk_mut(out, cost, |start, chunk| {
            let input = &input[start..start + chunk.len()];
            dispatch(
                #[inline(always)]
                || {
                    if cost == Cost::Transcendental {
                        let blocks = chunk.chunks_mut(BLOCK).zip(input.chunks(BLOCK));
                        for (b, (o, x)) in blocks.enumerate() {
                            let next = (b + AHEAD) * BLOCK;
                            if let Some(next) = input.get(next..(next + BLOCK).min(input.len())) {
                                prefetch(next);
                            }
                            for (o, &x) in o.iter_mut().zip(x) {
                                *o = f(x);
                            }
                        }
                    } else {
                        for (o, &x) in chunk.iter_mut().zip(input) {
                            *o = f(x);
                        }
                    }
                },
            )
        });
        return;
    }
    let walk = Coalesced::new(src.shape(), [src.strides()]);
    let [s] = walk.inner_strides();
    let base = [src.layout().offset()];
    par::for_each_chunk_mut(out, cost, |start, chunk| {
        walk.for_each_run(base, start, start + chunk.len(), |pos, [off], len| {
            let o = &mut chunk[pos - start..pos - start + len];
            if s == 1 {
                for (o, &x) in o.iter_mut().zip(&data[off..off + len]) {
                    *o = f(x);
                }
            } else if s == 0 {
                // A broadcast run: one value repeated.
                o.fill(f(data[off]));
            } else {
                for (i, o) in o.iter_mut().enumerate() {
                    *o = f(data[off + i * s]);
                }
            }
        });
    });
}

/// Like [`map_into`] for the cheap element conversions (`cast`).
pub(crate) fn for_each_in_order<T: Element, U: Copy + Send + Sync>(
    src: &Tensor<T>,
    out: &mut [U],
    f: impl Fn(T) -> U + Sync + Send,
) {
    map_into(src, out, Cost::Cheap, f)
}

impl<T: Element> Tensor<T> {
    /// A new tensor holding `f(x)` for every element: a custom elementwise op with the
    /// library's fast paths (vectorised, threaded above a size threshold, any layout).
    ///
    /// ```
    /// use strata_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, -2.0], &[2])?;
    /// assert_eq!(x.map(|v| v * v + 1.0).to_vec(), vec![2.0, 5.0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    pub fn map(&self, f: impl Fn(T) -> T + Sync + Send) -> Tensor<T> {
        self.map_cost(Cost::Transcendental, f)
    }

    /// A new tensor holding `f(a, b)` for the broadcast pairs of `self` and `other`: a
    /// custom binary op.
    ///
    /// # Errors
    /// [`TensorError::Broadcast`](crate::TensorError::Broadcast) when the shapes do not
    /// broadcast.
    pub fn zip_with(
        &self,
        other: &Tensor<T>,
        f: impl Fn(T, T) -> T + Sync + Send + Copy,
    ) -> Result<Tensor<T>> {
        self.zip_map(other, "zip_with", Cost::Transcendental, f)
    }

    /// A new contiguous tensor holding `f(x)` for every element.
    pub(crate) fn map_cost(&self, cost: Cost, f: impl Fn(T) -> T + Sync + Send) -> Tensor<T> {
        let mut out = alloc::<T>(self.numel());
        map_into(self, &mut out, cost, f);
        Tensor::from_contiguous(out, self.shape())
    }

    /// A new tensor holding `f(a, b)` for the broadcast pairs of `self` and `other`.
    pub(crate) fn zip_map(
        &self,
        other: &Tensor<T>,
        op: &'static str,
        cost: Cost,
        f: impl Fn(T, T) -> T + Sync + Send + Copy,
    ) -> Result<Tensor<T>> {
        let shape = if self.shape() == other.shape() {
            Dims::from_slice(self.shape())
        } else {
            broadcast_dims(op, self.shape(), other.shape())?
        };
        let mut out = try_alloc::<T>(op, &shape)?;
        let n = out.len();
        if let (Some(x), Some(y)) = (self.as_slice(), other.as_slice()) {
            if x.len() == n && y.len() == n {
                par::for_each_chunk_mut(&mut out, cost, |start, o| {
                    let end = start + o.len();
                    let (x, y) = (&x[start..end], &y[start..end]);
                    dispatch(
                        #[inline(always)]
                        || {
                            for ((o, &a), &b) in o.iter_mut().zip(x).zip(y) {
                                *o = f(a, b);
                            }
                        },
                    )
                });
                return Ok(Tensor::from_contiguous(out, &shape));
            }
            if x.len() == n && y.len() == 1 {
                let b = y[0];
                par::for_each_chunk_mut(&mut out, cost, |start, o| {
                    let x = &x[start..start + o.len()];
                    dispatch(
                        #[inline(always)]
                        || {
                            for (o, &a) in o.iter_mut().zip(x) {
                                *o = f(a, b);
                            }
                        },
                    )
                });
                return Ok(Tensor::from_contiguous(out, &shape));
            }
            if x.len() == 1 && y.len() == n {
                let a = x[0];
                par::for_each_chunk_mut(&mut out, cost, |start, o| {
                    let y = &y[start..start + o.len()];
                    dispatch(
                        #[inline(always)]
                        || {
                            for (o, &b) in o.iter_mut().zip(y) {
                                *o = f(a, b);
                            }
                        },
                    )
                });
                return Ok(Tensor::from_contiguous(out, &shape));
            }
        }
        let la = self.layout().broadcast_to(op, &shape)?;
        let lb = other.layout().broadcast_to(op, &shape)?;
        let walk = Coalesced::new(&shape, [la.strides(), lb.strides()]);
        let [sa, sb] = walk.inner_strides();
        let (xa, xb) = (self.storage(), other.storage());
        let base = [la.offset(), lb.offset()];
        par::for_each_chunk_mut(&mut out, cost, |start, chunk| {
            walk.for_each_run(base, start, start + chunk.len(), |pos, [oa, ob], len| {
                let o = &mut chunk[pos - start..pos - start + len];
                match (sa, sb) {
                    (1, 1) => {
                        for ((o, &a), &b) in
                            o.iter_mut().zip(&xa[oa..oa + len]).zip(&xb[ob..ob + len])
                        {
                            *o = f(a, b);
                        }
                    }
                    (1, 0) => {
                        let b = xb[ob];
                        for (o, &a) in o.iter_mut().zip(&xa[oa..oa + len]) {
                            *o = f(a, b);
                        }
                    }
                    (0, 1) => {
                        let a = xa[oa];
                        for (o, &b) in o.iter_mut().zip(&xb[ob..ob + len]) {
                            *o = f(a, b);
                        }
                    }
                    _ => {
                        for (i, o) in o.iter_mut().enumerate() {
                            *o = f(xa[oa + i * sa], xb[ob + i * sb]);
                        }
                    }
                }
            });
        });
        Ok(Tensor::from_contiguous(out, &shape))
    }

    /// A new tensor holding `f(c, a, b)` for the broadcast triples of three tensors.
    pub(crate) fn zip3_map(
        cond: &Tensor<T>,
        a: &Tensor<T>,
        b: &Tensor<T>,
        op: &'static str,
        f: impl Fn(T, T, T) -> T + Sync + Send + Copy,
    ) -> Result<Tensor<T>> {
        // Three contiguous tensors of one shape (most gradients): one flat pass.
        if let (Some(xc), Some(xa), Some(xb)) = (cond.as_slice(), a.as_slice(), b.as_slice())
            && cond.shape() == a.shape()
            && a.shape() == b.shape()
        {
            let mut out = alloc::<T>(xa.len());
            par::for_each_chunk_mut(&mut out, Cost::Cheap, |start, o| {
                let end = start + o.len();
                let (xc, xa, xb) = (&xc[start..end], &xa[start..end], &xb[start..end]);
                dispatch(
                    #[inline(always)]
                    || {
                        for (o, ((&c, &a), &b)) in o.iter_mut().zip(xc.iter().zip(xa).zip(xb)) {
                            *o = f(c, a, b);
                        }
                    },
                )
            });
            return Ok(Tensor::from_contiguous(out, a.shape()));
        }
        let shape = broadcast_dims(op, cond.shape(), a.shape())?;
        let shape = broadcast_dims(op, &shape, b.shape())?;
        let mut out = try_alloc::<T>(op, &shape)?;
        let lc = cond.layout().broadcast_to(op, &shape)?;
        let la = a.layout().broadcast_to(op, &shape)?;
        let lb = b.layout().broadcast_to(op, &shape)?;
        let walk = Coalesced::new(&shape, [lc.strides(), la.strides(), lb.strides()]);
        let [sc, sa, sb] = walk.inner_strides();
        let (xc, xa, xb) = (cond.storage(), a.storage(), b.storage());
        let base = [lc.offset(), la.offset(), lb.offset()];
        par::for_each_chunk_mut(&mut out, Cost::Cheap, |start, chunk| {
            walk.for_each_run(
                base,
                start,
                start + chunk.len(),
                |pos, [oc, oa, ob], len| {
                    let o = &mut chunk[pos - start..pos - start + len];
                    if (sc, sa, sb) == (1, 1, 1) {
                        let (xc, xa, xb) =
                            (&xc[oc..oc + len], &xa[oa..oa + len], &xb[ob..ob + len]);
                        dispatch(
                            #[inline(always)]
                            || {
                                let it = xc.iter().zip(xa).zip(xb);
                                for (o, ((&c, &a), &b)) in o.iter_mut().zip(it) {
                                    *o = f(c, a, b);
                                }
                            },
                        )
                    } else {
                        for (i, o) in o.iter_mut().enumerate() {
                            *o = f(xc[oc + i * sc], xa[oa + i * sa], xb[ob + i * sb]);
                        }
                    }
                },
            );
        });
        Ok(Tensor::from_contiguous(out, &shape))
    }

    /// `self[i] = f(self[i], other[i])` in place, `other` broadcast to `self`'s shape.
    pub(crate) fn zip_assign(
        &mut self,
        other: &Tensor<T>,
        op: &'static str,
        f: impl Fn(T, T) -> T + Sync + Send + Copy,
    ) -> Result<()> {
        let shape = Dims::from_slice(self.shape());
        let lo =
            other
                .layout()
                .broadcast_to(op, &shape)
                .map_err(|_| crate::TensorError::Broadcast {
                    op,
                    lhs: shape.to_vec(),
                    rhs: other.shape().to_vec(),
                })?;
        let src = other.storage();
        // `other` may share storage with `self`; then `as_mut_slice` copies `self` first, and
        // `src` keeps reading the old values through `other`'s own handle.
        let other_contig = other.as_slice().filter(|s| s.len() == self.numel());
        let dst = self.as_mut_slice();
        if let Some(y) = other_contig {
            par::for_each_chunk_mut(dst, Cost::Cheap, |start, o| {
                let y = &y[start..start + o.len()];
                dispatch(
                    #[inline(always)]
                    || {
                        for (o, &b) in o.iter_mut().zip(y) {
                            *o = f(*o, b);
                        }
                    },
                )
            });
            return Ok(());
        }
        let walk = Coalesced::new(&shape, [lo.strides()]);
        let [s] = walk.inner_strides();
        let base = [lo.offset()];
        par::for_each_chunk_mut(dst, Cost::Cheap, |start, chunk| {
            walk.for_each_run(base, start, start + chunk.len(), |pos, [ob], len| {
                let o = &mut chunk[pos - start..pos - start + len];
                match s {
                    1 => {
                        for (o, &b) in o.iter_mut().zip(&src[ob..ob + len]) {
                            *o = f(*o, b);
                        }
                    }
                    0 => {
                        let b = src[ob];
                        for o in o.iter_mut() {
                            *o = f(*o, b);
                        }
                    }
                    _ => {
                        for (i, o) in o.iter_mut().enumerate() {
                            *o = f(*o, src[ob + i * s]);
                        }
                    }
                }
            });
        });
        Ok(())
    }
}
