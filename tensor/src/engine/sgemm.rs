//! strata's own f32 GEMM for CPUs with AVX-512: `C = A·B` (or `C += A·B`) with `A` and `B`
//! of any strides, blocked the way BLIS blocks it.
//!
//! - `B` is packed, [`KC`] rows by [`Blocking::nc`] columns at a time, into panels of
//!   [`NR`] = 32 columns (`[kc, 32]` each, zero-padded), which the microkernel reads with
//!   two vector loads per step of `k`; a row-major `B` is packed by the first row of
//!   tiles as they multiply with it ([`BPanels::Fill`]), so that the packing's loads from
//!   memory overlap the multiply-adds instead of running before them;
//! - `A` is packed, [`Blocking::mc`] rows at a time, into panels of [`MR`] = 12 rows
//!   (`[kc, 12]` each, zero-padded), whose values the microkernel broadcasts;
//! - packing a transposed operand (a column-major `B`, a row-major `A`) transposes 16 × 16
//!   blocks in registers, so that the weight-gradient and `x·Wᵀ` products of training pack
//!   as fast as plain ones;
//! - the microkernel keeps a 12 × 32 tile of `C` in 24 of the 32 vector registers: per
//!   step of `k`, 2 loads of `B`, 12 broadcasts of `A` and 24 fused multiply-adds, enough
//!   independent chains to keep the FMA pipes busy (it runs at the register-only peak of
//!   [`fma_peak_probe`] when its operands are in L1). A panel of `A` (24 KiB at `KC` =
//!   512) stays in L1 while the panels of the `B` block stream past it. A row-major `A`
//!   feeding few panels of `B` is read in place instead, by a loop written in assembly
//!   ([`in_place_steps`]) that reaches its 12 rows from three base registers.
//!
//! Threads: `C` is cut into one rectangle per thread ([`grid`]: rows, columns or both,
//! whichever gives the smallest largest share), and each thread runs the whole blocked
//! product on its rectangle with its own packing buffers: one fork-join per product. The
//! operand the rectangles share is packed by each thread for itself, except (on AMD's
//! CPUs, [`Blocking`]) for a large `B` under a cut into tall rows (at least
//! [`SHARED_B_MIN_ROWS`] a thread), which the threads pack together, panel by panel, into
//! one buffer ([`SharedB`]; a thread waits only for a panel another thread is packing at
//! that moment). Every element of `C` is
//! computed by the same sequence of operations whatever the split, so results do not
//! depend on the thread count.
//!
//! The caller ([`gemm::raw`](super::gemm::raw)) checks the bounds of every operand; this
//! module's safety contract is stated once at [`sgemm`].

use std::arch::x86_64::*;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::engine::par;
use crate::handle::storage::{Buffer, alloc};

/// Rows of a microkernel tile (and of a packed panel of `A`).
pub(crate) const MR: usize = 12;
/// Columns of a microkernel tile (and of a packed panel of `B`): two 16-lane registers.
pub(crate) const NR: usize = 32;
/// The slice of `k` one packing covers: a panel of `A` (`KC × MR`, 24 KiB) stays in L1
/// while the panels of `B` stream past it. Long enough that the tile of `C` is read and
/// written once per 512 steps of `k`.
const KC: usize = 512;
/// How many steps of `k` ahead the microkernel fetches `B`'s rows. Measured with
/// `gemm_shapes` on Sapphire Rapids, interleaved over 3 rounds: 4, 8 and 16 steps ran
/// within the noise of each other for both a packed panel and a row-major operand.
const PREFETCH_STEPS: usize = 8;
/// Rows of `A` packed at a time on AMD's CPUs (a multiple of [`MR`]; see [`Blocking::mc`]).
const MC: usize = 16 * MR;
/// The blocking that depends on the CPU family: how many columns of `B` and rows of `A`
/// one packing covers and whether threads pack a large `B` together, measured with
/// `gemm_shapes` on each machine this code has run on, interleaved over several rounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Blocking {
    /// Columns of `B` packed at a time (a multiple of [`NR`]) for sums of at least [`KC`]:
    /// blocks of `KC × nc` (shorter sums: [`Blocking::cols`]).
    nc: usize,
    /// Rows of `A` packed at a time (a multiple of [`MR`]): blocks of `mc × KC`.
    mc: usize,
    /// Whether threads splitting `C`'s rows pack a `B` of blocks over
    /// [`PRIVATE_B_MAX_BLOCK`] together ([`SharedB`]).
    share_b: bool,
    /// What packing a value costs, in multiply-adds, for [`grid`]'s count.
    pack_cost: usize,
    /// With `Some(p)`, [`grid`] counts a cut by columns' multiply-adds `1 + 1/p` times
    /// (see [`Blocking::WIDE`]).
    column_split_penalty: Option<usize>,
    /// Whether a row-major `A` that is packed is packed a panel at a time, the tiles of
    /// each panel fetching the next one's rows into L2 ([`APanels::Pack`]), rather than
    /// [`Blocking::mc`] rows at a time (which then applies to other layouts of `A` only).
    a_ahead: bool,
}

impl Blocking {
    /// AMD Zen 4 (1 MiB L2 a core, a fast L3 shared by the core complex): 2 MiB blocks of
    /// `B`, read from L3 as the tiles stream them, and a large `B` packed once for both
    /// threads. 88–92 % of the FMA peak on two threads at n = 256 … 2048. A cut by columns
    /// wins only where a cut by rows would leave threads clearly unbalanced (few rows: a
    /// batch of 32 is three tiles): products of 208–256 rows by 256 × 256, which the
    /// unweighted count cut by columns, ran at 150–160 GFLOP/s against 200–210 by rows.
    const WIDE: Blocking = Blocking {
        nc: 32 * NR,
        mc: MC,
        share_b: true,
        pack_cost: 8,
        column_split_penalty: Some(8),
        a_ahead: false,
    };

    /// Intel (Sapphire Rapids: 2 MiB L2 a core, a slower mesh L3): 1 MiB blocks, which
    /// stay in L2, and each thread packing its own `B`. Against [`Blocking::WIDE`] there,
    /// on one thread 1024³ 152–158 → 171–185 GFLOP/s and 2048³ 149–157 → 168–180; on two,
    /// 1024³ 298–304 → 329–347 and 2048³ 294–305 → 320–348. Sharing the packing of `B`
    /// with these blocks cost 2–10 % at n = 512 … 2048 (the other core's cache is further
    /// away than packing is slow). Packing costs about 20 multiply-adds a value (its share
    /// of a 1024³ product's profile), and a cut by columns costs nothing extra: with a
    /// row-major `B` packed as the tiles use it, cuts by columns (each thread reading half
    /// of `B`) won on the squares. Each cut forced in turn, interleaved over 6 rounds,
    /// medians: 512³ 349 GFLOP/s by columns against 337 by rows, 1024³ 335 against 327,
    /// 2048³ 335 against 324; the grid's own choice against the old one (which counted a
    /// cut by columns' multiply-adds 1/32 more), 4 rounds: 2048³ 336 against 322, 512³
    /// 344 against 334, the fused QKV projection (`2048 × 768 × 256`, `B` transposed) 342
    /// against 337, 256³ and `2048 × 1024 × 256` within the noise. (Before that packing,
    /// 128-row products of training ran at 262–287 by rows against 290–306 by columns.)
    /// Blocks of 288 rows of `A` (576 KiB beside `B`'s 1 MiB in L2) against 192,
    /// interleaved over 6 rounds on two threads, medians: 1024³ 330 against 319 GFLOP/s
    /// (315–336 against 305–332), 2048³ 320 against 313, 512³ 330 against 329; 384 rows
    /// were no better than 192 (3 rounds). Packing a row-major `A` a panel ahead instead
    /// ([`Blocking::a_ahead`]): where packing it by blocks took 5–6 % of a 2048³ product's
    /// profile (reading `A` from L3), it took 2.6 %; on two threads, 4 rounds each
    /// timing both twice in the order new, old, old, new (for 2048³ old, new, new, old:
    /// the second timing of a shape in a process tends to run faster), 1024³ −1–+4 %
    /// (median +2 %) and 2048³ +3–5 %; over 4 rounds old-then-new, 512³ −1–+6 %, 256³
    /// −1–+5 %, the products of training (`128 × 784 × 512`, `128 × 512 × 784`, the QKV
    /// projection, `2048 × 1024 × 256`) −6–+9 %, medians +1.4–3.2 %. (Not measured on
    /// Zen 4, whose [`Blocking::WIDE`] keeps the blocks.)
    const NARROW: Blocking = Blocking {
        nc: 16 * NR,
        mc: 24 * MR,
        share_b: false,
        pack_cost: 20,
        column_split_penalty: None,
        a_ahead: true,
    };

    /// Columns of `B` packed at a time for sums `k` long: [`Blocking::nc`] for `k` ≥
    /// [`KC`], more for shorter sums (a block of the same size in bytes, up to 4 × `nc`),
    /// so that `A` is packed once per block of a wide, short product rather than once per
    /// `nc` columns (the QKV projection, `2048 × 768 × 256`, packed its `A` twice).
    fn cols(&self, k: usize) -> usize {
        let kc = KC.min(k).max(1);
        (self.nc * KC / kc).min(4 * self.nc) / NR * NR
    }

    /// The blocking for this machine's CPU: [`Blocking::WIDE`] on AMD's, otherwise
    /// [`Blocking::NARROW`] (read once, from `cpuid`).
    pub(crate) fn host() -> Blocking {
        static HOST: std::sync::OnceLock<Blocking> = std::sync::OnceLock::new();
        *HOST.get_or_init(|| {
            let id = __cpuid(0);
            // The vendor string "AuthenticAMD" lies in ebx, edx, ecx.
            let amd = [id.ebx, id.edx, id.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163];
            if amd {
                Blocking::WIDE
            } else {
                Blocking::NARROW
            }
        })
    }
}

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

/// The output: element `(i, j)` at `ptr + i·rs + j` (rows contiguous), or with
/// `transposed` at `ptr + j·rs + i` (columns contiguous: the product computed is `Cᵀ`'s).
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    rs: usize,
    transposed: bool,
}

impl Out {
    /// The output whose element `(0, 0)` is this one's `(i, j)` (computed without
    /// dereferencing; the caller's contract makes it a valid one).
    fn shifted(&self, i: usize, j: usize) -> Out {
        let offset = if self.transposed {
            j * self.rs + i
        } else {
            i * self.rs + j
        };
        Out {
            ptr: self.ptr.wrapping_add(offset),
            ..*self
        }
    }

    /// The address of element `(i, j)` (computed without dereferencing).
    fn at(&self, i: usize, j: usize) -> *mut f32 {
        self.shifted(i, j).ptr
    }
}

/// What the microkernel does to a tile of `C` as it stores the last slice of `k`: add a
/// bias, one value per column (a linear layer's `x·Wᵀ + b`) or per row (a convolution's
/// output channels), then optionally clamp at zero (ReLU). Fused into the store, the
/// epilogue costs no pass of its own over `C`.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue {
    pub bias: Bias,
    pub relu: bool,
}

/// The bias of an [`Epilogue`]: element `j` (or `i`) at `ptr + j`.
#[derive(Clone, Copy)]
pub(crate) enum Bias {
    None,
    /// One value per column of `C` (`n` values).
    Cols(*const f32),
    /// One value per row of `C` (`m` values).
    Rows(*const f32),
}

