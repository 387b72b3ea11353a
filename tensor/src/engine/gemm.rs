//! The one strided GEMM wrapper: every general matrix product of strata-tensor (matmul,
//! convolution, the recurrent and attention kernels) reaches its kernel through [`raw`] or
//! its safe form [`slices`], with each operand described as a [`RawMat`]: a buffer (start
//! and length) and a [`Strided`] view into it. Extents are computed with checked
//! arithmetic and checked against the buffers before any pointer is formed.
//!
//! faer's `matmul` is the kernel here; a faster one for strata's shapes replaces it in this
//! file alone.

use std::num::NonZeroUsize;

use faer::linalg::matmul::matmul as faer_matmul;
use faer::{Accum, MatMut, MatRef, Par};

use crate::Element;
use crate::engine::par::{Disjoint, threads};

/// Products below this many multiply-adds run on one thread: faer's threading overhead
/// outweighs the gain (measured: a 48³ product takes ~15 µs on one core).
pub(crate) const PAR_MIN_MACS: usize = 48 * 48 * 48;

/// The parallelism for one product of `macs` multiply-adds.
pub(crate) fn parallelism(macs: usize) -> Par {
    let threads = threads();
    if macs < PAR_MIN_MACS || threads < 2 {
        Par::Seq
    } else {
        Par::Rayon(NonZeroUsize::new(threads).expect("threads >= 2"))
    }
}

/// Products below this many multiply-adds run on one thread when faer computes them for
/// a caller outside rayon's pools (about 0.1 ms of f32 work on one core). Such a caller's
/// other parallel ops run on the [team](super::team); faer forks on rayon's pool, whose
/// workers take 6–30 µs to wake and then spin beside the team's helper: a 10 × 256 weight
/// gradient that woke them every step slowed a whole MLP step by up to a third.
const FAER_PAR_MIN_MACS_OUTSIDE_POOL: usize = 1 << 22;

/// The parallelism faer gets for a product of `macs` multiply-adds that `par` would
/// thread (see [`FAER_PAR_MIN_MACS_OUTSIDE_POOL`]).
fn faer_parallelism(par: Par, macs: usize) -> Par {
    if rayon::current_thread_index().is_none() && macs < FAER_PAR_MIN_MACS_OUTSIDE_POOL {
        Par::Seq
    } else {
        par
    }
}

/// f32 products of at least this many multiply-adds run on strata's own kernel
/// ([`sgemm`](super::sgemm)) where the CPU has AVX-512; smaller ones stay with faer.
pub(crate) const OWN_MIN_MACS: usize = 8 * 8 * 8;

/// Products whose destination has fewer rows than this, with a row-major `B`, stay with
/// faer, which reads such a `B` without packing it. The own kernel packs it while its first
/// row of tiles multiplies with it, and is ahead from 16 rows on: measured with
/// `gemm_shapes` on Sapphire Rapids, faer against the own kernel, on two threads
/// `16 × 512 × 512` 148–163 against 257–261 GFLOP/s, `32 × 1024 × 256` 135–150 against
/// 306–315, `96 × 512 × 512` 191–204 against 345–347, and `8 × 256 × 256` 153–154
/// against 148–155; on one thread `16 × 512 × 512` 99–104 against 114–119 and `8 × 256 ×
/// 256` 156–157 against 127–131. W3's CNN step (whose per-sample convolution products and
/// batch-32 input gradient of its Linear have 32 rows) ran 8 % faster on the own kernel,
/// W2's convolution forward and backward 4 %.
pub(crate) const OWN_MIN_ROWS: usize = 16;

/// Products of at most this many rows, a multiple of the kernel's 32 columns, with a
/// column-major `B` (and at least [`SHORT_SWAP_MIN_K`] deep) run as `Cᵀ = Bᵀ·Aᵀ` on
/// strata's own kernel, which then reads `Bᵀ` in place (see `sgemm`'s `in_place_max_n`)
/// and stores `Cᵀ`'s tiles transposed. The rows of `C` become the columns of `Cᵀ`'s tiles,
/// so a count of rows that is not a multiple of 32 leaves a tile partly idle. Measured with
/// `gemm_shapes` on two threads on Sapphire Rapids (`m × 512 × 784`, `B` transposed),
/// swapped against not: m = 32 295–319 against 252–262 GFLOP/s, 64 304–325 against
/// 300–306, 96 and 128 the same either way; m = 16, 48, 80, 100, 132, 256 lost 1–22 %
/// swapped.
pub(crate) const SHORT_SWAP_MAX_ROWS: usize = 128;

