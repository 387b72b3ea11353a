//! The per-step products of the recurrence, `C = A · B_block`: `A` a tile's rows of the
//! previous state (forward) or of the next step's gate gradients (backward), `B_block` the
//! tile's unit block of `W_hh`, the same at every step of the walk.
//!
//! These products are small (tens of rows) and there are hundreds of them per call, so
//! the general GEMM's per-call work (packing `B` again on every call, its blocking for
//! large shapes) weighs on them. On CPUs with AVX-512, f32 weights are packed once per
//! walk into panels of 32 columns (`[k, 32]` each, zero-padded), and an 8 × 32
//! microkernel keeps 16 accumulators in registers: two loads of `B` and eight broadcasts
//! of `A` per 16 fused multiply-adds (over row-major rows of `A`, its step loop is in
//! assembly: `engine::sgemm::in_place_steps_8`). `k` is split into slices of [`KC`] so
//! that a panel's slice (16 KiB) and the rows of `A` it meets stay in L1 while every row
//! block passes over it. Elsewhere (f64, other CPUs) the blocks stay row-major and faer multiplies.
//!
//! The forward walk's input projection of each chunk of steps, `x · W_ihᵀ`, runs on the
//! same kernel, with `W_ihᵀ` packed the same way, and so do the backward's weight
//! gradients, `∂gatesᵀ · [h₋ | x]` per chunk: their left operand is a transpose, packed
//! by [`pack_groups`] so that the values one step of `k` broadcasts lie side by side.

use faer::Par;

use crate::Element;
use crate::engine::gemm::{self, RawMat, Strided};
use crate::handle::storage::Buffer;

/// Columns per panel.
const NR: usize = 32;
/// Rows per microkernel call.
pub(super) const MR: usize = 8;
// `engine::sgemm::in_place_steps_8` reads 8 rows and steps of 32 values (128 bytes).
const _: () = assert!(NR == 32 && MR == 8);
/// The slice of `k` one pass of the row blocks covers.
const KC: usize = 128;
/// Weights of at least this many elements are packed by several threads.
const PAR_PACK_MIN: usize = 1 << 16;

/// Where a product over `k` starts (the slice holding this column of `a`) and what it
/// calls before reading columns `k0..k1` (see [`StepWeights::gemm`]).
pub(super) type KOrder<'a> = (usize, &'a dyn Fn(usize, usize));

/// The right operands of a walk's per-step products, one per unit block, each `[k, n_b]`.
pub(super) struct StepWeights<T> {
    data: Buffer<T>,
    /// Per block: its first element in `data` and its columns `n_b`.
    blocks: Vec<(usize, usize)>,
    k: usize,
    /// Whether `data` holds panels for the AVX-512 kernel (else row-major blocks).
    panels: bool,
}

