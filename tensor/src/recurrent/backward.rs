//! The backward walk: per step (in reverse) and tile, `∂h` from the next step's gate
//! gradients times `W_hh`, then the gate gradients; afterwards one GEMM (or row sum) per
//! weight, bias and input gradient.
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

use faer::Par;
use rayon::prelude::*;

use super::{
    Dims, RecurrentGradNeeds, RecurrentGrads, RecurrentMode, RecurrentSaved, SyncPtr, Tile,
    for_each_tile, recycle, tiles, transposed,
};
use crate::kernels::sum_contiguous;
use crate::matmul::{Operand, gemm, parallelism};
use crate::simd::dispatch;
use crate::storage::alloc;
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
    w_hh: &'a [T],
    zeros: &'a [T],
    /// The hidden side's gate gradients `[L·N, G·H]`.
    dgh: SyncPtr<T>,
    /// GRU: the input side's `∂a_n` `[L·N, H]`, when `∂x`, `∂W_ih` or `∂b_ih` is wanted.
    dpn: Option<SyncPtr<T>>,
    par: Par,
}

pub(super) fn run<T: Element>(
    saved: &RecurrentSaved<T>,
    grad: &[T],
    needs: RecurrentGradNeeds,
) -> RecurrentGrads<T> {
    let (mode, reverse, d) = (saved.mode, saved.reverse, saved.dims);
    let (l, n, h, gh, ln, input) = (d.l, d.n, d.h, d.gh(), d.ln(), d.input);
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
    let weight_grads = needs.w_ih || needs.w_hh || needs.b_ih || needs.b_hh;
    let x_side = needs.w_ih || needs.b_ih;

    let mut dgh = alloc::<T>(ln * gh);
    let mut dpn = (gru && (needs.x || x_side)).then(|| alloc::<T>(ln * h));
    let mut tiles = tiles::<T>(&d);
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
    let ctx = Ctx {
        grad,
        out,
        acts: saved.acts.as_ref().map(slice),
        cells: saved.cells.as_ref().map(|(c, tc)| (slice(c), slice(tc))),
        h0: saved.h0.as_ref().map(slice),
        c0: saved.c0.as_ref().map(slice),
        w_hh,
        zeros: &zeros,
        dgh: SyncPtr::new(&mut dgh),
        dpn: dpn.as_deref_mut().map(SyncPtr::new),
        par: if tiles.len() == 1 {
            parallelism(n * gh * h)
        } else {
            Par::Seq
        },
    };
    for s in (0..l).rev() {
        let t = d.time(s, reverse);
        let next = (s + 1 < l).then(|| d.time(s + 1, reverse));
        let prev = (s > 0).then(|| d.time(s - 1, reverse));
        // SAFETY: the tiles of a step write disjoint (row, unit) blocks of step t's
        // gradients and read only step `next`'s, which the previous fork-join completed.
        for_each_tile(&mut tiles, |tile| unsafe {
            step(mode, &d, &ctx, tile, t, next, prev)
        });
    }
    // The weight gradients multiply the transposed gate gradients: a row-major left
    // operand is about twice as fast in faer as the transposed view of a row-major one,
    // and one blocked transpose here beats scattering them step by step.
    let dght = weight_grads.then(|| transposed(&dgh, ln, gh));
    let dpnt = match (&dpn, x_side) {
        (Some(dpn), true) => Some(transposed(dpn, ln, h)),
        _ => None,
    };

    let t0 = d.time(0, reverse);
    let mut grads = RecurrentGrads::default();
    let tensor = |v: Vec<T>, shape: &[usize]| Tensor::from_contiguous(v, shape);
    if needs.h0 && saved.h0.is_some() {
        // ∂h₋ of the first step: through W_hh, plus the GRU's direct z ⊙ ∂h.
        let mut dh0 = alloc::<T>(n * h);
        gemm(
            &mut dh0,
            (n, h, gh),
            &dgh,
            Operand::row_major(t0 * n * gh, gh),
            w_hh,
            Operand::row_major(0, h),
            false,
            parallelism(n * h * gh),
        );
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
    if needs.c0 && lstm && saved.c0.is_some() {
        let mut dc0 = alloc::<T>(n * h);
        for tile in &tiles {
            for r in 0..tile.rn {
                dc0[(tile.r0 + r) * h + tile.u0..][..tile.un]
                    .copy_from_slice(&tile.state[r * tile.un..][..tile.un]);
            }
        }
        grads.c0 = Some(tensor(dc0, &[n, h]));
    }
    if let Some(dght) = &dght {
        let gt = Operand::row_major(0, ln);
        if needs.w_hh {
            // Σ_t ∂gates_h[t]ᵀ h_{t-1}: the steps whose h₋ is an output in one product,
            // the step that starts from h0 in a second.
            let (a_off, b_off) = if reverse { (0, n * h) } else { (n, 0) };
            let mut dw = alloc::<T>(gh * h);
            gemm(
                &mut dw,
                (gh, h, (l - 1) * n),
                dght,
                Operand {
                    offset: a_off,
                    row_stride: ln,
                    col_stride: 1,
                },
                out,
                Operand::row_major(b_off, h),
                false,
                parallelism(gh * h * ln),
            );
            if let Some(h0) = &saved.h0 {
                gemm(
                    &mut dw,
                    (gh, h, n),
                    dght,
                    Operand {
                        offset: t0 * n,
                        row_stride: ln,
                        col_stride: 1,
                    },
                    slice(h0),
                    Operand::row_major(0, h),
                    true,
                    parallelism(gh * h * n),
                );
            }
            grads.w_hh = Some(tensor(dw, &[gh, h]));
        }
        if needs.b_hh && saved.has_b_hh {
            grads.b_hh = Some(tensor(row_sums(dght, gh, ln), &[gh]));
        }
        if needs.w_ih {
            let mut dw = alloc::<T>(gh * input);
            // The GRU's n rows come from the input side's own ∂a_n.
            let shared = if gru { 2 * h } else { gh };
            let (top, bottom) = dw.split_at_mut(shared * input);
            let par = parallelism(gh * input * ln);
            gemm(
                top,
                (shared, input, ln),
                dght,
                gt,
                x,
                Operand::row_major(0, input),
                false,
                par,
            );
            if let Some(dpnt) = &dpnt {
                let b = Operand::row_major(0, input);
                gemm(bottom, (h, input, ln), dpnt, gt, x, b, false, par);
            }
            grads.w_ih = Some(tensor(dw, &[gh, input]));
        }
        if needs.b_ih && saved.has_b_ih {
            let mut db = row_sums(dght, gh, ln);
            if let Some(dpnt) = &dpnt {
                db[2 * h..].copy_from_slice(&row_sums(dpnt, h, ln));
            }
            grads.b_ih = Some(tensor(db, &[gh]));
        }
    }
    if needs.x {
        let mut dx = alloc::<T>(ln * input);
        let shared = if gru { 2 * h } else { gh };
        let par = parallelism(ln * input * gh);
        let a = Operand::row_major(0, gh);
        gemm(
            &mut dx,
            (ln, input, shared),
            &dgh,
            a,
            w_ih,
            Operand::row_major(0, input),
            false,
            par,
        );
        if let (Some(dpn), true) = (&dpn, gru) {
            let b = Operand::row_major(2 * h * input, input);
            gemm(
                &mut dx,
                (ln, input, h),
                dpn,
                Operand::row_major(0, h),
                w_ih,
                b,
                true,
                par,
            );
        }
        grads.x = Some(tensor(dx, &[l, n, input]));
    }
    for buf in [Some(dgh), dght, dpn, dpnt].into_iter().flatten() {
        recycle(buf);
    }
    grads
}

/// The sum of each row of a row-major `[rows, cols]` matrix.
fn row_sums<T: Element>(m: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = alloc::<T>(rows);
    let job = |(i, o): (usize, &mut T)| {
        *o = dispatch(
            #[inline(always)]
            || sum_contiguous(&m[i * cols..][..cols]),
        )
    };
    if rows * cols >= crate::par::PAR_MIN_WORK {
        out.par_iter_mut().enumerate().for_each(job);
    } else {
        out.iter_mut().enumerate().for_each(job);
    }
    out
}

/// One backward step of one tile: `t` is the step, `next` the step after it in the
/// forward walk (already done here), `prev` the one before it.
///
/// # Safety
/// No other thread touches the tile's (row, unit) block of step `t`'s gradients during the
/// call, nor writes step `next`'s.
unsafe fn step<'a, T: Element>(
    mode: RecurrentMode,
    d: &Dims,
    c: &Ctx<'a, T>,
    tile: &mut Tile<T>,
    t: usize,
    next: Option<usize>,
    prev: Option<usize>,
) {
    let (h, n, g, gh) = (d.h, d.n, d.g, d.gh());
    let (r0, rn, u0, un) = (tile.r0, tile.rn, tile.u0, tile.un);
    let dh = &mut tile.prod[..rn * un];
    match next {
        // SAFETY: step `next` is complete and nobody writes it now.
        Some(tn) => gemm(
            dh,
            (rn, un, gh),
            unsafe { c.dgh.slice(tn * n * gh, n * gh) },
            Operand::row_major(r0 * gh, gh),
            c.w_hh,
            Operand {
                offset: u0,
                row_stride: h,
                col_stride: 1,
            },
            false,
            c.par,
        ),
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
    // Publish: row-major for the next step's product and ∂x, transposed for the weights.
    for r in 0..rn {
        let row = t * n + r0 + r;
        for gate in 0..g {
            // SAFETY: the tile's own block of step t.
            let dst = unsafe { c.dgh.slice_mut(row * gh + gate * h + u0, un) };
            dst.copy_from_slice(&dg[(r * g + gate) * un..][..un]);
        }
        if let Some(p) = c.dpn {
            // SAFETY: as above.
            let dst = unsafe { p.slice_mut(row * h + u0, un) };
            dst.copy_from_slice(&dpn[r * un..][..un]);
        }
    }
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