impl Epilogue {
    /// No bias, no activation: the plain product.
    #[cfg(test)]
    pub const NONE: Epilogue = Epilogue {
        bias: Bias::None,
        relu: false,
    };

    /// The epilogue of the sub-matrix of `C` whose element `(0, 0)` is `(i, j)` (computed
    /// without dereferencing).
    fn shifted(self, i: usize, j: usize) -> Epilogue {
        let bias = match self.bias {
            Bias::None => Bias::None,
            Bias::Cols(p) => Bias::Cols(p.wrapping_add(j)),
            Bias::Rows(p) => Bias::Rows(p.wrapping_add(i)),
        };
        Epilogue { bias, ..self }
    }

    /// The same epilogue for `Cᵀ`: a bias per column becomes one per row.
    pub(crate) fn transposed(self) -> Epilogue {
        let bias = match self.bias {
            Bias::None => Bias::None,
            Bias::Cols(p) => Bias::Rows(p),
            Bias::Rows(p) => Bias::Cols(p),
        };
        Epilogue { bias, ..self }
    }

    /// The value stored for `v` at `(i, j)`, for the scalar paths.
    ///
    /// # Safety
    /// The bias holds element `j` (per column) or `i` (per row).
    unsafe fn scalar(&self, v: f32, i: usize, j: usize) -> f32 {
        // SAFETY: the caller's contract.
        let v = v + unsafe {
            match self.bias {
                Bias::None => 0.0,
                Bias::Cols(p) => *p.add(j),
                Bias::Rows(p) => *p.add(i),
            }
        };
        // ReLU as `Tensor::relu`: NaN and -0 pass through.
        if self.relu && v < 0.0 { 0.0 } else { v }
    }
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
// SAFETY: the bias is only read, under the contract of `sgemm`.
unsafe impl Send for Epilogue {}
// SAFETY: as for `Send`: shared reads only.
unsafe impl Sync for Epilogue {}

/// Whether this machine runs [`sgemm`] (AVX-512F, and the portable switch not set).
pub(crate) fn available() -> bool {
    crate::simd_level() == "avx512"
}

/// `c = a · b` (with `accumulate`, `c += a · b`) for `a` `[m, k]` and `b` `[k, n]`, then
/// the epilogue `epi` on each element; `c`'s rows start `ldc` apart and hold their `n`
/// elements contiguously, or with `c_transposed` its columns start `ldc` apart and hold
/// their `m` elements contiguously (the caller computes a row-major `Dᵀ = Bᵀ·Aᵀ` this
/// way, when that orientation lets a large operand be read in place), blocked as
/// `blocking` says ([`Blocking::host`] for this machine; the tests run both).
///
/// With `parallel`, `c` is cut into one rectangle per thread of the pool ([`grid`]), each
/// computed by [`serial`] with its own packing buffers: one fork-join per product, and no
/// thread waits on another's packing.
///
/// # Safety
/// [`available`] is true; every element `(i, j)` the operands' strides address for `i <
/// m`, `j < n` (and `k`) lies inside a live allocation; no other thread writes `a` or `b`
/// or touches `c` during the call, and `c` does not overlap `a` or `b`; the epilogue's bias
/// holds `n` values (per column) or `m` (per row), and nobody writes it during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    blocking: Blocking,
    c: *mut f32,
    ldc: usize,
    (m, n, k): (usize, usize, usize),
    a: Operand,
    b: Operand,
    accumulate: bool,
    epi: Epilogue,
    parallel: bool,
    c_transposed: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let c = Out {
        ptr: c,
        rs: ldc,
        transposed: c_transposed,
    };
    let threads = if parallel { par::threads() } else { 1 };
    let (tm, tn) = grid(m, n, k, threads, blocking);
    // Threads that split the rows all read the whole of `b`: when its blocks are too large
    // to stay in a core's cache anyway, they pack it once, together.
    let mut store = Buffer::new();
    let shared = shares_b(tm, tn, (m, n, k), blocking)
        .then(|| SharedB::new(&mut store, n, k, blocking.cols(k)))
        .flatten();
    par::run(tm * tn, tm * tn > 1, |t| {
        let rows = share(m, tm, t / tn, ROW_UNIT);
        let cols = share(n, tn, t % tn, NR);
        if rows.is_empty() || cols.is_empty() {
            return;
        }
        let (i0, j0) = (rows.start, cols.start);
        // SAFETY: the rectangle's rows of a, columns of b and elements of c are in bounds
        // (the contract); no other task writes this rectangle of c; a shared packing
        // covers all of b's columns (j0 is 0 when tn is 1).
        unsafe {
            serial(
                c.shifted(i0, j0),
                (rows.len(), cols.len(), k),
                Operand {
                    ptr: a.at(i0, 0),
                    ..a
                },
                Operand {
                    ptr: b.at(0, j0),
                    ..b
                },
                accumulate,
                epi.shifted(i0, j0),
                shared.as_ref(),
                blocking,
            );
        }
    });
    drop(shared);
    recycle(store);
}

/// The largest block of `b` (in packed values: 1 MiB, a core's L2 cache on Zen 4) that each
/// thread splitting `C`'s rows packs for itself; larger ones they pack together. A block
/// that fits stays in the cache of the core that packed it, and reading half of it from
/// the other core's cache cost more than packing it twice. Measured with `gemm_shapes` on
/// two threads, interleaved over 4–6 rounds: shared, 256³ lost 6 %, 512³ (a 1 MiB block)
/// moved within the noise, and 1024³ gained 2.5–4 %.
const PRIVATE_B_MAX_BLOCK: usize = 1 << 18;

/// The largest `b` (in packed values) that threads splitting `C`'s rows pack together
/// (16 MiB: a 2048 × 2048 `b`); a larger one is packed by each thread for itself, block by
/// block, rather than held whole a second time.
const SHARED_B_MAX: usize = 1 << 22;

/// The whole of `b`, packed once for all the threads of a product whose rectangles are
/// whole rows of `C` (each thread needs every panel): block `(jc, pc)` of [`serial`]'s loop
/// has its own region, and its panels are packed by whichever threads reach the block
/// first, each claiming panels from the block's counter. A thread needing a block packs
/// the panels nobody has claimed yet, then waits for those others are packing: a claimed
/// panel is always being packed by a running thread, so the wait ends whether the other
/// threads run beside it or (a nested or busy team) one after another. Regions are
/// written once, so no thread waits for another to finish reading.
struct SharedB {
    ptr: *mut f32,
    /// Values of one block's region ([`SharedB::block_len`]).
    region: usize,
    /// Columns of a block ([`Blocking::nc`]).
    nc: usize,
    /// Blocks along `k`, for the index of `blocks`.
    k_blocks: usize,
    /// Per block, in `(jc / nc) · k_blocks + pc / KC` order: the next panel to claim and
    /// the panels packed.
    blocks: Vec<(AtomicUsize, AtomicUsize)>,
    /// Set when a thread panicked while packing, so that the others stop waiting.
    failed: AtomicBool,
}

// SAFETY: every region of the buffer is written by exactly one thread (the one that
// claimed its panel) before any thread reads it (after the block's count says it is
// packed, with acquire/release ordering); the buffer outlives the fork-join.
unsafe impl Sync for SharedB {}

impl SharedB {
    /// The shared packing of a `k × n` `b` in `store` (taken from the cache of freed
    /// buffers, where [`recycle`] puts it back), or `None` when `b` is larger than
    /// [`SHARED_B_MAX`].
    fn new(store: &mut Buffer<f32>, n: usize, k: usize, nc: usize) -> Option<SharedB> {
        let (region, k_blocks) = (Self::block_len(n, k, nc), k.div_ceil(KC));
        let blocks = n.div_ceil(nc).checked_mul(k_blocks)?;
        let len = blocks.checked_mul(region)?;
        if len > SHARED_B_MAX {
            return None;
        }
        grow(store, len + ALIGN);
        let ptr = aligned(store, len).as_mut_ptr();
        let blocks = (0..blocks)
            .map(|_| (AtomicUsize::new(0), AtomicUsize::new(0)))
            .collect();
        Some(SharedB {
            ptr,
            region,
            nc,
            k_blocks,
            blocks,
            failed: AtomicBool::new(false),
        })
    }

    /// Values of one block's region: `KC × nc` at most.
    fn block_len(n: usize, k: usize, nc: usize) -> usize {
        KC.min(k) * nc.min(n.next_multiple_of(NR))
    }

    /// The packed block of `b`'s rows `pc..pc + kc`, columns `jc..jc + nc` (a block of
    /// [`serial`]'s loop), packing the panels of it that no thread has claimed.
    ///
    /// # Safety
    /// `b` is the operand this packing was made for (`k × n`, in bounds by the contract
    /// of [`sgemm`]), and `(pc, jc, kc, nc)` one of [`serial`]'s blocks.
    unsafe fn block(
        &self,
        b: Operand,
        (pc, jc): (usize, usize),
        (kc, nc): (usize, usize),
    ) -> *const f32 {
        let index = jc / self.nc * self.k_blocks + pc / KC;
        let (next, done) = &self.blocks[index];
        let region = self.ptr.wrapping_add(index * self.region);
        let panels = nc.div_ceil(NR);
        loop {
            let p = next.fetch_add(1, Ordering::Relaxed);
            if p >= panels {
                break;
            }
            // Marks the packing failed if it unwinds, so that no thread waits forever.
            let guard = FailOnUnwind(&self.failed);
            // SAFETY: panel p of the block's region (inside the buffer: the block holds
            // `panels` panels of kc × NR), claimed by this thread alone; its rows and
            // columns of b are in bounds (the caller's contract).
            unsafe {
                let out = std::slice::from_raw_parts_mut(region.add(p * kc * NR), kc * NR);
                pack_b_panel(out, b, (pc, jc + p * NR), kc, NR.min(nc - p * NR));
            }
            std::mem::forget(guard);
            done.fetch_add(1, Ordering::Release);
        }
        let mut spins = 0u32;
        while done.load(Ordering::Acquire) < panels {
            assert!(
                !self.failed.load(Ordering::Relaxed),
                "another thread panicked packing a shared operand"
            );
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        region
    }
}

/// Sets its flag when dropped, which only happens while unwinding (it is forgotten
/// otherwise).
struct FailOnUnwind<'a>(&'a AtomicBool);

impl Drop for FailOnUnwind<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Rows are cut between threads in multiples of this: a thread's last tile may be ragged,
/// and a tile of 4 or 8 rows runs a kernel of that many rows, so 256 rows on two threads
/// are 128 each (10 tiles and one of 8 rows) rather than 132 and 124 (11 tiles each, the
/// last of 4 rows: 3 % more multiply-adds on the critical thread).
const ROW_UNIT: usize = 4;

