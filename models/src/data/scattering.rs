//! The 2-D wavelet scattering transform (Mallat; Bruna & Mallat 2013), computed as
//! Kymatio's `Scattering2D` computes it, as fixed features for images.
//!
//! A scattering network is a CNN whose filters are not learned: Morlet wavelets at `J`
//! scales and `L` orientations, each followed by a modulus, and a Gaussian low-pass
//! filter that averages over `2^J` pixels. Its coefficients are stable to small
//! deformations and linearise much of what a CNN's first layers would learn, which
//! matters most where learning is expensive: under differential privacy, a small model
//! on scattering features learns faster from noisy gradients than a CNN on pixels
//! (Tramèr & Boneh, 2021).
//!
//! [`Scattering2d::transform`] follows Kymatio 0.3's definitions (its filter bank, its
//! reflection padding to a multiple of `2^J`, and its subsampling in the Fourier domain),
//! so its output matches `kymatio.numpy.Scattering2D(J, shape, L)` on the same images
//! (checked against Kymatio's own output: `models/tests/fixtures/scattering.py`), and a
//! model trained on strata's features runs on Kymatio's.

use std::f64::consts::PI;

use strata_tensor::Tensor;

use crate::{ModelsError, Result};

/// A scattering transform of order 2 for images of one size: see the module docs.
///
/// ```
/// use strata_models::data::Scattering2d;
/// use strata_tensor::Tensor;
///
/// let s = Scattering2d::new(2, 8, [28, 28])?;
/// assert_eq!(s.output_shape(), [81, 7, 7]); // 1 + J·L + L²·J(J−1)/2 channels of 28/2^J
/// let images = Tensor::<f32>::zeros(&[3, 28, 28]);
/// assert_eq!(s.transform(&images)?.shape(), &[3, 81, 7, 7]);
/// # Ok::<(), strata_models::ModelsError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Scattering2d {
    j: usize,
    l: usize,
    shape: [usize; 2],
    padded: [usize; 2],
    /// The wavelets in the Fourier domain, `(j, level)` planes of the padded size over
    /// `2^level`, by `j·L + θ`.
    psi: Vec<Wavelet>,
    /// The low-pass filter at each level `0..J`.
    phi: Vec<Plane>,
}

#[derive(Clone, Debug)]
struct Wavelet {
    j: usize,
    levels: Vec<Plane>,
}

/// A real `rows × cols` plane, row-major.
#[derive(Clone, Debug)]
struct Plane {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

/// Complex planes: `count` planes of `rows × cols`, real and imaginary parts apart.
struct Planes {
    count: usize,
    rows: usize,
    cols: usize,
    re: Vec<f32>,
    im: Vec<f32>,
}

/// The most scales: `2^J` must stay well inside any image a user has.
const MAX_J: usize = 8;
/// The most orientations.
const MAX_L: usize = 64;

impl Scattering2d {
    /// The transform with `j` scales and `l` orientations for images of `shape`
    /// (height, width): Kymatio's `Scattering2D(J=j, shape=shape, L=l)`.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for `j` outside `1..=8`, `l` outside `1..=64`, or images
    /// smaller than `2^j` on a side.
    pub fn new(j: usize, l: usize, shape: [usize; 2]) -> Result<Self> {
        if !(1..=MAX_J).contains(&j) || !(1..=MAX_L).contains(&l) {
            return Err(ModelsError::Config(format!(
                "a scattering transform needs 1 ≤ J ≤ {MAX_J} and 1 ≤ L ≤ {MAX_L}, got J = {j}, \
                 L = {l}"
            )));
        }
        let scale = 1usize << j;
        if shape.iter().any(|&s| s < scale || s > 4096) {
            return Err(ModelsError::Config(format!(
                "a scattering transform with J = {j} needs images of {scale} to 4096 pixels a \
                 side, got {shape:?}"
            )));
        }
        // Kymatio's padded size: the next multiple of 2^J past the size plus 2^J.
        let padded = shape.map(|s| ((s + scale) / scale + 1) * scale);
        let [m, n] = padded;
        let mut psi = Vec::with_capacity(j * l);
        // Kymatio's first angle index, Python's `int(L - L/2 - 1)` (rounded toward zero).
        let first = (l as f64 / 2.0 - 1.0).trunc();
        for scale_j in 0..j {
            for theta in 0..l {
                let angle = (first - theta as f64) * PI / l as f64;
                let spatial = morlet(
                    [m, n],
                    0.8 * f64::powi(2.0, scale_j as i32),
                    angle,
                    0.75 * PI / f64::powi(2.0, scale_j as i32),
                    4.0 / l as f64,
                );
                let fourier = real_fft2(&spatial, m, n);
                let levels = (0..(scale_j + 1).min((j - 1).max(1)))
                    .map(|res| periodize(&fourier, m, n, res))
                    .collect();
                psi.push(Wavelet { j: scale_j, levels });
            }
        }
        let spatial = gabor([m, n], 0.8 * f64::powi(2.0, j as i32 - 1), 0.0, 0.0, 1.0);
        let fourier = real_fft2(&spatial, m, n);
        let phi = (0..j).map(|res| periodize(&fourier, m, n, res)).collect();
        Ok(Scattering2d {
            j,
            l,
            shape,
            padded,
            psi,
            phi,
        })
    }

