//! The forward walk, a chunk of steps at a time: each unit block projects the chunk's
//! inputs onto its gates (`[S·N, in] × W_ihᵀ[:, block]`, kept in cache), then per step and
//! tile one GEMM with the packed `W_hhᵀ` and a fused pass over the gates.

use faer::Par;

use super::panels::StepWeights;
use super::{
    RecurrentMode, RecurrentShape, Tile, Wait, chunks, gates, recycle, saved_at, tiles,
    unit_blocks, walk_tiles,
};
use crate::Element;
use crate::engine::gemm::{RawMat, Strided, parallelism};
use crate::engine::par::{self, Disjoint};
use crate::engine::simd::dispatch;
use crate::handle::storage::{Buffer, alloc};

/// The validated, contiguous inputs of one call.
pub(super) struct Inputs<'a, T> {
    pub x: &'a [T],
    pub w_ih: &'a [T],
    pub w_hh: &'a [T],
    pub b_ih: Option<&'a [T]>,
    pub b_hh: Option<&'a [T]>,
    pub h0: Option<&'a [T]>,
    pub c0: Option<&'a [T]>,
}

/// The packed output and, when saving, the activations (see `RecurrentSaved`).
pub(super) struct Output<T> {
    pub out: Buffer<T>,
    pub acts: Option<Buffer<T>>,
    pub cells: Option<(Buffer<T>, Buffer<T>)>,
}

/// What every tile of every step reads or writes.
struct Ctx<'a, T> {
    /// `W_hhᵀ` per unit block: block `b` is `[H, G·un]`, its columns the gates of the
    /// block's units, gate-major.
    wp: &'a StepWeights<T>,
    /// The unit blocks `(u0, un)`.
    blocks: &'a [(usize, usize)],
    /// `b_ih + b_hh` in the tile-major order of the gates (see `RecurrentShape::gate_col`), except
    /// the GRU's `b_hn`, which goes inside `r ⊙ (…)`.
    bx: &'a [T],
    /// The GRU's `b_hn` `[H]` (zeros without bias).
    bhn: &'a [T],
    /// `[H]` zeros, the state before the first step when none is given.
    zeros: &'a [T],
    h0: Option<&'a [T]>,
    c0: Option<&'a [T]>,
    out: Disjoint<'a, T>,
    acts: Option<Disjoint<'a, T>>,
    cells: Option<(Disjoint<'a, T>, Disjoint<'a, T>)>,
    /// The parallelism of each tile's GEMM (only a lone tile gets threads).
    par: Par,
    /// Whether the gate functions may use fused multiply-adds.
    fma: bool,
    /// Whether the LSTM tiles run on `gates::lstm_tile_avx512` (T is f32, the CPU has
    /// AVX-512).
    avx512_row: bool,
}

