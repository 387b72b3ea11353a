//! The backward walk, in reverse and a chunk of steps at a time: per step and tile, `∂h`
//! from the next step's gate gradients times `W_hh`, then the gate gradients; after each
//! chunk, each unit block's rows of `∂W_hh`, `∂W_ih` and the biases over the chunk's
//! steps, and `∂x` for them.
//!
//! With `∂h` the gradient reaching `h_t` (from the output and from step `t + 1`):
//!
//! - RNN: `∂a = ∂h ⊙ (1 − h²)` (tanh) or `∂h ⊙ [h > 0]` (relu).
//! - LSTM (`c = f c₋ + i g`, `h = o tanh c`): `∂c = ∂c₊ f₊ + ∂h o (1 − tanh² c)`, then
//!   `∂i = ∂c g i(1−i)`, `∂f = ∂c c₋ f(1−f)`, `∂g = ∂c i (1−g²)`, `∂o = ∂h tanh c o(1−o)`.
//! - GRU (`h = (h₋ − n) z + n`, `n = tanh(a_n + r ĥ)`, `ĥ = W_hn h₋ + b_hn`):
//!   `∂n = ∂h (1−z)`, `∂z = ∂h (h₋ − n)`, `∂a_n = ∂n (1−n²)`, `∂ĥ = ∂a_n r`,
//!   `∂r = ∂a_n ĥ`; the gates' pre-activations get `∂r r(1−r)` and `∂z z(1−z)`. The
//!   hidden side sees `∂ĥ` where the input side sees `∂a_n`, and `h₋` also receives
//!   `z ∂h` directly.
//!
//! Then `∂h₋ = ∂gates_h · W_hh` (plus the GRU's direct term), `∂W_hh = Σ_t ∂gates_hᵀ h₋`,
//! `∂W_ih = Σ_t ∂gates_xᵀ x`, `∂x = ∂gates_x · W_ih`, and the biases are column sums.
//!
//! The gate gradients of a chunk of `S` steps are kept row-major, `[S·N, G·H]` with the
//! gates in tile-major order (see `RecurrentShape::gate_col`), so that each tile writes one
//! contiguous segment per row and each unit block finds its columns side by side. Two
//! such buffers alternate between chunks (the first step of a chunk reads the last of
//! the previous one): everything stays in cache and nothing of size `L·N·G·H` is ever
//! written. On the AVX-512 path (see `panels`) each unit block's columns are packed into
//! the microkernel's groups once per chunk (summing the bias gradients on the way) and
//! multiplied by the chunk's `h₋` and `x`, which are packed once for all blocks;
//! elsewhere faer reads them through a transposed view, which costs it little at this
//! depth (`S·N ≈ 256`; at `L·N` it would be twice as slow).

use faer::Par;

use super::panels::{StepWeights, pack_groups};
use super::{
    RecurrentGradNeeds, RecurrentGrads, RecurrentMode, RecurrentSaved, RecurrentShape, Tile, Wait,
    chunks, recycle, saved_at, tiles, unit_blocks, walk_tiles,
};
use crate::engine::gemm::{RawMat, Strided, Strided as Operand, parallelism, product as gemm};
use crate::engine::par::{self, Disjoint};
use crate::engine::simd::dispatch;
use crate::handle::storage::{Buffer, alloc, alloc_zeroed};
use crate::{Element, Tensor};

