//! 2-d max and average pooling, adaptive average pooling, and their backward kernels.
//!
//! Each `(sample, channel)` plane is pooled on its own; planes run in parallel. Output sizes,
//! padding rules, `ceil_mode`, `count_include_pad` and the NaN behaviour follow PyTorch's
//! CPU kernels.

use crate::engine::par::{self, PAR_MIN_WORK};
use crate::handle::storage::{Buffer, alloc, try_alloc};
use crate::{Element, IndexTensor, Result, Tensor, TensorError};

/// Settings of a 2-d pooling window, PyTorch's `MaxPool2d`/`AvgPool2d` arguments.
///
/// ```
/// use strata_tensor::Pool2dParams;
/// let p = Pool2dParams::new(2); // kernel 2, stride 2 (= kernel), no padding
/// assert_eq!(p.stride, [2, 2]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dParams {
    /// Window size, (height, width).
    pub kernel: [usize; 2],
    /// Step between windows; PyTorch's default is the kernel size.
    pub stride: [usize; 2],
    /// Implicit padding on both sides (at most half the kernel): `-inf` for max pooling,
    /// zeros for average pooling.
    pub padding: [usize; 2],
    /// Spacing between window taps (max pooling only).
    pub dilation: [usize; 2],
    /// Round the output size up instead of down (windows must still start inside the
    /// input or its left padding).
    pub ceil_mode: bool,
    /// Average pooling: count padded zeros in the divisor (PyTorch's default: true).
    pub count_include_pad: bool,
    /// Average pooling: divide by this instead of the window size.
    pub divisor_override: Option<usize>,
}

impl Pool2dParams {
    /// A square `kernel` with stride = kernel, no padding, dilation 1, floor mode, padded
    /// zeros counted: PyTorch's defaults.
    pub fn new(kernel: usize) -> Self {
        Pool2dParams {
            kernel: [kernel, kernel],
            stride: [kernel, kernel],
            padding: [0, 0],
            dilation: [1, 1],
            ceil_mode: false,
            count_include_pad: true,
            divisor_override: None,
        }
    }
    /// The same stride in both dimensions.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    /// The same padding in both dimensions.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = [p, p];
        self
    }
    /// The same dilation in both dimensions.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }
    /// Ceil mode on or off.
    pub fn ceil_mode(mut self, on: bool) -> Self {
        self.ceil_mode = on;
        self
    }
    /// Whether average pooling counts padded zeros.
    pub fn count_include_pad(mut self, on: bool) -> Self {
        self.count_include_pad = on;
        self
    }
    /// A fixed divisor for average pooling.
    pub fn divisor_override(mut self, d: Option<usize>) -> Self {
        self.divisor_override = d;
        self
    }

    /// Positive sizes, and padding at most half the kernel: PyTorch bounds it by
    /// `kernel / 2` whatever the dilation (`pool2d_shape_check`), which also keeps it
    /// within half the dilated span.
    fn check(&self, op: &'static str) -> Result<()> {
        if [self.kernel, self.stride, self.dilation]
            .iter()
            .any(|v| v.contains(&0))
        {
            return Err(TensorError::invalid(
                op,
                format!(
                    "kernel {:?}, stride {:?} and dilation {:?} must be positive",
                    self.kernel, self.stride, self.dilation
                ),
            ));
        }
        if [self.kernel, self.stride, self.dilation, self.padding]
            .iter()
            .any(|v| v.iter().any(|&x| x > MAX_POOL_PARAM))
        {
            return Err(TensorError::invalid(
                op,
                format!(
                    "kernel {:?}, stride {:?}, dilation {:?} and padding {:?} must be at most \
                     2^31",
                    self.kernel, self.stride, self.dilation, self.padding
                ),
            ));
        }
        if (0..2).any(|i| self.padding[i] > self.kernel[i] / 2) {
            return Err(TensorError::invalid(
                op,
                format!(
                    "padding {:?} should be at most half of the kernel {:?}",
                    self.padding, self.kernel
                ),
            ));
        }
        Ok(())
    }

    /// Output size along dimension `i` for an input of `size` (PyTorch's
    /// `pooling_output_shape`).
    fn out_size(&self, op: &'static str, size: usize, i: usize) -> Result<usize> {
        // Both dimensions' settings are checked before either size, as PyTorch does.
        self.check(op)?;
        let (k, s, p, d) = (
            self.kernel[i],
            self.stride[i],
            self.padding[i],
            self.dilation[i],
        );
        // In u128, where sizes below 2^64 cannot overflow: `d · (k - 1)` < 2^128 and the
        // padded size < 2^66. A window longer than the padded input leaves no output (in
        // PyTorch's signed arithmetic the numerator is negative there).
        let (k, s, p, d) = (k as u128, s as u128, p as u128, d as u128);
        let span = d * (k - 1) + 1;
        let padded = size as u128 + 2 * p + if self.ceil_mode { s - 1 } else { 0 };
        let mut out = padded.checked_sub(span).map_or(0, |numer| numer / s + 1);
        if self.ceil_mode && out >= 1 && (out - 1) * s >= size as u128 + p {
            out -= 1;
        }
        if out < 1 {
            return Err(TensorError::shape(
                op,
                format!(
                    "input size {size} is too small for kernel {k} (dilation {d}, padding {p}): the \
                     output would be empty"
                ),
            ));
        }
        // out ≤ (size + 2p + s) / s + 1 < 2^66: a count beyond usize is no tensor.
        usize::try_from(out).map_err(|_| TensorError::TooLarge {
            op,
            shape: vec![size],
        })
    }
}