/// The fewest rows of `C` per thread for which threads cutting `C` by rows pack `b`
/// together. A shared panel is written by one core and read by the other, so the next
/// product's packing must first take its cache lines back from the other core: cheap
/// when both vCPUs sit on one core complex, several times the cost of the packing when
/// the hypervisor puts them on different ones (this machine changes between the two
/// every few seconds). Only many rows per thread amortise that. Measured with the two
/// packings interleaved in one process over 10 rounds: `128 × 784 × 512` (64 rows a
/// thread) ran at 104–120 GFLOP/s shared against 150–190 private in the slow phases and
/// 2–5 % below private in the fast ones; `256 × 1024 × 1024` 5 % faster shared in the
/// fast phases and 5–15 % slower in the slow; from 512 rows (256 a thread) on, sharing
/// gained 2–5 % in both.
const SHARED_B_MIN_ROWS: usize = 256;

/// Whether the threads of a `tm × tn` cut of an `m × n` product with `k`-long sums pack
/// `b` together ([`SharedB`]).
fn shares_b(tm: usize, tn: usize, (m, n, k): (usize, usize, usize), blocking: Blocking) -> bool {
    blocking.share_b
        && tm > 1
        && tn == 1
        && k > 0
        && m / tm >= SHARED_B_MIN_ROWS
        && SharedB::block_len(n, k, blocking.cols(k)) > PRIVATE_B_MAX_BLOCK
}

/// How to cut an `m × n` product into `tm × tn` rectangles for `threads` threads
/// (`tm · tn ≤ threads`): the cut that minimises the largest rectangle's work, counting the
/// packing each rectangle does (its rows of `A`, once per block of `B`'s columns, and its
/// columns of `B`, `k` values each) beside its multiply-adds, in whole row units and column
/// tiles.
fn grid(m: usize, n: usize, k: usize, threads: usize, blocking: Blocking) -> (usize, usize) {
    let (mu, nu) = (m.div_ceil(ROW_UNIT), n.div_ceil(NR));
    let mut best = (1, 1);
    let mut best_cost = usize::MAX;
    for tm in 1..=threads.min(mu) {
        let tn = (threads / tm).min(nu);
        let rows = mu.div_ceil(tm) * ROW_UNIT;
        let cols = nu.div_ceil(tn) * NR;
        // Multiply-adds, plus the packing; threads that share the packing of B each do
        // their part of it.
        let packed_rows = rows * cols.div_ceil(blocking.cols(k));
        let packed_cols = if shares_b(tm, tn, (m, n, k), blocking) {
            cols.div_ceil(tm)
        } else {
            cols
        };
        // Threads that split the columns each write part of every row of C: on Zen 4
        // measured 20–25 % slower than a split by rows at m = 208–256, n = k = 256.
        let shared_rows = match blocking.column_split_penalty {
            Some(p) if tn > 1 => rows * cols * k / p,
            _ => 0,
        };
        let cost =
            rows * cols * k + blocking.pack_cost * (packed_rows + packed_cols) * k + shared_rows;
        if cost < best_cost {
            (best, best_cost) = ((tm, tn), cost);
        }
    }
    best
}

/// Part `p` of `len` cut into `parts` pieces of whole `unit`s (the last may be ragged), as
/// even as whole units allow.
fn share(len: usize, parts: usize, p: usize, unit: usize) -> std::ops::Range<usize> {
    let units = len.div_ceil(unit);
    let lo = (p * units / parts * unit).min(len);
    let hi = ((p + 1) * units / parts * unit).min(len);
    lo..hi
}

/// One thread's product `c (+)= a · b`, blocked the way BLIS blocks it (see the module
/// docs), packing `B` [`Blocking::nc`] columns and `A` [`Blocking::mc`] rows at a time.
///
/// # Safety
/// As [`sgemm`], for this rectangle of `c`.
#[allow(clippy::too_many_arguments)]
unsafe fn serial(
    c: Out,
    (m, n, k): (usize, usize, usize),
    a: Operand,
    b: Operand,
    accumulate: bool,
    epi: Epilogue,
    shared: Option<&SharedB>,
    blocking: Blocking,
) {
    let (block_cols, block_rows) = (blocking.cols(k), blocking.mc);
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                // SAFETY: element (i, j) of c and the bias's elements (the contract).
                unsafe {
                    let v = c.at(i, j);
                    let base = if accumulate { *v } else { 0.0 };
                    *v = epi.scalar(base, i, j);
                }
            }
        }
        return;
    }
    // A row-major `a` feeding few panels of `b` is read where it lies: packing it costs
    // more than the panel's contiguity saves.
    let a_in_place = a.cs == 1 && n <= in_place_max_n(a.rs);
    // Where the blocking says so, a row-major `a` that is packed is packed a panel at a
    // time, one row of tiles ahead ([`APanels::Pack`]), all its rows in one block.
    let a_ahead = blocking.a_ahead && !a_in_place && a.cs == 1;
    let block_rows = if a_ahead { m } else { block_rows };
    let (b_len, a_len) = (
        if shared.is_some() {
            0
        } else {
            KC.min(k) * block_cols.min(n.next_multiple_of(NR))
        },
        if a_in_place {
            0
        } else if a_ahead {
            MR * KC.min(k)
        } else {
            block_rows.min(m.next_multiple_of(MR)) * KC.min(k)
        },
    );
    let (mut bbuf, mut abuf) = PACKING.take();
    grow(&mut bbuf, b_len + ALIGN);
    grow(&mut abuf, a_len + ALIGN);
    let bpack = aligned(&mut bbuf, b_len).as_mut_ptr();
    let apack = aligned(&mut abuf, a_len);
    // A row-major `b` is packed by the first row of tiles, as they read it.
    let fill = shared.is_none() && b.cs == 1;
    for jc in (0..n).step_by(block_cols) {
        let nc = block_cols.min(n - jc);
        let panels = nc.div_ceil(NR);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let add = accumulate || pc > 0;
            let last = pc + kc == k;
            let packed = match shared {
                // SAFETY: the shared packing is of this b (the caller's contract), and
                // this is one of the loop's blocks.
                Some(shared) => unsafe { shared.block(b, (pc, jc), (kc, nc)) },
                None if fill => bpack.cast_const(),
                None => {
                    // SAFETY: rows pc..pc + kc and columns jc..jc + nc of b are in bounds
                    // (the contract); the buffer holds `panels` panels of kc × NR.
                    unsafe {
                        pack_b(
                            std::slice::from_raw_parts_mut(bpack, b_len),
                            b,
                            (pc, jc),
                            (kc, nc),
                        )
                    };
                    bpack.cast_const()
                }
            };
            for ic in (0..m).step_by(block_rows) {
                let bp = if fill && ic == 0 {
                    BPanels::Fill {
                        src: Operand {
                            ptr: b.at(pc, jc),
                            ..b
                        },
                        dst: bpack,
                    }
                } else {
                    BPanels::Packed(packed)
                };
                let mc = block_rows.min(m - ic);
                // SAFETY: rows ic..ic + mc of a and of c are in bounds; the packed
                // operands are only read by the tiles, but for the panels of b the first
                // row of tiles writes (with `fill`, for the first block of rows) before
                // any other tile reads them.
                unsafe {
                    let ap = if a_in_place {
                        APanels::InPlace(Operand {
                            ptr: a.at(ic, pc),
                            ..a
                        })
                    } else if a_ahead {
                        APanels::Pack {
                            src: Operand {
                                ptr: a.at(ic, pc),
                                ..a
                            },
                            panel: apack.as_mut_ptr(),
                        }
                    } else {
                        pack_a(apack, a, (ic, pc), (mc, kc));
                        APanels::Packed(apack)
                    };
                    let fin = last.then_some(epi);
                    tiles(ap, bp, (kc, mc), 0..panels, c, (ic, jc), nc, add, fin);
                }
            }
        }
    }
    PACKING.set((bbuf, abuf));
}

/// The widest product (columns of this thread's rectangle) whose row-major `A` is read in
/// place rather than packed: up to 8 panels of `B`, 4 when `A`'s rows lie a multiple of
/// 4 KiB apart (its 12 rows would then share one set of the 8-way L1 cache). Measured
/// with `gemm_shapes` on two threads: [32, 784]·[784, 512]ᵀ 118 → 170 GFLOP/s, 256³
/// 141–176 → 175–184, and 1024 × 1024 products (which keep packing) unchanged; reading in
/// place for 512 columns lost 8 % at 1024³.
fn in_place_max_n(rs: usize) -> usize {
    if rs.is_multiple_of(1024) {
        4 * NR
    } else {
        8 * NR
    }
}

/// Where the tiles read `B`: packed panels (`[kc, NR]` each), or, for the first row of
/// tiles, the row-major operand itself, which they copy into the panels at `dst` as they
/// read it (so that the packing's loads overlap the multiply-adds).
#[derive(Clone, Copy)]
enum BPanels {
    Packed(*const f32),
    Fill { src: Operand, dst: *mut f32 },
}

/// Where the tiles read `A`: packed panels of [`MR`] rows (`[kc, MR]` each), or the
/// row-major operand itself (rows `rs` apart, contiguous along `k`).
#[derive(Clone, Copy)]
enum APanels<'a> {
    Packed(&'a [f32]),
    InPlace(Operand),
    /// A row-major operand packed one panel at a time into `panel` (`kc × MR` values),
    /// just before the panel's row of tiles, whose tiles fetch the next panel's rows into
    /// L2 as they run.
    Pack {
        src: Operand,
        panel: *mut f32,
    },
}

/// Slack, in values, that lets a packing buffer start on a cache line.
const ALIGN: usize = 16;

/// The `len` values of `buf` (which holds `len + ALIGN`) that start on a 64-byte boundary:
/// a vector load that straddles two cache lines costs two, so a packed panel read at an
/// odd offset would slow every step of the microkernel.
fn aligned(buf: &mut [f32], len: usize) -> &mut [f32] {
    let skip = buf.as_ptr().align_offset(64).min(ALIGN);
    &mut buf[skip..skip + len]
}

thread_local! {
    /// This thread's packing buffers (for `B`'s block and `A`'s), kept from one product
    /// to the next: at most `KC × nc` and `mc × KC` values (up to 2.4 MiB). Taking them
    /// from the allocator per product cost a `malloc` and a zero fill for every small
    /// product of a training step.
    static PACKING: Cell<(Buffer<f32>, Buffer<f32>)> =
        const { Cell::new((Buffer::new(), Buffer::new())) };
}

/// Makes `buf` hold at least `len` values (its contents are then unspecified), handing
/// a buffer too small back to the cache of freed buffers.
fn grow(buf: &mut Buffer<f32>, len: usize) {
    if buf.len() < len {
        recycle(std::mem::replace(buf, alloc::<f32>(len)));
    }
}

/// Hands `buf` to the cache of freed buffers (which keeps large ones for the next
/// allocation of their length).
fn recycle(buf: Buffer<f32>) {
    let n = buf.len();
    if n > 0 {
        drop(crate::Tensor::from_contiguous(buf, &[n]));
    }
}