pub(super) fn run<'a, T: Element>(
    mode: RecurrentMode,
    d: RecurrentShape,
    inp: Inputs<'a, T>,
    reverse: bool,
    save: bool,
) -> Output<T> {
    let (ln, gh, h, n, input) = (d.ln(), d.gh(), d.h, d.n, d.input);
    let (lstm, gru) = (mode == RecurrentMode::Lstm, mode == RecurrentMode::Gru);
    let mut tiles = tiles::<T>(&d);
    let blocks = unit_blocks(&tiles);
    let block_cols: Vec<usize> = blocks.iter().map(|&(_, un)| d.g * un).collect();
    // `Wᵀ` per unit block, for a weight `W` `[G·H, k]`: block `b` is `[k, G·un]`, its
    // column `j` the row of `W` of gate `j / un` and unit `u0 + j % un`.
    let row = |w: &'a [T], k: usize| {
        let blocks = &blocks;
        move |b: usize, j: usize| {
            let (u0, un) = blocks[b];
            &w[((j / un) * h + u0 + j % un) * k..]
        }
    };
    let wp = StepWeights::from_cols(h, &block_cols, row(inp.w_hh, h));
    let wi = StepWeights::from_cols(input, &block_cols, row(inp.w_ih, input));
    // Both biases are added in the gate pass, where they cost no extra sweep.
    let mut bx = vec![T::zero(); gh];
    let mut bhn = vec![T::zero(); h];
    for (gate, j) in (0..d.g).flat_map(|gate| (0..h).map(move |j| (gate, j))) {
        let i = gate * h + j;
        let col = d.gate_col(&blocks, gate, j);
        let b_ih = inp.b_ih.map_or(T::zero(), |b| b[i]);
        let b_hh = inp.b_hh.map_or(T::zero(), |b| b[i]);
        if gru && gate == 2 {
            bx[col] = b_ih;
            bhn[j] = b_hh;
        } else {
            bx[col] = b_ih + b_hh;
        }
    }
    if lstm && !save {
        // Without saved cells, each tile carries its block of c from step to step.
        for tile in &mut tiles {
            if let Some(c0) = inp.c0 {
                for r in 0..tile.rn {
                    let src = &c0[(tile.r0 + r) * h + tile.u0..][..tile.un];
                    tile.state[r * tile.un..][..tile.un].copy_from_slice(src);
                }
            }
        }
    }

    let (steps, _) = chunks(&d);
    // The chunk's input projection, one block per unit block: block `u0` is
    // `[S·N, G·un]` at `S·N·G·u0`.
    let mut xp = alloc::<T>(steps * n * gh);
    let mut out = alloc::<T>(d.out_steps(mode) * n * h);
    let mut acts = (save && (lstm || gru)).then(|| alloc::<T>(ln * 4 * h));
    let mut cells = (save && lstm).then(|| (alloc::<T>(ln * h), alloc::<T>(ln * h)));
    let zeros = vec![T::zero(); h];
    let ctx = Ctx {
        wp: &wp,
        blocks: &blocks,
        bx: &bx,
        bhn: &bhn,
        zeros: &zeros,
        h0: inp.h0,
        c0: inp.c0,
        out: Disjoint::new(&mut out),
        acts: acts.as_deref_mut().map(Disjoint::new),
        cells: cells
            .as_mut()
            .map(|(c, tc)| (Disjoint::new(c), Disjoint::new(tc))),
        par: if tiles.len() == 1 {
            parallelism(n * gh * h)
        } else {
            Par::Seq
        },
        fma: gates::has_fma(),
        avx512_row: super::f32_avx512::<T>(),
    };
    for c0 in (0..d.l).step_by(steps) {
        let len = steps.min(d.l - c0);
        let t_lo = d.chunk_start(c0, len, reverse);
        project(&d, &blocks, (t_lo, len), inp.x, &wi, &mut xp);
        let xp = &xp;
        walk_tiles(&mut tiles, c0..c0 + len, |tile, s, wait| {
            let t = d.time(s, reverse);
            let tp = (s > 0).then(|| d.time(s - 1, reverse));
            let last = s + 1 == d.l;
            let row0 = (t - t_lo) * n;
            let xp = &xp[steps * n * d.g * tile.u0..][..steps * n * d.g * tile.un];
            // SAFETY: the tiles of a step write disjoint (row, unit) blocks of step t's
            // slabs (and of c_n's), and read only slabs of earlier steps: their own, and
            // the others' once `wait` says they are complete.
            unsafe { step(mode, &d, &ctx, (xp, row0), tile, (s, t, tp, last), wait) }
        });
    }
    recycle(xp);
    wp.recycle();
    wi.recycle();
    Output { out, acts, cells }
}

