//! The backward walk, in reverse and a chunk of steps at a time: per step and tile, `∂h`
//! from the next step's gate gradients times `W_hh`, then the gate gradients; after each
//! chunk, one GEMM (or row sum) per weight, bias and input gradient over the chunk's steps.
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
//! The gate gradients of a chunk of `S` steps are kept row-major, `[S·N, G·H]`, in one
//! of two buffers that alternate between chunks (the first step of a chunk reads the
//! last of the previous one): the per-step product and `∂x` read them as they are, the
//! weight-gradient GEMMs through a transposed view, which costs faer little at this
//! depth (`S·N ≈ 256`; at `L·N` it would be twice as slow). Everything stays in cache and
//! nothing of size `L·N·G·H` is ever written.

use faer::Par;

use super::{
    Dims, RecurrentGradNeeds, RecurrentGrads, RecurrentMode, RecurrentSaved, SyncPtr, Tile, chunks,
    for_each_tile, gemm_raw, recycle, tiles,
};
use crate::matmul::{Operand, gemm, parallelism};
use crate::simd::dispatch;
use crate::storage::{alloc, alloc_zeroed};
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
    /// `W_hh` packed per unit block: block `u0` is `W_hh[:, u0..u0 + un]`, `[G·H, un]`
    /// row-major at `G·H·u0`.
    wq: &'a [T],
    zeros: &'a [T],
    /// The two chunk buffers of the hidden side's gate gradients, `[S·N, G·H]` each.
    dg: [SyncPtr<T>; 2],
    /// GRU: the input side's `∂a_n`, `[S·N, H]` each, when an input-side gradient is
    /// wanted.
    dpn: Option<[SyncPtr<T>; 2]>,
    par: Par,
}

/// Where a step's gate gradients live: chunk buffer and first row.
#[derive(Clone, Copy)]
struct Slot {
    buf: usize,
    row: usize,
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
    let x_side = needs.x || needs.w_ih || needs.b_ih;

    let (steps, _) = chunks(&d);
    let cols = steps * n;
    let mut dg = [alloc::<T>(cols * gh), alloc::<T>(cols * gh)];
    let mut dpn = (gru && x_side).then(|| [alloc::<T>(cols * h), alloc::<T>(cols * h)]);
    // The gradients the chunks accumulate into.
    let zeros_if = |need: bool, len: usize| need.then(|| alloc_zeroed::<T>(len));
    let mut dw_hh = zeros_if(needs.w_hh, gh * h);
    let mut db_hh = zeros_if(needs.b_hh && saved.has_b_hh, gh);
    let mut dw_ih = zeros_if(needs.w_ih, gh * input);
    let mut db_ih = zeros_if(needs.b_ih && saved.has_b_ih, gh);
    let mut dx = needs.x.then(|| alloc::<T>(l * n * input));
    // Outside the GRU both biases get the same gradient: sum it once.
    let same_bias = !gru && db_hh.is_some() && db_ih.is_some();