/// Every tile of the packed `A` block (`mc` rows) times the packed `B` panels `panels`,
/// into `c` at `(ic, jc)` (only the first `nc` columns of the last panel are written),
/// applying `epi` (given for the last slice of `k` only).
///
/// # Safety
/// As [`sgemm`]: the tiles' elements of `c` are in bounds and written by no other task;
/// `ap` holds `mc.div_ceil(MR)` panels (or is the operand's rows `0..mc`, columns `0..kc`,
/// with [`APanels::Pack`] beside room for one panel that only this call uses) and `bp`
/// the panels of `kc` rows (or, with [`BPanels::Fill`], the operand's rows
/// `0..kc`, columns `0..nc`, and room for those panels, which only this call uses).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn tiles(
    ap: APanels<'_>,
    bp: BPanels,
    (kc, mc): (usize, usize),
    panels: std::ops::Range<usize>,
    c: Out,
    (ic, jc): (usize, usize),
    nc: usize,
    add: bool,
    epi: Option<Epilogue>,
) {
    for ir in 0..mc.div_ceil(MR) {
        let rows = MR.min(mc - ir * MR);
        // With `Pack`, the panel is packed now (from L2, but for the first), and each
        // tile of its row fetches one row of the next panel into L2, a line every
        // [`AHEAD_EVERY`] steps: the packing's misses then overlap the multiply-adds.
        let next = match ap {
            APanels::Pack { src, panel } => {
                // SAFETY: rows ir·MR.. of the operand (kc values each, the contract) and
                // the panel's kc × MR values, which only this call uses.
                unsafe {
                    let panel = std::slice::from_raw_parts_mut(panel, kc * MR);
                    pack_a_rows(panel, src.at(ir * MR, 0), src.rs, kc, rows);
                }
                let next = (ir + 1) * MR;
                (next < mc).then(|| (src.at(next, 0), MR.min(mc - next), src.rs))
            }
            _ => None,
        };
        for jr in panels.clone() {
            // (A prefetch of `next`'s row, advancing a line every AHEAD_EVERY steps.)
            let ahead =
                next.map(|(row, rows, rs)| row.wrapping_add((jr - panels.start) % rows * rs));
            let cols = NR.min(nc - jr * NR);
            // SAFETY: panel ir of A (packed: kc × MR; in place: rows ir·MR.. of the
            // operand), panel jr of the packed B (written by the tile of row 0 when
            // filling, read by those after it), and the tile's rows and columns of c.
            unsafe {
                let (b, fill) = match bp {
                    BPanels::Packed(p) => ((p.add(jr * kc * NR), NR), None),
                    BPanels::Fill { src, dst } => {
                        let panel = dst.add(jr * kc * NR);
                        if ir == 0 {
                            ((src.at(0, jr * NR), src.rs), Some(panel))
                        } else {
                            ((panel.cast_const(), NR), None)
                        }
                    }
                };
                let (i, j) = (ic + ir * MR, jc + jr * NR);
                let t = c.shifted(i, j);
                let e = epi.map(|e| e.shifted(i, j));
                let (a, packed) = match ap {
                    APanels::Packed(ap) => ((ap.as_ptr().add(ir * kc * MR), 0), true),
                    APanels::Pack { panel, .. } => ((panel.cast_const(), 0), true),
                    APanels::InPlace(op) => ((op.at(ir * MR, 0), op.rs), false),
                };
                // Without a next panel to fetch, the tile's own panel of A (in cache).
                let ahead = ahead.unwrap_or(a.0);
                // A ragged tile of up to 4 or 8 rows runs a kernel of that many rows
                // (a third or two thirds of the multiply-adds), and one of up to 16
                // columns a kernel of one vector a row (half of them).
                macro_rules! run {
                    ($packed:literal, $fill:literal) => {{
                        macro_rules! width {
                            ($r:expr) => {{
                                if cols > 16 {
                                    micro::<$packed, $fill, $r, true>(
                                        kc, a, b, fill, ahead, t, rows, cols, add, e,
                                    )
                                } else {
                                    micro::<$packed, $fill, $r, false>(
                                        kc, a, b, fill, ahead, t, rows, cols, add, e,
                                    )
                                }
                            }};
                        }
                        match rows {
                            ..=4 => width!(4),
                            5..=8 => width!(8),
                            _ => width!(MR),
                        }
                    }};
                }
                match (packed, fill.is_some()) {
                    (true, false) => run!(true, false),
                    (true, true) => run!(true, true),
                    (false, false) => run!(false, false),
                    (false, true) => run!(false, true),
                }
            }
        }
    }
}

/// Steps of `k` between two of the prefetches a tile makes for the next panel of `A`
/// (with [`APanels::Pack`]): a line of one of its rows each time.
const AHEAD_EVERY: usize = 16;

/// The `R` × 32 microkernel (`R` ≤ [`MR`]: 12, or 8 and 4 for ragged tiles; without
/// `WIDE`, `R` × 16 for a ragged tile of up to 16 columns, which neither reads nor
/// multiplies the second vector of `B`'s steps): `tile (+)= a_panel · b_panel` over `kc`
/// steps, then the epilogue `epi` if given, writing the first `rows` (≤ `R`) rows and
/// `cols` (≤ 16 without `WIDE`) columns of the tile. With `PACKED`,
/// `a.0` is a packed panel (`kc × MR`, of which the first `R` values of each step are
/// read); otherwise it is the first of `rows` row-major rows `a.1` apart, each read for
/// `kc` contiguous values (the missing rows of a ragged tile re-read the last one; their
/// results are not stored). Each element of `C` gets the same operations in the same
/// order whatever `R`. `b.0` is a packed panel (`kc × NR`), or with `FILL` the first of
/// `kc` rows of `B` `b.1` apart, whose first `cols` values each step reads and stores,
/// zero-padded to [`NR`], into the panel `fill`. With `PACKED`, step `kk` of every
/// [`AHEAD_EVERY`] fetches `ahead + kk` into L2 (a row of the next panel of `A`, or any
/// address: a prefetch does not fault).
///
/// # Safety
/// `a` holds those values, and `b` those values; with `FILL`, `fill` holds `kc × NR`
/// values that nothing else reads or writes during the call; the tile's `rows × cols`
/// elements of `c` are in bounds and unshared; the epilogue's bias holds the tile's
/// `cols` (or `rows`) values.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn micro<const PACKED: bool, const FILL: bool, const R: usize, const WIDE: bool>(
    kc: usize,
    (a, lda): (*const f32, usize),
    (b, ldb): (*const f32, usize),
    fill: Option<*mut f32>,
    ahead: *const f32,
    c: Out,
    rows: usize,
    cols: usize,
    add: bool,
    epi: Option<Epilogue>,
) {
    let ldc = c.rs;
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
        // A tile of c that is accumulated into is read after the loop: start fetching it
        // now, so that its cache misses overlap the multiply-adds. A tile that is only
        // written is not fetched: its stores wait for their lines in the store buffer while
        // the next tile runs, whereas 36 prefetches at once fill the line-fill buffers and
        // hold up this tile's own loads. Measured with `gemm_shapes` on Sapphire Rapids,
        // interleaved over 3–4 rounds: attention's scores (128 products of `128 × 128 × 32`,
        // `B` transposed) 210–230 → 234–249 GFLOP/s, the QKV projection 0–9 % faster, the
        // squares and the 128-row products of training within the noise.
        if add && c.transposed {
            for j in 0..cols {
                let col = c.ptr.add(j * ldc).cast::<i8>();
                _mm_prefetch::<_MM_HINT_T0>(col);
                _mm_prefetch::<_MM_HINT_T0>(col.wrapping_add(44));
            }
        } else if add {
            for r in 0..rows {
                let row = c.ptr.add(r * ldc).cast::<i8>();
                _mm_prefetch::<_MM_HINT_T0>(row);
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64));
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(124));
            }
        }
        debug_assert!(R <= MR && rows <= R && (WIDE || cols <= 16));
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let mut pb = b;
        let ldb = if FILL { ldb } else { NR };
        let mut dst = fill.unwrap_or(std::ptr::null_mut());
        // One step of `B`: from its panel, or (with `FILL`) from the operand's row, which
        // is also stored into the panel. The panel streams from L2 and the operand from
        // further away: fetch them ahead (on Sapphire Rapids, 1024³ on one thread
        // 184–194 → 197–202 GFLOP/s for the panels).
        macro_rules! step_b {
            () => {{
                let ahead = pb.wrapping_add(PREFETCH_STEPS * ldb);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16).cast());
                let (b0, b1) = if FILL {
                    let b0 = _mm512_maskz_loadu_ps(lo, pb);
                    let b1 = if WIDE {
                        _mm512_maskz_loadu_ps(hi, pb.wrapping_add(16))
                    } else {
                        _mm512_setzero_ps()
                    };
                    _mm512_storeu_ps(dst, b0);
                    _mm512_storeu_ps(dst.add(16), b1);
                    dst = dst.add(NR);
                    (b0, b1)
                } else if WIDE {
                    (_mm512_loadu_ps(pb), _mm512_loadu_ps(pb.add(16)))
                } else {
                    (_mm512_loadu_ps(pb), _mm512_setzero_ps())
                };
                pb = pb.wrapping_add(ldb);
                (b0, b1)
            }};
        }
        if PACKED {
            let mut pa = a;
            for kk in 0..kc {
                if kk % AHEAD_EVERY == 0 {
                    _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(kk).cast());
                }
                let (b0, b1) = step_b!();
                for (r, acc) in acc.iter_mut().enumerate() {
                    let ar = _mm512_set1_ps(*pa.add(r));
                    acc[0] = _mm512_fmadd_ps(ar, b0, acc[0]);
                    if WIDE {
                        acc[1] = _mm512_fmadd_ps(ar, b1, acc[1]);
                    }
                }
                pa = pa.add(MR);
            }
        } else {
            if !FILL && WIDE && R == MR && rows == MR {
                // A full tile: the loop in assembly (see `in_place_steps`).
                let mut full: [[__m512; 2]; MR] = std::array::from_fn(|r| acc[r.min(R - 1)]);
                in_place_steps(kc, (a, lda), b, &mut full);
                acc.copy_from_slice(&full[..R]);
            } else {
                // Each row's pointer, the missing rows of a ragged tile on the last one.
                let row: [*const f32; R] = std::array::from_fn(|r| a.add(r.min(rows - 1) * lda));
                for kk in 0..kc {
                    let (b0, b1) = step_b!();
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let ar = _mm512_set1_ps(*row[r].add(kk));
                        acc[0] = _mm512_fmadd_ps(ar, b0, acc[0]);
                        if WIDE {
                            acc[1] = _mm512_fmadd_ps(ar, b1, acc[1]);
                        }
                    }
                }
            }
        }
        let (col_bias, row_bias, relu) = match epi {
            None => (None, None, false),
            Some(Epilogue { bias, relu }) => match bias {
                Bias::None => (None, None, relu),
                Bias::Cols(p) => (Some(p), None, relu),
                Bias::Rows(p) => (None, Some(p), relu),
            },
        };
        if c.transposed {
            // Column j of the tile is a contiguous run of `rows` values of c: the tile is
            // transposed in registers, 16 columns at a time, and each column gets the
            // same operations in the same order as the rows below.
            let mask = lanes(rows);
            let row_bias = row_bias.map(|p| _mm512_maskz_loadu_ps(mask, p));
            for half in 0..cols.div_ceil(16) {
                let mut block = [_mm512_setzero_ps(); 16];
                for (v, acc) in block.iter_mut().zip(&acc) {
                    // (`acc[half]` would index the tile at run time, which keeps it in
                    // memory for every tile, transposed or not.)
                    *v = if half == 0 { acc[0] } else { acc[1] };
                }
                let block = transpose16(block);
                for (jj, &v) in block.iter().enumerate().take(cols - 16 * half) {
                    let (j, mut v) = (16 * half + jj, v);
                    let col = c.ptr.add(j * ldc);
                    if add {
                        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, col));
                    }
                    if let Some(p) = col_bias {
                        v = _mm512_add_ps(v, _mm512_set1_ps(*p.add(j)));
                    }
                    if let Some(b) = row_bias {
                        v = _mm512_add_ps(v, b);
                    }
                    _mm512_mask_storeu_ps(col, mask, clamp(v, relu));
                }
            }
            return;
        }
        let col_bias = col_bias.map(|p| {
            (
                _mm512_maskz_loadu_ps(lo, p),
                _mm512_maskz_loadu_ps(hi, p.add(16)),
            )
        });
        // Each step of the epilogue is a loop over all `R` rows without branches (the rows
        // past `rows` of a ragged tile use empty masks on the last row), so that the loops
        // unroll and `acc` stays in registers. (One loop over `rows` with the steps' tests
        // inside kept the tile in memory, cleared with `memset` for every tile: 4.5 % of
        // attention's k = 32 scores.) Each element gets the same operations in the same
        // order as before: `+ c`, `+ column bias`, `+ row bias`, ReLU.
        let masks = |r: usize| if r < rows { (lo, hi) } else { (0, 0) };
        let row = |r: usize| c.ptr.add(r.min(rows - 1) * ldc);
        if add {
            for (r, acc) in acc.iter_mut().enumerate() {
                let ((lo, hi), row) = (masks(r), row(r));
                acc[0] = _mm512_add_ps(acc[0], _mm512_maskz_loadu_ps(lo, row));
                acc[1] = _mm512_add_ps(acc[1], _mm512_maskz_loadu_ps(hi, row.add(16)));
            }
        }
        if let Some((b0, b1)) = col_bias {
            for acc in acc.iter_mut() {
                acc[0] = _mm512_add_ps(acc[0], b0);
                acc[1] = _mm512_add_ps(acc[1], b1);
            }
        }
        if let Some(p) = row_bias {
            for (r, acc) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*p.add(r.min(rows - 1)));
                acc[0] = _mm512_add_ps(acc[0], b);
                acc[1] = _mm512_add_ps(acc[1], b);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let ((lo, hi), row) = (masks(r), row(r));
            _mm512_mask_storeu_ps(row, lo, clamp(acc[0], relu));
            _mm512_mask_storeu_ps(row.add(16), hi, clamp(acc[1], relu));
        }
    }
}

