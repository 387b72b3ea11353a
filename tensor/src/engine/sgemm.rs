//! strata's own f32 GEMM for CPUs with AVX-512: `C = A·B` (or `C += A·B`) with `A` and `B`
//! of any strides, blocked the way BLIS blocks it.
//!
//! - `B` is packed, [`KC`] rows by [`NC`] columns at a time, into panels of [`NR`] = 32
//!   columns (`[kc, 32]` each, zero-padded), which the microkernel reads with two aligned
//!   vector loads per step of `k`;
//! - `A` is packed, [`MC`] rows at a time, into panels of [`MR`] = 12 rows (`[kc, 12]`
//!   each, zero-padded), whose values the microkernel broadcasts;
//! - the microkernel keeps a 12 × 32 tile of `C` in 24 of the 32 vector registers: per
//!   step of `k`, 2 loads of `B`, 12 broadcasts of `A` and 24 fused multiply-adds, enough
//!   independent chains to keep both FMA pipes busy. A panel of `B` (32 KiB at
//!   `KC` = 256) stays in L1 while every panel of the `A` block (in L2) passes over it.
//!
//! Work is split across threads by blocks of rows of `C` (each task packs its own block
//! of `A`) or, when there are too few of those, by groups of panels of `B` (sharing one
//! packed block of `A`). Every element of `C` is computed by the same sequence of
//! operations whatever the split, so results do not depend on the thread count.
//!
//! The caller ([`gemm::raw`](super::gemm::raw)) checks the bounds of every operand; this
//! module's safety contract is stated once at [`sgemm`].

use std::arch::x86_64::*;

use crate::engine::par;
use crate::handle::storage::alloc;

/// Rows of a microkernel tile (and of a packed panel of `A`).
pub(crate) const MR: usize = 12;
/// Columns of a microkernel tile (and of a packed panel of `B`): two 16-lane registers.
pub(crate) const NR: usize = 32;
/// The slice of `k` one packing covers.
const KC: usize = 256;
/// Rows of `A` packed at a time (a multiple of [`MR`]).
const MC: usize = 16 * MR;
/// Columns of `B` packed at a time (a multiple of [`NR`]).
const NC: usize = 128 * NR;

/// A read-only strided operand: element `(i, j)` at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct Operand {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

impl Operand {
    /// The address of element `(i, j)` (computed without dereferencing; the caller's
    /// contract makes it a valid one).
    fn at(&self, i: usize, j: usize) -> *const f32 {
        self.ptr.wrapping_add(i * self.rs + j * self.cs)
    }
}

/// The output: row `i` starts at `ptr + i·rs`, its elements contiguous.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    rs: usize,
}

// SAFETY: the pointer is only dereferenced under the contract of `sgemm`: no thread writes
// an operand during the call, so every task may read it.
unsafe impl Send for Operand {}
// SAFETY: as for `Send`: shared reads only.
unsafe impl Sync for Operand {}
// SAFETY: the pointer is only dereferenced under the contract of `sgemm`, and each task
// writes tiles of `c` that no other task touches.
unsafe impl Send for Out {}
// SAFETY: as for `Send`: the tasks' writes are disjoint.
unsafe impl Sync for Out {}

/// Whether this machine runs [`sgemm`] (AVX-512F, and the portable switch not set).
pub(crate) fn available() -> bool {
    crate::simd_level() == "avx512"
}

