//! 1-d and 2-d convolution (PyTorch's cross-correlation) with stride, padding, dilation and
//! groups, and the kernels for its gradients.
//!
//! Each sample and group is an im2col matrix times the group's weights in one GEMM:
//! `out[g] ([O/g, Ho·Wo]) = W[g] ([O/g, C/g·kh·kw]) @ col ([C/g·kh·kw, Ho·Wo])`. A 1×1
//! kernel with stride 1 and no padding skips im2col: the input already is that matrix.
//! The input gradient is `Wᵀ @ grad` scattered back by col2im; the weight gradient is
//! `grad @ colᵀ` summed over samples. Samples run in parallel, each with its own im2col
//! scratch (`C/g·kh·kw·Ho·Wo` elements per thread); the weight gradient sums per-chunk
//! partials in a fixed order, so results do not depend on the thread count.

use faer::Par;

use crate::engine::gemm::{
    Axis, Fused, PAR_MIN_MACS, Strided as Operand, parallelism, product as gemm, product_fused,
};
use crate::engine::par;
use crate::handle::layout::check_shape;
use crate::handle::storage::{Buffer, alloc, alloc_zeroed, try_alloc};
use crate::{Element, Result, Tensor, TensorError};

/// Zero padding of a convolution over `D` spatial dimensions, like the `padding` argument
/// of `nn.Conv2d`: explicit sizes (the same on both sides of a dimension), `"valid"` (none)
/// or `"same"` (an output of the input's size, stride 1 only; an odd total puts the extra
/// zero at the end, as PyTorch does). A number or an array converts into `Explicit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Padding<const D: usize> {
    /// Zeros on both sides of each spatial dimension.
    Explicit([usize; D]),
    /// No padding (`padding="valid"`).
    Valid,
    /// Enough padding that the output has the input's size (`padding="same"`).
    Same,
}

impl<const D: usize> From<usize> for Padding<D> {
    fn from(p: usize) -> Self {
        Padding::Explicit([p; D])
    }
}

impl<const D: usize> From<[usize; D]> for Padding<D> {
    fn from(p: [usize; D]) -> Self {
        Padding::Explicit(p)
    }
}

impl<const D: usize> Padding<D> {
    /// The symmetric padding of each dimension and the extra zeros at its end (only `Same`
    /// with an odd total has any), for a kernel of `kernel` taps `dilation` apart.
    pub fn resolve(self, kernel: [usize; D], dilation: [usize; D]) -> ([usize; D], [usize; D]) {
        match self {
            Padding::Explicit(p) => (p, [0; D]),
            Padding::Valid => ([0; D], [0; D]),
            Padding::Same => {
                let total: [usize; D] = std::array::from_fn(|i| {
                    dilation[i].saturating_mul(kernel[i].saturating_sub(1))
                });
                (total.map(|t| t / 2), total.map(|t| t % 2))
            }
        }
    }
}

/// The settings of a 2-d convolution, used from the `Conv2d` layer down to the kernel; the
/// defaults are PyTorch's (stride 1, no padding, dilation 1, one group).
///
/// ```
/// use strata_tensor::{Conv2dParams, Padding};
/// let p = Conv2dParams::default().stride(2).padding(1);
/// assert_eq!((p.stride, p.padding), ([2, 2], Padding::Explicit([1, 1])));
/// let same = Conv2dParams::default().padding(Padding::Same);
/// # let _ = same;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Step between kernel applications, (height, width).
    pub stride: [usize; 2],
    /// Zero padding, (height, width).
    pub padding: Padding<2>,
    /// Spacing between kernel taps, (height, width).
    pub dilation: [usize; 2],
    /// Number of groups: input and output channels are split into this many independent
    /// convolutions.
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: [1, 1],
            padding: Padding::Explicit([0, 0]),
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// The same stride in both dimensions.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    /// The padding: a number (both dimensions), `[h, w]`, or [`Padding::Same`]/`Valid`.
    pub fn padding(mut self, p: impl Into<Padding<2>>) -> Self {
        self.padding = p.into();
        self
    }
    /// The same dilation in both dimensions.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }
    /// The number of groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    /// These settings with `Same`/`Valid` padding made explicit for a `kernel`
    /// (height, width), and the extra zeros `Same` needs at the end of each dimension.
    pub fn resolve(self, kernel: [usize; 2]) -> (Self, [usize; 2]) {
        let (pad, extra) = self.padding.resolve(kernel, self.dilation);
        (
            Conv2dParams {
                padding: Padding::Explicit(pad),
                ..self
            },
            extra,
        )
    }
}

/// The settings of a 1-d convolution, used from the `Conv1d` layer down to the kernel; the
/// defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv1dParams {
    /// Step between kernel applications.
    pub stride: usize,
    /// Zero padding.
    pub padding: Padding<1>,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Number of groups.
    pub groups: usize,
}

impl Default for Conv1dParams {
    fn default() -> Self {
        Conv1dParams {
            stride: 1,
            padding: Padding::Explicit([0]),
            dilation: 1,
            groups: 1,
        }
    }
}