/// The input projection of the `len` steps from time `t_lo`, each unit block's columns
/// into its own block of `xp` (see `run`), the blocks in parallel.
fn project<T: Element>(
    d: &RecurrentShape,
    blocks: &[(usize, usize)],
    (t_lo, len): (usize, usize),
    x: &[T],
    wi: &StepWeights<T>,
    xp: &mut [T],
) {
    let (steps, _) = chunks(d);
    let (n, input, g) = (d.n, d.input, d.g);
    let rows = len * n;
    let mut parts = Vec::with_capacity(blocks.len());
    let mut rest = &mut xp[..];
    for &(_, un) in blocks {
        let (part, tail) = rest.split_at_mut(steps * n * g * un);
        parts.push((part, un));
        rest = tail;
    }
    let x = &x[t_lo * n * input..][..rows * input];
    // `out = x · W_ihᵀ[:, block b]` for the `x.len() / input` rows of `x`.
    let mul = |b: usize, out: &mut [T], x: &[T], width: usize, par: Par| {
        // SAFETY: both are borrowed for the call (bounds are checked by `gemm`).
        unsafe {
            wi.gemm(
                b,
                RawMat::of_mut(out, Strided::row_major(0, width)),
                RawMat::of(x, Strided::row_major(0, input)),
                x.len() / input,
                par,
                None,
            )
        }
    };
    if blocks.len() > 1 {
        par::chunks_mut(&mut parts, 1, true, |b, part| {
            let (part, un) = &mut part[0];
            mul(b, &mut part[..rows * g * *un], x, g * *un, Par::Seq)
        });
        return;
    }
    // One block: faer threads inside; the panel kernel's rows are split between the threads
    // instead (each row's products do not depend on the split).
    let (part, un) = parts.pop().expect("one block");
    let par = parallelism(rows * g * un * input);
    let piece = match par {
        Par::Rayon(_) if wi.panels() => rows.div_ceil(par::threads()).next_multiple_of(8),
        _ => rows,
    };
    par::chunks_mut(
        &mut part[..rows * g * un],
        piece * g * un,
        true,
        |i, out| {
            let x = &x[i * piece * input..][..out.len() / (g * un) * input];
            mul(0, out, x, g * un, par)
        },
    );
}

