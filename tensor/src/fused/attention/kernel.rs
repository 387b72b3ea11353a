//! The fused attention kernels over batches of strided matrices.
//!
//! Every operand is a batch of matrices inside one storage buffer: matrix `b` starts at
//! `offsets[b]` and element `(i, j)` lies `i·rs + j·cs` further (see [`Mats`]). This one
//! description covers contiguous `[B, L, E]` tensors, transposed or sliced views, broadcast
//! batch dimensions (repeated offsets) and the heads of a multi-head attention read straight
//! out of a `[N, L, E]` projection (batch `(n, h)` at `n·L·E + h·D`, rows `E` apart).
//!
//! One attention problem (one batch index) runs on one thread, start to finish, so its
//! `[L, S]` scores stay in cache between the GEMM that makes them, the softmax that turns
//! them into probabilities and the GEMM that uses them. Problems run in parallel; a single
//! large problem gives its GEMMs to faer's parallel kernels instead.
//!
//! Derivation of the backward, per problem, with `Z = q·kᵀ·scale + mask`, `P = softmax(Z)`
//! row-wise, `P̃ = P ⊙ M` (the dropout multiplier `M`, all ones without dropout) and
//! `O = P̃·v`:
//! - `dv = P̃ᵀ·dO` and `dP̃ = dO·vᵀ`, so `dP = dP̃ ⊙ M`;
//! - the softmax Jacobian gives `dZ_ij = P_ij (dP_ij − Σ_j' dP_ij' P_ij')`, computed in
//!   place over `dP`;
//! - `dq = dZ·k·scale` and `dk = dZᵀ·q·scale` (the scale is folded into `dZ` once).

use faer::Par;

use crate::Element;
use crate::engine::gemm::{self, PAR_MIN_MACS, RawMat, Strided, parallelism};
use crate::engine::lanes::{dot_contiguous, max_contiguous, sum_contiguous};
use crate::engine::par::{self, Disjoint};
use crate::engine::simd::dispatch;

/// A batch of strided matrices inside a buffer: matrix `b`, element `(i, j)` is at
/// `offsets[b] + i·rs + j·cs`.
#[derive(Clone, Debug)]
pub(super) struct Mats {
    pub offsets: Vec<usize>,
    pub rs: usize,
    pub cs: usize,
}

impl Mats {
    /// The largest index any matrix of `rows × cols` reaches, plus one (0 when empty).
    fn extent(&self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 {
            return 0;
        }
        let last = (rows - 1) * self.rs + (cols - 1) * self.cs;
        self.offsets
            .iter()
            .map(|&o| o + last + 1)
            .max()
            .unwrap_or(0)
    }

    fn at(&self, b: usize) -> Strided {
        Strided {
            offset: self.offsets[b],
            rs: self.rs,
            cs: self.cs,
        }
    }
}

/// A read-only operand: a buffer and the matrices in it.
pub(super) struct Src<'a, T> {
    pub data: &'a [T],
    pub mats: Mats,
}

/// A written operand: a buffer the kernel owns for the call, and the matrices in it. The
/// matrices of different batch indices must not share elements (they are written from
/// different threads).
pub(super) struct Dst<'a, T> {
    pub data: &'a mut [T],
    pub mats: Mats,
}

/// The mask of one problem set: a buffer broadcast to `[B, L, S]` (stride 0 on repeated
/// dimensions); `keep` masks are nonzero where the key takes part, additive masks are added
/// to the scores.
pub(super) struct MaskSrc<'a, T> {
    pub src: Src<'a, T>,
    pub keep: bool,
}

/// The sizes of a batch of attention problems: `B` problems, `L` queries and `S` keys of
/// width `E`, values of width `Ev`.
#[derive(Clone, Copy, Debug)]
pub(super) struct AttentionShape {
    pub b: usize,
    pub l: usize,
    pub s: usize,
    pub e: usize,
    pub ev: usize,
}