/// Below this depth the transposed stores of a swapped product cost more than the packing
/// they save (measured: [128, 32]·[32, 128] and [128, 64]·[64, 128] 5 % slower swapped).
pub(crate) const SHORT_SWAP_MIN_K: usize = 128;

/// Whether f32 products run on strata's own kernel: AVX-512 (and not the portable
/// switch), unless `STRATA_GEMM=faer` asks for faer's (for comparison).
#[cfg(target_arch = "x86_64")]
fn own_kernel() -> bool {
    static OWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| {
        crate::engine::sgemm::available()
            && std::env::var("STRATA_GEMM").map_or(true, |v| v != "faer")
    })
}

/// A strided matrix inside a buffer: element `(i, j)` lies at `offset + i·rs + j·cs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Strided {
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Strided {
    /// A row-major matrix with `cols` columns starting at `offset`.
    pub(crate) fn row_major(offset: usize, cols: usize) -> Self {
        Strided {
            offset,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns starting at `offset` (a
    /// column-major matrix with `cols` rows).
    pub(crate) fn transposed(offset: usize, cols: usize) -> Self {
        Strided {
            offset,
            rs: 1,
            cs: cols,
        }
    }

    /// The transposed view of the same elements.
    pub(crate) fn t(self) -> Self {
        Strided {
            offset: self.offset,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// One past the largest index a `rows × cols` view reaches (0 when it is empty), or
    /// `None` when that does not fit in `usize`.
    pub(crate) fn extent(&self, rows: usize, cols: usize) -> Option<usize> {
        if rows == 0 || cols == 0 {
            return Some(0);
        }
        let last_row = (rows - 1).checked_mul(self.rs)?;
        let last_col = (cols - 1).checked_mul(self.cs)?;
        self.offset
            .checked_add(last_row)?
            .checked_add(last_col)?
            .checked_add(1)
    }
}

/// A matrix operand behind a raw pointer: its buffer (start and length) and where the
/// matrix lies in it. Made from a slice, or from a [`Disjoint`] whose contract then governs
/// what other tasks may do with the elements meanwhile.
pub(crate) struct RawMat<T> {
    ptr: *mut T,
    len: usize,
    pub view: Strided,
}

impl<T> Clone for RawMat<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for RawMat<T> {}

impl<T> RawMat<T> {
    /// A matrix in a slice, to be read.
    pub(crate) fn of(buf: &[T], view: Strided) -> Self {
        RawMat {
            ptr: buf.as_ptr().cast_mut(),
            len: buf.len(),
            view,
        }
    }

    /// A matrix in a slice, to be written.
    pub(crate) fn of_mut(buf: &mut [T], view: Strided) -> Self {
        RawMat {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            view,
        }
    }

    /// A matrix in a buffer shared by parallel tasks.
    pub(crate) fn of_shared(buf: &Disjoint<'_, T>, view: Strided) -> Self {
        RawMat {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            view,
        }
    }

    /// The same buffer with the matrix moved `rows` rows down.
    pub(crate) fn down(self, rows: usize) -> Self {
        let offset = rows
            .checked_mul(self.view.rs)
            .and_then(|d| d.checked_add(self.view.offset))
            .expect("RawMat::down: offset overflows");
        RawMat {
            view: Strided {
                offset,
                ..self.view
            },
            ..self
        }
    }

    /// The address of element `(0, 0)` once a `rows × cols` view is known to lie inside
    /// the buffer.
    ///
    /// # Panics
    /// When it does not (or its extent overflows).
    #[track_caller]
    pub(crate) fn checked_ptr(&self, rows: usize, cols: usize) -> *mut T {
        let extent = self.view.extent(rows, cols);
        assert!(
            extent.is_some_and(|e| e <= self.len),
            "gemm: a {rows}×{cols} view {:?} reaches outside a buffer of {}",
            self.view,
            self.len
        );
        if rows == 0 || cols == 0 {
            return self.ptr;
        }
        // SAFETY: the view is non-empty and its extent lies inside the buffer, so its first
        // element does too.
        unsafe { self.ptr.add(self.view.offset) }
    }
}

/// Which way an epilogue's bias runs: one value per column of the destination (a linear
/// layer's `x·Wᵀ + b`) or per row (a convolution's output channels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Axis {
    Cols,
    Rows,
}

/// What a product does to each element of its destination once the sum over `k` is done:
/// add a bias, then optionally clamp at zero (ReLU, with NaN and -0 passing through as in
/// `Tensor::relu`). strata's own kernel applies it as it stores a tile; elsewhere it is a
/// pass over the destination after the product.
#[derive(Clone, Copy)]
pub(crate) struct Fused<'a, T> {
    pub bias: Option<(&'a [T], Axis)>,
    pub relu: bool,
}

impl<T: Element> Fused<'_, T> {
    /// The plain product.
    pub(crate) const NONE: Self = Fused {
        bias: None,
        relu: false,
    };

    fn is_none(&self) -> bool {
        self.bias.is_none() && !self.relu
    }

    /// Panics unless the bias covers an `m × n` destination.
    #[track_caller]
    fn check(&self, m: usize, n: usize) {
        if let Some((b, axis)) = self.bias {
            let need = if axis == Axis::Cols { n } else { m };
            assert!(b.len() >= need, "gemm: a bias of {} for {need}", b.len());
        }
    }

    /// The activation step: `v`, or 0 for a negative `v` under ReLU.
    fn relu(&self, v: T) -> T {
        if self.relu && v < T::zero() {
            T::zero()
        } else {
            v
        }
    }

    /// The value stored for `v` at `(i, j)`.
    fn apply(&self, v: T, i: usize, j: usize) -> T {
        self.relu(match self.bias {
            None => v,
            Some((b, Axis::Cols)) => v + b[j],
            Some((b, Axis::Rows)) => v + b[i],
        })
    }

    /// The epilogue on row `i` of the destination, its elements contiguous.
    fn apply_row(&self, row: &mut [T], i: usize) {
        let relu = |v: T| self.relu(v);
        match self.bias {
            None => row.iter_mut().for_each(|v| *v = relu(*v)),
            Some((b, Axis::Cols)) => row.iter_mut().zip(b).for_each(|(v, &b)| *v = relu(*v + b)),
            Some((b, Axis::Rows)) => row.iter_mut().for_each(|v| *v = relu(*v + b[i])),
        }
    }

    /// The epilogue as a pass over a finished row-major `m × n` product.
    fn apply_rows(&self, out: &mut [T], n: usize) {
        if self.is_none() || n == 0 {
            return;
        }
        for (i, row) in out.chunks_exact_mut(n).enumerate() {
            self.apply_row(row, i);
        }
    }
}

/// `dst = a · b` (or `dst += a · b` when `accumulate`) for `dst` `m × n`, `a` `m × k`, `b`
/// `k × n`, with parallelism `par`.
///
/// # Safety
/// The three buffers are live for the call, `dst`'s was made from a mutable source, and the
/// contract of [`Disjoint`] holds: no other thread writes the elements of `a` and `b`, or
/// touches those of `dst`, during the call. (Bounds are checked here.)
///
/// # Panics
/// When a view reaches outside its buffer.
#[track_caller]
pub(crate) unsafe fn raw<T: Element>(
    dst: RawMat<T>,
    shape: (usize, usize, usize),
    a: RawMat<T>,
    b: RawMat<T>,
    accumulate: bool,
    par: Par,
) {
    // SAFETY: the caller's contract.
    unsafe { raw_fused(dst, shape, a, b, accumulate, Fused::NONE, par) }
}

/// [`raw`], then the epilogue `epi` on every element of `dst`.
///
/// # Safety
/// As [`raw`].
///
/// # Panics
/// As [`raw`], and when the bias is shorter than the destination's side it runs along.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn raw_fused<T: Element>(
    dst: RawMat<T>,
    (m, n, k): (usize, usize, usize),
    a: RawMat<T>,
    b: RawMat<T>,
    accumulate: bool,
    epi: Fused<'_, T>,
    par: Par,
) {
    let d = dst.checked_ptr(m, n);
    let pa = a.checked_ptr(m, k);
    let pb = b.checked_ptr(k, n);
    epi.check(m, n);
    if m == 0 || n == 0 {
        return;
    }
    let (dv, av, bv) = (dst.view, a.view, b.view);
    // faer's kernel, which reads a row-major right-hand side without packing it, is faster
    // on short products (fewer than OWN_MIN_ROWS rows of C) of such a B: there the own
    // kernel's packing of B is not repaid.
    // With a column-major destination the product runs as `Cᵀ = Bᵀ·Aᵀ`.
    #[cfg(target_arch = "x86_64")]
    let (rows, b_cs) = if dv.cs == 1 { (m, bv.cs) } else { (n, av.rs) };
    #[cfg(target_arch = "x86_64")]
    if T::DTYPE == crate::DType::F32
        && (dv.cs == 1 || dv.rs == 1)
        && m.saturating_mul(n).saturating_mul(k) >= OWN_MIN_MACS
        && !(rows < OWN_MIN_ROWS && b_cs == 1)
        && own_kernel()
    {
        use crate::engine::sgemm::{Bias, Blocking, Epilogue, Operand, sgemm};
        let op = |p: *mut T, v: Strided| Operand {
            ptr: p.cast_const().cast::<f32>(),
            rs: v.rs,
            cs: v.cs,
        };
        let parallel = matches!(par, Par::Rayon(_));
        let epilogue = Epilogue {
            bias: match epi.bias {
                None => Bias::None,
                Some((b, Axis::Cols)) => Bias::Cols(b.as_ptr().cast::<f32>()),
                Some((b, Axis::Rows)) => Bias::Rows(b.as_ptr().cast::<f32>()),
            },
            relu: epi.relu,
        };
        // A short product with a column-major B (a linear layer's `x·Wᵀ` at a small batch)
        // runs as `Cᵀ = Bᵀ·Aᵀ`: Bᵀ (the weight) is then a row-major left operand the kernel
        // reads in place instead of packing all of it, and Cᵀ's tiles are stored transposed
        // into the row-major c.
        let short_swap = dv.cs == 1
            && m <= SHORT_SWAP_MAX_ROWS
            && m.is_multiple_of(crate::engine::sgemm::NR)
            && k >= SHORT_SWAP_MIN_K
            && bv.rs == 1
            && bv.cs != 1;
        // SAFETY: T is f32 (its DTYPE), the CPU has AVX-512 (`own_kernel`), every view lies
        // inside its buffer and the bias covers its side (checked above), and the caller
        // rules out concurrent access. A column-major destination is the row-major one of
        // `Cᵀ = Bᵀ·Aᵀ`, whose bias runs the other way.
        unsafe {
            if dv.cs == 1 && !short_swap {
                sgemm(
                    Blocking::host(),
                    d.cast::<f32>(),
                    dv.rs,
                    (m, n, k),
                    op(pa, av),
                    op(pb, bv),
                    accumulate,
                    epilogue,
                    parallel,
                    false,
                );
            } else {
                let ld = if short_swap { dv.rs } else { dv.cs };
                sgemm(
                    Blocking::host(),
                    d.cast::<f32>(),
                    ld,
                    (n, m, k),
                    op(pb, bv.t()),
                    op(pa, av.t()),
                    accumulate,
                    epilogue.transposed(),
                    parallel,
                    short_swap,
                );
            }
        }
        return;
    }
    // SAFETY: every view lies inside its buffer (checked above) and the caller rules out
    // concurrent writes to `a`, `b` and any access to `dst`'s elements.
    unsafe {
        let mut out = MatMut::<T>::from_raw_parts_mut(d, m, n, dv.rs as isize, dv.cs as isize);
        if k == 0 {
            if !accumulate {
                out.fill(T::zero());
            }
        } else {
            let lhs = MatRef::<T>::from_raw_parts(pa, m, k, av.rs as isize, av.cs as isize);
            let rhs = MatRef::<T>::from_raw_parts(pb, k, n, bv.rs as isize, bv.cs as isize);
            let accum = if accumulate {
                Accum::Add
            } else {
                Accum::Replace
            };
            faer_matmul(
                out,
                accum,
                lhs,
                rhs,
                T::one(),
                faer_parallelism(par, m.saturating_mul(n).saturating_mul(k)),
            );
        }
        if !epi.is_none() {
            for i in 0..m {
                if dv.cs == 1 {
                    // Row i of dst: n contiguous elements inside the checked extent.
                    epi.apply_row(std::slice::from_raw_parts_mut(d.add(i * dv.rs), n), i);
                } else {
                    for j in 0..n {
                        let v = d.add(i * dv.rs + j * dv.cs);
                        *v = epi.apply(*v, i, j);
                    }
                }
            }
        }
    }
}

/// [`raw`] on borrowed slices, where the borrow checker provides the contract.
///
/// # Panics
/// When a view reaches outside its slice.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub(crate) fn slices<T: Element>(
    (dst, dv): (&mut [T], Strided),
    shape: (usize, usize, usize),
    (a, av): (&[T], Strided),
    (b, bv): (&[T], Strided),
    accumulate: bool,
    par: Par,
) {
    // SAFETY: `dst` is borrowed mutably and `a`, `b` immutably for the call, so nothing else
    // touches them.
    unsafe {
        raw(
            RawMat::of_mut(dst, dv),
            shape,
            RawMat::of(a, av),
            RawMat::of(b, bv),
            accumulate,
            par,
        );
    }
}

/// Products at least this large whose left operand is column-major (a transposed view,
/// as in every weight gradient `dyᵀ · x`) are computed into a column-major scratch and
/// transposed into place when that suits the kernel better (see [`product`]).
pub(crate) const COL_DST_MIN_MACS: usize = 1 << 22;

/// `out = a @ b` (or `out += a @ b` with `accumulate`) for one `[m, k] @ [k, n]` product
/// into a contiguous row-major `[m, n]` buffer: matmul's, convolution's and the recurrent
/// weight gradients' product.
///
/// faer computes a row-major destination as `dstᵀ = bᵀ · aᵀ`, so a column-major `a` (a
/// transposed view, as in every weight gradient `dyᵀ · x`) becomes a right operand strided
/// along k, which its kernels read at a loss: [1024, 2048] · [2048, 256] ran at half
/// speed, its reads 4 KiB apart. Past [`COL_DST_MIN_MACS`] this either copies `a` into a
/// row-major scratch (m·k elements, when 2k ≤ n), or, when b is column-major too or m > n,
/// computes into a column-major scratch, where `a` stays faer's left operand, and
/// transposes the m·n result into place.
///
/// # Panics
/// When `out` is not `m·n` long or a view reaches outside its slice.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub(crate) fn product<T: Element>(
    out: &mut [T],
    shape: (usize, usize, usize),
    a: &[T],
    la: Strided,
    b: &[T],
    lb: Strided,
    accumulate: bool,
    par: Par,
) {
    product_fused(out, shape, a, la, b, lb, accumulate, Fused::NONE, par);
}

