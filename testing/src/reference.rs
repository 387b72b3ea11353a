//! Naive references for the heavy kernels: matmul as a triple loop, convolution as a direct
//! seven-deep loop, pooling as PyTorch's CPU kernels write it, one window at a time.
//!
//! Each takes and returns row-major `f64` vectors; shapes are passed alongside.

use crate::{broadcast_shape, broadcast_source, indices, numel, ravel};
use strata_tensor::{Conv2dParams, Padding, Pool2dParams};

/// `torch.matmul(a, b)`: 1-d operands promoted (and their dimension removed), batch
/// dimensions broadcast, then one triple loop per batch entry. `None` when the shapes do
/// not fit.
pub fn matmul(a: &[f64], sa: &[usize], b: &[f64], sb: &[usize]) -> Option<(Vec<f64>, Vec<usize>)> {
    if sa.is_empty() || sb.is_empty() {
        return None;
    }
    let sa2: Vec<usize> = if sa.len() == 1 {
        vec![1, sa[0]]
    } else {
        sa.to_vec()
    };
    let sb2: Vec<usize> = if sb.len() == 1 {
        vec![sb[0], 1]
    } else {
        sb.to_vec()
    };
    let (ra, rb) = (sa2.len(), sb2.len());
    let (m, k) = (sa2[ra - 2], sa2[ra - 1]);
    let (k2, n) = (sb2[rb - 2], sb2[rb - 1]);
    if k != k2 {
        return None;
    }
    let (ba, bb) = (&sa2[..ra - 2], &sb2[..rb - 2]);
    let batch = broadcast_shape(ba, bb)?;
    let mut out = Vec::with_capacity(numel(&batch) * m * n);
    for bi in indices(&batch) {
        let oa = broadcast_source(&bi, ba) * m * k;
        let ob = broadcast_source(&bi, bb) * k * n;
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    s += a[oa + i * k + p] * b[ob + p * n + j];
                }
                out.push(s);
            }
        }
    }
    let mut shape = batch;
    if sa.len() > 1 {
        shape.push(m);
    }
    if sb.len() > 1 {
        shape.push(n);
    }
    Some((out, shape))
}

/// The shapes of one 2-d convolution: input `[n, c, h, w]`, weight `[o, c/groups, kh, kw]`.
#[derive(Clone, Copy, Debug)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub p: Conv2dParams,
}

impl ConvGeom {
    /// The explicit padding (the reference takes no `Same`/`Valid`).
    pub fn pads(&self) -> [usize; 2] {
        match self.p.padding {
            Padding::Explicit(p) => p,
            other => panic!("the reference convolution takes explicit padding, got {other:?}"),
        }
    }

    /// `(Ho, Wo)` from `F.conv2d`'s formula, or `None` when the dilated kernel is larger
    /// than the padded input.
    pub fn out_size(&self) -> Option<(usize, usize)> {
        let one = |size: usize, k: usize, i: usize| {
            let padded = size + 2 * self.pads()[i];
            let span = self.p.dilation[i] * (k - 1) + 1;
            (padded >= span).then(|| (padded - span) / self.p.stride[i] + 1)
        };
        Some((one(self.h, self.kh, 0)?, one(self.w, self.kw, 1)?))
    }
    pub fn input_shape(&self) -> Vec<usize> {
        vec![self.n, self.c, self.h, self.w]
    }
    pub fn weight_shape(&self) -> Vec<usize> {
        vec![self.o, self.c / self.p.groups, self.kh, self.kw]
    }
    pub fn output_shape(&self) -> Vec<usize> {
        let (oh, ow) = self.out_size().expect("a valid convolution");
        vec![self.n, self.o, oh, ow]
    }