/// The scalar settings of a kernel call.
#[derive(Clone, Copy, Debug)]
pub(super) struct Settings {
    pub scale: f64,
    pub is_causal: bool,
    /// Rows whose every score is `-inf` give zeros (PyTorch's sdpa) rather than NaN
    /// (softmax).
    pub zero_masked_rows: bool,
}

/// How a batch of problems is spread over threads: problems in parallel (each GEMM on one
/// thread), or one after another with faer threading each GEMM.
fn plan(d: AttentionShape) -> (bool, Par) {
    let per_problem = d.l * d.s * (d.e + d.ev.max(d.e));
    let total = per_problem.saturating_mul(d.b);
    let threads = par::threads();
    if threads < 2 || total < PAR_MIN_MACS {
        (false, Par::Seq)
    } else if d.b >= threads {
        (true, Par::Seq)
    } else {
        (false, parallelism(per_problem))
    }
}

/// Runs `body(b, p, scratch)` for every problem `b`, with `p` its `[L, S]` block of `probs`
/// (or a scratch block when `probs` is `None`), in parallel when `parallel`.
fn for_each_problem<T: Element>(
    d: AttentionShape,
    parallel: bool,
    probs: Option<&mut [T]>,
    body: impl Fn(usize, &mut [T], &mut Scratch<T>) + Sync,
) {
    let ls = d.l * d.s;
    if ls == 0 {
        // Nothing to hold: still run each problem once (the output may need zeros).
        let mut sc = Scratch::new(0);
        for b in 0..d.b {
            body(b, &mut [], &mut sc);
        }
        return;
    }
    match probs {
        Some(buf) => par::chunks_mut_init(
            buf,
            ls,
            parallel,
            || Scratch::new(0),
            |sc, b, p| body(b, p, sc),
        ),
        None => par::run_init(
            d.b,
            parallel,
            || (vec![T::zero(); ls], Scratch::new(0)),
            |(p, sc), b| body(b, p, sc),
        ),
    }
}

/// Per-thread working memory.
struct Scratch<T> {
    /// `[L, S]`: the dropped probabilities (forward) or `dP` (backward).
    block: Vec<T>,
    /// `[S]`: a gathered row of a strided mask.
    row: Vec<T>,
}

impl<T: Element> Scratch<T> {
    fn new(block: usize) -> Self {
        Scratch {
            block: vec![T::zero(); block],
            row: Vec::new(),
        }
    }

    fn block(&mut self, len: usize) -> &mut [T] {
        if self.block.len() < len {
            self.block.resize(len, T::zero());
        }
        &mut self.block[..len]
    }
}

/// Checks (once per call) that every source matrix lies inside its buffer.
fn check_src<T>(src: &Src<'_, T>, rows: usize, cols: usize) {
    assert!(
        src.mats.extent(rows, cols) <= src.data.len(),
        "attention kernel: operand out of bounds"
    );
}

/// `x ← exp(x·scale − shift)` over `xs`, returning the sum of the results. `shift` is
/// at least every `x·scale` (the row's scaled maximum), or NaN. The sum is a second pass
/// over the row while it is in cache: a running sum in the exponential's loop kept its
/// partial sums in memory.
#[inline(always)]
fn exp_sum<T: Element>(xs: &mut [T], scale: T, shift: T) -> T {
    for x in xs.iter_mut() {
        *x = (*x * scale - shift).exp_nonpositive_with::<false>();
    }
    sum_contiguous(xs)
}

/// `Σ x[k·xs]·y[k·ys]` for `k < n`.
#[inline(always)]
fn strided_dot<T: Element>(x: &[T], xs: usize, y: &[T], ys: usize, n: usize) -> T {
    if xs == 1 && ys == 1 {
        return dot_contiguous(&x[..n], &y[..n]);
    }
    (0..n).fold(T::zero(), |acc, k| acc + x[k * xs] * y[k * ys])
}

