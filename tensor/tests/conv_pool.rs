//! Convolution and pooling against the direct loops of `common::reference`: conv2d and
//! conv1d forward and their input, weight and bias gradients over random stride, padding,
//! dilation, groups, batch and channels (batched and unbatched, any layout); max pooling
//! (values and indices) and its backward, average pooling (ceil_mode, count_include_pad,
//! divisor_override) and its backward, adaptive average pooling and its backward.

use crate::common;

use common::reference::{self, ConvGeom, pool_out_size};
use common::*;
use proptest::prelude::*;
use strata_tensor::{Conv1dParams, Conv2dParams, Padding, Pool2dParams, Tensor, TensorError};

/// A convolution: geometry (possibly one whose kernel does not fit), whether the input is
/// unbatched, whether there is a bias, and a seed for the values.
#[derive(Clone, Debug)]
struct ConvCase {
    g: ConvGeom,
    unbatched: bool,
    bias: bool,
    seed: u64,
    kx: ViewKind,
    kw: ViewKind,
}

/// `conv1d` is `conv2d` with a height of 1: `one_d` pins the height dimension.
fn conv_case(one_d: bool) -> impl Strategy<Value = ConvCase> {
    (
        (
            prop_oneof![1 => Just(0usize), 8 => 1..=2usize],
            1..=3usize,
            1..=3usize,
            1..=3usize,
        ),
        (1..=7usize, 1..=7usize, 1..=3usize, 1..=3usize),
        (
            prop::array::uniform2(1..=3usize),
            prop::array::uniform2(0..=2usize),
            prop::array::uniform2(1..=2usize),
        ),
        (
            any::<bool>(),
            any::<bool>(),
            any::<u64>(),
            view_kind(),
            view_kind(),
        ),
    )
        .prop_map(
            move |(
                (n, groups, cg, og),
                (h, w, kh, kw),
                (stride, padding, dilation),
                (unbatched, bias, seed, kx, kwk),
            )| {
                let mut padding = padding;
                let mut p = Conv2dParams {
                    stride,
                    padding: Padding::Explicit(padding),
                    dilation,
                    groups,
                };
                let (mut h, mut kh) = (h, kh);
                if one_d {
                    (h, kh) = (1, 1);
                    padding[0] = 0;
                    (p.stride[0], p.padding, p.dilation[0]) = (1, Padding::Explicit(padding), 1);
                }
                let unbatched = unbatched && n == 1;
                ConvCase {
                    g: ConvGeom {
                        n,
                        c: cg * groups,
                        h,
                        w,
                        o: og * groups,
                        kh,
                        kw,
                        p,
                    },
                    unbatched,
                    bias,
                    seed,
                    kx,
                    kw: kwk,
                }
            },
        )
}

/// A stride-1 convolution with as many output columns as input columns (padding
/// `dilation · (k − 1) / 2` per side, odd kernels): im2col copies the rows of such a
/// convolution as one shifted block.
fn same_conv_case() -> impl Strategy<Value = ConvCase> {
    (conv_case(false), prop::array::uniform2(0..=2usize)).prop_map(|(mut case, half)| {
        let p = &mut case.g.p;
        p.stride = [1, 1];
        let k = [2 * half[0] + 1, 2 * half[1] + 1];
        (case.g.kh, case.g.kw) = (k[0], k[1]);
        p.padding = Padding::Explicit([p.dilation[0] * half[0], p.dilation[1] * half[1]]);
        case
    })
}

/// Drops the leading batch dimension of `shape` when `unbatched`.
fn maybe_unbatched(shape: Vec<usize>, unbatched: bool) -> Vec<usize> {
    if unbatched {
        shape[1..].to_vec()
    } else {
        shape
    }
}

/// A 4-d `[n, c, h, w]` shape seen by conv1d: the height (always 1) removed.
fn drop_height(shape: &[usize]) -> Vec<usize> {
    let mut s = shape.to_vec();
    s.remove(s.len() - 2);
    s
}