impl Conv1dParams {
    /// The stride.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }
    /// The padding: a number, or [`Padding::Same`]/`Valid`.
    pub fn padding(mut self, p: impl Into<Padding<1>>) -> Self {
        self.padding = p.into();
        self
    }
    /// The dilation.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = d;
        self
    }
    /// The number of groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    /// The same convolution as a 2-d one over a height of 1.
    pub fn to_2d(self) -> Conv2dParams {
        Conv2dParams {
            stride: [1, self.stride],
            padding: match self.padding {
                Padding::Explicit([p]) => Padding::Explicit([0, p]),
                Padding::Valid => Padding::Valid,
                Padding::Same => Padding::Same,
            },
            dilation: [1, self.dilation],
            groups: self.groups,
        }
    }
}

/// Everything the three kernels need to know about one convolution's shapes.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    p: Conv2dParams,
    /// The symmetric padding, (height, width).
    pad: [usize; 2],
}

impl Geometry {
    fn new(op: &'static str, x: &[usize], wt: &[usize], p: Conv2dParams) -> Result<Self> {
        if x.len() != 4 || wt.len() != 4 {
            return Err(TensorError::shape(
                op,
                format!(
                    "expected input [N, C, H, W] and weight [O, C/groups, kH, kW], got {x:?} and \
                     {wt:?}"
                ),
            ));
        }
        if p.groups == 0 || p.stride.contains(&0) || p.dilation.contains(&0) {
            return Err(TensorError::invalid(
                op,
                format!(
                    "stride {:?}, dilation {:?} and groups {} must be positive",
                    p.stride, p.dilation, p.groups
                ),
            ));
        }
        let (n, c, h, w) = (x[0], x[1], x[2], x[3]);
        let (o, cg, kh, kw) = (wt[0], wt[1], wt[2], wt[3]);
        if cg.checked_mul(p.groups) != Some(c) || o % p.groups != 0 {
            return Err(TensorError::shape(
                op,
                format!(
                    "input {x:?} and weight {wt:?} do not fit groups = {}: expected {} input \
                     channels and out channels divisible by groups",
                    p.groups,
                    cg.saturating_mul(p.groups)
                ),
            ));
        }
        let (pad, extra) = p.padding.resolve([kh, kw], p.dilation);
        if extra != [0, 0] {
            return Err(TensorError::invalid(
                op,
                format!(
                    "padding=\"same\" with kernel {:?} and dilation {:?} needs one more zero at \
                     the end of a dimension: pad the input first (Var::conv2d and the layers do)",
                    [kh, kw],
                    p.dilation
                ),
            ));
        }
        if p.padding == Padding::Same && p.stride != [1, 1] {
            return Err(TensorError::invalid(
                op,
                "padding=\"same\" is not supported for strided convolutions",
            ));
        }
        let out = |size: usize, k: usize, i: usize| -> Option<usize> {
            let span = p.dilation[i].checked_mul(k.max(1) - 1)?.checked_add(1)?;
            let padded = pad[i].checked_mul(2)?.checked_add(size)?;
            (k > 0 && padded >= span).then(|| (padded - span) / p.stride[i] + 1)
        };
        match (out(h, kh, 0), out(w, kw, 1)) {
            (Some(oh), Some(ow)) => {
                // The output and the im2col scratch (`C/g·kh·kw × oh·ow`) must be countable
                // and allocatable before any kernel computes an index (a huge padding gives
                // a huge output from a small input). Counted as f64, the larger element.
                check_shape::<f64>(op, &[n, o, oh, ow])?;
                check_shape::<f64>(op, &[cg, kh, kw, oh, ow])?;
                // The input's count too: as the output of a transposed convolution
                // (`conv2d_backward_input`), its shape was computed, not read off a tensor.
                check_shape::<f64>(op, &[n, c, h, w])?;
                Ok(Geometry {
                    n,
                    c,
                    h,
                    w,
                    o,
                    kh,
                    kw,
                    oh,
                    ow,
                    p,
                    pad,
                })
            }
            _ => Err(TensorError::shape(
                op,
                format!(
                    "kernel {:?} (dilation {:?}) is larger than the padded input {x:?} \
                     (padding {:?})",
                    [kh, kw],
                    p.dilation,
                    pad
                ),
            )),
        }
    }

    fn cg(&self) -> usize {
        self.c / self.p.groups
    }
    fn og(&self) -> usize {
        self.o / self.p.groups
    }
    /// Rows of the im2col matrix: `C/g · kh · kw`.
    fn col_rows(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    fn col_cols(&self) -> usize {
        self.oh * self.ow
    }
    /// 1×1 kernel, stride 1, no padding: the input plane is the im2col matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.p.stride == [1, 1] && self.pad == [0, 0]
    }
    /// For kernel column `j`: the range of output columns whose input column is inside the
    /// image, and the input column of output column 0.
    fn valid_cols(&self, j: usize) -> (usize, usize, isize) {
        let (s, d, pad) = (self.p.stride[1], self.p.dilation[1], self.pad[1]);
        let shift = (j * d) as isize - pad as isize; // iw = ow * s + shift
        let lo = if shift >= 0 {
            0
        } else {
            ((-shift) as usize).div_ceil(s)
        };
        let hi = if (self.w as isize) <= shift {
            0
        } else {
            ((self.w as isize - shift) as usize)
                .div_ceil(s)
                .min(self.ow)
        };
        (lo.min(hi), hi, shift)
    }
}