/// The first tap of a window starting at `start` (negative inside the padding) that lands
/// on the input: `start` moved up by whole steps of `dilation` to 0 or beyond. (A loop
/// adding `dilation` until then takes as many turns as the padding is wide.)
fn first_inside(start: isize, dilation: usize) -> isize {
    if start >= 0 {
        return start;
    }
    start + (start.unsigned_abs().div_ceil(dilation) * dilation) as isize
}

/// The largest kernel, stride, dilation or padding a pooling takes: with each below 2^31,
/// the window arithmetic (`stride · i`, `dilation · (kernel - 1)`) fits in `isize`.
const MAX_POOL_PARAM: usize = 1 << 31;

/// `(batch-and-channel planes, H, W)` of a `[N, C, H, W]` or `[C, H, W]` input.
fn planes(op: &'static str, shape: &[usize]) -> Result<(usize, usize, usize)> {
    match shape {
        [n, c, h, w] => Ok((n * c, *h, *w)),
        [c, h, w] => Ok((*c, *h, *w)),
        _ => Err(TensorError::shape(
            op,
            format!("expected input [N, C, H, W] or [C, H, W], got {shape:?}"),
        )),
    }
}

fn out_shape(input: &[usize], oh: usize, ow: usize) -> Vec<usize> {
    let mut s = input.to_vec();
    let r = s.len();
    s[r - 2] = oh;
    s[r - 1] = ow;
    s
}

/// A buffer for the `[.., oh, ow]` output of `op` on `input`, or the error saying that it
/// cannot be allocated.
fn out_buffer<U: Element>(
    op: &'static str,
    input: &[usize],
    oh: usize,
    ow: usize,
) -> Result<Buffer<U>> {
    try_alloc::<U>(op, &out_shape(input, oh, ow))
}

/// The work of one output plane, for the parallel split only (saturating: a huge kernel
/// that padding makes fit is legal, and its windows are clipped to the input).
fn plane_work(oh: usize, ow: usize, kernel: [usize; 2]) -> usize {
    oh.saturating_mul(ow)
        .saturating_mul(kernel[0])
        .saturating_mul(kernel[1])
}

/// Runs `f(plane, out_plane)` for each plane, in parallel when the work is large.
fn for_each_plane<U: Send>(
    out: &mut [U],
    plane_len: usize,
    work_per_plane: usize,
    f: impl Fn(usize, &mut [U]) + Sync,
) {
    if plane_len == 0 {
        return;
    }
    let n = out.len() / plane_len;
    par::chunks_mut(out, plane_len, n * work_per_plane >= PAR_MIN_WORK, f);
}