    /// The channels of the output: `1 + J·L + L²·J(J−1)/2` (orders 0, 1 and 2).
    pub fn channels(&self) -> usize {
        1 + self.j * self.l + self.l * self.l * self.j * (self.j - 1) / 2
    }

    /// The shape of one image's coefficients: channels, then the image's size over `2^J`
    /// (rounded up, as Kymatio's).
    pub fn output_shape(&self) -> [usize; 3] {
        let scale = 1usize << self.j;
        [
            self.channels(),
            self.padded[0] / scale - 2,
            self.padded[1] / scale - 2,
        ]
    }

    /// The coefficients of `images` (`[batch, height, width]` or `[batch, 1, height,
    /// width]`): `[batch, channels, height/2^J, width/2^J]`, in Kymatio's order (order 0,
    /// then order 1 by `j·L + θ`, then order 2 by `(j1, θ1, j2, θ2)` with `j2 > j1`).
    ///
    /// # Errors
    /// [`ModelsError::Config`] for images of another size or shape.
    pub fn transform(&self, images: &Tensor<f32>) -> Result<Tensor<f32>> {
        let [h, w] = self.shape;
        let batch = match images.shape() {
            &[b, hh, ww] | &[b, 1, hh, ww] if [hh, ww] == self.shape => b,
            s => {
                return Err(ModelsError::Config(format!(
                    "the scattering transform was built for [batch, {h}, {w}] images, got {s:?}"
                )));
            }
        };
        let pixels = images.contiguous();
        let pixels = pixels.as_slice().expect("a contiguous tensor");
        let [channels, oh, ow] = self.output_shape();
        let mut out = vec![0.0f32; batch * channels * oh * ow];
        // Chunks of images bound the memory of the intermediate planes.
        const CHUNK: usize = 256;
        let image = h * w;
        for (k, chunk) in pixels.chunks(CHUNK * image).enumerate() {
            let b = chunk.len() / image;
            let coefficients = self.chunk(chunk, b)?;
            let start = k * CHUNK * channels * oh * ow;
            out[start..start + coefficients.len()].copy_from_slice(&coefficients);
        }
        Tensor::from_vec(out, &[batch, channels, oh, ow])
            .map_err(|e| ModelsError::Config(e.to_string()))
    }