/// [`product`], then the epilogue `epi` on every element of `out` (in the kernel's store
/// where the product runs on strata's own kernel without a detour).
///
/// # Panics
/// As [`product`], and when the bias is shorter than the side of `out` it runs along.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub(crate) fn product_fused<T: Element>(
    out: &mut [T],
    (m, n, k): (usize, usize, usize),
    a: &[T],
    la: Strided,
    b: &[T],
    lb: Strided,
    accumulate: bool,
    epi: Fused<'_, T>,
    par: Par,
) {
    use crate::Tensor;
    use crate::engine::transpose::{Transfer, transpose_blocks, transpose_into};
    use crate::handle::storage::alloc;

    assert_eq!(Some(out.len()), m.checked_mul(n), "gemm: output size");
    // strata's own kernel packs operands of any layout at the same cost: the detours
    // below are for faer's.
    #[cfg(target_arch = "x86_64")]
    let own = T::DTYPE == crate::DType::F32 && own_kernel();
    #[cfg(not(target_arch = "x86_64"))]
    let own = false;
    let a_col_major = !own && la.rs == 1 && la.cs != 1 && m > 1;
    let b_col_major = lb.rs == 1 && n > 1;
    let macs = m.saturating_mul(n).saturating_mul(k);
    if a_col_major && macs >= COL_DST_MIN_MACS {
        if 2 * k <= n {
            let mut a_rows = alloc::<T>(m * k);
            assert!(
                la.extent(m, k).is_some_and(|e| e <= a.len()),
                "gemm: lhs out of bounds"
            );
            let t = Transfer {
                rows: m,
                cols: k,
                src_cs: la.cs,
                dst_rs: k,
            };
            // SAFETY: a single block.
            unsafe { transpose_blocks(a, &mut a_rows, t, &[(la.offset, 0)], false) };
            product_fused(
                out,
                (m, n, k),
                &a_rows,
                Strided::row_major(0, k),
                b,
                lb,
                accumulate,
                epi,
                par,
            );
            drop(Tensor::from_contiguous(a_rows, &[m * k]));
            return;
        }
        if b_col_major || m > n {
            let mut tmp = alloc::<T>(m * n);
            slices(
                (&mut tmp, Strided::transposed(0, m)),
                (m, n, k),
                (a, la),
                (b, lb),
                false,
                par,
            );
            transpose_into(&tmp, out, (m, n), accumulate);
            drop(Tensor::from_contiguous(tmp, &[m * n]));
            epi.apply_rows(out, n);
            return;
        }
    }
    // SAFETY: `out` is borrowed mutably and `a`, `b` immutably for the call, so nothing
    // else touches them.
    unsafe {
        raw_fused(
            RawMat::of_mut(out, Strided::row_major(0, n)),
            (m, n, k),
            RawMat::of(a, la),
            RawMat::of(b, lb),
            accumulate,
            epi,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::par;

    fn naive(
        m: usize,
        n: usize,
        k: usize,
        a: &[f64],
        av: Strided,
        b: &[f64],
        bv: Strided,
    ) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for l in 0..k {
                    out[i * n + j] +=
                        a[av.offset + i * av.rs + l * av.cs] * b[bv.offset + l * bv.rs + j * bv.cs];
                }
            }
        }
        out
    }

    #[test]
    fn extents_are_checked_arithmetic() {
        let v = Strided::row_major(3, 4);
        assert_eq!(v.extent(2, 4), Some(3 + 4 + 3 + 1));
        assert_eq!(v.extent(0, 4), Some(0));
        assert_eq!(Strided::row_major(0, usize::MAX).extent(3, 1), None);
        assert_eq!(Strided::row_major(usize::MAX, 1).extent(1, 1), None);
    }

    #[test]
    fn strided_products_match_a_naive_one() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f64> = (0..40).map(|x| x as f64 * 0.5 - 3.0).collect();
        let b: Vec<f64> = (0..50).map(|x| (x as f64).sin()).collect();
        // a transposed (column-major) with an offset, b row-major with a wide row stride.
        let (av, bv) = (
            Strided::transposed(2, m),
            Strided {
                offset: 1,
                rs: 9,
                cs: 1,
            },
        );
        let want = naive(m, n, k, &a, av, &b, bv);
        let mut out = vec![1.0; m * n];
        slices(
            (&mut out, Strided::row_major(0, n)),
            (m, n, k),
            (&a, av),
            (&b, bv),
            false,
            Par::Seq,
        );
        assert!(out.iter().zip(&want).all(|(o, w)| (o - w).abs() < 1e-12));
        slices(
            (&mut out, Strided::row_major(0, n)),
            (m, n, k),
            (&a, av),
            (&b, bv),
            true,
            Par::Seq,
        );
        assert!(
            out.iter()
                .zip(&want)
                .all(|(o, w)| (o - 2.0 * w).abs() < 1e-12)
        );
        // k = 0 gives zeros (or leaves the accumulator alone).
        slices(
            (&mut out, Strided::row_major(0, n)),
            (m, n, 0),
            (&a, av),
            (&b, bv),
            false,
            Par::Seq,
        );
        assert!(out.iter().all(|&o| o == 0.0));
    }

    /// Every route an f32 product can take gives the naive product, to f32 rounding: faer
    /// for a short product of a row-major `B`, the own kernel (packing such a `B` as it
    /// multiplies) from 16 rows, the swapped `Cᵀ = Bᵀ·Aᵀ` for a short product of a
    /// column-major `B` whose rows are a multiple of 32, and the plain own kernel otherwise;
    /// on one thread and on several, overwriting and accumulating.
    #[test]
    fn f32_products_match_a_naive_one_on_every_route() {
        use rand::RngExt;
        let mut rng = crate::seeded_rng(11);
        let shapes = [
            (8, 40, 20, false),
            (16, 40, 20, false),
            (20, 70, 300, false),
            (32, 40, 130, true),
            (64, 33, 200, true),
            (48, 40, 130, true),
            (160, 50, 140, true),
            (33, 40, 64, true),
        ];
        for (m, n, k, tb) in shapes {
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let av = Strided::row_major(0, k);
            let bv = if tb {
                Strided::transposed(0, k)
            } else {
                Strided::row_major(0, n)
            };
            let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
            let want = naive(m, n, k, &wide(&a), av, &wide(&b), bv);
            for (accumulate, par) in [
                (false, Par::Seq),
                (true, Par::Rayon(NonZeroUsize::MIN.saturating_add(1))),
            ] {
                let init: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                let mut out = init.clone();
                slices(
                    (&mut out, Strided::row_major(0, n)),
                    (m, n, k),
                    (&a, av),
                    (&b, bv),
                    accumulate,
                    par,
                );
                for (p, (&o, &w)) in out.iter().zip(&want).enumerate() {
                    let w = if accumulate {
                        w + f64::from(init[p])
                    } else {
                        w
                    };
                    let tol = 1e-5 * (k as f64).sqrt() * (1.0 + w.abs());
                    assert!(
                        (f64::from(o) - w).abs() <= tol,
                        "{m}x{n}x{k} tb={tb} accumulate={accumulate}: element {p} {o} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "reaches outside")]
    fn out_of_bounds_views_panic_before_any_access() {
        let a = vec![0.0f64; 6];
        let mut out = vec![0.0f64; 4];
        slices(
            (&mut out, Strided::row_major(0, 2)),
            (2, 2, 3),
            (&a, Strided::row_major(1, 3)),
            (&a, Strided::row_major(0, 2)),
            false,
            Par::Seq,
        );
    }

    /// Tasks writing disjoint row blocks of one output through a shared buffer give the
    /// same result on any number of threads.
    #[test]
    fn disjoint_row_blocks_on_any_thread_count() {
        let (m, n, k) = (37, 11, 13);
        let a: Vec<f64> = (0..m * k).map(|x| ((x * 7) % 13) as f64 - 6.0).collect();
        let b: Vec<f64> = (0..k * n).map(|x| ((x * 5) % 11) as f64 * 0.25).collect();
        let want = naive(
            m,
            n,
            k,
            &a,
            Strided::row_major(0, k),
            &b,
            Strided::row_major(0, n),
        );
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut out = vec![0.0; m * n];
            pool.install(|| {
                let shared = par::Disjoint::new(&mut out);
                par::run(m.div_ceil(8), true, |t| {
                    let rows = 8.min(m - 8 * t);
                    let dst = RawMat::of_shared(&shared, Strided::row_major(8 * t * n, n));
                    let lhs = RawMat::of(&a, Strided::row_major(8 * t * k, k));
                    // SAFETY: task t writes only rows 8t..8t + rows of `out`.
                    unsafe {
                        raw(
                            dst,
                            (rows, n, k),
                            lhs,
                            RawMat::of(&b, Strided::row_major(0, n)),
                            false,
                            Par::Seq,
                        )
                    };
                });
            });
            let close = out.iter().zip(&want).all(|(o, w)| (o - w).abs() < 1e-12);
            assert!(close, "{threads} threads");
        }
    }
}