// The assembly's byte offsets (128 a step of `B`'s panel, 12 rows) assume these.
const _: () = assert!(NR * size_of::<f32>() == 128 && MR == 12);

/// One row of [`in_place_steps`]' step: row `r`'s value at `[base + index + disp]`,
/// broadcast and multiplied into the tile's two vectors of that row.
macro_rules! in_place_row {
    ($base:literal, $index:literal, $disp:literal, $x:literal, $y:literal) => {
        concat!(
            "vbroadcastss zmm24, dword ptr [{",
            $base,
            "}",
            $index,
            " + ",
            $disp,
            "]\n",
            "vfmadd231ps ",
            $x,
            ", zmm24, zmm25\n",
            "vfmadd231ps ",
            $y,
            ", zmm24, zmm26\n",
        )
    };
}

/// The step of `B` `$b` bytes along its panel, loaded into `zmm25` and `zmm26`.
macro_rules! in_place_b {
    ($b:literal) => {
        concat!(
            "vmovups zmm25, [{pb} + ",
            $b,
            "]\n",
            "vmovups zmm26, [{pb} + ",
            $b,
            " + 64]\n",
        )
    };
}

/// Rows 0–7 of a step, `$disp` bytes along the rows of `A`: rows 0–4 (with 3 at `3·l`)
/// from the base `p0`, rows 5–7 from `p5`.
macro_rules! in_place_rows_0_to_7 {
    ($disp:literal) => {
        concat!(
            in_place_row!("p0", "", $disp, "zmm0", "zmm1"),
            in_place_row!("p0", " + {l}", $disp, "zmm2", "zmm3"),
            in_place_row!("p0", " + {l}*2", $disp, "zmm4", "zmm5"),
            in_place_row!("p0", " + {l3}", $disp, "zmm6", "zmm7"),
            in_place_row!("p0", " + {l}*4", $disp, "zmm8", "zmm9"),
            in_place_row!("p5", "", $disp, "zmm10", "zmm11"),
            in_place_row!("p5", " + {l}", $disp, "zmm12", "zmm13"),
            in_place_row!("p5", " + {l}*2", $disp, "zmm14", "zmm15"),
        )
    };
}

/// One step of [`in_place_steps`]: `B`'s step (and the prefetch of the one
/// [`PREFETCH_STEPS`] ahead), then the 12 rows (8 from `p0`, 9 from `p5`, 10 and 11 from
/// `p10`).
macro_rules! in_place_step {
    ($disp:literal, $b:literal) => {
        concat!(
            in_place_b!($b),
            "prefetcht0 [{pb} + {ahead} + ",
            $b,
            "]\n",
            "prefetcht0 [{pb} + {ahead} + ",
            $b,
            " + 64]\n",
            in_place_rows_0_to_7!($disp),
            in_place_row!("p0", " + {l}*8", $disp, "zmm16", "zmm17"),
            in_place_row!("p5", " + {l}*4", $disp, "zmm18", "zmm19"),
            in_place_row!("p10", "", $disp, "zmm20", "zmm21"),
            in_place_row!("p10", " + {l}", $disp, "zmm22", "zmm23"),
        )
    };
}

/// One step of [`in_place_steps_8`]: `B`'s step and 8 rows.
macro_rules! in_place_step_8 {
    ($disp:literal, $b:literal) => {
        concat!(in_place_b!($b), in_place_rows_0_to_7!($disp))
    };
}

/// The loop of `kc` steps over rows `lda` values apart from `a` and a panel `b`, one
/// `$step` at a time: groups of 4 steps (the rows' displacements 0, 4, 8, 12 bytes, the
/// panel's 0, 128, 256, 384, then `$bump` advances the row bases by 16 bytes), then the
/// `kc % 4` steps left one at a time (`$bump_1`: by 4). `$named` are further named
/// operands; the tile `$acc`'s rows 0–7 live in `zmm0`–`zmm15`, `$rows` binds any more.
macro_rules! in_place_loop {
    (
        $step:ident, $bump:literal, $bump_1:literal, ($kc:expr, $a:expr, $lda:expr, $b:expr),
        [$($named:tt)*], $acc:ident, [$($rows:tt)*]
    ) => {
        std::arch::asm!(
            "mov {rest:e}, {n:e}",
            "and {rest:e}, 3",
            "shr {n}, 2",
            "jz 3f",
            "2:",
            $step!("0", "0"),
            $step!("4", "128"),
            $step!("8", "256"),
            $step!("12", "384"),
            $bump,
            "add {pb}, 512",
            "dec {n}",
            "jnz 2b",
            "3:",
            "test {rest:e}, {rest:e}",
            "jz 5f",
            "4:",
            $step!("0", "0"),
            $bump_1,
            "add {pb}, 128",
            "dec {rest:e}",
            "jnz 4b",
            "5:",
            rest = out(reg) _,
            n = inout(reg) $kc => _,
            pb = inout(reg) $b => _,
            p0 = inout(reg) $a => _,
            p5 = inout(reg) $a.wrapping_add(5 * $lda) => _,
            l = in(reg) $lda * size_of::<f32>(),
            l3 = in(reg) 3 * $lda * size_of::<f32>(),
            $($named)*
            out("zmm24") _,
            out("zmm25") _,
            out("zmm26") _,
            inout("zmm0") $acc[0][0],
            inout("zmm1") $acc[0][1],
            inout("zmm2") $acc[1][0],
            inout("zmm3") $acc[1][1],
            inout("zmm4") $acc[2][0],
            inout("zmm5") $acc[2][1],
            inout("zmm6") $acc[3][0],
            inout("zmm7") $acc[3][1],
            inout("zmm8") $acc[4][0],
            inout("zmm9") $acc[4][1],
            inout("zmm10") $acc[5][0],
            inout("zmm11") $acc[5][1],
            inout("zmm12") $acc[6][0],
            inout("zmm13") $acc[6][1],
            inout("zmm14") $acc[7][0],
            inout("zmm15") $acc[7][1],
            $($rows)*
            options(nostack, readonly),
        )
    };
}

/// The `kc` steps of a full 12 × 32 tile whose `A` is read in place (`micro`'s loop for
/// `R` = 12, all 12 rows, without `FILL`): `acc += a · b`, `a.0` the first of 12 rows
/// `a.1` values apart, `b` a packed panel (`kc × NR`), each element getting the same
/// multiply-adds in the same order as in `micro`'s loop.
///
/// Written in assembly for the rows' addresses: the compiled loop kept 12 row pointers as
/// one pointer and a chain of 8 dependent `add`s of the stride each step, 9 integer
/// instructions beside the 24 multiply-adds (the packed loop has 2). Here three bases
/// (rows 0, 5 and 10) with the stride `l` and `3·l` as scaled indices reach every row
/// (row 8 is `[p0 + 8·l]`, row 9 `[p5 + 4·l]`), 4 steps share one round of increments,
/// and the broadcasts are loads. Measured with `gemm_shapes` on Sapphire Rapids, old and
/// new binaries alternated over 3 rounds each: 256³ +2.7 %, 512³ +4.9 %, attention's
/// scores (`128 × [128 × 128 × 32]`, `B` transposed) +4.1 %, `[128, 784]·[512, 784]ᵀ` and
/// `[32, 784]·[512, 784]ᵀ` +1.4 %; the same loop for packed panels ran the tile-loop
/// probe within the noise of the compiled one (393–405 against 394–405 GFLOP/s), so
/// packed panels keep the compiled loop.
///
/// The tile lives in `zmm0`–`zmm23` (row `r` in `zmm{2r}` and `zmm{2r+1}`), the broadcast
/// in `zmm24` and the step of `B` in `zmm25` and `zmm26`: named registers, not `zmm_reg`
/// operands, whose names LLVM printed as `R27BH` (which does not assemble) when a crate
/// built at opt-level 0 with thin LTO (a release doctest) generated this code again.
///
/// # Safety
/// The CPU has AVX-512F; `a`'s 12 rows hold `kc` values each and `b` holds `kc × NR`
/// values. (The prefetches of `B` reach past the panel; a prefetch does not fault.)
#[target_feature(enable = "avx512f")]
unsafe fn in_place_steps(
    kc: usize,
    (a, lda): (*const f32, usize),
    b: *const f32,
    acc: &mut [[__m512; 2]; MR],
) {
    // SAFETY: the loads are of the 12 rows' first `kc` values and the panel's `kc` steps
    // (the contract: the rows lie in one allocation, so their offsets in bytes fit in an
    // isize); the asm writes no memory and keeps to its operands' registers.
    unsafe {
        in_place_loop!(
            in_place_step,
            "add {p0}, 16\nadd {p5}, 16\nadd {p10}, 16",
            "add {p0}, 4\nadd {p5}, 4\nadd {p10}, 4",
            (kc, a, lda, b),
            [
                p10 = inout(reg) a.wrapping_add(10 * lda) => _,
                ahead = const PREFETCH_STEPS * NR * size_of::<f32>(),
            ],
            acc,
            [
                inout("zmm16") acc[8][0],
                inout("zmm17") acc[8][1],
                inout("zmm18") acc[9][0],
                inout("zmm19") acc[9][1],
                inout("zmm20") acc[10][0],
                inout("zmm21") acc[10][1],
                inout("zmm22") acc[11][0],
                inout("zmm23") acc[11][1],
            ]
        );
    }
}