/// Fills `col` ([C/g·kh·kw, Ho·Wo]) from one sample-group plane stack `x` ([C/g, H, W]).
fn im2col<T: Element>(x: &[T], col: &mut [T], g: &Geometry) {
    let (s0, d0, p0) = (g.p.stride[0], g.p.dilation[0], g.pad[0] as isize);
    let s1 = g.p.stride[1];
    let ncol = g.col_cols();
    for c in 0..g.cg() {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let r = (c * g.kh + i) * g.kw + j;
                let row = &mut col[r * ncol..(r + 1) * ncol];
                let (lo, hi, shift) = g.valid_cols(j);
                if s0 == 1 && s1 == 1 && g.ow == g.w && lo < hi {
                    shifted_plane(plane, row, g, (i * d0) as isize - p0, (lo, hi, shift));
                    continue;
                }
                for oh in 0..g.oh {
                    let out = &mut row[oh * g.ow..(oh + 1) * g.ow];
                    let ih = (oh * s0) as isize + (i * d0) as isize - p0;
                    if ih < 0 || ih >= g.h as isize {
                        out.fill(T::zero());
                        continue;
                    }
                    let src = &plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                    out[..lo].fill(T::zero());
                    out[hi..].fill(T::zero());
                    // (`lo == hi` when this kernel column only ever meets padding; then
                    // `lo + shift` may be negative and there is nothing to copy.)
                    if s1 == 1 && lo < hi {
                        let start = (lo as isize + shift) as usize;
                        out[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
                    } else {
                        for (k, o) in out[lo..hi].iter_mut().enumerate() {
                            *o = src[(((lo + k) * s1) as isize + shift) as usize];
                        }
                    }
                }
            }
        }
    }
}

/// One row of the im2col matrix of a stride-1 convolution with as many output columns as
/// input columns (the usual "same" padding): output row `oh` reads input row `oh + dh`
/// shifted by `shift` columns, so the rows that meet the image form one block of the plane
/// at a constant offset. The block is copied at once, then the padding zeroed (the columns
/// outside `lo..hi` of each row, the rows outside the image): a copy of 32 floats per row
/// cost a library call each, most of im2col's time at the small planes of a CNN.
fn shifted_plane<T: Element>(
    plane: &[T],
    row: &mut [T],
    g: &Geometry,
    dh: isize,
    (lo, hi, shift): (usize, usize, isize),
) {
    let (w, rows) = (g.w, g.oh);
    // Output rows oh_lo..oh_hi meet input rows 0..h.
    let oh_lo = (-dh).clamp(0, rows as isize) as usize;
    let oh_hi = (g.h as isize - dh).clamp(0, rows as isize) as usize;
    if oh_lo >= oh_hi {
        row.fill(T::zero());
        return;
    }
    let (start, end) = (oh_lo * w + lo, (oh_hi - 1) * w + hi);
    // Input index = output index + dh·w + shift: in the plane, as input rows
    // oh_lo + dh ≥ 0 … oh_hi − 1 + dh < h and columns lo + shift ≥ 0 … hi + shift ≤ w.
    let src = (start as isize + dh * w as isize + shift) as usize;
    row[start..end].copy_from_slice(&plane[src..src + (end - start)]);
    row[..start].fill(T::zero());
    row[end..].fill(T::zero());
    // Between two valid stretches: the columns hi..w of one row and 0..lo of the next,
    // read from the neighbouring input columns by the block copy.
    // The gaps are a value or two: stored one by one (`step_by` keeps the compiler from
    // turning the loop into a call to memset; W2's forward, 3 interleaved rounds, was
    // 2–8 % slower with `fill` in each, and with a plain range in two).
    for oh in oh_lo..oh_hi - 1 {
        for x in (oh * w + hi..(oh + 1) * w + lo).step_by(1) {
            row[x] = T::zero();
        }
    }
}

/// Adds `col` ([C/g·kh·kw, Ho·Wo]) back into the planes `dx` ([C/g, H, W]): the adjoint of
/// [`im2col`].
fn col2im<T: Element>(col: &[T], dx: &mut [T], g: &Geometry) {
    let (s0, d0, p0) = (g.p.stride[0], g.p.dilation[0], g.pad[0] as isize);
    let s1 = g.p.stride[1];
    let ncol = g.col_cols();
    for c in 0..g.cg() {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let r = (c * g.kh + i) * g.kw + j;
                let row = &col[r * ncol..(r + 1) * ncol];
                let (lo, hi, shift) = g.valid_cols(j);
                for oh in 0..g.oh {
                    let ih = (oh * s0) as isize + (i * d0) as isize - p0;
                    if ih < 0 || ih >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                    let src = &row[oh * g.ow..(oh + 1) * g.ow];
                    if s1 == 1 && lo < hi {
                        let start = (lo as isize + shift) as usize;
                        let dst = &mut dst[start..start + (hi - lo)];
                        for (d, &v) in dst.iter_mut().zip(&src[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        for ow in lo..hi {
                            dst[((ow * s1) as isize + shift) as usize] += src[ow];
                        }
                    }
                }
            }
        }
    }
}