/// `c = a · b` (with `accumulate`, `c += a · b`) for `a` `[m, k]` and `b` `[k, n]`;
/// `c`'s rows start `ldc` apart and hold their `n` elements contiguously.
///
/// # Safety
/// [`available`] is true; every element `(i, j)` the operands' strides address for `i <
/// m`, `j < n` (and `k`) lies inside a live allocation; no other thread writes `a` or `b`
/// or touches `c` during the call, and `c` does not overlap `a` or `b`.
pub(crate) unsafe fn sgemm(
    c: *mut f32,
    ldc: usize,
    (m, n, k): (usize, usize, usize),
    a: Operand,
    b: Operand,
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let c = Out { ptr: c, rs: ldc };
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                // SAFETY: row i of c, n elements (the contract).
                unsafe { std::slice::from_raw_parts_mut(c.ptr.add(i * ldc), n).fill(0.0) };
            }
        }
        return;
    }
    let threads = if parallel { par::threads() } else { 1 };
    let row_blocks = m.div_ceil(MC);
    let mut bpack = alloc::<f32>(KC * NC.min(n.next_multiple_of(NR)));
    let mut apack = alloc::<f32>(MC * KC);
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let panels = nc.div_ceil(NR);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let add = accumulate || pc > 0;
            // SAFETY: rows pc..pc + kc and columns jc..jc + nc of b are in bounds (the
            // contract); the buffer holds `panels` panels of kc × NR.
            unsafe { pack_b(&mut bpack, b, (pc, jc), (kc, nc), threads > 1) };
            let bp = Operand {
                ptr: bpack.as_ptr(),
                rs: 0,
                cs: 0,
            };
            if threads > 1 && row_blocks >= threads {
                // One task per block of rows, each packing its own A.
                par::run_init(
                    row_blocks,
                    true,
                    || alloc::<f32>(MC * KC),
                    |ap, blk| {
                        let ic = blk * MC;
                        let mc = MC.min(m - ic);
                        // SAFETY: the block's rows of a, and of c (disjoint from the other
                        // tasks' blocks), are in bounds; bpack is only read.
                        unsafe {
                            pack_a(ap, a, (ic, pc), (mc, kc));
                            tiles(ap, bp, (kc, mc), 0..panels, c, (ic, jc), nc, add);
                        }
                    },
                );
            } else {
                for ic in (0..m).step_by(MC) {
                    let mc = MC.min(m - ic);
                    // SAFETY: as above.
                    unsafe { pack_a(&mut apack, a, (ic, pc), (mc, kc)) };
                    let groups = if threads > 1 {
                        panels.min(2 * threads)
                    } else {
                        1
                    };
                    let ap = &apack;
                    par::run(groups, groups > 1, |g| {
                        let range = g * panels / groups..(g + 1) * panels / groups;
                        // SAFETY: the group's panels cover columns of c no other group
                        // writes; the packed operands are only read.
                        unsafe { tiles(ap, bp, (kc, mc), range, c, (ic, jc), nc, add) };
                    });
                }
            }
        }
    }
    recycle(bpack);
    recycle(apack);
}

/// Hands a packing buffer back to the cache of freed buffers.
fn recycle(buf: Vec<f32>) {
    let n = buf.len();
    drop(crate::Tensor::from_contiguous(buf, &[n]));
}

/// Every tile of the packed `A` block (`mc` rows) times the packed `B` panels `panels`,
/// into `c` at `(ic, jc)` (only the first `nc` columns of the last panel are written).
///
/// # Safety
/// As [`sgemm`]: the tiles' elements of `c` are in bounds and written by no other task;
/// `ap` holds `mc.div_ceil(MR)` panels and `bp` the panels of `kc` rows.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn tiles(
    ap: &[f32],
    bp: Operand,
    (kc, mc): (usize, usize),
    panels: std::ops::Range<usize>,
    c: Out,
    (ic, jc): (usize, usize),
    nc: usize,
    add: bool,
) {
    for jr in panels {
        let cols = NR.min(nc - jr * NR);
        // SAFETY: panel jr of the packed B (kc × NR).
        let b = unsafe { bp.ptr.add(jr * kc * NR) };
        for ir in 0..mc.div_ceil(MR) {
            let rows = MR.min(mc - ir * MR);
            // SAFETY: panel ir of the packed A, and the tile's rows and columns of c.
            unsafe {
                let a = ap.as_ptr().add(ir * kc * MR);
                let t = c.ptr.add((ic + ir * MR) * c.rs + jc + jr * NR);
                micro(kc, a, b, t, c.rs, rows, cols, add);
            }
        }
    }
}

