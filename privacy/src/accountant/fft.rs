//! A small complex FFT for the PRV accountant: iterative radix-2 Cooley–Tukey for powers
//! of two, and Bluestein's chirp-z algorithm on top of it for any length (the PRV domain
//! has an even but otherwise arbitrary number of points, and the composition must be the
//! circular convolution of exactly that length to match the analysis). About a hundred
//! lines instead of a dependency: rustfft would bring its planner and SIMD back ends for a
//! few transforms per accounting call.

use strata_tensor::parallel_map;

/// A complex number in f64.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Complex {
    pub re: f64,
    pub im: f64,
}

impl Complex {
    pub fn new(re: f64, im: f64) -> Self {
        Complex { re, im }
    }

    pub fn mul(self, o: Complex) -> Complex {
        Complex::new(
            self.re * o.re - self.im * o.im,
            self.re * o.im + self.im * o.re,
        )
    }

    fn conj(self) -> Complex {
        Complex::new(self.re, -self.im)
    }

    /// `e^{iθ}`.
    fn cis(theta: f64) -> Complex {
        let (s, c) = theta.sin_cos();
        Complex::new(c, s)
    }

    /// `selfⁿ` by repeated squaring.
    pub fn powu(self, mut n: u64) -> Complex {
        let (mut base, mut acc) = (self, Complex::new(1.0, 0.0));
        while n > 0 {
            if n & 1 == 1 {
                acc = acc.mul(base);
            }
            base = base.mul(base);
            n >>= 1;
        }
        acc
    }
}

/// The twiddle factors of a power-of-two length `n`, stage by stage: for the stage of
/// blocks of `len` (2, 4, …, n), the `len/2` factors `e^{−2πik/len}` at offset
/// `len/2 − 1`, so each stage reads its own factors contiguously. Each is computed
/// directly (not by repeated multiplication, so their error does not grow with `n`).
fn twiddles(n: usize) -> Vec<Complex> {
    let mut out = Vec::with_capacity(n.saturating_sub(1));
    let mut len = 2;
    while len <= n {
        out.extend(
            (0..len / 2).map(|k| Complex::cis(-2.0 * std::f64::consts::PI * k as f64 / len as f64)),
        );
        len <<= 1;
    }
    out
}

/// In-place radix-2 FFT of a power-of-two length with the twiddles of that length:
/// `X_k = Σ x_j e^{∓2πi jk/n}` (the minus sign forward).
fn radix2(x: &mut [Complex], tw: &[Complex], inverse: bool) {
    let n = x.len();
    debug_assert!(n.is_power_of_two() && tw.len() == n.saturating_sub(1));
    // Bit-reversal permutation.
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            x.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let half = len / 2;
        let stage = &tw[half - 1..len - 1];
        if n < PARALLEL {
            for block in x.chunks_exact_mut(len) {
                let (lo, hi) = block.split_at_mut(half);
                butterflies(lo, hi, stage, inverse);
            }
        } else if n / len >= 8 {
            // Whole blocks per task, about PIECE butterflies' worth.
            let per_task = (2 * PIECE / len).max(1) * len;
            parallel_map(x.chunks_mut(per_task).collect(), |blocks| {
                for block in blocks.chunks_exact_mut(len) {
                    let (lo, hi) = block.split_at_mut(half);
                    butterflies(lo, hi, stage, inverse);
                }
            });
        } else {
            // Few large blocks: split each block's butterflies instead. Every butterfly
            // is independent, so the result does not depend on the split.
            for block in x.chunks_exact_mut(len) {
                let (lo, hi) = block.split_at_mut(half);
                let pieces = lo
                    .chunks_mut(PIECE)
                    .zip(hi.chunks_mut(PIECE))
                    .zip(stage.chunks(PIECE))
                    .collect();
                parallel_map(pieces, |((l, h), w)| butterflies(l, h, w, inverse));
            }
        }
        len <<= 1;
    }
}

/// Lengths from which the stages run on strata's threads.
const PARALLEL: usize = 1 << 15;
/// Butterflies per task when a block is split.
const PIECE: usize = 1 << 12;

/// `(a, b) ← (a + w·b, a − w·b)` pairwise.
fn butterflies(lo: &mut [Complex], hi: &mut [Complex], w: &[Complex], inverse: bool) {
    for ((a, b), w) in lo.iter_mut().zip(hi.iter_mut()).zip(w) {
        let w = if inverse { w.conj() } else { *w };
        let t = b.mul(w);
        *b = Complex::new(a.re - t.re, a.im - t.im);
        *a = Complex::new(a.re + t.re, a.im + t.im);
    }
}

/// The DFT of one length `n` (unnormalised; the inverse flips the sign of the exponent).
/// Powers of two run radix-2 directly; other lengths by Bluestein: `jk = (j² + k² −
/// (k − j)²)/2` turns the DFT into a convolution with the chirp `e^{−iπ m²/n}`, done with
/// power-of-two FFTs of length ≥ 2n − 1. The chirp's transform is made once per plan and
/// serves both directions (the inverse is `conj(DFT(conj X))`).
pub(crate) struct Plan {
    n: usize,
    size: usize,
    tw: Vec<Complex>,
    /// Bluestein's chirp and its transform (empty for powers of two).
    chirp: Vec<Complex>,
    chirp_fft: Vec<Complex>,
}