/// What every tile of every step reads or writes.
struct Ctx<'a, T> {
    /// The gradient of the packed output.
    grad: &'a [T],
    /// The packed output.
    out: &'a [T],
    acts: Option<&'a [T]>,
    cells: Option<(&'a [T], &'a [T])>,
    h0: Option<&'a [T]>,
    c0: Option<&'a [T]>,
    /// `W_hh` with its rows in tile-major order, per unit block: block `b` is
    /// `W_hh[rows, u0..u0 + un]`, `[G·H, un]`.
    wq: &'a StepWeights<T>,
    /// The unit blocks `(u0, un)`.
    blocks: &'a [(usize, usize)],
    zeros: &'a [T],
    /// The two chunk buffers of the hidden side's gate gradients, `[S·N, G·H]` each.
    dg: [Disjoint<'a, T>; 2],
    /// GRU: the input side's `∂a_n`, `[S·N, H]` each, when an input-side gradient is
    /// wanted.
    dpn: Option<[Disjoint<'a, T>; 2]>,
    par: Par,
    /// Whether the LSTM tiles run on `gates::lstm_backward_tile_avx512` (T is f32, the
    /// CPU has AVX-512).
    avx512_row: bool,
}

/// Where a step's gate gradients live: chunk buffer and first row.
#[derive(Clone, Copy)]
struct Slot {
    buf: usize,
    row: usize,
}

/// The gradients the chunks accumulate into, rows (or entries) in tile-major order.
struct Sums<T> {
    w_hh: Option<Buffer<T>>,
    b_hh: Option<Buffer<T>>,
    w_ih: Option<Buffer<T>>,
    b_ih: Option<Buffer<T>>,
}

pub(super) fn run<T: Element>(
    saved: &RecurrentSaved<T>,
    grad: &[T],
    needs: RecurrentGradNeeds,
) -> RecurrentGrads<T> {
    let (mode, reverse, d) = (saved.mode, saved.reverse, saved.dims);
    let (l, n, h, gh, input) = (d.l, d.n, d.h, d.gh(), d.input);
    let (lstm, gru) = (mode == RecurrentMode::Lstm, mode == RecurrentMode::Gru);
    fn slice<T: Element>(t: &Tensor<T>) -> &[T] {
        t.as_slice().expect("saved contiguous")
    }
    let (out, x, w_ih, w_hh) = (
        slice(&saved.out),
        slice(&saved.x),
        slice(&saved.w_ih),
        slice(&saved.w_hh),
    );
    let (h0, c0) = (saved.h0.as_ref().map(slice), saved.c0.as_ref().map(slice));
    let x_side = needs.x || needs.w_ih || needs.b_ih || needs.gates;

    let mut tiles = tiles::<T>(&d);
    let blocks = unit_blocks(&tiles);
    let block_cols: Vec<usize> = blocks.iter().map(|&(_, un)| un).collect();
    // `W_hh` with its rows in tile-major order, per unit block: block `b` is
    // `W_hh[rows, u0..u0 + un]`.
    let pos = tile_major(&d, &blocks);
    let mut natural_row = vec![0; gh];
    for (i, &p) in pos.iter().enumerate() {
        natural_row[p] = i;
    }
    let wq = StepWeights::from_rows(gh, &block_cols, |b, kk| {
        &w_hh[natural_row[kk] * h + blocks[b].0..]
    });
    let (steps, _) = chunks(&d);
    let cols = steps * n;
    let mut dg = [alloc::<T>(cols * gh), alloc::<T>(cols * gh)];
    let mut dpn = (gru && x_side).then(|| [alloc::<T>(cols * h), alloc::<T>(cols * h)]);
    let zeros_if = |need: bool, len: usize| need.then(|| alloc_zeroed::<T>(len));
    // Outside the GRU both biases get the same gradient: sum it once.
    let same_bias = !gru && needs.b_hh && saved.has_b_hh && needs.b_ih && saved.has_b_ih;
    let mut sums = Sums {
        w_hh: zeros_if(needs.w_hh, gh * h),
        b_hh: zeros_if(needs.b_hh && saved.has_b_hh, gh),
        w_ih: zeros_if(needs.w_ih, gh * input),
        b_ih: zeros_if(needs.b_ih && saved.has_b_ih && !same_bias, gh),
    };
    // ∂x reads W_ih with its rows in tile-major order; the GRU's n rows are zero there,
    // their share comes from the input side's own ∂a_n.
    let wx = needs.x.then(|| pack_rows(&d, &pos, w_ih, input));
    let mut dx = needs.x.then(|| alloc::<T>(l * n * input));
    let mut gates = needs
        .gates
        .then(|| (alloc::<T>(l * n * gh), alloc::<T>(l * n * gh)));

    if lstm {
        // ∂c starts from the gradient of c_n, the packed output's extra step.
        for tile in &mut tiles {
            for r in 0..tile.rn {
                let src = &grad[(l * n + tile.r0 + r) * h + tile.u0..][..tile.un];
                tile.state[r * tile.un..][..tile.un].copy_from_slice(src);
            }
        }
    }
    let zeros = vec![T::zero(); h];
    let [dg0, dg1] = &mut dg;
    let ctx = Ctx {
        grad,
        out,
        acts: saved.acts.as_ref().map(slice),
        cells: saved.cells.as_ref().map(|(c, tc)| (slice(c), slice(tc))),
        h0,
        c0,
        wq: &wq,
        blocks: &blocks,
        zeros: &zeros,
        dg: [Disjoint::new(dg0), Disjoint::new(dg1)],
        dpn: dpn
            .as_mut()
            .map(|[a, b]| [Disjoint::new(a), Disjoint::new(b)]),
        par: if tiles.len() == 1 {
            parallelism(n * gh * h)
        } else {
            Par::Seq
        },
        avx512_row: super::f32_avx512::<T>(),
    };
    // The slot of the step taken `s`-th by the forward walk.
    let slot = |s: usize| {
        let c0 = s / steps * steps;
        let t_lo = d.chunk_start(c0, steps.min(l - c0), reverse);
        Slot {
            buf: (s / steps) % 2,
            row: (d.time(s, reverse) - t_lo) * n,
        }
    };
    for c0 in (0..l).step_by(steps).rev() {
        let len = steps.min(l - c0);
        walk_tiles(&mut tiles, (c0..c0 + len).rev(), |tile, s, wait| {
            let t = d.time(s, reverse);
            let next = (s + 1 < l).then(|| slot(s + 1));
            let prev = (s > 0).then(|| d.time(s - 1, reverse));
            // SAFETY: the tiles of a step write disjoint (row, unit) blocks of step t's
            // gradients and read only step `next`'s, each block once `wait` says it is
            // complete.
            unsafe { step(mode, &d, &ctx, tile, (t, slot(s)), next, prev, wait) }
        });
        // The chunk's share of the weight, bias and input gradients.
        let t_lo = d.chunk_start(c0, len, reverse);
        let buf = (c0 / steps) % 2;
        let chunk = Chunk {
            t_lo,
            len,
            // SAFETY: the tiles are done; the buffers are read through the pointers they
            // wrote through.
            dg: unsafe { ctx.dg[buf].slice(0, cols * gh) },
            // SAFETY: as `dg`: the tiles that wrote this buffer are done.
            dpn: ctx.dpn.map(|p| unsafe { p[buf].slice(0, cols * h) }),
        };
        accumulate(mode, &d, &blocks, &chunk, (out, x, h0), reverse, &mut sums);
        if let Some((g_ih, g_hh)) = &mut gates {
            copy_gates(&d, &blocks, &chunk, g_ih, g_hh);
        }
        if let (Some(dx), Some(wx)) = (&mut dx, &wx) {
            // ∂x = ∂gates_x · W_ih.
            let k = len * n;
            let dx = &mut dx[t_lo * n * input..][..k * input];
            let par = parallelism(k * input * gh);
            let a = Operand::row_major(0, gh);
            let w = Operand::row_major(0, input);
            gemm(dx, (k, input, gh), chunk.dg, a, wx, w, false, par);
            if let Some(pn) = chunk.dpn {
                let a = Operand::row_major(0, h);
                let w = Operand::row_major(2 * h * input, input);
                gemm(dx, (k, input, h), pn, a, w_ih, w, true, par);
            }
        }
    }

    let mut grads = RecurrentGrads::default();
    let tensor = |v: Buffer<T>, shape: &[usize]| Tensor::from_contiguous(v, shape);
    if let (true, Some(_)) = (needs.h0, h0) {
        // ∂h₋ of the first step: through W_hh (block by block of its columns), plus the
        // GRU's direct z ⊙ ∂h.
        let first = slot(0);
        let mut dh0 = alloc::<T>(n * h);
        for (b, &(u0, un)) in blocks.iter().enumerate() {
            // SAFETY: in bounds; nothing else runs.
            unsafe {
                wq.gemm(
                    b,
                    RawMat::of_mut(&mut dh0, Strided::row_major(u0, h)),
                    RawMat::of_shared(&ctx.dg[first.buf], Strided::row_major(first.row * gh, gh)),
                    n,
                    parallelism(n * un * gh),
                    None,
                );
            }
        }
        if gru {
            for tile in &tiles {
                for r in 0..tile.rn {
                    let dst = &mut dh0[(tile.r0 + r) * h + tile.u0..][..tile.un];
                    for (o, &v) in dst.iter_mut().zip(&tile.carry[r * tile.un..][..tile.un]) {
                        *o += v;
                    }
                }
            }
        }
        grads.h0 = Some(tensor(dh0, &[n, h]));
    }
    if let (true, true, Some(_)) = (needs.c0, lstm, c0) {
        let mut dc0 = alloc::<T>(n * h);
        for tile in &tiles {
            for r in 0..tile.rn {
                dc0[(tile.r0 + r) * h + tile.u0..][..tile.un]
                    .copy_from_slice(&tile.state[r * tile.un..][..tile.un]);
            }
        }
        grads.c0 = Some(tensor(dc0, &[n, h]));
    }
    // Back to PyTorch's row order.
    let natural = |v: Buffer<T>, width: usize| unpermute(&d, &blocks, v, width);
    grads.w_hh = sums.w_hh.map(|v| tensor(natural(v, h), &[gh, h]));
    grads.w_ih = sums.w_ih.map(|v| tensor(natural(v, input), &[gh, input]));
    let b_hh = sums.b_hh.map(|v| natural(v, 1));
    grads.b_ih = match same_bias {
        true => b_hh.clone(),
        false => sums.b_ih.map(|v| natural(v, 1)),
    }
    .map(|v| tensor(v, &[gh]));
    grads.b_hh = b_hh.map(|v| tensor(v, &[gh]));
    grads.x = dx.map(|v| tensor(v, &[l, n, input]));
    if let Some((g_ih, g_hh)) = gates {
        grads.gates_ih = Some(tensor(g_ih, &[l, n, gh]));
        grads.gates_hh = Some(tensor(g_hh, &[l, n, gh]));
    }
    let [a, b] = dg;
    let pairs = dpn.into_iter().flatten();
    wq.recycle();
    for buf in [a, b].into_iter().chain(pairs).chain(wx) {
        recycle(buf);
    }
    grads
}

/// One finished chunk: `len` steps from time `t_lo` and their gate gradients.
struct Chunk<'a, T> {
    t_lo: usize,
    len: usize,
    dg: &'a [T],
    dpn: Option<&'a [T]>,
}