/// Runs `f(sample, out_chunk, scratch)` for every sample, in parallel over samples when
/// there are several and the work is large enough, each worker with its own scratch.
///
/// # Errors
/// [`TensorError::TooLarge`] or [`TensorError::OutOfMemory`] (naming `op`) when the
/// scratch, whose size the input and the parameters set (a padding of 2^40 asks for
/// terabytes), cannot be allocated: the first scratch is allocated fallibly, before any
/// work, and handed to the first worker.
fn for_each_sample<T: Element>(
    op: &'static str,
    out: &mut [T],
    per_sample: usize,
    scratch_len: usize,
    macs_per_sample: usize,
    f: impl Fn(usize, &mut [T], &mut [T], Par) + Sync,
) -> Result<()> {
    let n = out.len() / per_sample.max(1);
    if per_sample == 0 {
        return Ok(());
    }
    let mut first = try_alloc::<T>(op, &[scratch_len])?;
    if n > 1 && par::threads() > 1 && n * macs_per_sample >= PAR_MIN_MACS {
        let first = std::sync::Mutex::new(Some(first));
        par::chunks_mut_init(
            out,
            per_sample,
            true,
            || {
                let own = first.lock().ok().and_then(|mut f| f.take());
                own.unwrap_or_else(|| alloc::<T>(scratch_len))
            },
            |scratch, i, o| f(i, o, scratch, Par::Seq),
        );
    } else {
        let par = parallelism(macs_per_sample);
        for (i, o) in out.chunks_mut(per_sample).enumerate() {
            f(i, o, &mut first, par);
        }
    }
    Ok(())
}

/// Adds a batch dimension to an unbatched `[C, H, W]` input (PyTorch accepts both).
fn batched<T: Element>(x: &Tensor<T>, dims: usize) -> Result<(Tensor<T>, bool)> {
    if x.ndim() == dims - 1 {
        Ok((x.unsqueeze(0)?, true))
    } else {
        Ok((x.clone(), false))
    }
}

impl<T: Element> Tensor<T> {
    /// 2-d convolution (cross-correlation) of an input `[N, C, H, W]` (or unbatched
    /// `[C, H, W]`) with a weight `[O, C/groups, kH, kW]` and optional bias `[O]`, like
    /// `F.conv2d`. The output is `[N, O, Ho, Wo]` with
    /// `Ho = (H + 2·padding - dilation·(kH - 1) - 1) / stride + 1`.
    ///
    /// ```
    /// use strata_tensor::{Conv2dParams, Tensor};
    /// let x = Tensor::<f32>::ones(&[1, 1, 4, 4]);
    /// let w = Tensor::<f32>::ones(&[1, 1, 3, 3]);
    /// let y = x.conv2d(&w, None, Conv2dParams::default().padding(1))?;
    /// assert_eq!(y.shape(), &[1, 1, 4, 4]);
    /// assert_eq!(y.get(&[0, 0, 0, 0])?, 4.0); // a corner sees 2×2 ones
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the input is not 3-d or 4-d, the channels do not fit the
    /// weight and groups, the bias is not `[O]`, or the kernel exceeds the padded input;
    /// [`TensorError::Invalid`] for a zero stride, dilation or group count;
    /// [`TensorError::TooLarge`] or [`TensorError::OutOfMemory`] for an output (or its
    /// im2col scratch) that cannot be allocated.
    pub fn conv2d(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        params: Conv2dParams,
    ) -> Result<Tensor<T>> {
        self.conv2d_with("conv2d", weight, bias, params, false)
    }

    /// `relu(conv2d(x, w, b))`: [`conv2d`](Tensor::conv2d) then [`relu`](Tensor::relu) in
    /// one op, the bias and the clamp applied as the product stores each output channel
    /// (no pass over the output of its own). The values are those of the two ops.
    ///
    /// ```
    /// use strata_tensor::{Conv2dParams, Tensor};
    /// let x = Tensor::<f32>::from_vec(vec![1.0, -2.0, 3.0, -4.0], &[1, 1, 2, 2])?;
    /// let w = Tensor::<f32>::from_vec(vec![1.0, -1.0], &[2, 1, 1, 1])?;
    /// let y = x.conv2d_relu(&w, None, Conv2dParams::default())?;
    /// assert_eq!(y.to_vec(), vec![1.0, 0.0, 3.0, 0.0, 0.0, 2.0, 0.0, 4.0]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// As [`conv2d`](Tensor::conv2d).
    pub fn conv2d_relu(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        params: Conv2dParams,
    ) -> Result<Tensor<T>> {
        self.conv2d_with("conv2d_relu", weight, bias, params, true)
    }