impl<T: Element> Tensor<T> {
    /// 2-d max pooling of `[N, C, H, W]` (or `[C, H, W]`), like
    /// `F.max_pool2d(x, ..., return_indices=True)`: the maxima and, for each, its flat index
    /// `h * W + w` within its input plane. NaN wins over any number. A window that dilation
    /// and padding leave without a single input element gives `-inf` and index `-1`
    /// (PyTorch returns a position outside the window there, which its backward then
    /// writes to).
    ///
    /// ```
    /// use strata_tensor::{Pool2dParams, Tensor};
    /// let x = Tensor::<f32>::arange(0.0, 16.0, 1.0)?.reshape([1, 1, 4, 4])?;
    /// let (y, idx) = x.max_pool2d(Pool2dParams::new(2))?;
    /// assert_eq!(y.to_vec(), vec![5.0, 7.0, 13.0, 15.0]);
    /// assert_eq!(idx.to_vec(), vec![5, 7, 13, 15]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Shape`] for an input that is not 3-d or 4-d or too small,
    /// [`TensorError::Invalid`] for zero sizes or padding above half the kernel.
    pub fn max_pool2d(&self, p: Pool2dParams) -> Result<(Tensor<T>, IndexTensor)> {
        const OP: &str = "max_pool2d";
        let (np, h, w) = planes(OP, self.shape())?;
        let (oh, ow) = (p.out_size(OP, h, 0)?, p.out_size(OP, w, 1)?);
        let x = self.contiguous();
        let xs = x.as_slice().expect("contiguous");
        let mut values = out_buffer::<T>(OP, self.shape(), oh, ow)?;
        let mut indices = vec![0i64; values.len()];
        let work = plane_work(oh, ow, p.kernel);
        // The common 2×2, stride-2 window without padding: four loads per output, no
        // bounds arithmetic.
        let two_by_two = p.kernel == [2, 2]
            && p.stride == [2, 2]
            && p.padding == [0, 0]
            && p.dilation == [1, 1]
            && 2 * oh <= h
            && 2 * ow <= w;
        let plane_job = |pl: usize, (vals, idxs): (&mut [T], &mut [i64])| {
            let plane = &xs[pl * h * w..(pl + 1) * h * w];
            if two_by_two {
                max_pool_2x2(plane, w, oh, ow, vals, idxs);
                return;
            }
            for i in 0..oh {
                let h0 = (i * p.stride[0]) as isize - p.padding[0] as isize;
                let h1 = (h0 + ((p.kernel[0] - 1) * p.dilation[0]) as isize + 1).min(h as isize);
                let h0 = first_inside(h0, p.dilation[0]);
                for j in 0..ow {
                    let w0 = (j * p.stride[1]) as isize - p.padding[1] as isize;
                    let w1 =
                        (w0 + ((p.kernel[1] - 1) * p.dilation[1]) as isize + 1).min(w as isize);
                    let w0 = first_inside(w0, p.dilation[1]);
                    let mut best = T::neg_infinity();
                    let mut best_i = if h0 < h1 && w0 < w1 {
                        h0 * w as isize + w0
                    } else {
                        -1
                    };
                    let mut ih = h0;
                    while ih < h1 {
                        let mut iw = w0;
                        while iw < w1 {
                            let idx = ih * w as isize + iw;
                            let v = plane[idx as usize];
                            if v > best || v.is_nan() {
                                best = v;
                                best_i = idx;
                            }
                            iw += p.dilation[1] as isize;
                        }
                        ih += p.dilation[0] as isize;
                    }
                    vals[i * ow + j] = best;
                    idxs[i * ow + j] = best_i as i64;
                }
            }
        };
        par::chunk_pairs_mut(
            (&mut values, oh * ow),
            (&mut indices, oh * ow),
            np * work >= PAR_MIN_WORK,
            |pl, v, i| plane_job(pl, (v, i)),
        );
        let shape = out_shape(self.shape(), oh, ow);
        Ok((
            Tensor::from_contiguous(values, &shape),
            IndexTensor::from_vec(indices, &shape)?,
        ))
    }