    /// Calls `f(x_index, w_index, y_index)` for every multiply-add of the convolution:
    /// `y[n, o, oh, ow] += x[n, g·C/g + ci, oh·s + i·d - p, ow·s + j·d - p] · w[o, ci, i, j]`
    /// over every tap that lands inside the input (padding reads zeros).
    pub fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (oh_n, ow_n) = self.out_size().expect("a valid convolution");
        let (cg, og) = (self.c / self.p.groups, self.o / self.p.groups);
        let ([s0, s1], [p0, p1], [d0, d1]) = (self.p.stride, self.pads(), self.p.dilation);
        for n in 0..self.n {
            for o in 0..self.o {
                let grp = o / og;
                for oh in 0..oh_n {
                    for ow in 0..ow_n {
                        let yi = ravel(&[n, o, oh, ow], &[self.n, self.o, oh_n, ow_n]);
                        for ci in 0..cg {
                            for i in 0..self.kh {
                                for j in 0..self.kw {
                                    let ih = (oh * s0 + i * d0) as isize - p0 as isize;
                                    let iw = (ow * s1 + j * d1) as isize - p1 as isize;
                                    if ih < 0
                                        || iw < 0
                                        || ih >= self.h as isize
                                        || iw >= self.w as isize
                                    {
                                        continue;
                                    }
                                    let xi = ravel(
                                        &[n, grp * cg + ci, ih as usize, iw as usize],
                                        &[self.n, self.c, self.h, self.w],
                                    );
                                    let wi = ravel(&[o, ci, i, j], &[self.o, cg, self.kh, self.kw]);
                                    f(xi, wi, yi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `F.conv2d(x, w, b)`.
    pub fn forward(&self, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
        let shape = self.output_shape();
        let plane = shape[2] * shape[3];
        let mut y: Vec<f64> = (0..numel(&shape))
            .map(|k| b.map_or(0.0, |b| b[(k / plane) % self.o]))
            .collect();
        self.for_each_tap(|xi, wi, yi| y[yi] += x[xi] * w[wi]);
        y
    }

    /// The input gradient: each tap's adjoint, `dx[x_index] += gy[y_index] · w[w_index]`.
    pub fn backward_input(&self, gy: &[f64], w: &[f64]) -> Vec<f64> {
        let mut dx = vec![0.0; numel(&self.input_shape())];
        self.for_each_tap(|xi, wi, yi| dx[xi] += gy[yi] * w[wi]);
        dx
    }

    /// The weight gradient: `dw[w_index] += gy[y_index] · x[x_index]`.
    pub fn backward_weight(&self, gy: &[f64], x: &[f64]) -> Vec<f64> {
        let mut dw = vec![0.0; numel(&self.weight_shape())];
        self.for_each_tap(|xi, wi, yi| dw[wi] += gy[yi] * x[xi]);
        dw
    }

    /// The bias gradient: `gy` summed over samples and positions.
    pub fn backward_bias(&self, gy: &[f64]) -> Vec<f64> {
        let shape = self.output_shape();
        let mut db = vec![0.0; self.o];
        for (k, idx) in indices(&shape).enumerate() {
            db[idx[1]] += gy[k];
        }
        db
    }
}

/// PyTorch's `pooling_output_shape` for one dimension (may be < 1: too small an input).
pub fn pool_out_size(size: usize, p: &Pool2dParams, i: usize) -> isize {
    let (k, s, pad, d) = (
        p.kernel[i] as isize,
        p.stride[i] as isize,
        p.padding[i] as isize,
        p.dilation[i] as isize,
    );
    let size = size as isize;
    let numer = size + 2 * pad - d * (k - 1) - 1 + if p.ceil_mode { s - 1 } else { 0 };
    let mut out = numer.div_euclid(s) + 1;
    if p.ceil_mode && (out - 1) * s >= size + pad {
        out -= 1;
    }
    out
}

/// `F.max_pool2d(x, ..., return_indices=True)` on `planes` planes of `h × w`, as
/// PyTorch's `cpu_max_pool` computes it: the window starts at `o·stride - padding`, its
/// start is moved into the input by whole dilation steps, the first candidate index is
/// that start, and a value wins when it is greater than the best so far or NaN. A window
/// with no input element gives `-inf` at index `-1` (where PyTorch reports a position
/// outside the window, which its backward would then write to).
pub fn max_pool2d(
    x: &[f64],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    p: &Pool2dParams,
) -> (Vec<f64>, Vec<i64>) {
    let (mut vals, mut idxs) = (Vec::new(), Vec::new());
    let (h, w) = (h as isize, w as isize);
    let [k0, k1] = p.kernel.map(|v| v as isize);
    let [s0, s1] = p.stride.map(|v| v as isize);
    let [p0, p1] = p.padding.map(|v| v as isize);
    let [d0, d1] = p.dilation.map(|v| v as isize);
    for pl in 0..planes {
        let plane = &x[pl * (h * w) as usize..];
        for i in 0..oh as isize {
            for j in 0..ow as isize {
                let (mut ih0, mut iw0) = (i * s0 - p0, j * s1 - p1);
                let ih1 = (ih0 + (k0 - 1) * d0 + 1).min(h);
                let iw1 = (iw0 + (k1 - 1) * d1 + 1).min(w);
                while ih0 < 0 {
                    ih0 += d0;
                }
                while iw0 < 0 {
                    iw0 += d1;
                }
                let mut best = f64::NEG_INFINITY;
                let mut best_i = if ih0 < ih1 && iw0 < iw1 {
                    ih0 * w + iw0
                } else {
                    -1
                };
                let mut ih = ih0;
                while ih < ih1 {
                    let mut iw = iw0;
                    while iw < iw1 {
                        let v = plane[(ih * w + iw) as usize];
                        if v > best || v.is_nan() {
                            best = v;
                            best_i = ih * w + iw;
                        }
                        iw += d1;
                    }
                    ih += d0;
                }
                vals.push(best);
                idxs.push(best_i as i64);
            }
        }
    }
    (vals, idxs)
}

/// The gradient of max pooling: each output gradient added at its index (none for `-1`).
pub fn max_pool2d_backward(gy: &[f64], idx: &[i64], planes: usize, hw: usize) -> Vec<f64> {
    let per_out = gy.len() / planes.max(1);
    let mut dx = vec![0.0; planes * hw];
    for (k, (&g, &i)) in gy.iter().zip(idx).enumerate() {
        if i >= 0 {
            dx[(k / per_out.max(1)) * hw + i as usize] += g;
        }
    }
    dx
}

/// One average-pooling window `[h0, h1) × [w0, w1)` and its divisor, as PyTorch's
/// `cpu_avg_pool` computes them: the pool size counts padding up to the padded border,
/// then the window is clipped to the input.
fn avg_window(
    p: &Pool2dParams,
    i: usize,
    j: usize,
    h: usize,
    w: usize,
) -> (usize, usize, usize, usize, f64) {
    let (k0, k1) = (p.kernel[0] as isize, p.kernel[1] as isize);
    let (pad0, pad1) = (p.padding[0] as isize, p.padding[1] as isize);
    let (h, w) = (h as isize, w as isize);
    let mut hs = i as isize * p.stride[0] as isize - pad0;
    let mut ws = j as isize * p.stride[1] as isize - pad1;
    let mut he = (hs + k0).min(h + pad0);
    let mut we = (ws + k1).min(w + pad1);
    let pool_size = (he - hs) * (we - ws);
    hs = hs.max(0);
    ws = ws.max(0);
    he = he.min(h);
    we = we.min(w);
    let divisor = match p.divisor_override {
        Some(d) => d as isize,
        None if p.count_include_pad => pool_size,
        None => (he - hs) * (we - ws),
    };
    if hs >= he || ws >= we {
        return (0, 0, 0, 0, divisor as f64);
    }
    (
        hs as usize,
        he as usize,
        ws as usize,
        we as usize,
        divisor as f64,
    )
}

/// `F.avg_pool2d` on `planes` planes of `h × w` (an empty window gives 0).
pub fn avg_pool2d(
    x: &[f64],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    p: &Pool2dParams,
) -> Vec<f64> {
    let mut out = Vec::new();
    for pl in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                let (h0, h1, w0, w1, div) = avg_window(p, i, j, h, w);
                if h0 >= h1 || w0 >= w1 {
                    out.push(0.0);
                    continue;
                }
                let mut s = 0.0;
                for ih in h0..h1 {
                    for iw in w0..w1 {
                        s += x[pl * h * w + ih * w + iw];
                    }
                }
                out.push(s / div);
            }
        }
    }
    out
}

/// The gradient of average pooling: each output gradient divided by its window's divisor
/// and added over the window.
pub fn avg_pool2d_backward(
    gy: &[f64],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    p: &Pool2dParams,
) -> Vec<f64> {
    let mut dx = vec![0.0; planes * h * w];
    for pl in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                let (h0, h1, w0, w1, div) = avg_window(p, i, j, h, w);
                for ih in h0..h1 {
                    for iw in w0..w1 {
                        dx[pl * h * w + ih * w + iw] += gy[pl * oh * ow + i * ow + j] / div;
                    }
                }
            }
        }
    }
    dx
}

/// Adaptive pooling's window along one dimension: `floor(i·n/out) .. ceil((i+1)·n/out)`.
pub fn adaptive_range(i: usize, n: usize, out: usize) -> (usize, usize) {
    ((i * n) / out, ((i + 1) * n).div_ceil(out))
}

/// `F.adaptive_avg_pool2d`.
pub fn adaptive_avg_pool2d(
    x: &[f64],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<f64> {
    let mut out = Vec::new();
    for pl in 0..planes {
        for i in 0..oh {
            let (h0, h1) = adaptive_range(i, h, oh);
            for j in 0..ow {
                let (w0, w1) = adaptive_range(j, w, ow);
                let mut s = 0.0;
                for ih in h0..h1 {
                    for iw in w0..w1 {
                        s += x[pl * h * w + ih * w + iw];
                    }
                }
                out.push(s / ((h1 - h0) * (w1 - w0)) as f64);
            }
        }
    }
    out
}

/// The gradient of adaptive average pooling.
pub fn adaptive_avg_pool2d_backward(
    gy: &[f64],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<f64> {
    let mut dx = vec![0.0; planes * h * w];
    for pl in 0..planes {
        for i in 0..oh {
            let (h0, h1) = adaptive_range(i, h, oh);
            for j in 0..ow {
                let (w0, w1) = adaptive_range(j, w, ow);
                let share = gy[pl * oh * ow + i * ow + j] / ((h1 - h0) * (w1 - w0)) as f64;
                for ih in h0..h1 {
                    for iw in w0..w1 {
                        dx[pl * h * w + ih * w + iw] += share;
                    }
                }
            }
        }
    }
    dx
}