    fn conv2d_with(
        &self,
        op: &'static str,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        params: Conv2dParams,
        relu: bool,
    ) -> Result<Tensor<T>> {
        let (x, unbatched) = batched(self, 4)?;
        let (x, params) = match weight.shape() {
            &[_, _, kh, kw] if params.padding == Padding::Same && params.stride == [1, 1] => {
                let (explicit, [eh, ew]) = params.resolve([kh, kw]);
                let x = if eh + ew > 0 {
                    x.pad(&[0, ew as isize, 0, eh as isize], T::zero())?
                } else {
                    x
                };
                (x, explicit)
            }
            _ => (x, params),
        };
        let g = Geometry::new(op, x.shape(), weight.shape(), params)?;
        if let Some(b) = bias
            && b.shape() != [g.o]
        {
            return Err(TensorError::shape(
                op,
                format!(
                    "bias of shape {:?} does not fit {} output channels",
                    b.shape(),
                    g.o
                ),
            ));
        }
        let x = x.contiguous();
        let wt = weight.contiguous();
        let (xs, ws) = (
            x.as_slice().expect("contiguous"),
            wt.as_slice().expect("contiguous"),
        );
        let plane_out = g.col_cols();
        let per_sample = g.o * plane_out;
        // Fallible: the parameters set the output's size (a padding of 2^40 on a small
        // input asks for terabytes), and this op returns errors.
        let mut out = try_alloc::<T>(op, &[g.n, g.o, plane_out])?;
        let scratch = if g.pointwise() {
            0
        } else {
            g.col_rows() * g.col_cols()
        };
        let macs = g.o * g.col_rows() * plane_out;
        let bias = bias.map(|b| b.contiguous());
        for_each_sample(op, &mut out, per_sample, scratch, macs, |n, o, col, par| {
            for grp in 0..params.groups {
                let x_ng = &xs[(n * g.c + grp * g.cg()) * g.h * g.w..][..g.cg() * g.h * g.w];
                let (colm, col_off) = if g.pointwise() {
                    (x_ng, 0)
                } else {
                    im2col(x_ng, col, &g);
                    (&col[..], 0)
                };
                let dst = &mut o[grp * g.og() * plane_out..(grp + 1) * g.og() * plane_out];
                // The bias of the group's output channels, one per row of the product,
                // added (and the clamp applied) as the product stores its result.
                let epi = Fused {
                    bias: bias.as_ref().map(|b| {
                        let b = b.as_slice().expect("contiguous");
                        (&b[grp * g.og()..(grp + 1) * g.og()], Axis::Rows)
                    }),
                    relu,
                };
                product_fused(
                    dst,
                    (g.og(), plane_out, g.col_rows()),
                    ws,
                    Operand::row_major(grp * g.og() * g.col_rows(), g.col_rows()),
                    colm,
                    Operand::row_major(col_off, plane_out),
                    false,
                    epi,
                    par,
                );
            }
        })?;
        let y = Tensor::from_contiguous(out, &[g.n, g.o, g.oh, g.ow]);
        if unbatched { y.squeeze(0) } else { Ok(y) }
    }

    /// The gradient of [`conv2d`](Tensor::conv2d) with respect to its input, given the
    /// output gradient `grad_out` `[N, O, Ho, Wo]`, the weight, and the input's shape.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the shapes do not describe one convolution;
    /// [`TensorError::TooLarge`] or [`TensorError::OutOfMemory`] for a gradient (the output
    /// of a transposed convolution) that cannot be allocated.
    #[doc(hidden)]
    pub fn conv2d_backward_input(
        grad_out: &Tensor<T>,
        weight: &Tensor<T>,
        input_shape: &[usize],
        params: Conv2dParams,
    ) -> Result<Tensor<T>> {
        const OP: &str = "conv2d_backward_input";
        let unbatched = input_shape.len() == 3;
        let full: Vec<usize> = if unbatched {
            std::iter::once(1)
                .chain(input_shape.iter().copied())
                .collect()
        } else {
            input_shape.to_vec()
        };
        let (gy, _) = batched(grad_out, 4)?;
        let g = Geometry::new(OP, &full, weight.shape(), params)?;
        g.check_grad(OP, gy.shape())?;
        let gy = gy.contiguous();
        let wt = weight.contiguous();
        let (gys, ws) = (
            gy.as_slice().expect("contiguous"),
            wt.as_slice().expect("contiguous"),
        );
        let plane_out = g.col_cols();
        let per_sample = g.c * g.h * g.w;
        // Each sample's slab is zeroed by the worker that fills it, while it is in cache.
        // Fallible: as a transposed convolution, this op's output size comes from its
        // stride and padding (a stride of 2^40 asks for terabytes).
        let mut dx = try_alloc::<T>(OP, &full)?;
        let scratch = g.col_rows() * plane_out;
        let macs = g.o * g.col_rows() * plane_out;
        for_each_sample(
            OP,
            &mut dx,
            per_sample,
            scratch,
            macs,
            |n, dxn, col, par| {
                if !g.pointwise() {
                    dxn.fill(T::zero());
                }
                for grp in 0..params.groups {
                    let gy_ng = &gys[(n * g.o + grp * g.og()) * plane_out..][..g.og() * plane_out];
                    let dx_ng = &mut dxn[grp * g.cg() * g.h * g.w..][..g.cg() * g.h * g.w];
                    // col = W[g]ᵀ ([C/g·kh·kw, O/g]) @ grad[g] ([O/g, Ho·Wo])
                    let target: &mut [T] = if g.pointwise() { dx_ng } else { &mut col[..] };
                    gemm(
                        target,
                        (g.col_rows(), plane_out, g.og()),
                        ws,
                        Operand::transposed(grp * g.og() * g.col_rows(), g.col_rows()),
                        gy_ng,
                        Operand::row_major(0, plane_out),
                        false,
                        par,
                    );
                    if !g.pointwise() {
                        col2im(col, dx_ng, &g);
                    }
                }
            },
        )?;
        let dx = Tensor::from_contiguous(dx, &full);
        if unbatched { dx.squeeze(0) } else { Ok(dx) }
    }