/// Adds a chunk's share to the weight and bias gradients: each unit block its own rows
/// (contiguous in tile-major order), the blocks in parallel.
fn accumulate<T: Element>(
    mode: RecurrentMode,
    d: &RecurrentShape,
    blocks: &[(usize, usize)],
    chunk: &Chunk<'_, T>,
    (out, x, h0): (&[T], &[T], Option<&[T]>),
    reverse: bool,
    sums: &mut Sums<T>,
) {
    let (n, h, g, gh, input) = (d.n, d.h, d.g, d.gh(), d.input);
    let gru = mode == RecurrentMode::Gru;
    let (t_lo, len) = (chunk.t_lo, chunk.len);
    let k = len * n;
    // The steps whose h₋ is an output pair with out rows from `b_row`; the step that
    // starts from h0, if in this chunk, separately.
    let first = d.time(0, reverse);
    let has_first = (t_lo..t_lo + len).contains(&first);
    let (a_row, b_row, m_k) = match (reverse, has_first) {
        (false, true) => (n, 0, k - n),
        (false, false) => (0, (t_lo - 1) * n, k),
        (true, true) => (0, (t_lo + 1) * n, k - n),
        (true, false) => (0, (t_lo + 1) * n, k),
    };
    // On the panel kernel, the right operands of every block's products packed once: block
    // 0 the state before each row's step (an output, h0 or zeros), block 1 the inputs.
    let zeros = vec![T::zero(); h];
    let h_prev = |kk: usize| -> &[T] {
        let (t, r) = (t_lo + kk / n, kk % n);
        match (t == first, h0) {
            (true, Some(h0)) => &h0[r * h..][..h],
            (true, None) => &zeros,
            (false, _) => {
                let tp = if reverse { t + 1 } else { t - 1 };
                &out[(tp * n + r) * h..][..h]
            }
        }
    };
    let rhs =
        (super::f32_avx512::<T>() && (sums.w_hh.is_some() || sums.w_ih.is_some())).then(|| {
            StepWeights::from_rows(k, &[h, input], |b, kk| match b {
                0 => h_prev(kk),
                _ => &x[(t_lo * n + kk) * input..][..input],
            })
        });
    let parts: Vec<BlockSums<'_, T>> = split(&mut sums.w_hh, blocks, g * h)
        .into_iter()
        .zip(split(&mut sums.b_hh, blocks, g))
        .zip(split(&mut sums.w_ih, blocks, g * input))
        .zip(split(&mut sums.b_ih, blocks, g))
        .zip(blocks)
        .map(|((((w_hh, b_hh), w_ih), b_ih), &(u0, un))| BlockSums {
            w_hh,
            b_hh,
            w_ih,
            b_ih,
            u0,
            un,
        })
        .collect();
    let seq = blocks.len() > 1;
    let one = |part: BlockSums<'_, T>| {
        let BlockSums {
            w_hh: dw,
            b_hh: mut db,
            w_ih: dwi,
            b_ih: dbi,
            u0,
            un,
        } = part;
        let gun = g * un;
        // The block's gate gradients transposed, `[G·un, k]`: a column-major view.
        let view = |row: usize, col: usize, width: usize| Operand {
            offset: row * width + col,
            rs: 1,
            cs: width,
        };
        let par = |macs: usize| if seq { Par::Seq } else { parallelism(macs) };
        // The input side: the hidden side's gradients, except the GRU's n rows.
        let shared = if gru { 2 * un } else { gun };
        if let Some(rhs) = &rhs {
            // The block's gate gradients transposed, in the microkernel's groups, and the
            // hidden-side bias gradients summed on the way.
            let a = pack_groups((chunk.dg, gh), (g * u0, gun, k), db.as_deref_mut());
            if let Some(dw) = dw {
                add_packed(rhs, 0, dw, &a, gun, !seq);
            }
            if let Some(dwi) = dwi {
                let (top, bottom) = dwi.split_at_mut(shared * input);
                add_packed(rhs, 1, top, &a, shared, !seq);
                if let (true, Some(pn)) = (gru, chunk.dpn) {
                    let a = pack_groups((pn, h), (u0, un, k), None);
                    add_packed(rhs, 1, bottom, &a, un, !seq);
                    recycle(a);
                }
            }
            recycle(a);
        } else {
            if let Some(dw) = dw {
                let b = Operand::row_major(b_row * h, h);
                let a = view(a_row, g * u0, gh);
                gemm(
                    dw,
                    (gun, h, m_k),
                    chunk.dg,
                    a,
                    out,
                    b,
                    true,
                    par(gun * h * m_k),
                );
                if let (true, Some(h0)) = (has_first, h0) {
                    let a = view((first - t_lo) * n, g * u0, gh);
                    let b = Operand::row_major(0, h);
                    gemm(dw, (gun, h, n), chunk.dg, a, h0, b, true, par(gun * h * n));
                }
            }
            let xs = Operand::row_major(t_lo * n * input, input);
            if let Some(dwi) = dwi {
                let (top, bottom) = dwi.split_at_mut(shared * input);
                let a = view(0, g * u0, gh);
                gemm(
                    top,
                    (shared, input, k),
                    chunk.dg,
                    a,
                    x,
                    xs,
                    true,
                    par(shared * input * k),
                );
                if let (true, Some(pn)) = (gru, chunk.dpn) {
                    let a = view(0, u0, h);
                    gemm(
                        bottom,
                        (un, input, k),
                        pn,
                        a,
                        x,
                        xs,
                        true,
                        par(un * input * k),
                    );
                }
            }
        }
        if let (None, Some(db)) = (&rhs, db) {
            add_column_sums(db, chunk.dg, g * u0, gh, k);
        }
        if let Some(dbi) = dbi {
            let (top, bottom) = dbi.split_at_mut(shared);
            add_column_sums(top, chunk.dg, g * u0, gh, k);
            if let (true, Some(pn)) = (gru, chunk.dpn) {
                add_column_sums(bottom, pn, u0, h, k);
            }
        }
    };
    // With `seq`, the blocks run in parallel (each product on one thread).
    let mut parts: Vec<Option<BlockSums<'_, T>>> = parts.into_iter().map(Some).collect();
    par::chunks_mut(&mut parts, 1, seq, |_, part| {
        one(part[0].take().expect("each block is taken once"))
    });
    if let Some(rhs) = rhs {
        rhs.recycle();
    }
}