/// Runs forward and the three gradients through `conv2d` (or `conv1d` when `one_d`) and
/// compares each with the reference.
fn check_conv(case: &ConvCase, one_d: bool) -> TestResult {
    let g = case.g;
    let view = |s: Vec<usize>| -> Vec<usize> {
        let s = if one_d { drop_height(&s) } else { s };
        maybe_unbatched(s, case.unbatched)
    };
    let (xs, ws) = (
        view(g.input_shape()),
        if one_d {
            drop_height(&g.weight_shape())
        } else {
            g.weight_shape()
        },
    );
    let dx = seeded_values(case.seed, numel(&xs));
    let dw = seeded_values(case.seed ^ 1, numel(&ws));
    let db = seeded_values(case.seed ^ 2, g.o);
    let x = make_view::<f64>(&dx, &xs, &case.kx);
    let w = make_view::<f64>(&dw, &ws, &case.kw);
    let b = tensor::<f64>(&db, &[g.o]);
    let bias = case.bias.then_some(&b);
    let p1 = Conv1dParams {
        stride: g.p.stride[1],
        padding: Padding::Explicit([g.pads()[1]]),
        dilation: g.p.dilation[1],
        groups: g.p.groups,
    };
    let y = if one_d {
        x.conv1d(&w, bias, p1)
    } else {
        x.conv2d(&w, bias, g.p)
    };
    if g.out_size().is_none() {
        // (conv1d reports it from the conv2d it runs on)
        prop_assert!(
            matches!(&y, Err(TensorError::Shape { .. })),
            "a kernel larger than the padded input: {y:?}"
        );
        return Ok(());
    }
    let t = tol(1e-12);
    let ys = view(g.output_shape());
    let want = g.forward(&dx, &dw, case.bias.then_some(&db[..]));
    assert_tensor("forward", &y.or_fail("forward")?, &ys, &want, t)?;

    let dgy = seeded_values(case.seed ^ 3, numel(&ys));
    let gy = make_view::<f64>(&dgy, &ys, &case.kx);
    let gx = if one_d {
        Tensor::conv1d_backward_input(&gy, &w, &xs, p1)
    } else {
        Tensor::conv2d_backward_input(&gy, &w, &xs, g.p)
    };
    assert_tensor(
        "backward_input",
        &gx.or_fail("backward_input")?,
        &xs,
        &g.backward_input(&dgy, &dw),
        t,
    )?;
    let gw = if one_d {
        Tensor::conv1d_backward_weight(&gy, &x, &ws, p1)
    } else {
        Tensor::conv2d_backward_weight(&gy, &x, &ws, g.p)
    };
    assert_tensor(
        "backward_weight",
        &gw.or_fail("backward_weight")?,
        &ws,
        &g.backward_weight(&dgy, &dx),
        t,
    )?;
    // conv1d's bias gradient is conv2d's on the gradient with its height restored
    let gy4 = if one_d {
        gy.unsqueeze(-2).or_fail("unsqueeze")?
    } else {
        gy.clone()
    };
    let gb = Tensor::conv2d_backward_bias(&gy4).or_fail("backward_bias")?;
    assert_tensor("backward_bias", &gb, &[g.o], &g.backward_bias(&dgy), t)
}

/// Pooling settings with possibly invalid padding; the input is `[n, c, h, w]`, or
/// `[c, h, w]` when `n` is `None`.
fn pool_case(
    avg: bool,
) -> impl Strategy<
    Value = (
        Option<usize>,
        usize,
        usize,
        usize,
        Pool2dParams,
        u64,
        ViewKind,
    ),
> {
    (
        (
            prop::option::weighted(0.8, 1..=2usize),
            1..=3usize,
            1..=7usize,
            1..=7usize,
        ),
        (
            prop::array::uniform2(1..=3usize),
            prop::array::uniform2(1..=3usize),
            prop::array::uniform2(0..=2usize),
            prop::array::uniform2(1..=2usize),
        ),
        (
            any::<bool>(),
            any::<bool>(),
            prop::option::weighted(0.3, 1..=5usize),
        ),
        (any::<u64>(), view_kind()),
    )
        .prop_map(
            move |(
                (n, c, h, w),
                (kernel, stride, padding, dilation),
                (ceil_mode, count_include_pad, divisor_override),
                (seed, kind),
            )| {
                let p = Pool2dParams {
                    kernel,
                    stride,
                    padding,
                    dilation: if avg { [1, 1] } else { dilation },
                    ceil_mode,
                    count_include_pad,
                    divisor_override: if avg { divisor_override } else { None },
                };
                (n, c, h, w, p, seed, kind)
            },
        )
}