/// Turns the raw scores `q·kᵀ` of row `i` into probabilities in place: scale, mask,
/// causal cut, softmax. `mask_row` is the row's mask (contiguous), if any.
///
/// Without a mask and with a positive scale, the maximum of the raw scores gives the
/// shift (`max(x·scale) = max(x)·scale`), so scaling, exponentiating and summing are one
/// pass: three passes over the row in all (max, exp-and-sum, normalise).
#[inline(always)]
fn softmax_row<T: Element>(row: &mut [T], i: usize, mask_row: Option<(&[T], bool)>, set: Settings) {
    let s = row.len();
    let allowed = if set.is_causal { (i + 1).min(s) } else { s };
    let scale = T::from_f64(set.scale);
    let (live, dead) = row.split_at_mut(allowed);
    let (max, exp_scale, shift) = if mask_row.is_none() && scale > T::zero() {
        let max = max_contiguous(live);
        (max, scale, max * scale)
    } else {
        for x in live.iter_mut() {
            *x *= scale;
        }
        match mask_row {
            Some((m, true)) => {
                for (x, &m) in live.iter_mut().zip(m) {
                    if m == T::zero() {
                        *x = T::neg_infinity();
                    }
                }
            }
            Some((m, false)) => {
                for (x, &m) in live.iter_mut().zip(m) {
                    *x += m;
                }
            }
            None => {}
        }
        let max = max_contiguous(live);
        (max, T::one(), max)
    };
    if max == T::neg_infinity() {
        // Every key is masked out.
        let fill = if set.zero_masked_rows {
            T::zero()
        } else {
            T::nan()
        };
        row.fill(fill);
        return;
    }
    let inv = exp_sum(live, exp_scale, shift).recip();
    for x in live.iter_mut() {
        *x *= inv;
    }
    dead.fill(T::zero());
}

/// Row `i` of problem `b`'s mask as a contiguous slice (gathered into `buf` when strided).
#[inline(always)]
fn mask_row<'a, T: Element>(
    mask: &'a MaskSrc<'_, T>,
    b: usize,
    i: usize,
    s: usize,
    buf: &'a mut Vec<T>,
) -> (&'a [T], bool) {
    let m = &mask.src.mats;
    let start = m.offsets[b] + i * m.rs;
    if m.cs == 1 {
        return (&mask.src.data[start..start + s], mask.keep);
    }
    buf.clear();
    buf.extend((0..s).map(|j| mask.src.data[start + j * m.cs]));
    (buf.as_slice(), mask.keep)
}

/// The forward: `probs` (when given, `[B, L, S]` contiguous) receives `P`; with `v` and
/// `out`, `out = (P ⊙ dropout)·v`. Without `probs` the probabilities live in per-thread
/// scratch.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward<T: Element>(
    d: AttentionShape,
    q: &Src<'_, T>,
    k: &Src<'_, T>,
    v: Option<&Src<'_, T>>,
    mask: Option<&MaskSrc<'_, T>>,
    dropout: Option<&[T]>,
    set: Settings,
    probs: Option<&mut [T]>,
    out: Option<Dst<'_, T>>,
) {
    check_src(q, d.l, d.e);
    check_src(k, d.s, d.e);
    if let Some(v) = v {
        check_src(v, d.s, d.ev);
    }
    if let Some(m) = mask {
        check_src(&m.src, d.l, d.s);
    }
    if let Some(dr) = dropout {
        assert_eq!(
            dr.len(),
            d.b * d.l * d.s,
            "attention kernel: dropout mask size"
        );
    }
    let out_mats = out.as_ref().map(|o| o.mats.clone());
    if let (Some(o), Some(m)) = (&out, &out_mats) {
        assert!(
            m.extent(d.l, d.ev) <= o.data.len(),
            "attention kernel: output out of bounds"
        );
    }
    let out_buf = out.map(|o| Disjoint::new(o.data));
    let (parallel, par) = plan(d);
    let ls = d.l * d.s;
    for_each_problem(d, parallel, probs, |b, p, sc| {
        gemm::slices(
            (p, Strided::row_major(0, d.s)),
            (d.l, d.s, d.e),
            (q.data, q.mats.at(b)),
            (k.data, k.mats.at(b).t()),
            false,
            par,
        );
        dispatch(
            #[inline(always)]
            || {
                for (i, row) in p.chunks_mut(d.s.max(1)).enumerate().take(d.l) {
                    let m = mask.map(|m| mask_row(m, b, i, d.s, &mut sc.row));
                    softmax_row(row, i, m, set);
                }
            },
        );
        let (Some(v), Some(out_buf), Some(om)) = (v, &out_buf, &out_mats) else {
            return;
        };
        let weights: &[T] = match dropout {
            Some(dr) => {
                let pd = sc.block(ls);
                for ((o, &x), &m) in pd.iter_mut().zip(&*p).zip(&dr[b * ls..(b + 1) * ls]) {
                    *o = x * m;
                }
                pd
            }
            None => p,
        };
        // SAFETY: only problem b writes its output matrix (the matrices of a `Dst` are
        // disjoint); bounds are checked by `gemm::raw`.
        unsafe {
            gemm::raw(
                RawMat::of_shared(out_buf, om.at(b)),
                (d.l, d.ev, d.s),
                RawMat::of(weights, Strided::row_major(0, d.s)),
                RawMat::of(v.data, v.mats.at(b)),
                false,
                par,
            );
        }
    });
}