/// `c += a · rhs_block` for the first `m` rows of `c` (rows as wide as the block), `a`
/// laid out by `pack_groups`; with `split`, the rows are shared out among the threads
/// (for a lone unit block; several blocks run in parallel already).
fn add_packed<T: Element>(
    rhs: &StepWeights<T>,
    block: usize,
    c: &mut [T],
    a: &[T],
    m: usize,
    split: bool,
) {
    use super::panels::MR;
    if m == 0 {
        return;
    }
    let width = c.len() / m;
    let k = rhs.k();
    let piece = match split {
        true => m.div_ceil(par::threads()).next_multiple_of(MR),
        false => m,
    };
    let one = |(i, c): (usize, &mut [T])| {
        let rows = c.len() / width;
        let a = &a[i * piece * k..];
        // SAFETY: `c` holds `rows` rows of the block's width, and is this call's alone.
        unsafe {
            rhs.add_packed(
                block,
                RawMat::of_mut(c, Strided::row_major(0, width)),
                a,
                rows,
            )
        };
    };
    let c = &mut c[..m * width];
    match split && piece < m {
        true => par::chunks_mut(c, piece * width, true, |i, c| one((i, c))),
        false => one((0, c)),
    }
}

/// One unit block's rows of the accumulators.
struct BlockSums<'v, T> {
    w_hh: Option<&'v mut [T]>,
    b_hh: Option<&'v mut [T]>,
    w_ih: Option<&'v mut [T]>,
    b_ih: Option<&'v mut [T]>,
    u0: usize,
    un: usize,
}