impl<T: Element> StepWeights<T> {
    /// Packs blocks given row by row: `row(b, kk)` starts row `kk` of block `b` (its
    /// `cols[b]` columns are the slice's first elements).
    pub(super) fn from_rows<'w>(
        k: usize,
        cols: &[usize],
        row: impl Fn(usize, usize) -> &'w [T] + Sync,
    ) -> Self
    where
        T: 'w,
    {
        Self::build(k, cols, |b, c0, width, dst, stride| {
            for (kk, out) in dst.chunks_exact_mut(stride).enumerate() {
                let src = &row(b, kk)[c0..c0 + width];
                if width == NR {
                    // A constant-size copy, inlined rather than a `memcpy` call per row.
                    let out: &mut [T; NR] = (&mut out[..NR]).try_into().expect("NR wide");
                    out.copy_from_slice(src);
                } else {
                    out[..width].copy_from_slice(src);
                }
            }
        })
    }

    /// Packs blocks given column by column, i.e. from the rows of a weight they hold the
    /// transpose of: `col(b, j)` starts column `j` of block `b` (its `k` rows are the
    /// slice's first elements).
    pub(super) fn from_cols<'w>(
        k: usize,
        cols: &[usize],
        col: impl Fn(usize, usize) -> &'w [T] + Sync,
    ) -> Self
    where
        T: 'w,
    {
        // Eight columns at a time: each row of the destination gets eight contiguous
        // elements, read from eight columns (cache lines that stay in L1 for 16 rows).
        const W: usize = 8;
        Self::build(k, cols, |b, c0, width, dst, stride| {
            for j0 in (0..width).step_by(W) {
                let w = W.min(width - j0);
                if w == W {
                    let src: [&[T]; W] = std::array::from_fn(|j| &col(b, c0 + j0 + j)[..k]);
                    for (kk, row) in dst.chunks_exact_mut(stride).enumerate() {
                        let out: &mut [T; W] = (&mut row[j0..j0 + W]).try_into().expect("W");
                        for j in 0..W {
                            out[j] = src[j][kk];
                        }
                    }
                } else {
                    for j in 0..w {
                        let src = &col(b, c0 + j0 + j)[..k];
                        for (row, &v) in dst.chunks_exact_mut(stride).zip(src) {
                            row[j0 + j] = v;
                        }
                    }
                }
            }
        })
    }

    /// Allocates the blocks (panels when the AVX-512 kernel applies, else row-major
    /// `[k, n_b]` blocks) and has `fill(b, c0, width, dst, stride)` write columns
    /// `c0..c0 + width` of block `b` into `dst`, `k` rows `stride` apart; panel columns
    /// past a block's edge are zeroed here.
    fn build(
        k: usize,
        cols: &[usize],
        fill: impl Fn(usize, usize, usize, &mut [T], usize) + Sync,
    ) -> Self {
        let panels = super::f32_avx512::<T>();
        let width_of = |n: usize| if panels { n.div_ceil(NR) * NR } else { n };
        let total: usize = cols.iter().map(|&n| k * width_of(n)).sum();
        let mut data = crate::handle::storage::alloc::<T>(total);
        let mut blocks = Vec::with_capacity(cols.len());
        // One job per panel (or per block): (block, first column, width, destination).
        let mut jobs = Vec::new();
        let mut rest = &mut data[..];
        for (b, &n) in cols.iter().enumerate() {
            blocks.push((total - rest.len(), n));
            let (step, stride) = if panels { (NR, NR) } else { (n.max(1), n) };
            for c0 in (0..n).step_by(step) {
                let (part, tail) = rest.split_at_mut(k * stride);
                jobs.push((b, c0, step.min(n - c0), part));
                rest = tail;
            }
        }
        let stride = |n: usize| if panels { NR } else { n };
        let one = |(b, c0, width, part): (usize, usize, usize, &mut [T])| {
            let stride = stride(cols[b]);
            fill(b, c0, width, part, stride);
            if width < stride {
                for row in part.chunks_exact_mut(stride) {
                    row[width..].fill(T::zero());
                }
            }
        };
        crate::engine::par::chunks_mut(&mut jobs, 1, total >= PAR_PACK_MIN, |_, job| {
            let (b, c0, width, part) = &mut job[0];
            one((*b, *c0, *width, part));
        });
        StepWeights {
            data,
            blocks,
            k,
            panels,
        }
    }

    /// `c (m × n_b, rows ldc apart) = a (m × k, rows lda apart) · B_block`, with faer's
    /// parallelism `par` on the faer path.
    ///
    /// With `order = Some((first, ready))`, the columns of `a` may still be in the making:
    /// the product runs over `k` in slices, starting with the one that holds column
    /// `first` and going round, and calls `ready(k0, k1)` before it reads columns
    /// `k0..k1` (on the faer path once, for all of them). The order of the slices depends
    /// only on `first` and `k`, never on when they become ready.
    ///
    /// # Safety
    /// No other thread writes the `m × k` elements of `a` or touches the `m × n_b` ones of
    /// `c` during the call (the contract of `engine::par`). Bounds are checked here.
    ///
    /// # Panics
    /// When a view reaches outside its buffer, or (on the panel kernel) has columns that
    /// are not contiguous.
    #[track_caller]
    pub(super) unsafe fn gemm(
        &self,
        block: usize,
        c: RawMat<T>,
        a: RawMat<T>,
        m: usize,
        par: Par,
        order: Option<KOrder<'_>>,
    ) {
        let (at, n) = self.blocks[block];
        let k = self.k;
        if self.panels {
            assert!(
                c.view.cs == 1 && a.view.cs == 1,
                "panel kernel: strided columns"
            );
            let (c, ldc) = (c.checked_ptr(m, n), c.view.rs);
            let (a, lda) = (a.checked_ptr(m, k).cast_const(), a.view.rs);
            // SAFETY: T is f32 (checked in `new`), the CPU has AVX-512 (likewise), the
            // block's panels are in bounds, and the caller keeps `a` and `c` in bounds and
            // unshared.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                let b = self.data.as_ptr().add(at).cast::<f32>();
                gemm_avx512(
                    c.cast::<f32>(),
                    ldc,
                    a.cast::<f32>(),
                    lda,
                    b,
                    (m, n, k),
                    order,
                );
            }
        } else {
            if let Some((_, ready)) = order {
                ready(0, k);
            }
            let b = RawMat::of(&self.data, Strided::row_major(at, n));
            // SAFETY: as above; the block is `[k, n]` row-major at `at`.
            unsafe { gemm::raw(c, (m, n, k), a, b, false, par) };
        }
    }

    /// `c (m × n_b, rows ldc apart) += a · B_block` for `a` (`m × k`) laid out by
    /// [`pack_groups`]: the weight gradients' products, whose left operand is the
    /// transpose of a row-major matrix. Only where the AVX-512 kernel applies
    /// ([`StepWeights::panels`]).
    ///
    /// # Safety
    /// No other thread touches the `m × n_b` elements of `c` during the call. Bounds are
    /// checked here.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    #[track_caller]
    pub(super) unsafe fn add_packed(&self, block: usize, c: RawMat<T>, a: &[T], m: usize) {
        assert!(self.panels, "packed products run on the panel kernel only");
        let (at, n) = self.blocks[block];
        let k = self.k;
        assert_eq!(c.view.cs, 1, "panel kernel: strided columns");
        let (c, ldc) = (c.checked_ptr(m, n), c.view.rs);
        assert!(
            a.len() >= m.div_ceil(MR) * MR * k,
            "packed operand too short"
        );
        // SAFETY: as in `gemm`; `a` holds the groups of m rows (asserted).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            let b = self.data.as_ptr().add(at).cast::<f32>();
            add_packed_avx512(c.cast::<f32>(), ldc, a.as_ptr().cast::<f32>(), b, (m, n, k));
        }
    }

    /// The rows of every block.
    pub(super) fn k(&self) -> usize {
        self.k
    }

    /// Whether the AVX-512 kernel serves the products (else faer).
    pub(super) fn panels(&self) -> bool {
        self.panels
    }

    /// Hands the buffer back to the cache of freed buffers.
    pub(super) fn recycle(self) {
        super::recycle(self.data);
    }
}