/// The gradients the backward writes: buffers, and for each of `dq`, `dk`, `dv` that is
/// wanted, the buffer it goes into and its matrices there. Several gradients may share one
/// buffer (a packed projection's); all matrices written, of every gradient and batch index,
/// must be pairwise disjoint, and together they must cover what the caller reads back
/// (every element is overwritten, none accumulated).
pub(super) struct Grads<'a, T> {
    pub buffers: Vec<&'a mut [T]>,
    pub dq: Option<(usize, Mats)>,
    pub dk: Option<(usize, Mats)>,
    pub dv: Option<(usize, Mats)>,
}

/// The backward of [`forward`]. With `v`, `grad` is `dO` (`[L, Ev]` per problem) and the
/// rule runs through the value product; `out`, the forward's output, saves a pass (see
/// the comment on `D` below). Without `v`, `grad` is `dP` itself (the probabilities were
/// the output) and no `dv` is made.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward<T: Element>(
    d: AttentionShape,
    grad: &Src<'_, T>,
    q: &Src<'_, T>,
    k: &Src<'_, T>,
    v: Option<&Src<'_, T>>,
    out: Option<&Src<'_, T>>,
    probs: &[T],
    dropout: Option<&[T]>,
    set: Settings,
    grads: Grads<'_, T>,
) {
    check_src(q, d.l, d.e);
    check_src(k, d.s, d.e);
    match v {
        Some(v) => {
            check_src(v, d.s, d.ev);
            check_src(grad, d.l, d.ev);
        }
        None => check_src(grad, d.l, d.s),
    }
    let out = out.filter(|_| v.is_some());
    if let Some(o) = out {
        check_src(o, d.l, d.ev);
    }
    let out_rows = out.map(|o| (&o.mats, &grad.mats));
    let ls = d.l * d.s;
    assert_eq!(
        probs.len(),
        d.b * ls,
        "attention kernel: probabilities size"
    );
    if let Some(dr) = dropout {
        assert_eq!(dr.len(), d.b * ls, "attention kernel: dropout mask size");
    }
    let mut buffers = grads.buffers;
    let lens: Vec<usize> = buffers.iter().map(|b| b.len()).collect();
    let shared: Vec<Disjoint<'_, T>> = buffers.iter_mut().map(|b| Disjoint::new(b)).collect();
    let bounded = |g: Option<(usize, Mats)>, rows: usize, cols: usize| {
        g.map(|(i, mats)| {
            assert!(
                mats.extent(rows, cols) <= lens[i],
                "attention kernel: gradient out of bounds"
            );
            (shared[i], mats)
        })
    };
    let dq = bounded(grads.dq, d.l, d.e);
    let dk = bounded(grads.dk, d.s, d.e);
    let dv = bounded(grads.dv, d.s, d.ev);
    let (parallel, par) = plan(d);
    let scale = T::from_f64(set.scale);
    let body = |b: usize, sc: &mut Scratch<T>| {
        let p = &probs[b * ls..(b + 1) * ls];
        let drop_b = dropout.map(|dr| &dr[b * ls..(b + 1) * ls]);
        let ds = sc.block(ls);
        match v {
            Some(v) => {
                if let Some((buf, m)) = &dv {
                    // dv = P̃ᵀ·dO, with P̃ = P ⊙ M formed in `ds` first.
                    let weights: &[T] = match drop_b {
                        Some(mk) => {
                            for ((o, &x), &m) in ds.iter_mut().zip(p).zip(mk) {
                                *o = x * m;
                            }
                            &*ds
                        }
                        None => p,
                    };
                    // SAFETY: problem b's dv matrix is written by this task only.
                    unsafe {
                        gemm::raw(
                            RawMat::of_shared(buf, m.at(b)),
                            (d.s, d.ev, d.l),
                            RawMat::of(weights, Strided::row_major(0, d.s).t()),
                            RawMat::of(grad.data, grad.mats.at(b)),
                            false,
                            par,
                        );
                    }
                }
                // dP̃ = dO·vᵀ
                gemm::slices(
                    (ds, Strided::row_major(0, d.s)),
                    (d.l, d.s, d.ev),
                    (grad.data, grad.mats.at(b)),
                    (v.data, v.mats.at(b).t()),
                    false,
                    par,
                );
                if let Some(mk) = drop_b {
                    for (x, &m) in ds.iter_mut().zip(mk) {
                        *x *= m;
                    }
                }
            }
            None => {
                let gm = grad.mats.at(b);
                for (i, row) in ds.chunks_mut(d.s.max(1)).enumerate().take(d.l) {
                    for (j, x) in row.iter_mut().enumerate() {
                        *x = grad.data[gm.offset + i * gm.rs + j * gm.cs];
                    }
                }
            }
        }
        // dZ = P ⊙ (dP − D) · scale in place, one pass per row, where D = rowsum(dP ⊙ P)
        // = dO · O (the output row: Σ_j dP̃_j P̃_j = dO · Σ_j P̃_j v_j), an Ev-long dot
        // instead of an S-long one when the output is at hand.
        dispatch(
            #[inline(always)]
            || {
                let rows = ds.chunks_mut(d.s.max(1)).zip(p.chunks(d.s.max(1)));
                for (i, (row, pr)) in rows.enumerate() {
                    let dot = match out_rows {
                        Some((o, og)) => {
                            let (o, og) = (o.at(b), og.at(b));
                            strided_dot(
                                &out.expect("with out_rows").data[o.offset + i * o.rs..],
                                o.cs,
                                &grad.data[og.offset + i * og.rs..],
                                og.cs,
                                d.ev,
                            )
                        }
                        None => dot_contiguous(row, pr),
                    };
                    for (x, &pv) in row.iter_mut().zip(pr) {
                        *x = pv * (*x - dot) * scale;
                    }
                }
            },
        );
        if let Some((buf, m)) = &dq {
            // SAFETY: as for dv.
            unsafe {
                gemm::raw(
                    RawMat::of_shared(buf, m.at(b)),
                    (d.l, d.e, d.s),
                    RawMat::of(ds, Strided::row_major(0, d.s)),
                    RawMat::of(k.data, k.mats.at(b)),
                    false,
                    par,
                );
            }
        }
        if let Some((buf, m)) = &dk {
            // SAFETY: as for dv.
            unsafe {
                gemm::raw(
                    RawMat::of_shared(buf, m.at(b)),
                    (d.s, d.e, d.l),
                    RawMat::of(ds, Strided::row_major(0, d.s).t()),
                    RawMat::of(q.data, q.mats.at(b)),
                    false,
                    par,
                );
            }
        }
    };
    par::run_init(d.b, parallel, || Scratch::new(ls), |sc, b| body(b, sc));
}