/// An accumulator split into the unit blocks' ranges, `per_unit` entries per unit.
fn split<'v, T>(
    v: &'v mut Option<Buffer<T>>,
    blocks: &[(usize, usize)],
    per_unit: usize,
) -> Vec<Option<&'v mut [T]>> {
    match v {
        Some(v) => {
            let mut rest = &mut v[..];
            blocks
                .iter()
                .map(|&(_, un)| {
                    let (part, tail) = std::mem::take(&mut rest).split_at_mut(un * per_unit);
                    rest = tail;
                    Some(part)
                })
                .collect()
        }
        None => blocks.iter().map(|_| None).collect(),
    }
}

/// Adds to `out` the sums over the first `k` rows of the row-major `m` (rows of `width`)
/// of the columns `col..col + out.len()`.
fn add_column_sums<T: Element>(out: &mut [T], m: &[T], col: usize, width: usize, k: usize) {
    let cols = out.len();
    dispatch(
        #[inline(always)]
        || {
            for row in m[..k * width].chunks_exact(width) {
                for (o, &v) in out.iter_mut().zip(&row[col..col + cols]) {
                    *o += v;
                }
            }
        },
    );
}

/// Copies a finished chunk's gate gradients into the `[L, N, G·H]` outputs, columns back
/// in PyTorch's gate order: the hidden side's from the chunk buffer; the input side's the
/// same, except the GRU's n gate, whose input side has its own `∂a_n`.
fn copy_gates<T: Element>(
    d: &RecurrentShape,
    blocks: &[(usize, usize)],
    chunk: &Chunk<'_, T>,
    g_ih: &mut [T],
    g_hh: &mut [T],
) {
    let (n, h, gh) = (d.n, d.h, d.gh());
    let cols: Vec<usize> = (0..gh).map(|i| d.gate_col(blocks, i / h, i % h)).collect();
    for kk in 0..chunk.len * n {
        let row = &chunk.dg[kk * gh..][..gh];
        let at = (chunk.t_lo * n + kk) * gh;
        let (ih, hh) = (&mut g_ih[at..][..gh], &mut g_hh[at..][..gh]);
        for (i, &c) in cols.iter().enumerate() {
            hh[i] = row[c];
            ih[i] = row[c];
        }
        if let (3, Some(pn)) = (d.g, chunk.dpn) {
            ih[2 * h..].copy_from_slice(&pn[kk * h..][..h]);
        }
    }
}