    /// The gradient of [`max_pool2d`](Tensor::max_pool2d): each output gradient added at its
    /// argmax in a zero tensor of `input_shape` (index `-1`, a window without input
    /// elements, receives nothing).
    ///
    /// # Errors
    /// [`TensorError::Shape`] when `grad_out` and `indices` differ in shape or do not fit
    /// `input_shape`; [`TensorError::Index`] for an index outside its plane.
    #[doc(hidden)]
    pub fn max_pool2d_backward(
        grad_out: &Tensor<T>,
        indices: &IndexTensor,
        input_shape: &[usize],
    ) -> Result<Tensor<T>> {
        const OP: &str = "max_pool2d_backward";
        let (np, h, w) = planes(OP, input_shape)?;
        let r = input_shape.len();
        let fits = grad_out.shape() == indices.shape()
            && grad_out.ndim() == r
            && grad_out.shape()[..r - 2] == input_shape[..r - 2];
        if !fits {
            return Err(TensorError::shape(
                OP,
                format!(
                    "gradient {:?} and indices {:?} do not fit an input of shape {input_shape:?}",
                    grad_out.shape(),
                    indices.shape()
                ),
            ));
        }
        if let Some(&bad) = indices
            .as_slice()
            .iter()
            .find(|&&i| i < -1 || i >= (h * w) as i64)
        {
            return Err(TensorError::Index {
                op: OP,
                index: bad,
                dim: r - 1,
                size: h * w,
            });
        }
        let g = grad_out.contiguous();
        let gs = g.as_slice().expect("contiguous");
        let per_out = grad_out.shape()[r - 2] * grad_out.shape()[r - 1];
        let idx = indices.as_slice();
        let mut dx = alloc::<T>(np * h * w);
        for_each_plane(&mut dx, h * w, per_out, |pl, d| {
            d.fill(T::zero());
            for k in pl * per_out..(pl + 1) * per_out {
                if let Ok(i) = usize::try_from(idx[k]) {
                    d[i] += gs[k];
                }
            }
        });
        Ok(Tensor::from_contiguous(dx, input_shape))
    }

    /// 2-d average pooling of `[N, C, H, W]` (or `[C, H, W]`), like `F.avg_pool2d` with
    /// `ceil_mode`, `count_include_pad` and `divisor_override` from `p`.
    ///
    /// # Errors
    /// As [`max_pool2d`](Tensor::max_pool2d), and [`TensorError::Invalid`] for a dilation
    /// other than 1 or a zero divisor.
    pub fn avg_pool2d(&self, p: Pool2dParams) -> Result<Tensor<T>> {
        const OP: &str = "avg_pool2d";
        let (_, h, w) = planes(OP, self.shape())?;
        check_avg(OP, &p)?;
        let (oh, ow) = (p.out_size(OP, h, 0)?, p.out_size(OP, w, 1)?);
        let x = self.contiguous();
        let xs = x.as_slice().expect("contiguous");
        let mut out = out_buffer::<T>(OP, self.shape(), oh, ow)?;
        let (rows, cols) = (AvgAxis::new(&p, 0, h, oh), AvgAxis::new(&p, 1, w, ow));
        for_each_plane(&mut out, oh * ow, plane_work(oh, ow, p.kernel), |pl, o| {
            let plane = &xs[pl * h * w..(pl + 1) * h * w];
            for (i, orow) in o.chunks_mut(ow).enumerate() {
                let window_rows = &plane[rows.lo[i] * w..rows.hi[i] * w];
                for (j, out) in orow.iter_mut().enumerate() {
                    let Some(div) = avg_divisor(&p, &rows, &cols, i, j) else {
                        *out = T::zero();
                        continue;
                    };
                    // Over rows, then columns, in PyTorch's order.
                    let mut sum = T::zero();
                    for xrow in window_rows.chunks_exact(w) {
                        for &v in &xrow[cols.lo[j]..cols.hi[j]] {
                            sum += v;
                        }
                    }
                    *out = sum / T::from_usize(div);
                }
            }
        });
        Ok(Tensor::from_contiguous(
            out,
            &out_shape(self.shape(), oh, ow),
        ))
    }