/// The 12 × 32 microkernel: `tile (+)= a_panel · b_panel` over `kc` steps, writing the
/// first `rows` rows and `cols` columns of the tile.
///
/// # Safety
/// `a` holds `kc × MR` and `b` `kc × NR` values; the tile's `rows × cols` elements of `c`
/// (rows `ldc` apart) are in bounds and unshared.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn micro(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    add: bool,
) {
    let lo: u16 = if cols >= 16 {
        0xffff
    } else {
        ((1u32 << cols) - 1) as u16
    };
    let hi: u16 = if cols >= NR {
        0xffff
    } else if cols > 16 {
        ((1u32 << (cols - 16)) - 1) as u16
    } else {
        0
    };
    // SAFETY: the reads stay inside the packed panels (kc steps of MR and NR values) and
    // the writes inside the tile's rows × cols (masked lanes are not touched).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let (mut pa, mut pb) = (a, b);
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(pb);
            let b1 = _mm512_loadu_ps(pb.add(16));
            for (r, acc) in acc.iter_mut().enumerate() {
                let ar = _mm512_set1_ps(*pa.add(r));
                acc[0] = _mm512_fmadd_ps(ar, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(ar, b1, acc[1]);
            }
            pa = pa.add(MR);
            pb = pb.add(NR);
        }
        for (r, acc) in acc.iter().enumerate().take(rows) {
            let row = c.add(r * ldc);
            let (mut v0, mut v1) = (acc[0], acc[1]);
            if add {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(lo, row));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(hi, row.add(16)));
            }
            _mm512_mask_storeu_ps(row, lo, v0);
            _mm512_mask_storeu_ps(row.add(16), hi, v1);
        }
    }
}

/// Packs rows `pc..pc + kc`, columns `jc..jc + nc` of `b` into panels of [`NR`] columns:
/// panel `p`'s row `kk` at `dst[(p·kc + kk)·NR ..]`, columns past `nc` zero.
///
/// # Safety
/// The addressed elements of `b` are in bounds; `dst` holds `nc.div_ceil(NR)·kc·NR`.
unsafe fn pack_b(
    dst: &mut [f32],
    b: Operand,
    (pc, jc): (usize, usize),
    (kc, nc): (usize, usize),
    parallel: bool,
) {
    let panels = nc.div_ceil(NR);
    let len = panels * kc * NR;
    par::chunks_mut(
        &mut dst[..len],
        kc * NR,
        parallel && len >= 1 << 16,
        |p, out| {
            let j0 = jc + p * NR;
            let width = NR.min(jc + nc - j0);
            if b.rs == 1 && b.cs != 1 {
                // Column-major b: read each column down k (contiguous), write it across
                // the panel's rows.
                if width < NR {
                    out.fill(0.0);
                }
                for j in 0..width {
                    // SAFETY: column j0 + j, rows pc..pc + kc of b (the contract).
                    unsafe {
                        let src = b.at(pc, j0 + j);
                        for kk in 0..kc {
                            out[kk * NR + j] = *src.add(kk);
                        }
                    }
                }
                return;
            }
            for (kk, row) in out.chunks_exact_mut(NR).enumerate() {
                // SAFETY: row pc + kk, columns j0..j0 + width of b (the contract).
                unsafe {
                    let src = b.at(pc + kk, j0);
                    if b.cs == 1 {
                        std::ptr::copy_nonoverlapping(src, row.as_mut_ptr(), width);
                    } else {
                        for (j, v) in row[..width].iter_mut().enumerate() {
                            *v = *src.add(j * b.cs);
                        }
                    }
                }
                row[width..].fill(0.0);
            }
        },
    );
}