    /// The coefficients of `b` images in `pixels`, image-major.
    fn chunk(&self, pixels: &[f32], b: usize) -> Result<Vec<f32>> {
        let x = self.pad(pixels, b);
        let u0 = dft2(x, false)?;
        // Each output channel's planes of `b` images, in Kymatio's order.
        let mut order0 = Vec::new();
        let mut order1 = Vec::new();
        let mut order2 = Vec::new();
        order0.push(self.low_pass(&u0, 0, self.j)?);
        for first in &self.psi {
            let j1 = first.j;
            let filtered = multiply(&u0, &first.levels[0]);
            let filtered = subsample(filtered, 1 << j1);
            let u1 = dft2(modulus(dft2(filtered, true)?), false)?;
            order1.push(self.low_pass(&u1, j1, self.j - j1)?);
            for second in self.psi.iter().filter(|p| p.j > j1) {
                let filtered = multiply(&u1, &second.levels[j1]);
                let filtered = subsample(filtered, 1 << (second.j - j1));
                let u2 = dft2(modulus(dft2(filtered, true)?), false)?;
                order2.push(self.low_pass(&u2, second.j, self.j - second.j)?);
            }
        }
        let [channels, oh, ow] = self.output_shape();
        let plane = oh * ow;
        let mut out = vec![0.0f32; b * channels * plane];
        for (c, coefficients) in order0.iter().chain(&order1).chain(&order2).enumerate() {
            for i in 0..b {
                let dst = (i * channels + c) * plane;
                out[dst..dst + plane].copy_from_slice(&coefficients[i * plane..(i + 1) * plane]);
            }
        }
        Ok(out)
    }

    /// `unpad(real(ifft2(subsample(u · φ[level], 2^k))))`: the low-pass coefficients.
    fn low_pass(&self, u: &Planes, level: usize, k: usize) -> Result<Vec<f32>> {
        let filtered = subsample(multiply(u, &self.phi[level]), 1 << k);
        let s = dft2(filtered, true)?;
        let (rows, cols) = (s.rows - 2, s.cols - 2);
        let mut out = Vec::with_capacity(s.count * rows * cols);
        for p in 0..s.count {
            for r in 1..=rows {
                let row = (p * s.rows + r) * s.cols;
                out.extend_from_slice(&s.re[row + 1..row + 1 + cols]);
            }
        }
        Ok(out)
    }