/// [`in_place_steps`] for 8 rows (`acc` in `zmm0`–`zmm15`), without the prefetches of
/// `B`: the step loop of the recurrent layers' 8 × 32 kernel with its rows of `A` read
/// in place (`fused::recurrent::panels`, whose panels are sliced to stay in L1). Compiled,
/// that loop spent a `lea` and 6 dependent `add`s a step beside 16 multiply-adds. W5 (an
/// LSTM's forward and backward, where the kernel was 46 % of the profile), old and new
/// `rnn` bench binaries alternated over 4 rounds each on Sapphire Rapids: 15.2–16.4 ms
/// (median 15.5) → 13.9–14.6 ms (median 14.55), 6 % faster.
///
/// # Safety
/// The CPU has AVX-512F; `a`'s 8 rows hold `kc` values each and `b` holds `kc × NR`
/// values.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn in_place_steps_8(
    kc: usize,
    (a, lda): (*const f32, usize),
    b: *const f32,
    acc: &mut [[__m512; 2]; 8],
) {
    // SAFETY: as in `in_place_steps`, for 8 rows.
    unsafe {
        in_place_loop!(
            in_place_step_8,
            "add {p0}, 16\nadd {p5}, 16",
            "add {p0}, 4\nadd {p5}, 4",
            (kc, a, lda, b),
            [],
            acc,
            []
        );
    }
}

/// `v` clamped at zero with `relu`: max(0, v) returns its second operand for a NaN and for
/// ±0, so NaN and -0 pass through as in `Tensor::relu`.
#[inline]
#[target_feature(enable = "avx512f")]
fn clamp(v: __m512, relu: bool) -> __m512 {
    if relu {
        _mm512_max_ps(_mm512_setzero_ps(), v)
    } else {
        v
    }
}

/// The machine's f32 peak, for judging the kernel against: every thread of the current
/// rayon pool runs `steps` rounds of 24 independent 16-lane fused multiply-adds on
/// registers only (no loads or stores), the same instruction mix as [`micro`]'s inner loop
/// without its memory traffic. Returns the floating-point operations done (a multiply-add
/// counts 2), or `None` where [`available`] is false.
pub(crate) fn fma_peak_probe(steps: usize) -> Option<u64> {
    if !available() {
        return None;
    }
    let threads = par::threads();
    par::run(threads, true, |t| {
        // SAFETY: `available()` checked the features the probe is compiled for.
        let sink = unsafe { fma_rounds(steps, t as f32) };
        std::hint::black_box(sink);
    });
    let per_round = (MR * 2 * 16 * 2) as u64;
    Some((threads as u64) * (steps as u64) * per_round)
}

/// Panels of `B` in [`kernel_probe`]'s block: 1 MiB, a block of [`Blocking::NARROW`].
const PROBE_PANELS: usize = 16;

/// The ceiling of the tile loop, between [`fma_peak_probe`] and a whole product: every
/// thread of the current pool runs [`tiles`] `reps` times over one packed panel of `A`
/// (`KC × MR`, in L1) and a packed block of `B` ([`PROBE_PANELS`] panels of `KC × NR`,
/// in L2), into one row of tiles of `C` (accumulating): a product's steady state, without
/// its packing, its cache misses on the operands and its threads' fork-join. Returns the
/// floating-point operations done, or `None` where [`available`] is false.
pub(crate) fn kernel_probe(reps: usize) -> Option<u64> {
    if !available() {
        return None;
    }
    let threads = par::threads();
    let cols = PROBE_PANELS * NR;
    par::run(threads, true, |_| {
        let (a_len, b_len) = (KC * MR, KC * cols);
        let len = a_len + b_len + MR * cols;
        let mut buf = vec![1e-3_f32; len + ALIGN];
        let buf = aligned(&mut buf, len);
        let (a, rest) = buf.split_at_mut(a_len);
        let (b, c) = rest.split_at_mut(b_len);
        let row = Out {
            ptr: c.as_mut_ptr(),
            rs: cols,
            transposed: false,
        };
        for _ in 0..reps {
            // SAFETY: `available()` checked the CPU's features; `a` holds one panel of
            // KC steps of MR values, `b` PROBE_PANELS panels of KC steps of NR values, and
            // `c` the MR rows of `cols` values the tiles write, which are this task's.
            unsafe {
                tiles(
                    APanels::Packed(a),
                    BPanels::Packed(b.as_ptr()),
                    (KC, MR),
                    0..PROBE_PANELS,
                    row,
                    (0, 0),
                    cols,
                    true,
                    None,
                );
            }
        }
        std::hint::black_box(c);
    });
    let per_rep = (2 * MR * KC * cols) as u64;
    Some((threads as u64) * (reps as u64) * per_rep)
}

/// `steps` rounds of 24 FMAs on 24 accumulators; returns their sum so that none is dead.
///
/// # Safety
/// The CPU has AVX-512F ([`available`]).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn fma_rounds(steps: usize, seed: f32) -> f32 {
    let x = _mm512_set1_ps(0.999_999);
    let y = _mm512_set1_ps(1e-7);
    let mut acc = [[_mm512_set1_ps(seed); 2]; MR];
    for _ in 0..steps {
        for acc in acc.iter_mut() {
            acc[0] = _mm512_fmadd_ps(acc[0], x, y);
            acc[1] = _mm512_fmadd_ps(acc[1], x, y);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for acc in acc {
        sum = _mm512_add_ps(sum, _mm512_add_ps(acc[0], acc[1]));
    }
    _mm512_reduce_add_ps(sum)
}

/// Packs rows `pc..pc + kc`, columns `jc..jc + nc` of `b` into panels of [`NR`] columns:
/// panel `p`'s row `kk` at `dst[(p·kc + kk)·NR ..]`, columns past `nc` zero.
///
/// # Safety
/// The addressed elements of `b` are in bounds; `dst` holds `nc.div_ceil(NR)·kc·NR`.
unsafe fn pack_b(dst: &mut [f32], b: Operand, (pc, jc): (usize, usize), (kc, nc): (usize, usize)) {
    let panels = nc.div_ceil(NR);
    for (p, out) in dst[..panels * kc * NR]
        .chunks_exact_mut(kc * NR)
        .enumerate()
    {
        // SAFETY: the panel's rows and columns of b (the contract).
        unsafe { pack_b_panel(out, b, (pc, jc + p * NR), kc, NR.min(nc - p * NR)) };
    }
}

/// Packs rows `pc..pc + kc`, columns `j0..j0 + width` (`width` ≤ [`NR`]) of `b` into the
/// panel `out` (`kc × NR`): row `kk` at `out[kk·NR ..]`, columns past `width` zero.
///
/// # Safety
/// The addressed elements of `b` are in bounds; `out` holds `kc · NR` values.
unsafe fn pack_b_panel(
    out: &mut [f32],
    b: Operand,
    (pc, j0): (usize, usize),
    kc: usize,
    width: usize,
) {
    if b.rs == 1 && b.cs != 1 {
        // Column-major b: 16 × 16 blocks (16 columns, each 16 steps of k down its
        // contiguous length) transposed in registers.
        // SAFETY: columns j0..j0 + width, rows pc..pc + kc of b (the contract); the panel
        // holds kc × NR values.
        unsafe { pack_b_columns(out, b.at(pc, j0), b.cs, kc, width) };
        return;
    }
    if b.cs == 1 {
        // SAFETY: rows pc..pc + kc, columns j0..j0 + width of b (the contract); the panel
        // holds kc × NR values.
        unsafe { pack_b_rows(out, b.at(pc, j0), b.rs, kc, width) };
        return;
    }
    for (kk, row) in out.chunks_exact_mut(NR).take(kc).enumerate() {
        // SAFETY: row pc + kk, columns j0..j0 + width of b (the contract).
        unsafe {
            let src = b.at(pc + kk, j0);
            for (j, v) in row[..width].iter_mut().enumerate() {
                *v = *src.add(j * b.cs);
            }
        }
        row[width..].fill(0.0);
    }
}

/// Packs rows `ic..ic + mc`, columns `pc..pc + kc` of `a` into panels of [`MR`] rows:
/// panel `q`'s step `kk` at `dst[(q·kc + kk)·MR ..]`, rows past `mc` zero.
///
/// # Safety
/// The addressed elements of `a` are in bounds; `dst` holds `mc.div_ceil(MR)·kc·MR`.
unsafe fn pack_a(dst: &mut [f32], a: Operand, (ic, pc): (usize, usize), (mc, kc): (usize, usize)) {
    if a.rs == 1 && a.cs != 1 {
        // SAFETY: the same contract.
        unsafe { pack_a_columns(dst, a, (ic, pc), (mc, kc)) };
        return;
    }
    for q in 0..mc.div_ceil(MR) {
        let i0 = ic + q * MR;
        let height = MR.min(ic + mc - i0);
        let panel = &mut dst[q * kc * MR..(q + 1) * kc * MR];
        if height < MR {
            panel.fill(0.0);
        }
        if a.cs == 1 {
            // Row-major a: 16 × 16 blocks (the panel's rows, 16 steps of k each)
            // transposed in registers.
            // SAFETY: rows i0..i0 + height, columns pc..pc + kc of a (the contract); the
            // panel holds kc × MR values.
            unsafe { pack_a_rows(panel, a.at(i0, pc), a.rs, kc, height) };
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

/// Columns of `a` that [`pack_a_columns`] fetches ahead of the one it packs. Its columns
/// lie `m` values apart, often a multiple of 4 KiB, which the hardware's prefetchers do
/// not follow across pages. Measured with `gemm_shapes` on Sapphire Rapids, interleaved
/// over 3 rounds: the weight gradient `[1024, 2048]·[2048, 256]` (`A` transposed) 4–7 %
/// faster at 8 columns, within the noise at 4, 16 and 32; `[512, 128]·[128, 784]` 1 %
/// faster.
const A_COLUMNS_AHEAD: usize = 8;

/// Panels of a column-major `a` packed side by side: [`A_COLUMN_GROUP`] × [`MR`] = 48
/// values, three whole cache lines of one column, per step of `k`.
const A_COLUMN_GROUP: usize = 4;

/// [`pack_a`] for a column-major `a` (a transposed view, as in weight gradients): each
/// step of `k` is a column of `a`, whose rows lie side by side. Packing one panel at a
/// time would read 12 of a cache line's 16 values and come back for the other 4 a whole
/// panel (`kc` columns, often all in one L1 set) later; [`A_COLUMN_GROUP`] panels packed
/// step by step read each line once.
///
/// # Safety
/// As [`pack_a`].
unsafe fn pack_a_columns(
    dst: &mut [f32],
    a: Operand,
    (ic, pc): (usize, usize),
    (mc, kc): (usize, usize),
) {
    let panels = mc.div_ceil(MR);
    if mc % MR != 0 {
        dst[(panels - 1) * kc * MR..panels * kc * MR].fill(0.0);
    }
    for group in (0..panels).step_by(A_COLUMN_GROUP) {
        // The group's rows of a column: `len` values from row `first`.
        let first = group * MR;
        let len = (mc.min((group + A_COLUMN_GROUP) * MR) - first).max(1);
        for kk in 0..kc {
            if kk + A_COLUMNS_AHEAD < kc {
                // The group's values of column kk + A_COLUMNS_AHEAD: its first, middle
                // and last lines, and the line of its last value.
                let col = a
                    .ptr
                    .wrapping_add((ic + first) * a.rs + (pc + kk + A_COLUMNS_AHEAD) * a.cs);
                for offset in [0, 16, 32, len - 1] {
                    // SAFETY: a prefetch does not fault, whatever the address.
                    unsafe {
                        _mm_prefetch::<_MM_HINT_T0>(col.wrapping_add(offset.min(len - 1)).cast())
                    };
                }
            }
            for q in group..panels.min(group + A_COLUMN_GROUP) {
                let i0 = ic + q * MR;
                let height = MR.min(ic + mc - i0);
                let step = &mut dst[(q * kc + kk) * MR..][..MR];
                // SAFETY: rows i0..i0 + height of column pc + kk of a (the contract).
                unsafe {
                    let src = a.at(i0, pc + kk);
                    if height == MR {
                        // A fixed-size copy, not a call to memcpy.
                        step.copy_from_slice(&src.cast::<[f32; MR]>().read_unaligned());
                    } else {
                        std::ptr::copy_nonoverlapping(src, step.as_mut_ptr(), height);
                    }
                }
            }
        }
    }
}

/// Transposes a 16 × 16 block held as 16 row vectors: output `j` holds column `j`.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    // Pairs of rows interleaved: t[2i], t[2i + 1] = the low and high halves of each lane.
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4g + c], lane L: column 4L + c of rows 4g..4g + 4.
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (a, b) = (t[4 * g], t[4 * g + 1]);
        let (c, d) = (t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm512_shuffle_ps::<0x44>(a, c);
        u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(a, c);
        u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(b, d);
        u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(b, d);
    }
    // A 4 × 4 transpose of 128-bit lanes across u[c], u[4 + c], u[8 + c], u[12 + c].
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let x0 = _mm512_shuffle_f32x4::<0x44>(u[c], u[4 + c]);
        let x1 = _mm512_shuffle_f32x4::<0xEE>(u[c], u[4 + c]);
        let y0 = _mm512_shuffle_f32x4::<0x44>(u[8 + c], u[12 + c]);
        let y1 = _mm512_shuffle_f32x4::<0xEE>(u[8 + c], u[12 + c]);
        out[c] = _mm512_shuffle_f32x4::<0x88>(x0, y0);
        out[4 + c] = _mm512_shuffle_f32x4::<0xDD>(x0, y0);
        out[8 + c] = _mm512_shuffle_f32x4::<0x88>(x1, y1);
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(x1, y1);
    }
    out
}

/// The mask of the first `n` (≤ 16) lanes.
fn lanes(n: usize) -> u16 {
    if n >= 16 {
        u16::MAX
    } else {
        ((1u32 << n) - 1) as u16
    }
}

/// Packs `width` (≤ [`NR`]) columns of a column-major `b` (column `j` at `src + j·cs`, its
/// `kc` values contiguous) into one panel: step `kk`'s row at `out[kk·NR ..]`, columns past
/// `width` zero.
///
/// # Safety
/// The CPU has AVX-512F; the `kc` values of each of the `width` columns are in bounds;
/// `out` holds `kc · NR` values.
#[target_feature(enable = "avx512f")]
unsafe fn pack_b_columns(out: &mut [f32], src: *const f32, cs: usize, kc: usize, width: usize) {
    assert!(out.len() >= kc * NR && width <= NR);
    for kk in (0..kc).step_by(16) {
        let w = 16.min(kc - kk);
        for half in 0..NR / 16 {
            let cols = std::array::from_fn(|j| {
                let col = half * 16 + j;
                if col < width {
                    // SAFETY: values kk..kk + w of column `col` (the contract).
                    unsafe { _mm512_maskz_loadu_ps(lanes(w), src.wrapping_add(col * cs + kk)) }
                } else {
                    _mm512_setzero_ps()
                }
            });
            for (i, &v) in transpose16(cols).iter().take(w).enumerate() {
                // SAFETY: row kk + i of the panel, 16 values at column 16·half (in `out`,
                // asserted above).
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add((kk + i) * NR + half * 16), v) };
            }
        }
    }
}