    /// The gradient of [`avg_pool2d`](Tensor::avg_pool2d): each output gradient spread
    /// evenly (by the same divisor) over its window.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when `grad_out` does not match the pooling's output shape.
    #[doc(hidden)]
    pub fn avg_pool2d_backward(
        grad_out: &Tensor<T>,
        input_shape: &[usize],
        p: Pool2dParams,
    ) -> Result<Tensor<T>> {
        const OP: &str = "avg_pool2d_backward";
        let (np, h, w) = planes(OP, input_shape)?;
        check_avg(OP, &p)?;
        let (oh, ow) = (p.out_size(OP, h, 0)?, p.out_size(OP, w, 1)?);
        let expected = out_shape(input_shape, oh, ow);
        if grad_out.shape() != expected.as_slice() {
            return Err(TensorError::shape(
                OP,
                format!(
                    "gradient {:?} does not match the pooling output {expected:?}",
                    grad_out.shape()
                ),
            ));
        }
        let g = grad_out.contiguous();
        let gs = g.as_slice().expect("contiguous");
        // Each plane is zeroed by the worker that fills it, while it is in cache.
        let mut dx = alloc::<T>(np * h * w);
        let (rows, cols) = (AvgAxis::new(&p, 0, h, oh), AvgAxis::new(&p, 1, w, ow));
        for_each_plane(&mut dx, h * w, plane_work(oh, ow, p.kernel), |pl, d| {
            d.fill(T::zero());
            let gp = &gs[pl * oh * ow..(pl + 1) * oh * ow];
            let mut shares = vec![T::zero(); ow];
            for (i, grow) in gp.chunks(ow).enumerate() {
                for (j, (share, &g)) in shares.iter_mut().zip(grow).enumerate() {
                    // An empty window has no elements: its share is never added.
                    *share = avg_divisor(&p, &rows, &cols, i, j)
                        .map_or(T::zero(), |div| g / T::from_usize(div));
                }
                // Each element receives its windows' shares in (i, j) order, as in
                // PyTorch's loop over output positions.
                for ih in rows.lo[i]..rows.hi[i] {
                    let drow = &mut d[ih * w..(ih + 1) * w];
                    for (j, &share) in shares.iter().enumerate() {
                        for v in &mut drow[cols.lo[j]..cols.hi[j]] {
                            *v += share;
                        }
                    }
                }
            }
        });
        Ok(Tensor::from_contiguous(dx, input_shape))
    }

    /// Average pooling to a fixed output size, like `F.adaptive_avg_pool2d`: output cell
    /// `i` averages input rows `floor(i·H/oh)..ceil((i+1)·H/oh)` (and likewise columns).
    ///
    /// # Errors
    /// [`TensorError::Shape`] for an input that is not 3-d or 4-d,
    /// [`TensorError::Invalid`] for a zero output size with a non-empty input.
    pub fn adaptive_avg_pool2d(&self, output_size: [usize; 2]) -> Result<Tensor<T>> {
        const OP: &str = "adaptive_avg_pool2d";
        let (_, h, w) = planes(OP, self.shape())?;
        let [oh, ow] = output_size;
        check_adaptive(OP, output_size)?;
        let mut out = out_buffer::<T>(OP, self.shape(), oh, ow)?;
        let x = self.contiguous();
        let xs = x.as_slice().expect("contiguous");
        for_each_plane(&mut out, oh * ow, h * w, |pl, o| {
            let plane = &xs[pl * h * w..(pl + 1) * h * w];
            for i in 0..oh {
                let (h0, h1) = adaptive_range(i, h, oh);
                for j in 0..ow {
                    let (w0, w1) = adaptive_range(j, w, ow);
                    let mut sum = T::zero();
                    for ih in h0..h1 {
                        for iw in w0..w1 {
                            sum += plane[ih * w + iw];
                        }
                    }
                    o[i * ow + j] = sum / T::from_usize((h1 - h0) * (w1 - w0));
                }
            }
        });
        Ok(Tensor::from_contiguous(
            out,
            &out_shape(self.shape(), oh, ow),
        ))
    }