    /// The images padded by reflection (numpy's `reflect`, PyTorch's `reflect`: the edge
    /// is not repeated) to the padded size, centred as Kymatio pads.
    fn pad(&self, pixels: &[f32], b: usize) -> Planes {
        let [h, w] = self.shape;
        let [m, n] = self.padded;
        let (top, left) = ((m - h) / 2, (n - w) / 2);
        let mut re = vec![0.0f32; b * m * n];
        for i in 0..b {
            for r in 0..m {
                let sr = reflect(r as isize - top as isize, h);
                for c in 0..n {
                    let sc = reflect(c as isize - left as isize, w);
                    re[(i * m + r) * n + c] = pixels[(i * h + sr) * w + sc];
                }
            }
        }
        Planes {
            count: b,
            rows: m,
            cols: n,
            im: vec![0.0; re.len()],
            re,
        }
    }
}

/// Index `i` of a signal of length `len` reflected at both ends without repeating the edge
/// (`len ≥ 2`, and the padding is smaller than `len`, as [`Scattering2d::new`] ensures).
fn reflect(i: isize, len: usize) -> usize {
    let len = len as isize;
    if len == 1 {
        return 0;
    }
    let period = 2 * (len - 1);
    let mut i = i.rem_euclid(period);
    if i >= len {
        i = period - i;
    }
    i as usize
}

/// A Gabor filter on an `m × n` grid, periodised over 5 × 5 copies of it, as Kymatio's
/// `gabor_2d`: `exp(−uᵀ R D R⁻¹ u / 2σ² + i ξ (u₀ cos θ + u₁ sin θ)) / (2 · 3.1415 σ² / slant)`.
fn gabor(size: [usize; 2], sigma: f64, theta: f64, xi: f64, slant: f64) -> (Vec<f64>, Vec<f64>) {
    let [m, n] = size;
    let (c, s) = (theta.cos(), theta.sin());
    // R · diag(1, slant²) · R⁻¹ / (2σ²).
    let d = slant * slant;
    let a = (c * c + d * s * s) / (2.0 * sigma * sigma);
    let b = (c * s - d * s * c) / (2.0 * sigma * sigma);
    let e = (s * s + d * c * c) / (2.0 * sigma * sigma);
    let mut re = vec![0.0; m * n];
    let mut im = vec![0.0; m * n];
    for ex in -2i64..=2 {
        for ey in -2i64..=2 {
            for r in 0..m {
                let x = (r as i64 + ex * m as i64) as f64;
                for col in 0..n {
                    let y = (col as i64 + ey * n as i64) as f64;
                    let envelope = (-(a * x * x + 2.0 * b * x * y + e * y * y)).exp();
                    let phase = xi * (x * c + y * s);
                    re[r * n + col] += envelope * phase.cos();
                    im[r * n + col] += envelope * phase.sin();
                }
            }
        }
    }
    // Kymatio's constant, 3.1415 rather than π, kept for equal output.
    #[allow(clippy::approx_constant)]
    let norm = 2.0 * 3.1415 * sigma * sigma / slant;
    for v in re.iter_mut().chain(im.iter_mut()) {
        *v /= norm;
    }
    (re, im)
}

/// A Morlet wavelet: the Gabor filter minus the Gaussian envelope that makes its mean zero.
fn morlet(size: [usize; 2], sigma: f64, theta: f64, xi: f64, slant: f64) -> (Vec<f64>, Vec<f64>) {
    let (wr, wi) = gabor(size, sigma, theta, xi, slant);
    let (gr, gi) = gabor(size, sigma, theta, 0.0, slant);
    // K = Σ wv / Σ envelope (complex division).
    let (swr, swi) = (wr.iter().sum::<f64>(), wi.iter().sum::<f64>());
    let (sgr, sgi) = (gr.iter().sum::<f64>(), gi.iter().sum::<f64>());
    let den = sgr * sgr + sgi * sgi;
    let (kr, ki) = ((swr * sgr + swi * sgi) / den, (swi * sgr - swr * sgi) / den);
    let re = wr
        .iter()
        .zip(gr.iter().zip(&gi))
        .map(|(w, (g, h))| w - (kr * g - ki * h))
        .collect();
    let im = wi
        .iter()
        .zip(gr.iter().zip(&gi))
        .map(|(w, (g, h))| w - (kr * h + ki * g))
        .collect();
    (re, im)
}

/// The real part of the 2-D DFT of a complex `m × n` plane (in f64, once per filter).
fn real_fft2(x: &(Vec<f64>, Vec<f64>), m: usize, n: usize) -> Vec<f64> {
    let (re, im) = x;
    let mut out = vec![0.0; m * n];
    // Along columns of each row first, then along rows: X[u, v] = Σ x[r, c] e^{−2πi(ur/m + vc/n)}.
    let mut tr = vec![0.0; m * n];
    let mut ti = vec![0.0; m * n];
    for r in 0..m {
        for v in 0..n {
            let (mut sr, mut si) = (0.0, 0.0);
            for c in 0..n {
                let a = -2.0 * PI * ((v * c) % n) as f64 / n as f64;
                let (cs, sn) = (a.cos(), a.sin());
                let (xr, xi) = (re[r * n + c], im[r * n + c]);
                sr += xr * cs - xi * sn;
                si += xr * sn + xi * cs;
            }
            tr[r * n + v] = sr;
            ti[r * n + v] = si;
        }
    }
    for u in 0..m {
        for v in 0..n {
            let mut sr = 0.0;
            for r in 0..m {
                let a = -2.0 * PI * ((u * r) % m) as f64 / m as f64;
                sr += tr[r * n + v] * a.cos() - ti[r * n + v] * a.sin();
            }
            out[u * n + v] = sr;
        }
    }
    out
}

/// Kymatio's `periodize_filter_fft`: the filter's Fourier plane with the frequencies beyond
/// the band of resolution `res` zeroed, folded onto a plane `2^res` times smaller.
fn periodize(x: &[f64], m: usize, n: usize, res: usize) -> Plane {
    let k = 1usize << res;
    let (rows, cols) = (m / k, n / k);
    let scale = f64::powi(2.0, -(res as i32));
    let (start_x, len_x) = (
        (m as f64 * scale / 2.0) as usize,
        (m as f64 * (1.0 - scale)) as usize,
    );
    let (start_y, len_y) = (
        (n as f64 * scale / 2.0) as usize,
        (n as f64 * (1.0 - scale)) as usize,
    );
    let kept = |r: usize, c: usize| {
        !(start_x..start_x + len_x).contains(&r) && !(start_y..start_y + len_y).contains(&c)
    };
    let mut data = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let mut s = 0.0;
            for i in 0..k {
                for j in 0..k {
                    let (rr, cc) = (r + i * rows, c + j * cols);
                    if kept(rr, cc) {
                        s += x[rr * n + cc];
                    }
                }
            }
            data[r * cols + c] = s;
        }
    }
    Plane { rows, cols, data }
}

