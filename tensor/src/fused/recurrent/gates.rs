//! The gate nonlinearities of the forward pass: σ and tanh.
//!
//! For f32 on CPUs with FMA (every dispatch level but the baseline) they are evaluated
//! with fused multiply-adds (`math.rs`'s `exp`/`tanh` polynomials, fused), in about two
//! thirds of the instructions. The LSTM forward
//! spends most of its non-GEMM time here (five per unit and step). f64, and f32 without
//! FMA, use the crate's own functions.

#[cfg(target_arch = "x86_64")]
use crate::engine::lanes::lane_blocks;
#[cfg(target_arch = "x86_64")]
use crate::engine::math::{EXP_LN2, EXP_POLY, TANH_POLY, TANH_SMALL};
use crate::engine::math::{exp_f32_with as exp_f32, tanh_f32_with as tanh_f32};
use crate::{DType, Element};

/// σ(x) = 1 / (1 + e^−x).
#[inline(always)]
pub(super) fn sigmoid<T: Element, const FMA: bool>(x: T) -> T {
    if T::DTYPE == DType::F32 {
        // For T = f32 both conversions are the identity and compile away.
        let y = 1.0 / (1.0 + exp_f32::<FMA>(-(x.to_f64() as f32)));
        T::from_f64(f64::from(y))
    } else {
        (T::one() + (-x).exp_v()).recip()
    }
}

/// tanh(x).
#[inline(always)]
pub(super) fn tanh<T: Element, const FMA: bool>(x: T) -> T {
    if T::DTYPE == DType::F32 {
        T::from_f64(f64::from(tanh_f32::<FMA>(x.to_f64() as f32)))
    } else {
        x.tanh_v()
    }
}

pub(super) use crate::engine::simd::has_fma;

/// The LSTM forward's gate pass over one tile (see `forward::lstm_row`, row by row) for
/// f32, written for AVX-512: 16 units at a time (the last block masked), σ and tanh from
/// the same polynomials as the portable path, with `2^n` applied by `vscalefps` and each
/// division by a reciprocal estimate refined by one Newton step (exact to about an ulp).
/// The auto-vectorised loop spends ~210 cycles per 16 units, most of them in its five
/// vector divisions; this takes ~150.
///
/// Every operand is given as its first row and the distance `ld` between rows: the input
/// projection `x` and the recurrent product `p` (gate `k` of a row at `k·un`), the
/// activations (`i, f, g, o`, likewise), `c_{t-1}`, `c_t`, `tanh c_t` and `h_t`; a
/// distance of 0 reuses one row (zeros for `c_{t-1}`, scratch for what is not kept). `b`
/// is one row of biases. One call per tile rather than per row: with `un` = 64 a row is
/// only four vectors.
///
/// # Safety
/// The CPU supports AVX-512F/VL/BW/DQ; `h` addresses `rows` rows of `un` elements, `ld`
/// apart, that no other thread touches during the call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn lstm_tile_avx512(
    (rows, un): (usize, usize),
    (x, ld_x): (&[f32], usize),
    (p, ld_p): (&[f32], usize),
    b: &[f32],
    (acts, ld_a): (&mut [f32], usize),
    (c_prev, ld_prev): (&[f32], usize),
    (cell, ld_c): (&mut [f32], usize),
    (tc, ld_tc): (&mut [f32], usize),
    (h, ld_h): (*mut f32, usize),
) {
    use std::arch::x86_64::*;
    if rows == 0 || un == 0 {
        return;
    }
    let last = |ld: usize, width: usize| (rows - 1) * ld + width;
    assert!(x.len() >= last(ld_x, 4 * un) && p.len() >= last(ld_p, 4 * un));
    assert!(b.len() >= 4 * un && acts.len() >= last(ld_a, 4 * un));
    assert!(c_prev.len() >= last(ld_prev, un) && cell.len() >= last(ld_c, un));
    assert!(tc.len() >= last(ld_tc, un));
    lane_blocks(rows, un, |r, u, mask| {
        // SAFETY: lanes u..u + 16 of row r of each operand, those past `un` masked
        // off (the lengths were asserted above, `h`'s is the caller's promise, as are
        // the CPU features).
        unsafe {
            let ld = |p: *const f32| _mm512_maskz_loadu_ps(mask, p.add(u));
            let st = |p: *mut f32, v| _mm512_mask_storeu_ps(p.add(u), mask, v);
            let (x, p) = (x.as_ptr().add(r * ld_x), p.as_ptr().add(r * ld_p));
            let pre = |k: usize| {
                let at = k * un;
                _mm512_add_ps(
                    _mm512_add_ps(ld(x.add(at)), ld(p.add(at))),
                    ld(b.as_ptr().add(at)),
                )
            };
            let i = v_sigmoid(pre(0));
            let f = v_sigmoid(pre(1));
            let g = v_tanh(pre(2));
            let o = v_sigmoid(pre(3));
            let c_prev = ld(c_prev.as_ptr().add(r * ld_prev));
            let c = _mm512_fmadd_ps(f, c_prev, _mm512_mul_ps(i, g));
            let t = v_tanh(c);
            let a = acts.as_mut_ptr().add(r * ld_a);
            for (k, v) in [i, f, g, o].into_iter().enumerate() {
                st(a.add(k * un), v);
            }
            st(cell.as_mut_ptr().add(r * ld_c), c);
            st(tc.as_mut_ptr().add(r * ld_tc), t);
            st(h.add(r * ld_h), _mm512_mul_ps(o, t));
        }
    });
}