    let mut tiles = tiles::<T>(&d);
    let wq = pack_w_hh(&d, w_hh, &tiles);
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
        zeros: &zeros,
        dg: [SyncPtr::new(dg0), SyncPtr::new(dg1)],
        dpn: dpn
            .as_mut()
            .map(|[a, b]| [SyncPtr::new(a), SyncPtr::new(b)]),
        par: if tiles.len() == 1 {
            parallelism(n * gh * h)
        } else {
            Par::Seq
        },
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
        for s in (c0..c0 + len).rev() {
            let t = d.time(s, reverse);
            let next = (s + 1 < l).then(|| slot(s + 1));
            let prev = (s > 0).then(|| d.time(s - 1, reverse));
            // SAFETY: the tiles of a step write disjoint (row, unit) blocks of step t's
            // gradients and read only step `next`'s, which the previous fork-join completed.
            for_each_tile(&mut tiles, |tile| unsafe {
                step(mode, &d, &ctx, tile, t, slot(s), next, prev)
            });
        }
        // The chunk's share of the weight, bias and input gradients.
        let t_lo = d.chunk_start(c0, len, reverse);
        let buf = (c0 / steps) % 2;
        let k = len * n;
        // The weight gradients multiply the chunk's gradients transposed: read as a
        // column-major view, which at this depth (k = S·N ≈ 256) costs faer little.
        let (gt, pt) = (&dg[buf], dpn.as_ref().map(|p| &p[buf]));
        let view = |row: usize, width: usize| Operand {
            offset: row * width,
            row_stride: 1,
            col_stride: width,
        };
        if let Some(dw) = &mut dw_hh {
            // Σ ∂gates_h[t]ᵀ h_{t-1} over the chunk: the steps whose h₋ is an output in
            // one product, the step that starts from h0 (if in this chunk) in another.
            let first = d.time(0, reverse);
            let has_first = (t_lo..t_lo + len).contains(&first);
            let (a_row, b_row, m_k) = match (reverse, has_first) {
                (false, true) => (n, 0, k - n),
                (false, false) => (0, (t_lo - 1) * n, k),
                (true, true) => (0, (t_lo + 1) * n, k - n),
                (true, false) => (0, (t_lo + 1) * n, k),
            };
            let b = Operand::row_major(b_row * h, h);
            let par = parallelism(gh * h * m_k);
            gemm(dw, (gh, h, m_k), gt, view(a_row, gh), out, b, true, par);
            if let (true, Some(h0)) = (has_first, h0) {
                let a = view((first - t_lo) * n, gh);
                let b = Operand::row_major(0, h);
                gemm(dw, (gh, h, n), gt, a, h0, b, true, parallelism(gh * h * n));
            }
        }
        if let Some(db) = &mut db_hh {
            add_column_sums(db, &gt[..k * gh]);
        }
        // The input side: the hidden side's gradients, except the GRU's n rows.
        let shared = if gru { 2 * h } else { gh };
        let xs = Operand::row_major(t_lo * n * input, input);
        if let Some(dw) = &mut dw_ih {
            let par = parallelism(gh * input * k);
            let (top, bottom) = dw.split_at_mut(shared * input);
            gemm(top, (shared, input, k), gt, view(0, gh), x, xs, true, par);
            if let Some(pt) = pt {
                gemm(bottom, (h, input, k), pt, view(0, h), x, xs, true, par);
            }
        }
        if let (Some(db), false) = (&mut db_ih, same_bias) {
            if let Some(pt) = pt {
                // Outside the n rows, the GRU's input side equals the hidden side.
                let (top, bottom) = db.split_at_mut(shared);
                add_column_sums_of(top, &gt[..k * gh], gh);
                add_column_sums(bottom, &pt[..k * h]);
            } else {
                add_column_sums(db, &gt[..k * gh]);
            }
        }
        if let Some(dx) = &mut dx {
            // ∂x = ∂gates_x · W_ih.
            let dx = &mut dx[t_lo * n * input..][..k * input];
            let par = parallelism(k * input * gh);
            let a = Operand::row_major(0, gh);
            let w = Operand::row_major(0, input);
            gemm(dx, (k, input, shared), &dg[buf], a, w_ih, w, false, par);
            if let Some(pn) = &dpn {
                let a = Operand::row_major(0, h);
                let w = Operand::row_major(2 * h * input, input);
                gemm(dx, (k, input, h), &pn[buf], a, w_ih, w, true, par);
            }
        }
    }

    let mut grads = RecurrentGrads::default();
    let tensor = |v: Vec<T>, shape: &[usize]| Tensor::from_contiguous(v, shape);
    if let (true, Some(_)) = (needs.h0, h0) {
        // ∂h₋ of the first step: through W_hh, plus the GRU's direct z ⊙ ∂h.
        let first = slot(0);
        let mut dh0 = alloc::<T>(n * h);
        let a = Operand::row_major(first.row * gh, gh);
        let w = Operand::row_major(0, h);
        let par = parallelism(n * h * gh);
        gemm(&mut dh0, (n, h, gh), &dg[first.buf], a, w_hh, w, false, par);
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
    grads.w_hh = dw_hh.map(|v| tensor(v, &[gh, h]));
    if same_bias {
        db_ih = db_hh.clone();
    }
    grads.b_hh = db_hh.map(|v| tensor(v, &[gh]));
    grads.w_ih = dw_ih.map(|v| tensor(v, &[gh, input]));
    grads.b_ih = db_ih.map(|v| tensor(v, &[gh]));
    grads.x = dx.map(|v| tensor(v, &[l, n, input]));
    let [a, b] = dg;
    let pairs = dpn.into_iter().flatten();
    for buf in [a, b].into_iter().chain(pairs) {
        recycle(buf);
    }
    grads
}

/// Adds the column sums of the row-major `m` (rows of `out.len()`) to `out`.
fn add_column_sums<T: Element>(out: &mut [T], m: &[T]) {
    let width = out.len();
    add_column_sums_of(out, m, width);
}