/// `c = a · b` for f32 with `b` in panels of [`NR`] columns (see [`StepWeights`]).
///
/// # Safety
/// The CPU supports AVX-512F; the views are in bounds and `c` is not shared.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn gemm_avx512(
    c: *mut f32,
    ldc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    (m, n, k): (usize, usize, usize),
    order: Option<KOrder<'_>>,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for r in 0..m {
            // SAFETY: row r of c, n elements, in bounds.
            unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), n).fill(0.0) };
        }
        return;
    }
    let slices = k.div_ceil(KC);
    let first = order.map_or(0, |(first, _)| first.min(k - 1) / KC);
    for (i, k0) in (first..slices).chain(0..first).map(|s| s * KC).enumerate() {
        let kc = KC.min(k - k0);
        if let Some((_, ready)) = order {
            ready(k0, k0 + kc);
        }
        for p in 0..n.div_ceil(NR) {
            let width = NR.min(n - p * NR);
            // SAFETY: rows k0..k0 + kc of panel p, inside the block.
            let panel = unsafe { b.add((p * k + k0) * NR) };
            // SAFETY: rows k0.. of a (its columns k0..) and of the panel, in bounds.
            unsafe {
                row_blocks::<false>(
                    (m, kc),
                    (a.add(k0), lda),
                    panel,
                    (c.add(p * NR), ldc),
                    width,
                    i > 0,
                );
            }
        }
    }
}