/// PyTorch's checks on pooling settings: padding at most half the kernel (`kernel / 2`,
/// rounded down, whatever the dilation) and at most half the effective kernel.
fn padding_ok(p: &Pool2dParams) -> bool {
    (0..2).all(|i| {
        let span = p.dilation[i] * (p.kernel[i] - 1) + 1;
        p.padding[i] <= p.kernel[i] / 2 && p.padding[i] <= span / 2
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// conv2d forward, input, weight and bias gradients equal the direct loops.
    #[test]
    fn conv2d_equals_direct_loops(case in conv_case(false)) {
        check_conv(&case, false)?;
    }

    /// The same at stride 1 and "same" padding (ow = w), any dilation and kernel size.
    #[test]
    fn same_padded_conv2d_equals_direct_loops(case in same_conv_case()) {
        check_conv(&case, false)?;
    }

    /// conv1d (through its own entry points) equals the direct loops with a height of 1.
    #[test]
    fn conv1d_equals_direct_loops(case in conv_case(true)) {
        check_conv(&case, true)?;
    }

    /// Max pooling values and indices equal PyTorch's CPU loop; the backward routes each
    /// gradient to its index. Padding above half the kernel is refused as PyTorch refuses
    /// it, and inputs too small for one window are `Shape` errors.
    #[test]
    fn max_pool2d_equals_reference((n, c, h, w, p, seed, kind) in pool_case(false)) {
        let xs: Vec<usize> = n.map_or(vec![c, h, w], |n| vec![n, c, h, w]);
        let planes = n.unwrap_or(1) * c;
        let dx = seeded_values(seed, numel(&xs)).iter().map(|v| (v * 2.0).round() / 2.0).collect::<Vec<_>>();
        let x = make_view::<f64>(&dx, &xs, &kind);
        let r = x.max_pool2d(p);
        if !padding_ok(&p) {
            prop_assert!(matches!(r, Err(TensorError::Invalid { op: "max_pool2d", .. })), "{p:?}: {r:?}");
            return Ok(());
        }
        let (oh, ow) = (pool_out_size(h, &p, 0), pool_out_size(w, &p, 1));
        if oh < 1 || ow < 1 {
            prop_assert!(matches!(r, Err(TensorError::Shape { op: "max_pool2d", .. })), "{p:?}: {r:?}");
            return Ok(());
        }
        let (oh, ow) = (oh as usize, ow as usize);
        let mut ys = xs.clone();
        let r2 = ys.len();
        ys[r2 - 2] = oh;
        ys[r2 - 1] = ow;
        let (wv, wi) = reference::max_pool2d(&dx, planes, (h, w), (oh, ow), &p);
        let (v, i) = r.or_fail("max_pool2d")?;
        assert_tensor("max_pool2d values", &v, &ys, &wv, EXACT)?;
        prop_assert_eq!(i.shape(), ys.as_slice());
        prop_assert_eq!(i.to_vec(), wi.clone(), "max_pool2d indices");
        let dgy = seeded_values(seed ^ 5, numel(&ys));
        let gy = make_view::<f64>(&dgy, &ys, &kind);
        let gx = Tensor::max_pool2d_backward(&gy, &i, &xs).or_fail("max_pool2d_backward")?;
        let want = reference::max_pool2d_backward(&dgy, &wi, planes, h * w);
        assert_tensor("max_pool2d_backward", &gx, &xs, &want, tol(1e-14))?;
    }

    /// Average pooling with ceil_mode, count_include_pad and divisor_override equals
    /// PyTorch's CPU loop, and so does its backward.
    #[test]
    fn avg_pool2d_equals_reference((n, c, h, w, p, seed, kind) in pool_case(true)) {
        let xs: Vec<usize> = n.map_or(vec![c, h, w], |n| vec![n, c, h, w]);
        let planes = n.unwrap_or(1) * c;
        let dx = seeded_values(seed, numel(&xs));
        let x = make_view::<f64>(&dx, &xs, &kind);
        let r = x.avg_pool2d(p);
        if !padding_ok(&p) {
            prop_assert!(matches!(r, Err(TensorError::Invalid { op: "avg_pool2d", .. })), "{p:?}: {r:?}");
            return Ok(());
        }
        let (oh, ow) = (pool_out_size(h, &p, 0), pool_out_size(w, &p, 1));
        if oh < 1 || ow < 1 {
            prop_assert!(matches!(r, Err(TensorError::Shape { op: "avg_pool2d", .. })), "{p:?}: {r:?}");
            return Ok(());
        }
        let (oh, ow) = (oh as usize, ow as usize);
        let mut ys = xs.clone();
        let r2 = ys.len();
        ys[r2 - 2] = oh;
        ys[r2 - 1] = ow;
        let want = reference::avg_pool2d(&dx, planes, (h, w), (oh, ow), &p);
        assert_tensor("avg_pool2d", &r.or_fail("avg_pool2d")?, &ys, &want, tol(1e-14))?;
        let dgy = seeded_values(seed ^ 5, numel(&ys));
        let gy = make_view::<f64>(&dgy, &ys, &kind);
        let gx = Tensor::avg_pool2d_backward(&gy, &xs, p).or_fail("avg_pool2d_backward")?;
        let want = reference::avg_pool2d_backward(&dgy, planes, (h, w), (oh, ow), &p);
        assert_tensor("avg_pool2d_backward", &gx, &xs, &want, tol(1e-14))?;
    }

    /// Adaptive average pooling to any output size (larger than the input too) equals the
    /// overlapping-window loop, and so does its backward.
    #[test]
    fn adaptive_avg_pool2d_equals_reference(
        (n, c, h, w) in (prop::option::weighted(0.8, 1..=2usize), 1..=3usize, 1..=9usize, 1..=9usize),
        (oh, ow) in (1..=8usize, 1..=8usize),
        seed in any::<u64>(),
        kind in view_kind(),
    ) {
        let xs: Vec<usize> = n.map_or(vec![c, h, w], |n| vec![n, c, h, w]);
        let planes = n.unwrap_or(1) * c;
        let dx = seeded_values(seed, numel(&xs));
        let x = make_view::<f64>(&dx, &xs, &kind);
        let mut ys = xs.clone();
        let r = ys.len();
        ys[r - 2] = oh;
        ys[r - 1] = ow;
        let y = x.adaptive_avg_pool2d([oh, ow]).or_fail("adaptive_avg_pool2d")?;
        let want = reference::adaptive_avg_pool2d(&dx, planes, (h, w), (oh, ow));
        assert_tensor("adaptive_avg_pool2d", &y, &ys, &want, tol(1e-14))?;
        let dgy = seeded_values(seed ^ 5, numel(&ys));
        let gy = make_view::<f64>(&dgy, &ys, &kind);
        let gx = Tensor::adaptive_avg_pool2d_backward(&gy, &xs).or_fail("adaptive_avg_pool2d_backward")?;
        let want = reference::adaptive_avg_pool2d_backward(&dgy, planes, (h, w), (oh, ow));
        assert_tensor("adaptive_avg_pool2d_backward", &gx, &xs, &want, tol(1e-14))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Convolutions large enough to run samples in parallel (and the weight gradient's
    /// per-chunk partial sums) equal the direct loops; pooling planes likewise.
    #[test]
    fn large_convolutions_and_pools_equal_direct_loops(
        n in 3..=5usize,
        (groups, cg, og) in (1..=2usize, 4..=6usize, 4..=6usize),
        hw in 10..=14usize,
        k in 1..=3usize,
        stride in 1..=2usize,
        seed in any::<u64>(),
    ) {
        let p = Conv2dParams { stride: [stride, stride], padding: Padding::Explicit([k / 2, k / 2]), dilation: [1, 1], groups };
        let g = ConvGeom { n, c: cg * groups, h: hw, w: hw, o: og * groups, kh: k, kw: k, p };
        let case = ConvCase { g, unbatched: false, bias: true, seed, kx: ViewKind::Contiguous, kw: ViewKind::Transposed };
        check_conv(&case, false)?;
        // pooling over n · 40 planes
        let xs = vec![n, 40, hw, hw];
        let dx = seeded_values(seed, numel(&xs));
        let x = tensor::<f64>(&dx, &xs);
        let pp = Pool2dParams::new(3).stride(2).padding(1).ceil_mode(true);
        let (oh, ow) = (pool_out_size(hw, &pp, 0) as usize, pool_out_size(hw, &pp, 1) as usize);
        let (wv, wi) = reference::max_pool2d(&dx, n * 40, (hw, hw), (oh, ow), &pp);
        let (v, i) = x.max_pool2d(pp).or_fail("max_pool2d")?;
        assert_tensor("large max_pool2d", &v, &[n, 40, oh, ow], &wv, EXACT)?;
        prop_assert_eq!(i.to_vec(), wi);
        let want = reference::avg_pool2d(&dx, n * 40, (hw, hw), (oh, ow), &pp);
        assert_tensor("large avg_pool2d", &x.avg_pool2d(pp).or_fail("avg_pool2d")?, &[n, 40, oh, ow], &want, tol(1e-14))?;
    }
}

/// Padding above half the kernel is refused even when dilation makes the effective kernel
/// wider: `F.max_pool2d(x, 2, stride=1, padding=2, dilation=3)` raises "pad should be
/// smaller than or equal to half of kernel size" in PyTorch.
#[test]
fn pool_padding_is_bounded_by_half_the_kernel() {
    let x = Tensor::<f64>::zeros(&[1, 1, 9, 9]);
    let p = Pool2dParams::new(2).stride(1).padding(2).dilation(3);
    assert!(matches!(x.max_pool2d(p), Err(TensorError::Invalid { .. })));
    let p = Pool2dParams::new(3).stride(1).padding(1).dilation(2);
    assert_eq!(x.max_pool2d(p).unwrap().0.shape(), &[1, 1, 7, 7]);
    let p = Pool2dParams::new(3).padding(2);
    assert!(matches!(x.avg_pool2d(p), Err(TensorError::Invalid { .. })));
}

/// A max-pooling window that dilation and padding leave without any input element gives
/// `-inf` at index `-1`, and its gradient goes nowhere. (PyTorch 2.x returns indices
/// `[[1], [2]]` for this input: position 1 is the *other* row's element, which its backward
/// then credits, and 2 lies outside the plane.)
#[test]
fn max_pool_windows_of_padding_only() {
    let x = Tensor::<f64>::from_vec(vec![0.5, 0.7], &[1, 2, 1]).unwrap();
    let p = Pool2dParams {
        kernel: [1, 2],
        stride: [1, 1],
        padding: [0, 1],
        dilation: [1, 2],
        ..Pool2dParams::new(1)
    };
    let (y, i) = x.max_pool2d(p).unwrap();
    assert_eq!(y.to_vec(), vec![f64::NEG_INFINITY; 2]);
    assert_eq!(i.to_vec(), vec![-1, -1]);
    let g = Tensor::<f64>::ones(&[1, 2, 1]);
    let dx = Tensor::max_pool2d_backward(&g, &i, x.shape()).unwrap();
    assert_eq!(dx.to_vec(), vec![0.0, 0.0]);
    // any other index outside the plane is still refused
    let bad = strata_tensor::IndexTensor::from_vec(vec![0, 2], &[1, 2, 1]).unwrap();
    assert!(matches!(
        Tensor::max_pool2d_backward(&g, &bad, x.shape()),
        Err(TensorError::Index { index: 2, .. })
    ));
}

/// A kernel column that only ever meets padding (here the first and last taps of a dilated
/// kernel on a one-pixel-wide input) contributes nothing and must not be read:
/// `F.conv2d(torch.tensor([[[[3.]]]]), torch.tensor([[[[1., 10., 100.]]]]), padding=(0, 2),
/// dilation=(1, 2))` is `[[[[30.]]]]`, with input gradient 10 and weight gradient
/// `[0, 3, 0]` for a gradient of ones.
#[test]
fn kernel_columns_in_padding_only() {
    let x = Tensor::<f64>::from_vec(vec![3.0], &[1, 1, 1, 1]).unwrap();
    let w = Tensor::<f64>::from_vec(vec![1.0, 10.0, 100.0], &[1, 1, 1, 3]).unwrap();
    let p = Conv2dParams {
        padding: Padding::Explicit([0, 2]),
        dilation: [1, 2],
        ..Conv2dParams::default()
    };
    assert_eq!(x.conv2d(&w, None, p).unwrap().to_vec(), vec![30.0]);
    let g = Tensor::<f64>::ones(&[1, 1, 1, 1]);
    let dx = Tensor::conv2d_backward_input(&g, &w, x.shape(), p).unwrap();
    assert_eq!(dx.to_vec(), vec![10.0]);
    let dw = Tensor::conv2d_backward_weight(&g, &x, w.shape(), p).unwrap();
    assert_eq!(dw.to_vec(), vec![0.0, 3.0, 0.0]);
    let p1 = Conv1dParams {
        padding: Padding::Explicit([2]),
        dilation: 2,
        ..Conv1dParams::default()
    };
    let y = x
        .reshape([1, 1, 1])
        .unwrap()
        .conv1d(&w.reshape([1, 1, 3]).unwrap(), None, p1)
        .unwrap();
    assert_eq!(y.to_vec(), vec![30.0]);
}