/// Packs rows `ic..ic + mc`, columns `pc..pc + kc` of `a` into panels of [`MR`] rows:
/// panel `q`'s step `kk` at `dst[(q·kc + kk)·MR ..]`, rows past `mc` zero.
///
/// # Safety
/// The addressed elements of `a` are in bounds; `dst` holds `mc.div_ceil(MR)·kc·MR`.
unsafe fn pack_a(dst: &mut [f32], a: Operand, (ic, pc): (usize, usize), (mc, kc): (usize, usize)) {
    for q in 0..mc.div_ceil(MR) {
        let i0 = ic + q * MR;
        let height = MR.min(ic + mc - i0);
        let panel = &mut dst[q * kc * MR..(q + 1) * kc * MR];
        if height < MR {
            panel.fill(0.0);
        }
        if a.rs == 1 && a.cs != 1 {
            // Column-major a (a transposed view, as in weight gradients): each step of k
            // reads the panel's rows side by side.
            for kk in 0..kc {
                // SAFETY: rows i0..i0 + height of column pc + kk of a (the contract), and
                // the panel's step kk (MR values).
                unsafe {
                    let src = a.at(i0, pc + kk);
                    std::ptr::copy_nonoverlapping(src, panel.as_mut_ptr().add(kk * MR), height);
                }
            }
            continue;
        }
        for r in 0..height {
            // SAFETY: row i0 + r, columns pc..pc + kc of a (the contract).
            unsafe {
                let src = a.at(i0 + r, pc);
                for kk in 0..kc {
                    panel[kk * MR + r] = *src.add(kk * a.cs);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeded_rng;
    use rand::RngExt;

    /// `c (+)= a · b` in f64, for `a` and `b` given by their strides.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        (ars, acs): (usize, usize),
        b: &[f32],
        (brs, bcs): (usize, usize),
        c: &mut [f32],
        ldc: usize,
        add: bool,
    ) {
        for i in 0..m {
            for j in 0..n {
                let mut s = if add { f64::from(c[i * ldc + j]) } else { 0.0 };
                for p in 0..k {
                    s += f64::from(a[i * ars + p * acs]) * f64::from(b[p * brs + j * bcs]);
                }
                c[i * ldc + j] = s as f32;
            }
        }
    }

    /// Ragged shapes across every blocking boundary (MR, NR, KC, MC, NC), row- and
    /// column-major operands, a destination with padded rows, accumulation, one thread and
    /// several: against an f64 product, to f32 rounding.
    #[test]
    fn products_match_a_naive_one_across_block_boundaries() {
        if !available() {
            return;
        }
        let mut rng = seeded_rng(3);
        let shapes = [
            (1, 1, 1),
            (5, 7, 3),
            (12, 32, 256),
            (13, 33, 257),
            (MC + 5, 70, 40),
            (30, NC + 17, 9),
            (2 * MC + 1, 3 * NR + 1, KC + 3),
        ];
        for &(m, n, k) in &shapes {
            for (ta, tb, add, parallel) in [
                (false, false, false, false),
                (true, false, true, true),
                (false, true, false, true),
                (true, true, true, false),
            ] {
                let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                let (ars, acs) = if ta { (1, m) } else { (k, 1) };
                let (brs, bcs) = if tb { (1, k) } else { (n, 1) };
                let ldc = n + 3;
                let init: Vec<f32> = (0..m * ldc).map(|_| rng.random_range(-1.0..1.0)).collect();
                let (mut got, mut want) = (init.clone(), init);
                // SAFETY: the buffers hold every element the strides address; nothing else
                // touches them.
                unsafe {
                    sgemm(
                        got.as_mut_ptr(),
                        ldc,
                        (m, n, k),
                        Operand {
                            ptr: a.as_ptr(),
                            rs: ars,
                            cs: acs,
                        },
                        Operand {
                            ptr: b.as_ptr(),
                            rs: brs,
                            cs: bcs,
                        },
                        add,
                        parallel,
                    );
                }
                naive(
                    (m, n, k),
                    &a,
                    (ars, acs),
                    &b,
                    (brs, bcs),
                    &mut want,
                    ldc,
                    add,
                );
                for i in 0..m {
                    for j in 0..ldc {
                        let (g, w) = (got[i * ldc + j], want[i * ldc + j]);
                        let tol = 1e-5 * (k as f32).sqrt() * (1.0 + w.abs());
                        assert!(
                            (g - w).abs() <= tol,
                            "{m}x{n}x{k} ta={ta} tb={tb} add={add}: ({i}, {j}) {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    /// The result does not depend on the number of threads, bit for bit.
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        if !available() {
            return;
        }
        let (m, n, k) = (3 * MC + 7, 5 * NR + 3, 2 * KC + 5);
        let mut rng = seeded_rng(4);
        let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut c = vec![0f32; m * n];
            pool.install(|| {
                // SAFETY: as above.
                unsafe {
                    sgemm(
                        c.as_mut_ptr(),
                        n,
                        (m, n, k),
                        Operand {
                            ptr: a.as_ptr(),
                            rs: k,
                            cs: 1,
                        },
                        Operand {
                            ptr: b.as_ptr(),
                            rs: n,
                            cs: 1,
                        },
                        false,
                        true,
                    );
                }
            });
            c
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }
}