    /// The gradient of [`adaptive_avg_pool2d`](Tensor::adaptive_avg_pool2d).
    ///
    /// # Errors
    /// [`TensorError::Shape`] when `grad_out` does not fit `input_shape`.
    #[doc(hidden)]
    pub fn adaptive_avg_pool2d_backward(
        grad_out: &Tensor<T>,
        input_shape: &[usize],
    ) -> Result<Tensor<T>> {
        const OP: &str = "adaptive_avg_pool2d_backward";
        let (np, h, w) = planes(OP, input_shape)?;
        let r = input_shape.len();
        if grad_out.ndim() != r || grad_out.shape()[..r - 2] != input_shape[..r - 2] {
            return Err(TensorError::shape(
                OP,
                format!(
                    "gradient {:?} does not fit an input of shape {input_shape:?}",
                    grad_out.shape()
                ),
            ));
        }
        let (oh, ow) = (grad_out.shape()[r - 2], grad_out.shape()[r - 1]);
        check_adaptive(OP, [oh, ow])?;
        let g = grad_out.contiguous();
        let gs = g.as_slice().expect("contiguous");
        let mut dx = alloc::<T>(np * h * w);
        for_each_plane(&mut dx, h * w, h * w, |pl, d| {
            d.fill(T::zero());
            let gp = &gs[pl * oh * ow..(pl + 1) * oh * ow];
            for i in 0..oh {
                let (h0, h1) = adaptive_range(i, h, oh);
                for j in 0..ow {
                    let (w0, w1) = adaptive_range(j, w, ow);
                    let share = gp[i * ow + j] / T::from_usize((h1 - h0) * (w1 - w0));
                    for ih in h0..h1 {
                        for iw in w0..w1 {
                            d[ih * w + iw] += share;
                        }
                    }
                }
            }
        });
        Ok(Tensor::from_contiguous(dx, input_shape))
    }
}

fn check_avg(op: &'static str, p: &Pool2dParams) -> Result<()> {
    if p.dilation != [1, 1] {
        return Err(TensorError::invalid(
            op,
            format!(
                "dilation {:?} is not supported by average pooling",
                p.dilation
            ),
        ));
    }
    if p.divisor_override == Some(0) {
        return Err(TensorError::invalid(
            op,
            "divisor_override must be positive",
        ));
    }
    Ok(())
}

fn check_adaptive(op: &'static str, size: [usize; 2]) -> Result<()> {
    if size.contains(&0) {
        return Err(TensorError::invalid(
            op,
            format!("output size {size:?} must be positive"),
        ));
    }
    Ok(())
}

fn adaptive_range(i: usize, size: usize, out: usize) -> (usize, usize) {
    ((i * size) / out, ((i + 1) * size).div_ceil(out))
}

/// One axis of PyTorch's avg_pool2d windows: for each output position, the input range
/// the window covers once clipped to the input, and the window's length up to the padded
/// border (the pool size counts padding that far).
struct AvgAxis {
    lo: Vec<usize>,
    hi: Vec<usize>,
    padded: Vec<usize>,
}

impl AvgAxis {
    fn new(p: &Pool2dParams, axis: usize, size: usize, out: usize) -> Self {
        let (k, s, pad) = (p.kernel[axis], p.stride[axis], p.padding[axis]);
        let mut a = AvgAxis {
            lo: Vec::with_capacity(out),
            hi: Vec::with_capacity(out),
            padded: Vec::with_capacity(out),
        };
        for i in 0..out {
            let start = (i * s) as isize - pad as isize;
            let end = (start + k as isize).min((size + pad) as isize);
            a.padded.push((end - start).max(0) as usize);
            let lo = start.max(0) as usize;
            a.lo.push(lo);
            a.hi.push((end.min(size as isize).max(0) as usize).max(lo));
        }
        a
    }
}

/// The divisor of window `(i, j)`, or `None` when the window holds no input element.
#[inline]
fn avg_divisor(
    p: &Pool2dParams,
    rows: &AvgAxis,
    cols: &AvgAxis,
    i: usize,
    j: usize,
) -> Option<usize> {
    let (nh, nw) = (rows.hi[i] - rows.lo[i], cols.hi[j] - cols.lo[j]);
    if nh == 0 || nw == 0 {
        return None;
    }
    Some(match p.divisor_override {
        Some(d) => d,
        None if p.count_include_pad => rows.padded[i] * cols.padded[j],
        None => nh * nw,
    })
}