/// `c += a · b` for f32, `a` laid out by [`pack_groups`], `b` in panels of [`NR`] columns.
///
/// # Safety
/// The CPU supports AVX-512F; the views are in bounds and `c` is not shared.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn add_packed_avx512(
    c: *mut f32,
    ldc: usize,
    a: *const f32,
    b: *const f32,
    (m, n, k): (usize, usize, usize),
) {
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        for p in 0..n.div_ceil(NR) {
            let width = NR.min(n - p * NR);
            // SAFETY: rows k0..k0 + kc of panel p and of every group of a, in bounds.
            unsafe {
                let panel = b.add((p * k + k0) * NR);
                let a = (a.add(k0 * MR), k * MR);
                row_blocks::<true>((m, kc), a, panel, (c.add(p * NR), ldc), width, true);
            }
        }
    }
}

/// Columns `col..col + m` of the first `k` rows of `src` (rows `ld` apart) transposed
/// into groups of [`MR`] columns, group `j` `[k, MR]` at `j·k·MR` (the last one padded
/// with zeros): the left operand of [`StepWeights::add_packed`], whose microkernel then
/// finds the `MR` values it broadcasts at one step of `k` side by side. With `sums`, the
/// columns' sums are added to it on the way (row after row).
pub(super) fn pack_groups<T: Element>(
    (src, ld): (&[T], usize),
    (col, m, k): (usize, usize, usize),
    mut sums: Option<&mut [T]>,
) -> Buffer<T> {
    let groups = m.div_ceil(MR);
    let mut out = crate::handle::storage::alloc::<T>(groups * k * MR);
    for kk in 0..k {
        let row = &src[kk * ld + col..][..m];
        if let Some(sums) = sums.as_deref_mut() {
            for (s, &v) in sums[..m].iter_mut().zip(row) {
                *s += v;
            }
        }
        for (j, part) in row.chunks(MR).enumerate() {
            let dst = &mut out[(j * k + kk) * MR..][..MR];
            if let (Ok(dst), Ok(part)) = (
                <&mut [T; MR]>::try_from(&mut *dst),
                <&[T; MR]>::try_from(part),
            ) {
                *dst = *part;
            } else {
                dst[..part.len()].copy_from_slice(part);
                dst[part.len()..].fill(T::zero());
            }
        }
    }
    out
}

/// `m` rows of `c` (columns of one panel) from `m` rows of `a` times a panel slice of `kc`
/// rows, [`MR`] rows per microkernel call. `a` is row-major (rows `lda` apart), or with
/// `PACKED` in groups of [`MR`] rows, each `[kc.., MR]` with groups `lda` apart (see
/// [`pack_groups`]).
///
/// # Safety
/// As [`micro`], for every row block.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn row_blocks<const PACKED: bool>(
    (m, kc): (usize, usize),
    (a, lda): (*const f32, usize),
    panel: *const f32,
    (c, ldc): (*mut f32, usize),
    width: usize,
    add: bool,
) {
    let mut r0 = 0;
    while r0 < m {
        let rows = MR.min(m - r0);
        // SAFETY: rows r0.. of a and c, in bounds (the caller's promise).
        unsafe {
            let a = match PACKED {
                true => a.add(r0 / MR * lda),
                false => a.add(r0 * lda),
            };
            let (a, c) = ((a, lda), (c.add(r0 * ldc), ldc));
            match rows {
                8 => micro::<8, PACKED>(kc, a, panel, c, width, add),
                7 => micro::<7, PACKED>(kc, a, panel, c, width, add),
                6 => micro::<6, PACKED>(kc, a, panel, c, width, add),
                5 => micro::<5, PACKED>(kc, a, panel, c, width, add),
                4 => micro::<4, PACKED>(kc, a, panel, c, width, add),
                3 => micro::<3, PACKED>(kc, a, panel, c, width, add),
                2 => micro::<2, PACKED>(kc, a, panel, c, width, add),
                _ => micro::<1, PACKED>(kc, a, panel, c, width, add),
            }
        }
        r0 += rows;
    }
}