    /// The gradient of [`conv2d`](Tensor::conv2d) with respect to its weight, given the
    /// output gradient, the input, and the weight's shape.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the shapes do not describe one convolution.
    #[doc(hidden)]
    pub fn conv2d_backward_weight(
        grad_out: &Tensor<T>,
        input: &Tensor<T>,
        weight_shape: &[usize],
        params: Conv2dParams,
    ) -> Result<Tensor<T>> {
        const OP: &str = "conv2d_backward_weight";
        let (x, _) = batched(input, 4)?;
        let (gy, _) = batched(grad_out, 4)?;
        let g = Geometry::new(OP, x.shape(), weight_shape, params)?;
        g.check_grad(OP, gy.shape())?;
        let x = x.contiguous();
        let gy = gy.contiguous();
        let (xs, gys) = (
            x.as_slice().expect("contiguous"),
            gy.as_slice().expect("contiguous"),
        );
        let plane_out = g.col_cols();
        let wlen = g.o * g.col_rows();
        // Fixed chunks of samples, each with its own partial sum, added in order.
        let per_chunk = g.n.div_ceil(16).max(1);
        let chunks = g.n.div_ceil(per_chunk);
        let macs = g.o * g.col_rows() * plane_out;
        let partial = |ci: usize, par: Par| {
            let mut dw = alloc_zeroed::<T>(wlen);
            let mut col = alloc::<T>(if g.pointwise() {
                0
            } else {
                g.col_rows() * plane_out
            });
            for n in ci * per_chunk..((ci + 1) * per_chunk).min(g.n) {
                for grp in 0..params.groups {
                    let x_ng = &xs[(n * g.c + grp * g.cg()) * g.h * g.w..][..g.cg() * g.h * g.w];
                    let colm: &[T] = if g.pointwise() {
                        x_ng
                    } else {
                        im2col(x_ng, &mut col, &g);
                        &col
                    };
                    let gy_ng = &gys[(n * g.o + grp * g.og()) * plane_out..][..g.og() * plane_out];
                    // dW[g] += grad[g] ([O/g, Ho·Wo]) @ colᵀ ([Ho·Wo, C/g·kh·kw])
                    gemm(
                        &mut dw[grp * g.og() * g.col_rows()..(grp + 1) * g.og() * g.col_rows()],
                        (g.og(), g.col_rows(), plane_out),
                        gy_ng,
                        Operand::row_major(0, plane_out),
                        colm,
                        Operand::transposed(0, plane_out),
                        true,
                        par,
                    );
                }
            }
            dw
        };
        let parallel = chunks > 1 && par::threads() > 1 && g.n * macs >= PAR_MIN_MACS;
        let partials: Vec<Buffer<T>> = if parallel {
            par::map(chunks, true, |ci| partial(ci, Par::Seq))
        } else {
            let par = parallelism(macs);
            (0..chunks).map(|ci| partial(ci, par)).collect()
        };
        let mut dw = alloc_zeroed::<T>(wlen);
        for p in partials {
            dw.iter_mut().zip(p.iter()).for_each(|(a, &b)| *a += b);
        }
        Ok(Tensor::from_contiguous(dw, weight_shape))
    }

    /// The gradient of [`conv2d`](Tensor::conv2d)'s bias: `grad_out` summed over batch and
    /// space.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when `grad_out` is not 3-d or 4-d.
    #[doc(hidden)]
    pub fn conv2d_backward_bias(grad_out: &Tensor<T>) -> Result<Tensor<T>> {
        match grad_out.ndim() {
            4 => grad_out.sum(&[0, 2, 3], false),
            3 => grad_out.sum(&[1, 2], false),
            _ => Err(TensorError::shape(
                "conv2d_backward_bias",
                format!(
                    "expected a gradient [N, O, Ho, Wo], got {:?}",
                    grad_out.shape()
                ),
            )),
        }
    }