/// 2×2 max pooling with stride 2 over one plane of width `w`: the maximum of each window
/// and its flat index, the first maximum winning ties and NaN winning over numbers, in
/// the same scan order as the general kernel.
fn max_pool_2x2<T: Element>(
    plane: &[T],
    w: usize,
    oh: usize,
    ow: usize,
    vals: &mut [T],
    idxs: &mut [i64],
) {
    for i in 0..oh {
        let top = &plane[2 * i * w..2 * i * w + 2 * ow];
        let bottom = &plane[(2 * i + 1) * w..(2 * i + 1) * w + 2 * ow];
        let vals = &mut vals[i * ow..(i + 1) * ow];
        let idxs = &mut idxs[i * ow..(i + 1) * ow];
        let base = (2 * i * w) as i64;
        for j in 0..ow {
            let candidates = [
                (top[2 * j], base + 2 * j as i64),
                (top[2 * j + 1], base + 2 * j as i64 + 1),
                (bottom[2 * j], base + (w + 2 * j) as i64),
                (bottom[2 * j + 1], base + (w + 2 * j) as i64 + 1),
            ];
            let (mut best, mut best_i) = (T::neg_infinity(), candidates[0].1);
            for (v, k) in candidates {
                if v > best || v.is_nan() {
                    best = v;
                    best_i = k;
                }
            }
            vals[j] = best;
            idxs[j] = best_i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avg_pool_padding_rules() {
        // F.avg_pool2d(torch.ones(1, 1, 2, 2), 2, stride=1, padding=1) -> every window sees
        // 1, 2 or 4 ones out of 4: [[.25, .5, .25], [.5, 1, .5], [.25, .5, .25]]
        let x = Tensor::<f64>::ones(&[1, 1, 2, 2]);
        let p = Pool2dParams::new(2).stride(1).padding(1);
        assert_eq!(
            x.avg_pool2d(p).unwrap().to_vec(),
            vec![0.25, 0.5, 0.25, 0.5, 1.0, 0.5, 0.25, 0.5, 0.25]
        );
        // count_include_pad=False: every window averages only real ones
        assert_eq!(
            x.avg_pool2d(p.count_include_pad(false)).unwrap().to_vec(),
            vec![1.0; 9]
        );
        assert_eq!(
            x.avg_pool2d(p.divisor_override(Some(1))).unwrap().to_vec()[4],
            4.0
        );
    }

    #[test]
    fn output_sizes_match_torch() {
        // nn.MaxPool2d(3, stride=2, ceil_mode=True) on 6×6 -> 3×3 (floor mode: 2×2)
        let x = Tensor::<f32>::zeros(&[1, 1, 6, 6]);
        assert_eq!(
            x.max_pool2d(Pool2dParams::new(3).stride(2).ceil_mode(true))
                .unwrap()
                .0
                .shape(),
            &[1, 1, 3, 3]
        );
        assert_eq!(
            x.max_pool2d(Pool2dParams::new(3).stride(2))
                .unwrap()
                .0
                .shape(),
            &[1, 1, 2, 2]
        );
        // padding above half the kernel is refused
        assert!(x.max_pool2d(Pool2dParams::new(2).padding(2)).is_err());
        assert!(
            Tensor::<f32>::zeros(&[1, 1, 1, 1])
                .max_pool2d(Pool2dParams::new(2))
                .is_err()
        );
        assert!(
            Tensor::<f32>::zeros(&[4, 4])
                .max_pool2d(Pool2dParams::new(2))
                .is_err()
        );
    }

    #[test]
    fn adaptive_windows_overlap_like_torch() {
        // F.adaptive_avg_pool2d(torch.arange(5.).reshape(1, 1, 1, 5), (1, 3)):
        // windows [0, 2), [1, 4), [3, 5) -> [0.5, 2, 3.5]
        let x = Tensor::<f64>::arange(0.0, 5.0, 1.0)
            .unwrap()
            .reshape([1, 1, 1, 5])
            .unwrap();
        assert_eq!(
            x.adaptive_avg_pool2d([1, 3]).unwrap().to_vec(),
            vec![0.5, 2.0, 3.5]
        );
    }

    #[test]
    fn max_pool_backward_routes_to_argmax() {
        let x = Tensor::<f64>::from_vec(vec![1., 5., 2., 3.], &[1, 1, 2, 2]).unwrap();
        let (_, idx) = x.max_pool2d(Pool2dParams::new(2)).unwrap();
        let g = Tensor::<f64>::full(&[1, 1, 1, 1], 7.0);
        let dx = Tensor::max_pool2d_backward(&g, &idx, x.shape()).unwrap();
        assert_eq!(dx.to_vec(), vec![0., 7., 0., 0.]);
    }
}