/// Packs `width` (≤ [`NR`]) columns of a row-major `b` (row `kk` at `src + kk·rs`, its
/// `width` values contiguous) into one panel: step `kk`'s row at `out[kk·NR ..]`, columns
/// past `width` zero. Two 16-lane moves per row (the plain copy compiled to eight 4-lane
/// ones outside this function's target features).
///
/// # Safety
/// The CPU has AVX-512F; the `width` values of each of the `kc` rows are in bounds; `out`
/// holds `kc · NR` values.
#[target_feature(enable = "avx512f")]
unsafe fn pack_b_rows(out: &mut [f32], src: *const f32, rs: usize, kc: usize, width: usize) {
    assert!(out.len() >= kc * NR && width <= NR);
    let (lo, hi) = (lanes(width), lanes(width.saturating_sub(16)));
    for kk in 0..kc {
        // SAFETY: the first `width` values of row kk (the contract; masked-off lanes are
        // not read), and row kk of the panel (in `out`, asserted above).
        unsafe {
            let row = src.wrapping_add(kk * rs);
            let x0 = _mm512_maskz_loadu_ps(lo, row);
            let x1 = _mm512_maskz_loadu_ps(hi, row.wrapping_add(16));
            let dst = out.as_mut_ptr().add(kk * NR);
            _mm512_storeu_ps(dst, x0);
            _mm512_storeu_ps(dst.add(16), x1);
        }
    }
}