    /// The im2col matrices of a 2-d convolution's input, like `F.unfold(input, kernel,
    /// dilation, padding, stride)`: for an input `[N, C, H, W]`, `[N, C·kh·kw, Ho·Wo]`, whose
    /// row `(c·kh + i)·kw + j` holds, for every output position, the input element that
    /// kernel tap `(i, j)` of channel `c` meets (zero in the padding). `params.groups` is
    /// ignored: the rows of group `g` are the block of its channels. The matrices
    /// [`conv2d`](Tensor::conv2d) multiplies, for per-sample weight gradients
    /// (`grad_outᵢ · colsᵢᵀ`) and their norms.
    ///
    /// ```
    /// use strata_tensor::{Conv2dParams, Tensor};
    /// let x = Tensor::<f64>::from_vec((0..9).map(f64::from).collect(), &[1, 1, 3, 3])?;
    /// let cols = x.im2col([2, 2], Conv2dParams::default())?;
    /// assert_eq!(cols.shape(), &[1, 4, 4]);
    /// assert_eq!(cols.to_vec()[..4], [0.0, 1.0, 3.0, 4.0]); // tap (0, 0) at each position
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// As [`conv2d`](Tensor::conv2d); the input must be 4-d.
    pub fn im2col(&self, kernel: [usize; 2], params: Conv2dParams) -> Result<Tensor<T>> {
        const OP: &str = "im2col";
        let c = self.shape().get(1).copied().unwrap_or(0);
        let params = Conv2dParams {
            groups: 1,
            ..params
        };
        let g = Geometry::new(OP, self.shape(), &[1, c, kernel[0], kernel[1]], params)?;
        let x = self.contiguous();
        let xs = x.as_slice().expect("contiguous");
        let per_sample = g.col_rows() * g.col_cols();
        let mut out = alloc::<T>(g.n * per_sample);
        let plane = g.c * g.h * g.w;
        for_each_sample(OP, &mut out, per_sample, 0, per_sample, |n, col, _, _| {
            im2col(&xs[n * plane..(n + 1) * plane], col, &g);
        })?;
        Ok(Tensor::from_contiguous(
            out,
            &[g.n, g.col_rows(), g.col_cols()],
        ))
    }

    /// 1-d convolution of an input `[N, C, L]` (or `[C, L]`) with a weight `[O, C/groups, k]`
    /// and optional bias `[O]`, like `F.conv1d`.
    ///
    /// # Errors
    /// As [`conv2d`](Tensor::conv2d).
    pub fn conv1d(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        params: Conv1dParams,
    ) -> Result<Tensor<T>> {
        Self::check_conv1d("conv1d", self.shape(), weight.shape())?;
        let y = self
            .unsqueeze(-2)?
            .conv2d(&weight.unsqueeze(-2)?, bias, params.to_2d())?;
        y.squeeze(-2)
    }

    /// The gradient of [`conv1d`](Tensor::conv1d) with respect to its input.
    ///
    /// # Errors
    /// As [`conv2d_backward_input`](Tensor::conv2d_backward_input).
    #[doc(hidden)]
    pub fn conv1d_backward_input(
        grad_out: &Tensor<T>,
        weight: &Tensor<T>,
        input_shape: &[usize],
        params: Conv1dParams,
    ) -> Result<Tensor<T>> {
        Self::check_conv1d("conv1d_backward_input", input_shape, weight.shape())?;
        let mut shape2 = input_shape.to_vec();
        shape2.insert(shape2.len() - 1, 1);
        Tensor::conv2d_backward_input(
            &grad_out.unsqueeze(-2)?,
            &weight.unsqueeze(-2)?,
            &shape2,
            params.to_2d(),
        )?
        .squeeze(-2)
    }

    /// The gradient of [`conv1d`](Tensor::conv1d) with respect to its weight.
    ///
    /// # Errors
    /// As [`conv2d_backward_weight`](Tensor::conv2d_backward_weight).
    #[doc(hidden)]
    pub fn conv1d_backward_weight(
        grad_out: &Tensor<T>,
        input: &Tensor<T>,
        weight_shape: &[usize],
        params: Conv1dParams,
    ) -> Result<Tensor<T>> {
        Self::check_conv1d("conv1d_backward_weight", input.shape(), weight_shape)?;
        let mut shape2 = weight_shape.to_vec();
        shape2.insert(2, 1);
        Tensor::conv2d_backward_weight(
            &grad_out.unsqueeze(-2)?,
            &input.unsqueeze(-2)?,
            &shape2,
            params.to_2d(),
        )?
        .reshape(weight_shape)
    }

    fn check_conv1d(op: &'static str, x: &[usize], w: &[usize]) -> Result<()> {
        if !(x.len() == 2 || x.len() == 3) || w.len() != 3 {
            return Err(TensorError::shape(
                op,
                format!(
                    "expected input [N, C, L] and weight [O, C/groups, k], got {x:?} and {w:?}"
                ),
            ));
        }
        Ok(())
    }
}