/// The tile-major position of each of a weight's `G·H` rows (see `RecurrentShape::gate_col`).
fn tile_major(d: &RecurrentShape, blocks: &[(usize, usize)]) -> Vec<usize> {
    (0..d.gh())
        .map(|i| d.gate_col(blocks, i / d.h, i % d.h))
        .collect()
}

/// A weight `[G·H, cols]` with its rows moved to their tile-major positions `pos`, the
/// GRU's n rows zeroed.
fn pack_rows<T: Element>(d: &RecurrentShape, pos: &[usize], w: &[T], cols: usize) -> Buffer<T> {
    let mut out = alloc::<T>(d.gh() * cols);
    for (i, (src, &row)) in w.chunks_exact(cols).zip(pos).enumerate() {
        let dst = &mut out[row * cols..][..cols];
        if d.g == 3 && i >= 2 * d.h {
            dst.fill(T::zero());
        } else {
            dst.copy_from_slice(src);
        }
    }
    out
}

/// The rows (of `width`) of a tile-major `[G·H, width]` matrix in PyTorch's gate order.
fn unpermute<T: Element>(
    d: &RecurrentShape,
    blocks: &[(usize, usize)],
    v: Buffer<T>,
    width: usize,
) -> Buffer<T> {
    let mut out = alloc::<T>(v.len());
    for gate in 0..d.g {
        for j in 0..d.h {
            let from = d.gate_col(blocks, gate, j);
            out[(gate * d.h + j) * width..][..width].copy_from_slice(&v[from * width..][..width]);
        }
    }
    recycle(v);
    out
}