/// One step of one tile: `s` is the step's place in the walk, `t` its time, `tp` the time
/// of the one before it, `last` whether it is the final one; `xp` is the tile's block of the chunk's projection and `row0` the
/// step's first row in it.
///
/// # Safety
/// No other thread touches the tile's (row, unit) block of step `t` (and of `c_n`) during
/// the call, nor writes the slabs of step `tp` once `wait` has let the tile read them.
unsafe fn step<T: Element>(
    mode: RecurrentMode,
    d: &RecurrentShape,
    c: &Ctx<'_, T>,
    (xp, row0): (&[T], usize),
    tile: &mut Tile<T>,
    (s, t, tp, last): (usize, usize, Option<usize>, bool),
    wait: &Wait<'_>,
) {
    let (h, n) = (d.h, d.n);
    let (r0, rn, u0, un) = (tile.r0, tile.rn, tile.u0, tile.un);
    let k = d.g * un;
    // The state before step t, `[N, H]`: other tiles may still be writing their blocks of
    // it (until `wait` says otherwise), so only a pointer.
    let h_prev: Option<RawMat<T>> = match tp {
        Some(tp) => Some(RawMat::of_shared(&c.out, Strided::row_major(tp * n * h, h))),
        None => c.h0.map(|h0| RawMat::of(h0, Strided::row_major(0, h))),
    };
    let prod = &mut tile.prod[..rn * k];
    match h_prev {
        // SAFETY: rows r0..r0 + rn of the previous state, and the tile's own buffer.
        Some(hp) => unsafe {
            c.wp.gemm(
                tile.b,
                RawMat::of_mut(prod, Strided::row_major(0, k)),
                hp.down(r0),
                rn,
                c.par,
                Some((u0, &|k0, k1| wait.columns(c.blocks, 1, (k0, k1)))),
            )
        },
        None => prod.fill(T::zero()),
    }
    let prod = &tile.prod[..rn * k];
    let bx = &c.bx[d.g * u0..][..k];
    let (state, scratch) = (&mut tile.state, &mut tile.scratch);
    #[cfg(target_arch = "x86_64")]
    if c.avx512_row && mode == RecurrentMode::Lstm {
        // SAFETY: T is f32 and the CPU has AVX-512 (`avx512_row`); the blocks are the
        // tile's own (saved: its rows of step t; else its scratch and state), `c_{t-1}` a
        // block of step tp or h0's rows, and the rows of h_t the tile's columns of them.
        unsafe { lstm_tile(d, c, (xp, row0), tile, (s, t, tp, last)) };
        return;
    }
    dispatch(
        #[inline(always)]
        || {
            let saved = |t: usize, r: usize, w: usize| saved_at(d, (r0, rn, u0, un), t, r, w);
            for r in 0..rn {
                let row = t * n + r0 + r;
                let x = &xp[(row0 + r0 + r) * k..][..k];
                let p = &prod[r * k..][..k];
                // The slices below are the tile's own blocks of step t, or of step tp.
                // SAFETY: the tile's own block of h_t (rows r0.., units u0..).
                let hout = unsafe { c.out.slice_mut(row * h + u0, un) };
                let prev_row = match h_prev {
                    // SAFETY: the tile's own block of the state before, which it wrote
                    // itself (or h0).
                    Some(hp) => unsafe {
                        std::slice::from_raw_parts(
                            hp.down(r0 + r).checked_ptr(1, u0 + un).add(u0),
                            un,
                        )
                    },
                    None => &c.zeros[..un],
                };
                // The tile's activations of this row.
                let acts: Option<[&mut [T]; 4]> = c.acts.map(|a| {
                    // SAFETY: the tile's own activations of step t (rows r0.., units u0..).
                    let seg = unsafe { a.slice_mut(saved(t, r, 4), 4 * un) };
                    let mut parts = seg.chunks_exact_mut(un);
                    std::array::from_fn(|_| parts.next().expect("4 parts"))
                });
                match mode {
                    RecurrentMode::RnnTanh | RecurrentMode::RnnRelu => match c.fma {
                        true => rnn_row::<T, true>(mode, x, p, bx, hout),
                        false => rnn_row::<T, false>(mode, x, p, bx, hout),
                    },
                    RecurrentMode::Lstm => {
                        let (acts, c_prev, cell, tc) = match (acts, c.cells) {
                            // SAFETY: the tile's own cells of step t, and of step tp, which
                            // it wrote itself in the step before.
                            (Some(a), Some((cp, tcp))) => unsafe {
                                let c_prev = match (tp, c.c0) {
                                    (Some(tp), _) => cp.slice(saved(tp, r, 1), un),
                                    (None, Some(c0)) => &c0[(r0 + r) * h + u0..][..un],
                                    (None, None) => &c.zeros[..un],
                                };
                                let cell = cp.slice_mut(saved(t, r, 1), un);
                                (a, c_prev, cell, tcp.slice_mut(saved(t, r, 1), un))
                            },
                            _ => {
                                let (a, tc) = scratch[..5 * un].split_at_mut(4 * un);
                                let mut parts = a.chunks_exact_mut(un);
                                let a: [&mut [T]; 4] =
                                    std::array::from_fn(|_| parts.next().expect("4 gates"));
                                // c alternates between the two halves of the state.
                                let (even, odd) = state.split_at_mut(rn * un);
                                let (from, to) = if s % 2 == 0 { (even, odd) } else { (odd, even) };
                                (a, &from[r * un..][..un], &mut to[r * un..][..un], tc)
                            }
                        };
                        let g4 = |s| [0, 1, 2, 3].map(|gate| gate_of(s, gate, un));
                        let (x, p, b) = (g4(x), g4(p), g4(bx));
                        match c.fma {
                            true => lstm_row::<T, true>(x, p, b, acts, (c_prev, cell), tc, hout),
                            false => lstm_row::<T, false>(x, p, b, acts, (c_prev, cell), tc, hout),
                        }
                        if last {
                            // c_n goes to the packed output's extra step.
                            // SAFETY: the tile's own block of that extra step.
                            // SAFETY: the tile's own block of the packed output's extra step.
                            let c_n = unsafe { c.out.slice_mut((d.l * n + r0 + r) * h + u0, un) };
                            c_n.copy_from_slice(cell);
                        }
                    }
                    RecurrentMode::Gru => {
                        let acts = acts.unwrap_or_else(|| {
                            let mut parts = scratch[..4 * un].chunks_exact_mut(un);
                            std::array::from_fn(|_| parts.next().expect("4 parts"))
                        });
                        let g3 = |s| [0, 1, 2].map(|gate| gate_of(s, gate, un));
                        let (x, p, b, bhn) = (g3(x), g3(p), g3(bx), &c.bhn[u0..][..un]);
                        match c.fma {
                            true => gru_row::<T, true>(x, p, b, bhn, prev_row, acts, hout),
                            false => gru_row::<T, false>(x, p, b, bhn, prev_row, acts, hout),
                        }
                    }
                }
            }
        },
    );
}