/// The LSTM backward's gate pass over one tile (see `backward::lstm_row`, row by row) for
/// f32, written for AVX-512: `rows` rows of `un` units, the output's gradient `grad` added
/// to `∂h` on the way (the portable path adds it in a pass of its own). `∂h`, the
/// activations (`[rows, 4, un]`), `tanh c` and the running `∂c` are the tile's own
/// contiguous blocks; `grad`, `c_{t-1}` and the gate gradients are rows `ld` apart (`c_{t-1}`
/// may repeat one row of zeros, `ld = 0`). One call per tile rather than per row: with
/// `un` = 64 a row is only four vectors.
///
/// # Safety
/// The CPU supports AVX-512F/VL/BW/DQ; `dg` addresses `rows` rows of `4·un` elements, `ld`
/// apart, that no other thread touches during the call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn lstm_backward_tile_avx512(
    (rows, un): (usize, usize),
    dh: &[f32],
    (grad, ld_grad): (&[f32], usize),
    acts: &[f32],
    tc: &[f32],
    (c_prev, ld_prev): (&[f32], usize),
    dc: &mut [f32],
    (dg, ld_dg): (*mut f32, usize),
) {
    use std::arch::x86_64::*;
    if rows == 0 || un == 0 {
        return;
    }
    let last = |ld: usize| (rows - 1) * ld + un;
    assert!(dh.len() >= rows * un && tc.len() >= rows * un && dc.len() >= rows * un);
    assert!(acts.len() >= rows * 4 * un);
    assert!(grad.len() >= last(ld_grad) && c_prev.len() >= last(ld_prev));
    lane_blocks(rows, un, |r, u, mask| {
        // SAFETY: lanes u..u + 16 of row r of each operand, those past `un` masked
        // off (the lengths were asserted above, `dg`'s are the caller's promise, as
        // are the CPU features).
        unsafe {
            let ld = |p: *const f32| _mm512_maskz_loadu_ps(mask, p.add(u));
            let st = |p: *mut f32, v| _mm512_mask_storeu_ps(p.add(u), mask, v);
            let one = _mm512_set1_ps(1.0);
            let own = r * un;
            let a = acts.as_ptr().add(4 * own);
            let dh = _mm512_add_ps(ld(dh.as_ptr().add(own)), ld(grad.as_ptr().add(r * ld_grad)));
            let [i, f, g, o] = [0, 1, 2, 3].map(|k| ld(a.add(k * un)));
            let t = ld(tc.as_ptr().add(own));
            let d = dg.add(r * ld_dg);
            // ∂c = ∂c₊ f₊ + ∂h o (1 − tanh² c)
            let dho = _mm512_mul_ps(dh, o);
            let dc_row = dc.as_mut_ptr().add(own);
            let dcu = _mm512_fmadd_ps(dho, _mm512_fnmadd_ps(t, t, one), ld(dc_row));
            st(
                d.add(3 * un),
                _mm512_mul_ps(_mm512_mul_ps(dho, t), _mm512_sub_ps(one, o)),
            );
            let dci = _mm512_mul_ps(dcu, i);
            st(
                d,
                _mm512_mul_ps(_mm512_mul_ps(dci, g), _mm512_sub_ps(one, i)),
            );
            st(
                d.add(2 * un),
                _mm512_mul_ps(dci, _mm512_fnmadd_ps(g, g, one)),
            );
            let dcf = _mm512_mul_ps(dcu, f);
            let cp = ld(c_prev.as_ptr().add(r * ld_prev));
            st(
                d.add(un),
                _mm512_mul_ps(_mm512_mul_ps(dcf, cp), _mm512_sub_ps(one, f)),
            );
            st(dc_row, dcf);
        }
    });
}