/// One backward step of one tile: `t` is the step and `at` where its gate gradients go,
/// `next` where the gradients of the step after it in the forward walk (already done
/// here) are, `prev` the time of the one before it.
///
/// # Safety
/// No other thread touches the tile's (row, unit) block of step `t`'s gradients during the
/// call, nor writes step `next`'s.
#[allow(clippy::too_many_arguments)]
unsafe fn step<'a, T: Element>(
    mode: RecurrentMode,
    d: &RecurrentShape,
    c: &Ctx<'a, T>,
    tile: &mut Tile<T>,
    (t, at): (usize, Slot),
    next: Option<Slot>,
    prev: Option<usize>,
    wait: &Wait<'_>,
) {
    let (h, n, g, gh) = (d.h, d.n, d.g, d.gh());
    let (r0, rn, u0, un) = (tile.r0, tile.rn, tile.u0, tile.un);
    let gun = g * un;
    let dh = &mut tile.prod[..rn * un];
    match next {
        // ∂h for our (rows, units) = ∂gates_h[next] · W_hh[:, units].
        // SAFETY: step `next` is read block by block once `wait` says that block is
        // complete, and nobody writes it then (other tiles write other parts of the same
        // buffer, hence raw pointers); `dh` is ours.
        Some(nx) => unsafe {
            c.wq.gemm(
                tile.b,
                RawMat::of_mut(dh, Strided::row_major(0, un)),
                RawMat::of_shared(&c.dg[nx.buf], Strided::row_major((nx.row + r0) * gh, gh)),
                rn,
                c.par,
                Some((g * u0, &|k0, k1| wait.columns(c.blocks, g, (k0, k1)))),
            )
        },
        None => dh.fill(T::zero()),
    }
    // The state before step t: an output of step `prev`, or h0 / c0, or zeros.
    let h_prev = match prev {
        Some(tp) => Some(&c.out[tp * n * h..][..n * h]),
        None => c.h0,
    };
    let saved = |t: usize, r: usize, w: usize| saved_at(d, (r0, rn, u0, un), t, r, w);
    let (state, carry, scratch) = (&mut tile.state, &mut tile.carry, &mut tile.scratch);
    #[cfg(target_arch = "x86_64")]
    if c.avx512_row && mode == RecurrentMode::Lstm {
        use super::forward::{as_f32, as_f32_mut};
        let (cells, tcs) = c.cells.expect("saved");
        let acts = &c.acts.expect("saved")[saved(t, 0, 4)..][..4 * rn * un];
        let (c_prev, ld_prev) = match (prev, c.c0) {
            (Some(tp), _) => (&cells[saved(tp, 0, 1)..][..rn * un], un),
            (None, Some(c0)) => (&c0[r0 * h + u0..], h),
            (None, None) => (&c.zeros[..un], 0),
        };
        // SAFETY: T is f32 and the CPU has AVX-512 (`avx512_row`); the tile's rows of
        // step t's gate gradients are its own (other tiles write other columns of the
        // same rows, hence the raw pointer).
        unsafe {
            super::gates::lstm_backward_tile_avx512(
                (rn, un),
                as_f32(dh),
                (as_f32(&c.grad[(t * n + r0) * h + u0..]), h),
                as_f32(acts),
                as_f32(&tcs[saved(t, 0, 1)..][..rn * un]),
                (as_f32(c_prev), ld_prev),
                as_f32_mut(&mut state[..rn * un]),
                (
                    RawMat::of_shared(
                        &c.dg[at.buf],
                        Strided::row_major((at.row + r0) * gh + g * u0, gh),
                    )
                    .checked_ptr(rn, gun)
                    .cast(),
                    gh,
                ),
            );
        }
        return;
    }
    dispatch(
        #[inline(always)]
        || {
            for r in 0..rn {
                let row = t * n + r0 + r;
                let dh = &mut dh[r * un..][..un];
                for (o, &v) in dh.iter_mut().zip(&c.grad[row * h + u0..][..un]) {
                    *o += v;
                }
                // The tile's gate gradients go straight into its segment of the chunk
                // buffer's row (tile-major: all its gates side by side).
                // SAFETY: the tile's own block of step t.
                let dg = unsafe { c.dg[at.buf].slice_mut((at.row + r0 + r) * gh + g * u0, gun) };
                let acts = c.acts.map(|a| &a[saved(t, r, 4)..][..4 * un]);
                let act = |a: usize| &acts.expect("saved")[a * un..][..un];
                let prev_seg = |src: Option<&'a [T]>| -> &'a [T] {
                    match src {
                        Some(s) => &s[(r0 + r) * h + u0..][..un],
                        None => &c.zeros[..un],
                    }
                };
                match mode {
                    RecurrentMode::RnnTanh | RecurrentMode::RnnRelu => {
                        rnn_row(mode, dh, &c.out[row * h + u0..][..un], dg);
                    }
                    RecurrentMode::Lstm => {
                        let (cells, tcs) = c.cells.expect("saved");
                        let c_prev = match prev {
                            Some(tp) => &cells[saved(tp, r, 1)..][..un],
                            None => prev_seg(c.c0),
                        };
                        lstm_row(
                            dh,
                            [act(0), act(1), act(2), act(3)],
                            &tcs[saved(t, r, 1)..][..un],
                            c_prev,
                            &mut state[r * un..][..un],
                            dg,
                        );
                    }
                    RecurrentMode::Gru => {
                        for (o, &v) in dh.iter_mut().zip(&carry[r * un..][..un]) {
                            *o += v;
                        }
                        // The input side's ∂a_n, or a sink when no input-side gradient is
                        // wanted.
                        let dpn = match c.dpn {
                            // SAFETY: as above: the tile's own rows of this buffer.
                            Some(p) => unsafe {
                                p[at.buf].slice_mut((at.row + r0 + r) * h + u0, un)
                            },
                            None => &mut scratch[..un],
                        };
                        gru_row(
                            dh,
                            [act(0), act(1), act(2), act(3)],
                            prev_seg(h_prev),
                            &mut carry[r * un..][..un],
                            dg,
                            dpn,
                        );
                    }
                }
            }
        },
    );
}