/// The LSTM gate pass of one tile on `gates::lstm_tile_avx512` (see `step`, whose
/// arguments these are; the tile's product with `W_hh` is in `tile.prod`).
///
/// # Safety
/// As `step`; besides, T is f32 and the CPU has AVX-512.
#[cfg(target_arch = "x86_64")]
unsafe fn lstm_tile<T: Element>(
    d: &RecurrentShape,
    c: &Ctx<'_, T>,
    (xp, row0): (&[T], usize),
    tile: &mut Tile<T>,
    (s, t, tp, last): (usize, usize, Option<usize>, bool),
) {
    let (h, n) = (d.h, d.n);
    let (r0, rn, u0, un) = (tile.r0, tile.rn, tile.u0, tile.un);
    let k = d.g * un;
    let saved = |t: usize, w: usize| saved_at(d, (r0, rn, u0, un), t, 0, w);
    // SAFETY: T is f32 (the caller's promise).
    let (x, p, b) = unsafe {
        (
            (as_f32(&xp[(row0 + r0) * k..]), k),
            (as_f32(&tile.prod[..rn * k]), k),
            as_f32(&c.bx[d.g * u0..][..k]),
        )
    };
    // SAFETY (the slices and the pointer): the caller's promise.
    let h_t = (
        RawMat::of_shared(&c.out, Strided::row_major((t * n + r0) * h + u0, h))
            .checked_ptr(rn, un)
            .cast::<f32>(),
        h,
    );
    let (state, scratch) = (&mut tile.state, &mut tile.scratch);
    match (c.acts, c.cells) {
        // SAFETY: the caller's promise: the tile's own blocks of steps t and tp.
        (Some(a), Some((cp, tcp))) => unsafe {
            let c_prev = match (tp, c.c0) {
                (Some(tp), _) => (cp.slice(saved(tp, 1), rn * un), un),
                (None, Some(c0)) => (&c0[r0 * h + u0..], h),
                (None, None) => (&c.zeros[..un], 0),
            };
            gates::lstm_tile_avx512(
                (rn, un),
                x,
                p,
                b,
                (as_f32_mut(a.slice_mut(saved(t, 4), 4 * rn * un)), 4 * un),
                (as_f32(c_prev.0), c_prev.1),
                (as_f32_mut(cp.slice_mut(saved(t, 1), rn * un)), un),
                (as_f32_mut(tcp.slice_mut(saved(t, 1), rn * un)), un),
                h_t,
            );
        },
        _ => {
            // Nothing kept but c, which alternates between the two halves of the state;
            // the activations and tanh c go to one row of scratch, rewritten row by row.
            let (a, tc) = scratch[..5 * un].split_at_mut(4 * un);
            let (even, odd) = state.split_at_mut(rn * un);
            let (from, to) = if s % 2 == 0 { (even, odd) } else { (odd, even) };
            // SAFETY: as above.
            unsafe {
                gates::lstm_tile_avx512(
                    (rn, un),
                    x,
                    p,
                    b,
                    (as_f32_mut(a), 0),
                    (as_f32(from), un),
                    (as_f32_mut(to), un),
                    (as_f32_mut(tc), 0),
                    h_t,
                );
            }
        }
    }
    if last {
        // c_n goes to the packed output's extra step.
        for r in 0..rn {
            let cell = match (c.cells, s % 2 == 0) {
                // SAFETY: the tile's own block of step t.
                (Some((cp, _)), _) => unsafe { cp.slice(saved(t, 1) + r * un, un) },
                (None, true) => &tile.state[(rn + r) * un..][..un],
                (None, false) => &tile.state[r * un..][..un],
            };
            // SAFETY: the tile's own block of the extra step.
            let c_n = unsafe { c.out.slice_mut((d.l * n + r0 + r) * h + u0, un) };
            c_n.copy_from_slice(cell);
        }
    }
}

/// `s` as f32.
///
/// # Safety
/// `T` is f32.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn as_f32<T>(s: &[T]) -> &[f32] {
    // SAFETY: T is f32 (the caller's promise): same layout, same length.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) }
}

/// `s` as f32, mutably.
///
/// # Safety
/// `T` is f32.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn as_f32_mut<T>(s: &mut [T]) -> &mut [f32] {
    // SAFETY: as `as_f32`.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) }
}