/// Each plane of `u` times the real filter `f` (of the planes' size).
fn multiply(u: &Planes, f: &Plane) -> Planes {
    debug_assert_eq!((u.rows, u.cols), (f.rows, f.cols));
    let size = u.rows * u.cols;
    let mut re = u.re.clone();
    let mut im = u.im.clone();
    for p in 0..u.count {
        for (i, &g) in f.data.iter().enumerate() {
            re[p * size + i] *= g as f32;
            im[p * size + i] *= g as f32;
        }
    }
    Planes {
        count: u.count,
        rows: u.rows,
        cols: u.cols,
        re,
        im,
    }
}

/// Kymatio's `subsample_fourier`: the Fourier planes of the signals subsampled by `k`
/// (the mean of the `k × k` aliases of each frequency).
fn subsample(u: Planes, k: usize) -> Planes {
    if k == 1 {
        return u;
    }
    let (rows, cols) = (u.rows / k, u.cols / k);
    let mut re = vec![0.0f32; u.count * rows * cols];
    let mut im = vec![0.0f32; u.count * rows * cols];
    let inv = 1.0 / (k * k) as f32;
    for p in 0..u.count {
        for r in 0..rows {
            for c in 0..cols {
                let (mut sr, mut si) = (0.0f32, 0.0f32);
                for i in 0..k {
                    for j in 0..k {
                        let at = (p * u.rows + r + i * rows) * u.cols + c + j * cols;
                        sr += u.re[at];
                        si += u.im[at];
                    }
                }
                re[(p * rows + r) * cols + c] = sr * inv;
                im[(p * rows + r) * cols + c] = si * inv;
            }
        }
    }
    Planes {
        count: u.count,
        rows,
        cols,
        re,
        im,
    }
}

/// `|u|`, elementwise, as complex planes with a zero imaginary part.
fn modulus(mut u: Planes) -> Planes {
    for (a, b) in u.re.iter_mut().zip(u.im.iter_mut()) {
        *a = (*a * *a + *b * *b).sqrt();
        *b = 0.0;
    }
    u
}

/// The 2-D DFT of every plane (the inverse, divided by the size, when `inverse`), as
/// products with the DFT matrices: `F_m · X · F_n`.
fn dft2(u: Planes, inverse: bool) -> Result<Planes> {
    let (m, n) = (u.rows, u.cols);
    let (fr_n, fi_n) = dft_matrix(n, inverse);
    let (fr_m, fi_m) = dft_matrix(m, inverse);
    let err = |e: strata_tensor::TensorError| ModelsError::Config(e.to_string());
    let count = u.count;
    let re = Tensor::from_vec(u.re, &[count, m, n]).map_err(err)?;
    let im = Tensor::from_vec(u.im, &[count, m, n]).map_err(err)?;
    // Along each row: X · F_n.
    let (r1, i1) = complex_matmul(&re, &im, &fr_n, &fi_n, false).map_err(err)?;
    // Along each column: F_m · X.
    let (r2, i2) = complex_matmul(&r1, &i1, &fr_m, &fi_m, true).map_err(err)?;
    let mut re = r2.contiguous().to_vec();
    let mut im = i2.contiguous().to_vec();
    if inverse {
        let inv = 1.0 / (m * n) as f32;
        for v in re.iter_mut().chain(im.iter_mut()) {
            *v *= inv;
        }
    }
    Ok(Planes {
        count,
        rows: m,
        cols: n,
        re,
        im,
    })
}