/// `e^x` for `x` where it is finite (the callers clamp), 16 lanes: `math::exp_f32_with`'s
/// range reduction and polynomial, `2^n` by `vscalefps`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn v_exp(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: the callers are compiled with AVX-512F.
    unsafe {
        let set = _mm512_set1_ps;
        // n = round(x·log2 e), by adding and subtracting 1.5·2^23.
        let shifted = _mm512_fmadd_ps(x, set(std::f32::consts::LOG2_E), set(12_582_912.0));
        let n = _mm512_sub_ps(shifted, set(12_582_912.0));
        let ((c1, c2), [p0, p1, p2, p3, p4, p5]) = (EXP_LN2, EXP_POLY);
        let r = _mm512_fnmadd_ps(n, set(c1), x);
        let r = _mm512_fnmadd_ps(n, set(c2), r);
        let mut q = _mm512_fmadd_ps(set(p0), r, set(p1));
        for c in [p2, p3, p4, p5] {
            q = _mm512_fmadd_ps(q, r, set(c));
        }
        let y = _mm512_add_ps(_mm512_fmadd_ps(q, _mm512_mul_ps(r, r), r), set(1.0));
        _mm512_scalef_ps(y, n)
    }
}

/// `1 / d` for finite positive `d`: the 14-bit estimate and one Newton step.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn v_recip(d: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: the callers are compiled with AVX-512F.
    unsafe {
        let r = _mm512_rcp14_ps(d);
        _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0)))
    }
}

/// σ(x), 16 lanes. `x` is clamped to ±88, where σ is 0 or 1 to f32 precision and `e^−x`
/// is finite; NaN passes through (`min`/`max` return their second operand on NaN).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn v_sigmoid(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: the callers are compiled with AVX-512F.
    unsafe {
        let set = _mm512_set1_ps;
        let xc = _mm512_max_ps(set(-88.0), _mm512_min_ps(set(88.0), x));
        let e = v_exp(_mm512_sub_ps(_mm512_setzero_ps(), xc));
        v_recip(_mm512_add_ps(e, set(1.0)))
    }
}