/// `R` rows times one panel slice of `kc` rows: `R × 32` accumulators (two registers per
/// row), one broadcast of `a` per row and step of `k` (`a`'s element `(r, kk)` at
/// `r·lda + kk`, or with `PACKED` at `kk·MR + r`). Only the first `width` columns of `c`
/// are written; with `add` the product is added to them.
///
/// # Safety
/// As [`gemm_avx512`], for `R` rows and one panel.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn micro<const R: usize, const PACKED: bool>(
    kc: usize,
    (a, lda): (*const f32, usize),
    panel: *const f32,
    (c, ldc): (*mut f32, usize),
    width: usize,
    add: bool,
) {
    use std::arch::x86_64::*;
    let lo: u16 = if width >= 16 {
        0xffff
    } else {
        ((1u32 << width) - 1) as u16
    };
    let hi: u16 = if width >= NR {
        0xffff
    } else if width > 16 {
        ((1u32 << (width - 16)) - 1) as u16
    } else {
        0
    };
    // SAFETY: the caller guarantees AVX-512F and the bounds; masked lanes are not touched.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        if add {
            for (r, acc) in acc.iter_mut().enumerate() {
                acc[0] = _mm512_maskz_loadu_ps(lo, c.add(r * ldc));
                acc[1] = _mm512_maskz_loadu_ps(hi, c.add(r * ldc + 16));
            }
        }
        if !PACKED && R == MR {
            // The 8-row step loop with `a` read in place, in assembly (see
            // `in_place_steps_8`).
            let mut full: [[__m512; 2]; MR] = std::array::from_fn(|r| acc[r.min(R - 1)]);
            crate::engine::sgemm::in_place_steps_8(kc, (a, lda), panel, &mut full);
            acc.copy_from_slice(&full[..R]);
        } else {
            for kk in 0..kc {
                let b0 = _mm512_loadu_ps(panel.add(kk * NR));
                let b1 = _mm512_loadu_ps(panel.add(kk * NR + 16));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let ar = match PACKED {
                        true => _mm512_set1_ps(*a.add(kk * MR + r)),
                        false => _mm512_set1_ps(*a.add(r * lda + kk)),
                    };
                    acc[0] = _mm512_fmadd_ps(ar, b0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(ar, b1, acc[1]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(c.add(r * ldc), lo, acc[0]);
            _mm512_mask_storeu_ps(c.add(r * ldc + 16), hi, acc[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The products against a naive one on ragged sizes (rows not a multiple of 8,
    /// columns not a multiple of 32, `k` across several slices, several blocks), on
    /// whichever path this CPU takes.
    #[test]
    fn step_products_match_a_naive_product() {
        let cases = [
            (3, 5, vec![7, 40]),
            (8, 17, vec![32]),
            (19, 300, vec![33, 1, 64]),
            (32, 256, vec![256]),
            (5, 0, vec![9]),
        ];
        for (m, k, cols) in cases {
            let plain: Vec<f32> = (0..k * cols.iter().sum::<usize>())
                .map(|i| ((i * 7 % 11) as f32 - 5.0) / 8.0)
                .collect();
            let starts: Vec<usize> = cols
                .iter()
                .scan(0, |at, &n| {
                    *at += k * n;
                    Some(*at - k * n)
                })
                .collect();
            let w = StepWeights::from_rows(k, &cols, |b, kk| &plain[starts[b] + kk * cols[b]..]);
            // The same blocks stored transposed, given column by column.
            let mut plain_t = plain.clone();
            for (b, &n) in cols.iter().enumerate() {
                for kk in 0..k {
                    for j in 0..n {
                        plain_t[starts[b] + j * k + kk] = plain[starts[b] + kk * n + j];
                    }
                }
            }
            let wt = StepWeights::from_cols(k, &cols, |b, j| &plain_t[starts[b] + j * k..]);
            let lda = k + 3;
            let a: Vec<f32> = (0..m * lda)
                .map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0)
                .collect();
            for (b, &n) in cols.iter().enumerate() {
                let ldc = n + 2;
                for w in [&w, &wt] {
                    let mut c = vec![f32::NAN; m * ldc];
                    // SAFETY: the buffers hold m rows of lda and ldc.
                    unsafe {
                        w.gemm(
                            b,
                            RawMat::of_mut(&mut c, Strided::row_major(0, ldc)),
                            RawMat::of(&a, Strided::row_major(0, lda)),
                            m,
                            Par::Seq,
                            None,
                        )
                    };
                    for i in 0..m {
                        for j in 0..n {
                            let want: f32 = (0..k)
                                .map(|kk| a[i * lda + kk] * plain[starts[b] + kk * n + j])
                                .sum();
                            let got = c[i * ldc + j];
                            assert!(
                                (got - want).abs() < 1e-3,
                                "{m}x{n}x{k} [{i},{j}]: {got} vs {want}"
                            );
                        }
                        // Columns past n are not written.
                        assert!(c[i * ldc + n].is_nan() && c[i * ldc + n + 1].is_nan());
                    }
                }
            }
        }
    }

    /// A product that starts mid-way through `k` sums every slice once, in the rotated
    /// order, and announces each slice before reading it.
    #[test]
    fn a_rotated_product_announces_every_slice_and_sums_them_all() {
        let (m, k, n) = (9, 300, 40);
        let plain: Vec<f32> = (0..k * n)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 8.0)
            .collect();
        let w = StepWeights::from_rows(k, &[n], |_, kk| &plain[kk * n..]);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0)
            .collect();
        for first in [0, 150, 299] {
            let calls = std::sync::Mutex::new(Vec::new());
            let ready = |k0: usize, k1: usize| calls.lock().unwrap().push((k0, k1));
            let mut c = vec![f32::NAN; m * n];
            // SAFETY: the buffers hold m rows of k and n.
            unsafe {
                w.gemm(
                    0,
                    RawMat::of_mut(&mut c, Strided::row_major(0, n)),
                    RawMat::of(&a, Strided::row_major(0, k)),
                    m,
                    Par::Seq,
                    Some((first, &ready)),
                )
            };
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|kk| a[i * k + kk] * plain[kk * n + j]).sum();
                    assert!(
                        (c[i * n + j] - want).abs() < 1e-3,
                        "first {first} [{i},{j}]"
                    );
                }
            }
            let calls = calls.into_inner().unwrap();
            if w.panels() {
                let want = match first {
                    0 => vec![(0, 128), (128, 256), (256, 300)],
                    150 => vec![(128, 256), (256, 300), (0, 128)],
                    _ => vec![(256, 300), (0, 128), (128, 256)],
                };
                assert_eq!(calls, want);
            } else {
                assert_eq!(calls, vec![(0, k)]);
            }
        }
    }

    /// The weight gradients' products: `c += a · B` with `a` packed from the columns of a
    /// row-major matrix (a partial last group of rows), `k` across several slices and a
    /// partial panel, against a naive sum; and the column sums gathered while packing.
    #[test]
    fn packed_products_accumulate_onto_c_and_packing_sums_the_columns() {
        let (k, ld, col, m, n) = (300, 50, 5, 19, 40);
        let src: Vec<f32> = (0..k * ld)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 8.0)
            .collect();
        let plain: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0)
            .collect();
        let w = StepWeights::from_rows(k, &[n], |_, kk| &plain[kk * n..]);
        let mut sums = vec![1.0f32; m];
        let a = pack_groups((&src, ld), (col, m, k), Some(&mut sums));
        for j in 0..m {
            let want = 1.0 + (0..k).map(|kk| src[kk * ld + col + j]).sum::<f32>();
            assert!(
                (sums[j] - want).abs() < 1e-3,
                "sum {j}: {} vs {want}",
                sums[j]
            );
        }
        if !w.panels() {
            return;
        }
        let ldc = n + 3;
        let mut c: Vec<f32> = (0..m * ldc).map(|i| i as f32 * 0.01).collect();
        let c0 = c.clone();
        // SAFETY: c holds m rows of ldc ≥ n.
        unsafe { w.add_packed(0, RawMat::of_mut(&mut c, Strided::row_major(0, ldc)), &a, m) };
        for i in 0..m {
            for j in 0..ldc {
                let want = match j < n {
                    true => {
                        c0[i * ldc + j]
                            + (0..k)
                                .map(|kk| src[kk * ld + col + i] * plain[kk * n + j])
                                .sum::<f32>()
                    }
                    false => c0[i * ldc + j],
                };
                let got = c[i * ldc + j];
                assert!((got - want).abs() < 1e-3, "[{i},{j}]: {got} vs {want}");
            }
        }
    }
}