/// `∂a` of one RNN row from `∂h` and `h`.
#[inline(always)]
fn rnn_row<T: Element>(mode: RecurrentMode, dh: &[T], h: &[T], da: &mut [T]) {
    let un = dh.len();
    let (h, da) = (&h[..un], &mut da[..un]);
    if mode == RecurrentMode::RnnTanh {
        for u in 0..un {
            da[u] = dh[u] * (T::one() - h[u] * h[u]);
        }
    } else {
        for u in 0..un {
            da[u] = if h[u] > T::zero() { dh[u] } else { T::zero() };
        }
    }
}

/// The gate gradients of one LSTM row (`dg` gate-major); `dc` holds `∂c_t` from step
/// `t + 1` on entry and `∂c_{t-1}` on exit.
#[inline(always)]
pub(super) fn lstm_row<T: Element>(
    dh: &[T],
    acts: [&[T]; 4],
    tc: &[T],
    c_prev: &[T],
    dc: &mut [T],
    dg: &mut [T],
) {
    let un = dh.len();
    let [i, f, g, o] = acts.map(|s| &s[..un]);
    let (tc, c_prev, dc) = (&tc[..un], &c_prev[..un], &mut dc[..un]);
    let (di, rest) = dg[..4 * un].split_at_mut(un);
    let (df, rest) = rest.split_at_mut(un);
    let (dgg, do_) = rest.split_at_mut(un);
    let one = T::one();
    for u in 0..un {
        let (i, f, g, o, t) = (i[u], f[u], g[u], o[u], tc[u]);
        let dcu = dc[u] + dh[u] * o * (one - t * t);
        do_[u] = dh[u] * t * o * (one - o);
        di[u] = dcu * g * i * (one - i);
        dgg[u] = dcu * i * (one - g * g);
        df[u] = dcu * c_prev[u] * f * (one - f);
        dc[u] = dcu * f;
    }
}

/// The gate gradients of one GRU row: `dg` gets the hidden side's `∂a_r, ∂a_z, ∂ĥ`,
/// `dpn` the input side's `∂a_n`, `carry` the direct part of `∂h_{t-1}`.
#[inline(always)]
fn gru_row<T: Element>(
    dh: &[T],
    acts: [&[T]; 4],
    h_prev: &[T],
    carry: &mut [T],
    dg: &mut [T],
    dpn: &mut [T],
) {
    let un = dh.len();
    let [r, z, nn, hn] = acts.map(|s| &s[..un]);
    let (h_prev, carry, dpn) = (&h_prev[..un], &mut carry[..un], &mut dpn[..un]);
    let (dr, rest) = dg[..3 * un].split_at_mut(un);
    let (dz, dhn) = rest.split_at_mut(un);
    let one = T::one();
    for u in 0..un {
        let (r, z, nn, hn, dh) = (r[u], z[u], nn[u], hn[u], dh[u]);
        let da_n = dh * (one - z) * (one - nn * nn);
        dpn[u] = da_n;
        dhn[u] = da_n * r;
        dr[u] = da_n * hn * r * (one - r);
        dz[u] = dh * (h_prev[u] - nn) * z * (one - z);
        carry[u] = dh * z;
    }
}