impl Plan {
    pub fn new(n: usize) -> Self {
        if n.is_power_of_two() {
            return Plan {
                n,
                size: n,
                tw: twiddles(n),
                chirp: Vec::new(),
                chirp_fft: Vec::new(),
            };
        }
        // chirp[m] = e^{−iπ m²/n}, with m² reduced mod 2n to keep the angle small.
        let chirp: Vec<Complex> = (0..n)
            .map(|m| {
                let m2 = (m as u128 * m as u128 % (2 * n as u128)) as f64;
                Complex::cis(-std::f64::consts::PI * m2 / n as f64)
            })
            .collect();
        let size = (2 * n - 1).next_power_of_two();
        let tw = twiddles(size);
        let mut b = vec![Complex::default(); size];
        b[0] = chirp[0].conj();
        for m in 1..n {
            b[m] = chirp[m].conj();
            b[size - m] = chirp[m].conj();
        }
        radix2(&mut b, &tw, false);
        Plan {
            n,
            size,
            tw,
            chirp,
            chirp_fft: b,
        }
    }

    /// `X_k = Σ x_j e^{−2πi jk/n}`.
    pub fn forward(&self, x: &[Complex]) -> Vec<Complex> {
        debug_assert_eq!(x.len(), self.n);
        if self.chirp.is_empty() {
            let mut y = x.to_vec();
            radix2(&mut y, &self.tw, false);
            return y;
        }
        let mut a = vec![Complex::default(); self.size];
        for (d, (v, c)) in a.iter_mut().zip(x.iter().zip(&self.chirp)) {
            *d = v.mul(*c);
        }
        radix2(&mut a, &self.tw, false);
        for (u, v) in a.iter_mut().zip(&self.chirp_fft) {
            *u = u.mul(*v);
        }
        radix2(&mut a, &self.tw, true);
        let scale = 1.0 / self.size as f64;
        a.truncate(self.n);
        a.iter_mut().zip(&self.chirp).for_each(|(v, c)| {
            let p = v.mul(*c);
            *v = Complex::new(p.re * scale, p.im * scale);
        });
        a
    }

    /// `x_j = Σ X_k e^{+2πi jk/n}` (unnormalised).
    pub fn inverse(&self, x: &[Complex]) -> Vec<Complex> {
        let conj: Vec<Complex> = x.iter().map(|v| v.conj()).collect();
        let mut y = self.forward(&conj);
        y.iter_mut().for_each(|v| *v = v.conj());
        y
    }
}

/// The DFT of `x` (unnormalised; `inverse` flips the sign of the exponent).
#[cfg(test)]
fn dft(x: &[Complex], inverse: bool) -> Vec<Complex> {
    let plan = Plan::new(x.len());
    if inverse {
        plan.inverse(x)
    } else {
        plan.forward(x)
    }
}

/// The linear convolution of two real sequences (length `a.len() + b.len() − 1`).
pub(crate) fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    let len = a.len() + b.len() - 1;
    let size = len.next_power_of_two();
    let mut fa = vec![Complex::default(); size];
    let mut fb = vec![Complex::default(); size];
    for (d, &v) in fa.iter_mut().zip(a) {
        d.re = v;
    }
    for (d, &v) in fb.iter_mut().zip(b) {
        d.re = v;
    }
    let tw = twiddles(size);
    radix2(&mut fa, &tw, false);
    radix2(&mut fb, &tw, false);
    for (u, v) in fa.iter_mut().zip(&fb) {
        *u = u.mul(*v);
    }
    radix2(&mut fa, &tw, true);
    fa[..len].iter().map(|c| c.re / size as f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[Complex], inverse: bool) -> Vec<Complex> {
        let n = x.len();
        let sign = if inverse { 1.0 } else { -1.0 };
        (0..n)
            .map(|k| {
                x.iter()
                    .enumerate()
                    .fold(Complex::default(), |acc, (j, v)| {
                        let w = Complex::cis(
                            sign * 2.0 * std::f64::consts::PI * ((j * k) % n) as f64 / n as f64,
                        );
                        let p = v.mul(w);
                        Complex::new(acc.re + p.re, acc.im + p.im)
                    })
            })
            .collect()
    }

    #[test]
    fn fft_matches_the_definition_for_powers_of_two_and_other_lengths() {
        for n in [1usize, 2, 8, 6, 10, 12, 30, 64, 100] {
            let x: Vec<Complex> = (0..n)
                .map(|j| Complex::new((j as f64 * 0.7).sin(), (j as f64 * 1.3).cos()))
                .collect();
            for inverse in [false, true] {
                let (got, want) = (dft(&x, inverse), naive(&x, inverse));
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g.re - w.re).abs() < 1e-10 && (g.im - w.im).abs() < 1e-10,
                        "n = {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn convolution_matches_the_sum() {
        let (a, b) = ([1.0, 2.0, 3.0], [0.5, -1.0]);
        let got = convolve(&a, &b);
        let want = [0.5, 0.0, -0.5, -3.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12);
        }
    }

    #[test]
    fn powers_by_squaring() {
        let z = Complex::new(0.6, 0.8); // |z| = 1, angle atan2(0.8, 0.6)
        let p = z.powu(7);
        let theta = 7.0 * 0.8f64.atan2(0.6);
        assert!((p.re - theta.cos()).abs() < 1e-14 && (p.im - theta.sin()).abs() < 1e-14);
    }
}