/// `(a + ib) · (fr + i fi)` (or `(fr + i fi) · (a + ib)` when `left`), planewise.
fn complex_matmul(
    a: &Tensor<f32>,
    b: &Tensor<f32>,
    fr: &Tensor<f32>,
    fi: &Tensor<f32>,
    left: bool,
) -> strata_tensor::Result<(Tensor<f32>, Tensor<f32>)> {
    let mm = |x: &Tensor<f32>, f: &Tensor<f32>| if left { f.matmul(x) } else { x.matmul(f) };
    let re = mm(a, fr)?.sub(&mm(b, fi)?)?;
    let im = mm(a, fi)?.add(&mm(b, fr)?)?;
    Ok((re, im))
}

/// The `n × n` DFT matrix `e^{∓2πi jk/n}`, real and imaginary parts.
fn dft_matrix(n: usize, inverse: bool) -> (Tensor<f32>, Tensor<f32>) {
    let sign = if inverse { 1.0 } else { -1.0 };
    let mut re = Vec::with_capacity(n * n);
    let mut im = Vec::with_capacity(n * n);
    for j in 0..n {
        for k in 0..n {
            let a = sign * 2.0 * PI * ((j * k) % n) as f64 / n as f64;
            re.push(a.cos() as f32);
            im.push(a.sin() as f32);
        }
    }
    (
        Tensor::from_vec(re, &[n, n]).expect("n × n values"),
        Tensor::from_vec(im, &[n, n]).expect("n × n values"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflection_does_not_repeat_the_edge() {
        let got: Vec<usize> = (-3..8).map(|i| reflect(i, 5)).collect();
        assert_eq!(got, [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
    }

    #[test]
    fn the_dft_inverts_and_matches_the_definition() {
        let (m, n) = (6, 4);
        let re: Vec<f32> = (0..m * n).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
        let u = Planes {
            count: 1,
            rows: m,
            cols: n,
            im: vec![0.0; re.len()],
            re: re.clone(),
        };
        let f = dft2(u, false).unwrap();
        // X[1, 2] by the definition.
        let (mut sr, mut si) = (0.0f64, 0.0f64);
        for r in 0..m {
            for c in 0..n {
                let a = -2.0 * PI * (r as f64 / m as f64 + 2.0 * c as f64 / n as f64);
                sr += re[r * n + c] as f64 * a.cos();
                si += re[r * n + c] as f64 * a.sin();
            }
        }
        assert!((f.re[n + 2] as f64 - sr).abs() < 1e-4 && (f.im[n + 2] as f64 - si).abs() < 1e-4);
        let back = dft2(f, true).unwrap();
        for (a, b) in back.re.iter().zip(&re) {
            assert!((a - b).abs() < 1e-5);
        }
        assert!(back.im.iter().all(|v| v.abs() < 1e-5));
    }

    #[test]
    fn bad_settings_and_images_are_refused() {
        assert!(Scattering2d::new(0, 8, [28, 28]).is_err());
        assert!(Scattering2d::new(2, 0, [28, 28]).is_err());
        assert!(Scattering2d::new(5, 8, [28, 28]).is_err());
        let s = Scattering2d::new(2, 8, [28, 28]).unwrap();
        assert!(s.transform(&Tensor::zeros(&[2, 27, 28])).is_err());
        assert!(s.transform(&Tensor::zeros(&[2, 3, 28, 28])).is_err());
        assert_eq!(
            s.transform(&Tensor::zeros(&[0, 28, 28])).unwrap().shape(),
            &[0, 81, 7, 7]
        );
    }

    #[test]
    fn a_constant_image_has_only_its_mean_in_order_zero() {
        // The wavelets have zero mean: on a constant image every order-1 and order-2
        // coefficient vanishes, and order 0 is the constant (φ has unit mass).
        let s = Scattering2d::new(2, 8, [16, 16]).unwrap();
        let out = s
            .transform(&Tensor::full(&[1, 16, 16], 0.5))
            .unwrap()
            .to_vec();
        let plane = 4 * 4;
        for v in &out[..plane] {
            assert!((v - 0.5).abs() < 1e-3, "order 0: {v}");
        }
        for v in &out[plane..] {
            assert!(v.abs() < 1e-4, "orders 1 and 2: {v}");
        }
    }
}