impl Geometry {
    fn check_grad(&self, op: &'static str, gy: &[usize]) -> Result<()> {
        if gy != [self.n, self.o, self.oh, self.ow] {
            return Err(TensorError::shape(
                op,
                format!(
                    "output gradient of shape {gy:?} does not match the convolution's output {:?}",
                    [self.n, self.o, self.oh, self.ow]
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv2d_relu_equals_conv2d_then_relu() {
        fn check<T: Element>(x: &Tensor<T>, w: &Tensor<T>, b: Option<&Tensor<T>>, p: Conv2dParams) {
            let got = x.conv2d_relu(w, b, p).unwrap();
            let want = x.conv2d(w, b, p).unwrap().relu();
            assert_eq!(got.shape(), want.shape());
            for (g, v) in got.to_vec().into_iter().zip(want.to_vec()) {
                let (g, v) = (g.to_f64(), v.to_f64());
                assert!(g == v || (g.is_nan() && v.is_nan()), "{p:?}: {g} vs {v}");
                assert_eq!(
                    g.is_sign_negative(),
                    v.is_sign_negative(),
                    "{p:?}: {g} vs {v}"
                );
            }
        }
        let mut rng = crate::seeded_rng(11);
        let base = Conv2dParams::default();
        let cases = [
            (base.padding(1), 1, [3, 3]),
            (base.stride(2), 1, [3, 3]),
            (base.groups(2), 2, [3, 3]),
            (base.dilation(2).padding(2), 1, [3, 3]),
            (base, 1, [1, 1]),
            (
                Conv2dParams {
                    padding: Padding::Same,
                    ..base
                },
                1,
                [2, 3],
            ),
        ];
        for (p, groups, [kh, kw]) in cases {
            let x = Tensor::<f32>::randn(&[2, 4, 9, 8], &mut rng);
            let w = Tensor::<f32>::randn(&[6, 4 / groups, kh, kw], &mut rng);
            let b = Tensor::<f32>::randn(&[6], &mut rng);
            check(&x, &w, Some(&b), p);
            check(&x, &w, None, p);
            check(&x.select(0, 0).unwrap(), &w, Some(&b), p);
            let x64 = Tensor::<f64>::randn(&[2, 4, 9, 8], &mut rng);
            let w64 = Tensor::<f64>::randn(&[6, 4 / groups, kh, kw], &mut rng);
            check(&x64, &w64, None, p);
        }
        // NaN and -0 pass the clamp as they pass `relu`: a NaN input poisons its windows,
        // and a zero weight gives +0 or -0 sums.
        let mut x = Tensor::<f32>::randn(&[1, 2, 5, 5], &mut rng).to_vec();
        x[7] = f32::NAN;
        let x = Tensor::from_vec(x, &[1, 2, 5, 5]).unwrap();
        let w = Tensor::<f32>::from_vec(vec![-0.0; 2 * 2 * 3 * 3], &[2, 2, 3, 3]).unwrap();
        check(&x, &w, None, base.padding(1));
        check(
            &x,
            &Tensor::<f32>::randn(&[2, 2, 3, 3], &mut rng),
            None,
            base,
        );
        // Errors name the op.
        let bad = Tensor::<f32>::zeros(&[5]);
        let err = Tensor::<f32>::zeros(&[1, 2, 5, 5])
            .conv2d_relu(&w, Some(&bad), base)
            .unwrap_err();
        assert!(err.to_string().contains("conv2d_relu"), "{err}");
    }

    #[test]
    fn conv2d_by_hand() {
        // x = arange(16).reshape(1, 1, 4, 4), w = ones(1, 1, 2, 2), stride 2:
        // each output is the sum of a 2×2 block.
        let x = Tensor::<f64>::arange(0.0, 16.0, 1.0)
            .unwrap()
            .reshape([1, 1, 4, 4])
            .unwrap();
        let w = Tensor::<f64>::ones(&[1, 1, 2, 2]);
        let y = x
            .conv2d(&w, None, Conv2dParams::default().stride(2))
            .unwrap();
        assert_eq!(y.to_vec(), vec![10., 18., 42., 50.]);
        let b = Tensor::<f64>::from_vec(vec![1.0], &[1]).unwrap();
        let y = x
            .conv2d(&w, Some(&b), Conv2dParams::default().stride(2))
            .unwrap();
        assert_eq!(y.to_vec(), vec![11., 19., 43., 51.]);
    }

    #[test]
    fn conv_errors() {
        let x = Tensor::<f32>::zeros(&[1, 3, 8]);
        let w = Tensor::<f32>::zeros(&[4, 3, 3, 3]);
        // [N, C, W] given to conv2d: read as unbatched [C, H, W] with C = 1 ≠ 3
        assert!(matches!(
            x.conv2d(&w, None, Conv2dParams::default()),
            Err(TensorError::Shape { .. })
        ));
        let x = Tensor::<f32>::zeros(&[1, 3, 2, 2]);
        let e = x.conv2d(&w, None, Conv2dParams::default()).unwrap_err();
        assert!(
            e.to_string().contains("larger than the padded input"),
            "{e}"
        );
        assert!(
            x.conv2d(&w, None, Conv2dParams::default().stride(0))
                .is_err()
        );
        let w = Tensor::<f32>::zeros(&[4, 1, 1, 1]);
        assert!(
            x.conv2d(&w, None, Conv2dParams::default().groups(2))
                .is_err()
        );
        let w = Tensor::<f32>::zeros(&[4, 3, 1, 1]);
        assert!(
            x.conv2d(&w, Some(&Tensor::zeros(&[3])), Conv2dParams::default())
                .is_err()
        );
    }
}