/// tanh(x), 16 lanes: the odd polynomial below |x| = 0.625, `1 − 2/(e^{2|x|} + 1)` with
/// x's sign above, `|x|` clamped at 9.5, where tanh rounds to 1; NaN passes through.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn v_tanh(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: the callers are compiled with AVX-512F.
    unsafe {
        let set = _mm512_set1_ps;
        let sign = set(-0.0);
        let a = _mm512_andnot_ps(sign, x);
        let z = _mm512_mul_ps(x, x);
        let [q0, q1, q2, q3, q4] = TANH_POLY;
        let mut q = _mm512_fmadd_ps(set(q0), z, set(q1));
        for c in [q2, q3, q4] {
            q = _mm512_fmadd_ps(q, z, set(c));
        }
        let small = _mm512_fmadd_ps(_mm512_mul_ps(q, z), x, x);
        let e = v_exp(_mm512_min_ps(set(19.0), _mm512_add_ps(a, a)));
        let large = _mm512_fnmadd_ps(set(2.0), v_recip(_mm512_add_ps(e, set(1.0))), set(1.0));
        // The sign bit from x, the rest from `large` (bitwise select, 0xAC = a ? c : b).
        let large = _mm512_castsi512_ps(_mm512_ternarylogic_epi32::<0xAC>(
            _mm512_castps_si512(sign),
            _mm512_castps_si512(large),
            _mm512_castps_si512(x),
        ));
        let is_small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, set(TANH_SMALL));
        _mm512_mask_blend_ps(is_small, large, small)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fused_forms_agree_with_the_plain_ones() {
        // Both evaluate the same polynomials; fusing changes the last bit or two.
        for i in -2000..=2000 {
            let x = i as f32 * 0.01;
            for (a, b) in [
                (sigmoid::<f32, true>(x), sigmoid::<f32, false>(x)),
                (tanh::<f32, true>(x), tanh::<f32, false>(x)),
            ] {
                assert!(
                    (a - b).abs() <= 4.0 * f32::EPSILON * b.abs().max(1e-30),
                    "{x}: {a} vs {b}"
                );
            }
            let s = sigmoid::<f32, true>(x) as f64;
            assert!(
                (s - 1.0 / (1.0 + (-(x as f64)).exp())).abs() < 3e-7,
                "σ({x})"
            );
            let t = tanh::<f32, true>(x) as f64;
            assert!(
                (t - (x as f64).tanh()).abs() < 3e-7 * (1.0 + t.abs()),
                "tanh({x})"
            );
        }
        assert_eq!(sigmoid::<f32, true>(-200.0), 0.0);
        assert_eq!(sigmoid::<f32, true>(200.0), 1.0);
        assert_eq!(tanh::<f32, true>(50.0), 1.0);
        assert!(tanh::<f32, true>(f32::NAN).is_nan());
        assert_eq!(sigmoid::<f64, true>(0.5), 1.0 / (1.0 + (-0.5f64).exp()));
    }

    /// The AVX-512 tile (one row) against the portable row on values across every branch
    /// (σ's clamp, tanh's polynomial and exponential sides, both signs), infinities and
    /// NaN, with a masked last block.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_lstm_tile_agrees_with_the_portable_row() {
        if !super::super::f32_avx512::<f32>() {
            return;
        }
        let un = 16 * 40 + 7;
        let val = |i: usize, salt: usize| {
            let k = (i * 7919 + salt * 104_729) % 4001;
            match k % 97 {
                0 => f32::INFINITY,
                1 => f32::NEG_INFINITY,
                2 => f32::NAN,
                3 => 95.0,
                4 => -95.0,
                _ => (k as f32 - 2000.0) / 200.0,
            }
        };
        let arr = |salt: usize| -> Vec<f32> { (0..un).map(|i| val(i, salt)).collect() };
        let (x, p, b) = (
            [0, 1, 2, 3].map(arr),
            [4, 5, 6, 7].map(arr),
            [8, 9, 10, 11].map(|s| {
                arr(s)
                    .iter()
                    .map(|v| if v.is_finite() { v * 0.1 } else { 0.0 })
                    .collect::<Vec<_>>()
            }),
        );
        let cell0: Vec<f32> = arr(12)
            .iter()
            .map(|v| if v.is_finite() { *v } else { 0.5 })
            .collect();
        let run = |avx: bool| {
            let mut acts = vec![vec![0f32; un]; 4];
            let (mut cell, mut tc, mut h) = (vec![0f32; un], vec![0f32; un], vec![0f32; un]);
            let [a0, a1, a2, a3] = &mut acts[..] else {
                unreachable!()
            };
            let a = [&mut a0[..], &mut a1[..], &mut a2[..], &mut a3[..]];
            let (xs, ps, bs) = (
                x.each_ref().map(|v| &v[..]),
                p.each_ref().map(|v| &v[..]),
                b.each_ref().map(|v| &v[..]),
            );
            if avx {
                // One row of a tile: the gates of each operand side by side.
                let (xr, pr, br) = (xs.concat(), ps.concat(), bs.concat());
                let mut ar = vec![0f32; 4 * un];
                // SAFETY: checked above; every row holds `un` elements per gate.
                unsafe {
                    lstm_tile_avx512(
                        (1, un),
                        (&xr, 0),
                        (&pr, 0),
                        &br,
                        (&mut ar, 0),
                        (&cell0, 0),
                        (&mut cell, 0),
                        (&mut tc, 0),
                        (h.as_mut_ptr(), 0),
                    );
                }
                for (k, a) in a.into_iter().enumerate() {
                    a.copy_from_slice(&ar[k * un..][..un]);
                }
            } else {
                crate::fused::recurrent::forward::lstm_row::<f32, true>(
                    xs,
                    ps,
                    bs,
                    a,
                    (&cell0, &mut cell),
                    &mut tc,
                    &mut h,
                );
            }
            let mut all: Vec<f32> = acts.concat();
            all.extend(cell);
            all.extend(tc);
            all.extend(h);
            all
        };
        let (want, got) = (run(false), run(true));
        for (k, (&w, &g)) in want.iter().zip(&got).enumerate() {
            // The gates come straight from their inputs: a few ulps. c = f·c₋ + i·g can
            // cancel, so c, tanh(c) and h are held to a few ulps of the terms' size.
            let scale = match k < 4 * un {
                true => w.abs(),
                false => w.abs() + cell0[k % un].abs() + 1.0,
            };
            let ok = (w.is_nan() && g.is_nan())
                || (w - g).abs() <= 8.0 * f32::EPSILON * scale
                || (w - g).abs() < 1e-37;
            assert!(ok, "element {k}: portable {w}, avx512 {g}");
        }
    }

    /// The AVX-512 tile over several rows, each operand with a row distance of its own:
    /// kept activations, cells and `tanh c` (and `c_{t-1}` one repeated row or rows of
    /// its own) against the portable rows; and with the activations and `tanh c` sent to one
    /// row of scratch, the same cells and outputs.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_lstm_tile_walks_rows_with_their_own_strides() {
        if !super::super::f32_avx512::<f32>() {
            return;
        }
        let (rows, un) = (3, 16 * 2 + 5);
        let arr = |salt: usize, len: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 7919 + salt * 104_729) % 1000) as f32 / 125.0 - 4.0)
                .collect()
        };
        let (ld_x, ld_p, ld_a, ld_h) = (4 * un + 3, 4 * un + 1, 4 * un + 2, un + 4);
        let (x, p, b) = (arr(0, rows * ld_x), arr(1, rows * ld_p), arr(2, 4 * un));
        for ld_prev in [0, un + 1] {
            let c_prev = arr(3, (rows - 1) * ld_prev + un);
            // The portable rows.
            let mut want = (vec![f32::NAN; rows * ld_a], vec![0f32; rows * un]);
            let mut want_tc = vec![0f32; rows * un];
            let mut want_h = vec![f32::NAN; rows * ld_h];
            for r in 0..rows {
                fn gates(s: &[f32], at: usize, un: usize) -> [&[f32]; 4] {
                    [0, 1, 2, 3].map(|k| &s[at + k * un..][..un])
                }
                let mut parts = want.0[r * ld_a..][..4 * un].chunks_exact_mut(un);
                let acts = std::array::from_fn(|_| parts.next().expect("4 gates"));
                crate::fused::recurrent::forward::lstm_row::<f32, true>(
                    gates(&x, r * ld_x, un),
                    gates(&p, r * ld_p, un),
                    gates(&b, 0, un),
                    acts,
                    (&c_prev[r * ld_prev..][..un], &mut want.1[r * un..][..un]),
                    &mut want_tc[r * un..][..un],
                    &mut want_h[r * ld_h..][..un],
                );
            }
            let close = |got: &[f32], want: &[f32], what: &str| {
                for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
                    let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-6 * (1.0 + w.abs());
                    assert!(
                        ok,
                        "ld_prev {ld_prev}, {what} {k}: portable {w}, avx512 {g}"
                    );
                }
            };
            for keep in [true, false] {
                let mut acts = vec![f32::NAN; if keep { rows * ld_a } else { 4 * un }];
                let (mut cell, mut tc) = (vec![0f32; rows * un], vec![0f32; rows * un]);
                let mut h = vec![f32::NAN; rows * ld_h];
                let (ld_a, ld_tc) = if keep { (ld_a, un) } else { (0, 0) };
                // SAFETY: checked above; every operand holds its rows.
                unsafe {
                    lstm_tile_avx512(
                        (rows, un),
                        (&x, ld_x),
                        (&p, ld_p),
                        &b,
                        (&mut acts, ld_a),
                        (&c_prev, ld_prev),
                        (&mut cell, un),
                        (&mut tc, ld_tc),
                        (h.as_mut_ptr(), ld_h),
                    );
                }
                close(&cell, &want.1, "cell");
                close(&h, &want_h, "h");
                if keep {
                    close(&acts, &want.0, "activation");
                    close(&tc, &want_tc, "tanh c");
                }
            }
        }
    }

    /// The AVX-512 backward tile against the portable rows (with the output's gradient
    /// added to `∂h` first), on activations in their ranges, a masked last block, rows of
    /// `grad`, `c_{t-1}` and the gate gradients with strides of their own, and `c_{t-1}` one
    /// repeated row.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_lstm_backward_tile_agrees_with_the_portable_rows() {
        if !super::super::f32_avx512::<f32>() {
            return;
        }
        let (rows, un) = (3, 16 * 5 + 9);
        let arr = |salt: usize, len: usize, lo: f32, hi: f32| -> Vec<f32> {
            (0..len)
                .map(|i| {
                    let k = (i * 7919 + salt * 104_729) % 1000;
                    lo + (hi - lo) * k as f32 / 999.0
                })
                .collect()
        };
        let (ld_grad, ld_dg) = (un + 5, 4 * un + 7);
        let dh = arr(0, rows * un, -2.0, 2.0);
        let grad = arr(1, rows * ld_grad, -1.0, 1.0);
        let acts: Vec<f32> = (0..rows)
            .flat_map(|r| {
                let range = |k: usize| if k == 2 { (-1.0, 1.0) } else { (0.0, 1.0) };
                (0..4).flat_map(move |k| arr(2 + 4 * r + k, un, range(k).0, range(k).1))
            })
            .collect();
        let tc = arr(20, rows * un, -1.0, 1.0);
        let dc0 = arr(21, rows * un, -2.0, 2.0);
        for ld_prev in [0, un + 3] {
            let c_prev = arr(22, (rows - 1) * ld_prev + un, -3.0, 3.0);
            let mut want = vec![f32::NAN; rows * ld_dg];
            let mut dc_want = dc0.clone();
            for r in 0..rows {
                let own = r * un..(r + 1) * un;
                let summed: Vec<f32> = dh[own.clone()]
                    .iter()
                    .zip(&grad[r * ld_grad..])
                    .map(|(a, b)| a + b)
                    .collect();
                let a = &acts[4 * r * un..];
                crate::fused::recurrent::backward::lstm_row(
                    &summed,
                    [0, 1, 2, 3].map(|k| &a[k * un..(k + 1) * un]),
                    &tc[own.clone()],
                    &c_prev[r * ld_prev..][..un],
                    &mut dc_want[own],
                    &mut want[r * ld_dg..][..4 * un],
                );
            }
            let (mut dc, mut dg) = (dc0.clone(), vec![f32::NAN; rows * ld_dg]);
            // SAFETY: checked above; `dg` holds `rows` rows of `ld_dg` ≥ 4·un.
            unsafe {
                lstm_backward_tile_avx512(
                    (rows, un),
                    &dh,
                    (&grad, ld_grad),
                    &acts,
                    &tc,
                    (&c_prev, ld_prev),
                    &mut dc,
                    (dg.as_mut_ptr(), ld_dg),
                );
            }
            let pairs = dg.iter().zip(&want).chain(dc.iter().zip(&dc_want));
            for (k, (&g, &w)) in pairs.enumerate() {
                // Gaps between the rows of `dg` stay untouched.
                let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-6 * (1.0 + w.abs());
                assert!(
                    ok,
                    "ld_prev {ld_prev}, element {k}: portable {w}, avx512 {g}"
                );
            }
        }
    }
}