/// Packs `height` (≤ [`MR`]) rows of a row-major `a` (row `r` at `src + r·rs`, its `kc`
/// values contiguous) into one panel: step `kk`'s values at `panel[kk·MR ..]`, rows past
/// `height` zero.
///
/// # Safety
/// The CPU has AVX-512F; the `kc` values of each of the `height` rows are in bounds;
/// `panel` holds `kc · MR` values.
#[target_feature(enable = "avx512f")]
unsafe fn pack_a_rows(panel: &mut [f32], src: *const f32, rs: usize, kc: usize, height: usize) {
    assert!(panel.len() >= kc * MR && height <= MR);
    // Lanes of two vectors (16 + l is lane l of the second) that make up the three vectors
    // of four steps of MR = 12 values: steps 0 and 1 (its first 4), 1 and 2, 2 and 3.
    const _: () = assert!(MR == 12);
    let merge = [
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19),
        _mm512_setr_epi32(4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23),
        _mm512_setr_epi32(8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27),
    ];
    for kk in (0..kc).step_by(16) {
        let w = 16.min(kc - kk);
        let rows = std::array::from_fn(|r| {
            if r < height {
                // SAFETY: values kk..kk + w of row r (the contract).
                unsafe { _mm512_maskz_loadu_ps(lanes(w), src.wrapping_add(r * rs + kk)) }
            } else {
                _mm512_setzero_ps()
            }
        });
        // Step kk + i of the panel is the first MR lanes of `steps[i]`: four steps (48
        // values) are stored as three whole vectors rather than as four masked stores of
        // 12 lanes, half of which straddle two cache lines. (On Sapphire Rapids this
        // moved the squares within the noise, 512³ 1–2 % up: packing `A` is bound by
        // reading it; software prefetches of its rows, 32 to 128 values ahead, did not
        // help either. The steps are read through `iter`: moving the array into an
        // iterator copied its 1 KiB with `memcpy` for every 16 steps.)
        let steps = transpose16(rows);
        let whole = w / 4 * 4;
        for (i, s) in steps[..whole].chunks_exact(4).enumerate() {
            // SAFETY: steps kk + 4i .. kk + 4i + 4 of the panel, 4·MR values (in `panel`,
            // asserted above).
            unsafe {
                let dst = panel.as_mut_ptr().add((kk + 4 * i) * MR);
                _mm512_storeu_ps(dst, _mm512_permutex2var_ps(s[0], merge[0], s[1]));
                _mm512_storeu_ps(dst.add(16), _mm512_permutex2var_ps(s[1], merge[1], s[2]));
                _mm512_storeu_ps(dst.add(32), _mm512_permutex2var_ps(s[2], merge[2], s[3]));
            }
        }
        for (i, &v) in (whole..).zip(&steps[whole..w]) {
            // SAFETY: step kk + i of the panel, its MR values (in `panel`, asserted above).
            unsafe { _mm512_mask_storeu_ps(panel.as_mut_ptr().add((kk + i) * MR), lanes(MR), v) };
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

    /// A block of `B` holds `KC × nc` values at most, and short sums get wider blocks.
    #[test]
    fn short_sums_pack_wider_blocks_of_the_same_size() {
        for blocking in [Blocking::NARROW, Blocking::WIDE] {
            assert_eq!(blocking.cols(KC), blocking.nc);
            assert_eq!(blocking.cols(10 * KC), blocking.nc);
            assert_eq!(blocking.cols(KC / 2), 2 * blocking.nc);
            assert_eq!(blocking.cols(1), 4 * blocking.nc);
            assert_eq!(blocking.cols(0), 4 * blocking.nc);
            for k in 1..2 * KC {
                let cols = blocking.cols(k);
                assert!(cols.is_multiple_of(NR) && cols >= blocking.nc);
                assert!(KC.min(k) * cols <= KC * blocking.nc, "k = {k}");
            }
        }
    }

    /// Ragged shapes across every blocking boundary (MR, NR, KC, MC, the block widths of
    /// long and short sums, last panels of 16 and 17 columns), row- and column-major
    /// operands, a destination with padded rows, accumulation, the epilogues (bias per
    /// column or row, ReLU), one thread and several: against an f64 product, to f32
    /// rounding.
    #[test]
    fn products_match_a_naive_one_across_block_boundaries() {
        if !available() {
            return;
        }
        let mut rng = seeded_rng(3);
        let shapes = [
            (4, 6, 0),
            (1, 1, 1),
            (5, 7, 3),
            (12, 32, 256),
            (13, 33, 257),
            (MC + 5, 70, 40),
            (Blocking::NARROW.mc + 5, 70, 40),
            (30, Blocking::NARROW.cols(9) + 17, 9),
            (30, Blocking::WIDE.cols(9) + 17, 9),
            (20, Blocking::NARROW.cols(300) + 17, 300),
            (20, Blocking::NARROW.cols(KC + 1) + 17, KC + 1),
            (2 * MC + 1, 3 * NR + 1, KC + 3),
            // A last panel of 16 columns (the narrow kernel) with A packed.
            (40, 9 * NR + 16, 20),
            // A row-major A packed (more than 8 panels of B) over two slices of k, in
            // panels the last of which is ragged.
            (5 * MR + 7, 9 * NR + 5, KC + 7),
        ];
        for &(m, n, k) in &shapes {
            for blocking in [Blocking::WIDE, Blocking::NARROW] {
                for (variant, (ta, tb, add, parallel)) in [
                    (false, false, false, false),
                    (true, false, true, true),
                    (false, true, false, true),
                    (true, true, true, false),
                ]
                .into_iter()
                .enumerate()
                {
                    let bias: Vec<f32> =
                        (0..m.max(n)).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let epi = match variant {
                        0 => Epilogue::NONE,
                        1 => Epilogue {
                            bias: Bias::Cols(bias.as_ptr()),
                            relu: false,
                        },
                        2 => Epilogue {
                            bias: Bias::Rows(bias.as_ptr()),
                            relu: true,
                        },
                        _ => Epilogue {
                            bias: Bias::None,
                            relu: true,
                        },
                    };
                    let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let (ars, acs) = if ta { (1, m) } else { (k, 1) };
                    let (brs, bcs) = if tb { (1, k) } else { (n, 1) };
                    let ldc = n + 3;
                    let init: Vec<f32> =
                        (0..m * ldc).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let (mut got, mut want) = (init.clone(), init);
                    // SAFETY: the buffers hold every element the strides address; nothing else
                    // touches them.
                    unsafe {
                        sgemm(
                            blocking,
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
                            epi,
                            parallel,
                            false,
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
                        for j in 0..n {
                            // SAFETY: the bias holds max(m, n) values.
                            want[i * ldc + j] = unsafe { epi.scalar(want[i * ldc + j], i, j) };
                        }
                    }
                    for i in 0..m {
                        for j in 0..ldc {
                            let (g, w) = (got[i * ldc + j], want[i * ldc + j]);
                            let tol = 1e-5 * (k as f32).sqrt() * (1.0 + w.abs());
                            assert!(
                                (g - w).abs() <= tol,
                                "{m}x{n}x{k} {blocking:?} ta={ta} tb={tb} add={add} epilogue {variant}: \
                                ({i}, {j}) {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Every cut of `C` covers its rows and columns exactly once, in whole tiles but for the
    /// last, and as evenly as whole tiles allow; the grid never uses more threads than asked.
    #[test]
    fn cuts_cover_the_product_evenly() {
        for len in [1, 11, 12, 13, 100, 128, 256, 1000] {
            for parts in 1..=5 {
                let pieces: Vec<_> = (0..parts).map(|p| share(len, parts, p, MR)).collect();
                let mut next = 0;
                for piece in &pieces {
                    assert_eq!(piece.start, next.min(len), "{len} in {parts}");
                    next = piece.end;
                    if piece.end < len {
                        assert_eq!(piece.len() % MR, 0);
                    }
                }
                assert_eq!(next, len);
                let tiles = |r: &std::ops::Range<usize>| r.len().div_ceil(MR);
                let most = pieces.iter().map(tiles).max().unwrap();
                let least = pieces.iter().map(tiles).min().unwrap();
                assert!(most - least <= 1, "{len} in {parts}: {pieces:?}");
            }
        }
        for (m, n, k, threads) in [
            (256, 256, 256, 2),
            (8, 4096, 64, 2),
            (4096, 8, 64, 2),
            (1, 1, 1, 8),
            (512, 512, 512, 6),
        ] {
            let (tm, tn) = grid(m, n, k, threads, Blocking::host());
            assert!(
                tm >= 1 && tn >= 1 && tm * tn <= threads,
                "{m}x{n}: {tm}x{tn}"
            );
        }
        // A tall product splits its rows, a wide one its columns, and a batch of 32 (three
        // tiles) its columns.
        for blocking in [Blocking::WIDE, Blocking::NARROW] {
            assert_eq!(grid(4096, 8, 64, 2, blocking), (2, 1));
            assert_eq!(grid(8, 4096, 64, 2, blocking), (1, 2));
            assert_eq!(grid(32, 512, 784, 2, blocking), (1, 2));
            // The wgrad of a 2048-wide batch: a column of `B` per row of `A` packed.
            assert_eq!(grid(1024, 256, 2048, 2, blocking), (2, 1));
        }
        // Squares by rows on Zen 4, by columns on Sapphire Rapids (as the 128-row products
        // of training).
        for m in [208, 248, 256, 280, 512, 1024] {
            let (n, k) = (m.max(256), m.max(256));
            assert_eq!(grid(m, n, k, 2, Blocking::WIDE), (2, 1), "{m}");
        }
        for m in [256, 512, 1024, 2048] {
            assert_eq!(grid(m, m, m, 2, Blocking::NARROW), (1, 2), "{m}");
        }
        for (m, n, k) in [(128, 784, 512), (128, 512, 784)] {
            assert_eq!(grid(m, n, k, 2, Blocking::NARROW), (1, 2), "{m}x{n}x{k}");
        }
    }

    /// Packing buffers start on a cache line, whatever the allocation's own alignment.
    #[test]
    fn packing_buffers_are_aligned() {
        let mut buf = vec![0f32; 100 + ALIGN + 3];
        for start in 0..4 {
            let view = aligned(&mut buf[start..], 100);
            assert_eq!(view.len(), 100);
            assert_eq!(view.as_ptr() as usize % 64, 0);
        }
    }

    /// The probes count their work, on 2 threads: the peak probe steps × 24 FMAs × 16
    /// lanes × 2, the kernel probe reps × a 12-row by 512 × 512 product.
    #[test]
    fn the_probes_count_their_flops() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (peak, kernel) = pool.install(|| (fma_peak_probe(10), kernel_probe(3)));
        if available() {
            assert_eq!(peak, Some(2 * 10 * 24 * 16 * 2));
            assert_eq!(kernel, Some(2 * 3 * (2 * 12 * 512 * 512)));
        } else {
            assert_eq!((peak, kernel), (None, None));
        }
    }

    #[test]
    /// A transposed destination (columns contiguous) receives bit for bit what a row-major
    /// one does: plain, accumulated, with each epilogue, with `A` packed and read in place.
    fn transposed_destinations_equal_row_major_ones() {
        if !available() {
            return;
        }
        let mut rng = seeded_rng(5);
        for &(m, n, k) in &[(7, 5, 3), (40, 32, 300), (25, 64, KC + 9), (30, 100, 50)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let bias: Vec<f32> = (0..m.max(n)).map(|_| rng.random_range(-1.0..1.0)).collect();
            let init: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            for (add, epi) in [
                (false, Epilogue::NONE),
                (
                    true,
                    Epilogue {
                        bias: Bias::Cols(bias.as_ptr()),
                        relu: true,
                    },
                ),
                (
                    false,
                    Epilogue {
                        bias: Bias::Rows(bias.as_ptr()),
                        relu: false,
                    },
                ),
            ] {
                let a_op = Operand {
                    ptr: a.as_ptr(),
                    rs: k,
                    cs: 1,
                };
                let b_op = Operand {
                    ptr: b.as_ptr(),
                    rs: n,
                    cs: 1,
                };
                let mut rows = init.clone();
                // Column-major: element (i, j) at j·m + i.
                let mut cols: Vec<f32> = (0..m * n).map(|p| init[(p % m) * n + p / m]).collect();
                // SAFETY: the buffers hold every element the strides address.
                unsafe {
                    sgemm(
                        Blocking::host(),
                        rows.as_mut_ptr(),
                        n,
                        (m, n, k),
                        a_op,
                        b_op,
                        add,
                        epi,
                        true,
                        false,
                    );
                    sgemm(
                        Blocking::host(),
                        cols.as_mut_ptr(),
                        m,
                        (m, n, k),
                        a_op,
                        b_op,
                        add,
                        epi,
                        true,
                        true,
                    );
                }
                for i in 0..m {
                    for j in 0..n {
                        assert_eq!(
                            rows[i * n + j].to_bits(),
                            cols[j * m + i].to_bits(),
                            "{m}x{n}x{k} add={add}: ({i}, {j})"
                        );
                    }
                }
            }
        }
    }

    /// `c = a · b` for a row-major `a` and a `b` of strides `(brs, bcs)`, on the current
    /// pool, through `sgemm` with the given blocking.
    fn product(
        blocking: Blocking,
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        b: &[f32],
        (brs, bcs): (usize, usize),
    ) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        // SAFETY: the buffers hold every element the strides address; nothing else touches
        // them.
        unsafe {
            sgemm(
                blocking,
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
                    rs: brs,
                    cs: bcs,
                },
                false,
                Epilogue::NONE,
                true,
                false,
            );
        }
        c
    }

    /// The result does not depend on the number of threads, bit for bit: with each thread
    /// packing its own `B` and (the second shape under the wide blocking: blocks of `B`
    /// over 1 MiB, `C` cut by rows) with the threads packing `B` together, for a
    /// row-major, a column-major and a strided `B`; the shared packing also matches a
    /// naive product, and so does the narrow blocking's private one.
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        if !available() {
            return;
        }
        let mut rng = seeded_rng(4);
        let shared = (2 * SHARED_B_MIN_ROWS, 2 * NR * 8 + 33, KC + 88);
        for (shape, wide_shares, blocking) in [
            ((3 * MC + 7, 5 * NR + 3, 2 * KC + 5), false, Blocking::WIDE),
            (shared, true, Blocking::WIDE),
            (shared, true, Blocking::NARROW),
        ] {
            let (m, n, k) = shape;
            let shares = wide_shares && blocking.share_b;
            if blocking == Blocking::WIDE {
                assert_eq!(grid(m, n, k, 2, blocking), (2, 1));
            }
            assert_eq!(shares_b(2, 1, shape, blocking), shares);
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            // Room for a stride of 2 between columns.
            let b: Vec<f32> = (0..2 * k * n)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            for strides in [(n, 1), (1, k), (2 * n, 2)] {
                let run = |threads: usize| {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    pool.install(|| product(blocking, shape, &a, &b, strides))
                };
                let one = run(1);
                assert_eq!(one, run(2), "{shape:?} {strides:?}");
                assert_eq!(one, run(3), "{shape:?} {strides:?}");
                if shares {
                    let mut want = vec![0f32; m * n];
                    naive(shape, &a, (k, 1), &b, strides, &mut want, n, false);
                    for (g, w) in one.iter().zip(&want) {
                        let tol = 1e-5 * (k as f32).sqrt() * (1.0 + w.abs());
                        assert!((g - w).abs() <= tol, "{shape:?} {strides:?}: {g} vs {w}");
                    }
                }
            }
        }
    }

    /// Tasks that share the packing of `B` but run one after another (a product called
    /// from inside a parallel task, whose tasks the busy team runs on the caller) finish:
    /// the first packs every panel, the others find them packed. Two such products run
    /// at once from different tasks.
    #[test]
    fn shared_packing_finishes_when_tasks_run_in_turn() {
        if !available() {
            return;
        }
        let shape @ (m, n, k) = (2 * SHARED_B_MIN_ROWS, 2 * NR * 8 + 33, KC + 88);
        assert!(shares_b(2, 1, shape, Blocking::WIDE));
        let mut rng = seeded_rng(6);
        let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let want = product(Blocking::WIDE, shape, &a, &b, (n, 1));
        let got = std::sync::Mutex::new(Vec::new());
        par::run(2, true, |_| {
            let c = product(Blocking::WIDE, shape, &a, &b, (n, 1));
            got.lock().unwrap().push(c);
        });
        let got = got.into_inner().unwrap();
        assert_eq!(got.len(), 2);
        for c in got {
            assert_eq!(c, want);
        }
    }
}