/// Adds the sums of the first `out.len()` columns of the row-major `m` (rows of `width`)
/// to `out`.
fn add_column_sums_of<T: Element>(out: &mut [T], m: &[T], width: usize) {
    let cols = out.len();
    dispatch(
        #[inline(always)]
        || {
            for row in m.chunks_exact(width) {
                for (o, &v) in out.iter_mut().zip(&row[..cols]) {
                    *o += v;
                }
            }
        },
    );
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
    d: &Dims,
    c: &Ctx<'a, T>,
    tile: &mut Tile<T>,
    t: usize,
    at: Slot,
    next: Option<Slot>,
    prev: Option<usize>,
) {
    let (h, n, g, gh) = (d.h, d.n, d.g, d.gh());
    let (r0, rn, u0, un) = (tile.r0, tile.rn, tile.u0, tile.un);
    let dh = &mut tile.prod[..rn * un];
    match next {
        // ∂h for our (rows, units) = ∂gates_h[next] · W_hh[:, units].
        // SAFETY: step `next` is complete and nobody writes it now (other tiles write
        // other rows of the same buffer, hence raw pointers); `dh` is ours.
        Some(nx) => unsafe {
            gemm_raw(
                (dh.as_mut_ptr(), un),
                (rn, un, gh),
                (c.dg[nx.buf].ptr.add((nx.row + r0) * gh), gh, 1),
                (c.wq.as_ptr().add(gh * u0), un, 1),
                c.par,
            )
        },
        None => dh.fill(T::zero()),
    }
    // The state before step t: an output of step `prev`, or h0 / c0, or zeros.
    let h_prev = match prev {
        Some(tp) => Some(&c.out[tp * n * h..][..n * h]),
        None => c.h0,
    };
    let c_prev = match (prev, c.cells) {
        (Some(tp), Some((cells, _))) => Some(&cells[tp * n * h..][..n * h]),
        _ => c.c0,
    };
    let (state, carry) = (&mut tile.state, &mut tile.carry);
    let (dg, dpn) = tile.scratch[..rn * (g + 1) * un].split_at_mut(rn * g * un);
    dispatch(
        #[inline(always)]
        || {
            for r in 0..rn {
                let row = t * n + r0 + r;
                let dh = &mut dh[r * un..][..un];
                for (o, &v) in dh.iter_mut().zip(&c.grad[row * h + u0..][..un]) {
                    *o += v;
                }
                let dg = &mut dg[r * g * un..][..g * un];
                // Unit block of gate `gate` in row `row` of a buffer `width` wide.
                let seg = |base: &'a [T], gate: usize, width: usize| -> &'a [T] {
                    &base[row * width + gate * h + u0..][..un]
                };
                let prev_seg = |src: Option<&'a [T]>| -> &'a [T] {
                    match src {
                        Some(s) => &s[(r0 + r) * h + u0..][..un],
                        None => &c.zeros[..un],
                    }
                };
                match mode {
                    RecurrentMode::RnnTanh | RecurrentMode::RnnRelu => {
                        rnn_row(mode, dh, seg(c.out, 0, h), dg);
                    }
                    RecurrentMode::Lstm => {
                        let acts = c.acts.expect("saved");
                        let (_, tcs) = c.cells.expect("saved");
                        lstm_row(
                            dh,
                            [0, 1, 2, 3].map(|gate| seg(acts, gate, 4 * h)),
                            seg(tcs, 0, h),
                            prev_seg(c_prev),
                            &mut state[r * un..][..un],
                            dg,
                        );
                    }
                    RecurrentMode::Gru => {
                        let acts = c.acts.expect("saved");
                        for (o, &v) in dh.iter_mut().zip(&carry[r * un..][..un]) {
                            *o += v;
                        }
                        gru_row(
                            dh,
                            [0, 1, 2, 3].map(|gate| seg(acts, gate, 4 * h)),
                            prev_seg(h_prev),
                            &mut carry[r * un..][..un],
                            dg,
                            &mut dpn[r * un..][..un],
                        );
                    }
                }
            }
        },
    );
    // Publish: our units of each gate, for our rows of step t.
    for r in 0..rn {
        let row = at.row + r0 + r;
        for gate in 0..g {
            // SAFETY: the tile's own block of step t.
            let dst = unsafe { c.dg[at.buf].slice_mut(row * gh + gate * h + u0, un) };
            dst.copy_from_slice(&dg[(r * g + gate) * un..][..un]);
        }
        if let Some(p) = c.dpn {
            // SAFETY: as above.
            let dst = unsafe { p[at.buf].slice_mut(row * h + u0, un) };
            dst.copy_from_slice(&dpn[r * un..][..un]);
        }
    }
}

/// `W_hh` packed per unit block (see [`Ctx::wq`]).
fn pack_w_hh<T: Element>(d: &Dims, w_hh: &[T], tiles: &[Tile<T>]) -> Vec<T> {
    let (h, gh) = (d.h, d.gh());
    let mut wq = alloc::<T>(gh * h);
    for tile in tiles.iter().filter(|t| t.r0 == 0) {
        let (u0, un) = (tile.u0, tile.un);
        let block = &mut wq[gh * u0..][..gh * un];
        for (dst, src) in block.chunks_exact_mut(un).zip(w_hh.chunks_exact(h)) {
            dst.copy_from_slice(&src[u0..u0 + un]);
        }
    }
    wq
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
fn lstm_row<T: Element>(
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