/// Gate `gate` of a tile's `un` units in a tile-major row.
#[inline(always)]
fn gate_of<T>(s: &[T], gate: usize, un: usize) -> &[T] {
    &s[gate * un..][..un]
}
/// `h = act(x + p + b)` for one row of a tile.
#[inline(always)]
fn rnn_row<T: Element, const FMA: bool>(
    mode: RecurrentMode,
    x: &[T],
    p: &[T],
    b: &[T],
    h: &mut [T],
) {
    let un = h.len();
    let (x, p, b) = (&x[..un], &p[..un], &b[..un]);
    if mode == RecurrentMode::RnnTanh {
        for u in 0..un {
            h[u] = gates::tanh::<T, FMA>(x[u] + p[u] + b[u]);
        }
    } else {
        for u in 0..un {
            let v = x[u] + p[u] + b[u];
            h[u] = if v < T::zero() { T::zero() } else { v };
        }
    }
}

/// One row of an LSTM tile: `c_t` into `cell` from `c_{t-1}` in `c_prev`.
#[inline(always)]
pub(super) fn lstm_row<T: Element, const FMA: bool>(
    x: [&[T]; 4],
    p: [&[T]; 4],
    b: [&[T]; 4],
    acts: [&mut [T]; 4],
    (c_prev, cell): (&[T], &mut [T]),
    tc: &mut [T],
    h: &mut [T],
) {
    let un = h.len();
    let [xi, xf, xg, xo] = x.map(|s| &s[..un]);
    let [pi, pf, pg, po] = p.map(|s| &s[..un]);
    let [bi, bf, bg, bo] = b.map(|s| &s[..un]);
    let [ai, af, ag, ao] = acts;
    let (ai, af, ag, ao) = (&mut ai[..un], &mut af[..un], &mut ag[..un], &mut ao[..un]);
    let (c_prev, cell, tc) = (&c_prev[..un], &mut cell[..un], &mut tc[..un]);
    for u in 0..un {
        let i = gates::sigmoid::<T, FMA>(xi[u] + pi[u] + bi[u]);
        let f = gates::sigmoid::<T, FMA>(xf[u] + pf[u] + bf[u]);
        let g = gates::tanh::<T, FMA>(xg[u] + pg[u] + bg[u]);
        let o = gates::sigmoid::<T, FMA>(xo[u] + po[u] + bo[u]);
        let c = f * c_prev[u] + i * g;
        let t = gates::tanh::<T, FMA>(c);
        ai[u] = i;
        af[u] = f;
        ag[u] = g;
        ao[u] = o;
        cell[u] = c;
        tc[u] = t;
        h[u] = o * t;
    }
}

/// One row of a GRU tile; `acts` receives `r, z, n` and `W_hn h + b_hn`.
#[inline(always)]
fn gru_row<T: Element, const FMA: bool>(
    x: [&[T]; 3],
    p: [&[T]; 3],
    b: [&[T]; 3],
    bhn: &[T],
    h_prev: &[T],
    acts: [&mut [T]; 4],
    h: &mut [T],
) {
    let un = h.len();
    let [xr, xz, xn] = x.map(|s| &s[..un]);
    let [pr, pz, pn] = p.map(|s| &s[..un]);
    let [br, bz, bn] = b.map(|s| &s[..un]);
    let (bhn, h_prev) = (&bhn[..un], &h_prev[..un]);
    let [ar, az, an, ahn] = acts;
    let (ar, az, an, ahn) = (&mut ar[..un], &mut az[..un], &mut an[..un], &mut ahn[..un]);
    for u in 0..un {
        let r = gates::sigmoid::<T, FMA>(xr[u] + pr[u] + br[u]);
        let z = gates::sigmoid::<T, FMA>(xz[u] + pz[u] + bz[u]);
        let hn = pn[u] + bhn[u];
        let nn = gates::tanh::<T, FMA>(xn[u] + bn[u] + r * hn);
        ar[u] = r;
        az[u] = z;
        an[u] = nn;
        ahn[u] = hn;
        // PyTorch's order: (h − n)·z + n.
        h[u] = (h_prev[u] - nn) * z + nn;
    }
}
