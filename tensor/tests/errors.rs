//! Every error case returns its `TensorError` variant instead of panicking: shapes that do
//! not broadcast, dimensions out of range, malformed reshapes, views the strides cannot
//! express, out-of-range indices, invalid parameters, convolutions whose channels or groups
//! do not fit, buffers of the wrong length, `item` of a non-scalar. Where the API documents
//! the message, the message names the op and the shapes.

use crate::common;

use common::*;
use proptest::prelude::*;
use strata_tensor::{
    Conv1dParams, Conv2dParams, IndexTensor, Pool2dParams, Result, Tensor, TensorError,
};

/// Two shapes that do not broadcast: `a`, and `a` with one dimension changed so that both
/// sizes differ and are at least 2 (then possibly with leading dimensions dropped).
fn incompatible_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (
        shape_nonempty(1..=4),
        any::<usize>(),
        1..=3usize,
        0..=3usize,
        any::<bool>(),
    )
        .prop_map(|(mut a, at, grow, drop, swap)| {
            let d = at % a.len();
            a[d] = a[d].max(2);
            let mut b = a.clone();
            b[d] = a[d] + grow;
            let b = b[drop.min(d)..].to_vec();
            if swap { (b, a) } else { (a, b) }
        })
}

/// A boxed op taking a dimension, for tables of ops.
type DimOp = Box<dyn Fn(&Tensor<f64>, isize) -> Result<()>>;

fn dim_op(
    name: &'static str,
    f: impl Fn(&Tensor<f64>, isize) -> Result<()> + 'static,
) -> (&'static str, DimOp) {
    (name, Box::new(f))
}

type Binary = fn(&Tensor<f64>, &Tensor<f64>) -> Result<Tensor<f64>>;

/// An out-of-range dimension of a rank-`ndim` tensor: `n + k` or `-(n + 1 + k)` with
/// `n = max(ndim, 1)` (a 0-d tensor takes 0 and -1, as in PyTorch).
fn bad_dim(ndim: usize, k: usize, negative: bool) -> isize {
    let n = ndim.max(1) as isize;
    if negative {
        -(n + 1 + k as isize)
    } else {
        n + k as isize
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Binary ops, in-place updates, `expand`/`broadcast_to` and `where_` on shapes that do
    /// not broadcast are `Broadcast` errors naming the op and both shapes.
    #[test]
    fn mismatched_broadcasts_are_broadcast_errors((sa, sb) in incompatible_pair()) {
        prop_assume!(broadcast_shape(&sa, &sb).is_none());
        let a = Tensor::<f64>::zeros(&sa);
        let b = Tensor::<f64>::ones(&sb);
        let ops: [(&str, Binary); 8] = [
            ("add", Tensor::add),
            ("sub", Tensor::sub),
            ("mul", Tensor::mul),
            ("div", Tensor::div),
            ("pow", Tensor::pow),
            ("maximum", Tensor::maximum),
            ("eq", Tensor::eq),
            ("lt", Tensor::lt),
        ];
        for (name, f) in ops {
            let r = f(&a, &b);
            let ok = matches!(&r, Err(TensorError::Broadcast { op, lhs, rhs }) if op == &name && *lhs == sa && *rhs == sb);
            prop_assert!(ok, "{name}({sa:?}, {sb:?}): {r:?}");
            prop_assert_eq!(
                r.unwrap_err().to_string(),
                format!("{name}: shapes {sa:?} and {sb:?} cannot be broadcast together")
            );
        }
        let mut m = a.clone();
        assert_err!(m.add_(&b), TensorError::Broadcast { .. });
        assert_err!(m.axpy_(2.0, &b), TensorError::Broadcast { .. });
        assert_err!(m.copy_(&b), TensorError::Broadcast { .. });
        assert_err!(a.broadcast_to(&sb), TensorError::Broadcast { .. });
        let sizes: Vec<isize> = sb.iter().map(|&d| d as isize).collect();
        assert_err!(a.expand(&sizes), TensorError::Broadcast { op: "expand", .. });
        assert_err!(Tensor::where_(&a, &a, &b), TensorError::Broadcast { .. });
        assert_err!(a.masked_fill(&b, 1.0), TensorError::Broadcast { .. });
        assert_err!(a.allclose(&b, 1e-5, 1e-8), TensorError::Broadcast { .. });
    }

    /// Every op taking a dimension rejects one out of range (beyond `ndim`, or negative
    /// beyond `-ndim`) with a `Dim` error naming the dimension and the shape.
    #[test]
    fn out_of_range_dims_are_dim_errors(
        shape in shape(0..=4),
        k in 0..=3usize,
        negative in any::<bool>(),
    ) {
        let x = Tensor::<f64>::zeros(&shape);
        let n = shape.len();
        let d = bad_dim(n, k, negative);
        let idx0 = IndexTensor::from_vec(vec![0], &[1]).or_fail("index")?;
        let gidx = IndexTensor::from_vec(vec![0], &vec![1; n.max(1)]).or_fail("index")?;
        let mut ops: Vec<(&str, DimOp)> = vec![
            dim_op("size", |x, d| x.size(d).map(drop)),
            dim_op("sum", |x, d| x.sum(&[d], false).map(drop)),
            dim_op("mean", |x, d| x.mean(&[0, d], true).map(drop)),
            dim_op("prod", |x, d| x.prod(&[d], false).map(drop)),
            dim_op("var", |x, d| x.var(&[d], true, false).map(drop)),
            dim_op("std", |x, d| x.std(&[d], false, true).map(drop)),
            dim_op("amax", |x, d| x.amax(&[d], false).map(drop)),
            dim_op("amin", |x, d| x.amin(&[d], false).map(drop)),
            dim_op("logsumexp", |x, d| x.logsumexp(&[d], false).map(drop)),
            dim_op("max", |x, d| x.max_dim(d, false).map(drop)),
            dim_op("min", |x, d| x.min_dim(d, true).map(drop)),
            dim_op("argmax", |x, d| x.argmax(Some(d), false).map(drop)),
            dim_op("argmin", |x, d| x.argmin(Some(d), true).map(drop)),
            dim_op("softmax", |x, d| x.softmax(d).map(drop)),
            dim_op("log_softmax", |x, d| x.log_softmax(d).map(drop)),
            dim_op("softmax_backward", |x, d| x.softmax_backward(x, d).map(drop)),
            dim_op("log_softmax_backward", |x, d| x.log_softmax_backward(x, d).map(drop)),
            dim_op("transpose", |x, d| x.transpose(d, 0).map(drop)),
            dim_op("transpose", |x, d| x.transpose(-1, d).map(drop)),
            dim_op("squeeze", |x, d| x.squeeze(d).map(drop)),
            dim_op("flatten", |x, d| x.flatten(d, -1).map(drop)),
            dim_op("flatten", |x, d| x.flatten(0, d).map(drop)),
            dim_op("split", |x, d| x.split(1, d).map(drop)),
            dim_op("split_with_sizes", |x, d| x.split_with_sizes(&[1], d).map(drop)),
            dim_op("chunk", |x, d| x.chunk(2, d).map(drop)),
            dim_op("index_select", move |x, d| x.index_select(d, &idx0).map(drop)),
            dim_op("gather", {
                let gidx = gidx.clone();
                move |x, d| x.gather(d, &gidx).map(drop)
            }),
            dim_op("scatter_add", move |x, d| x.scatter_add(d, &gidx, x).map(drop)),
            dim_op("index_add", |x, d| {
                let idx = IndexTensor::from_vec(vec![0], &[1])?;
                x.index_add(d, &idx, x).map(drop)
            }),
        ];
        if n > 0 {
            // (a 0-d tensor cannot be sliced, selected or joined at all: `Invalid`)
            ops.extend([
                dim_op("narrow", |x, d| x.narrow(d, 0, 0).map(drop)),
                dim_op("slice", |x, d| x.slice(d, 0, 1, 1).map(drop)),
                dim_op("select", |x, d| x.select(d, 0).map(drop)),
            ]);
        }
        if n > 0 && shape != [0] {
            // (`cat` skips 1-d empty tensors before it looks at the dimension, as PyTorch)
            ops.push(dim_op("cat", |x, d| Tensor::cat(&[x, x], d).map(drop)));
        }
        for (name, f) in &ops {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&x, d)));
            let Ok(r) = r else {
                return Err(TestCaseError::fail(format!("{name}({d}) on {shape:?} panicked")));
            };
            let ok = matches!(&r, Err(TensorError::Dim { op, dim, shape: s }) if op == name && *dim == d && *s == shape);
            prop_assert!(ok, "{name}({d}) on {shape:?}: {r:?}");
            prop_assert_eq!(
                r.unwrap_err().to_string(),
                format!("{name}: dimension {d} is out of range for a tensor of shape {shape:?}")
            );
        }
        // inserting a dimension: valid range -n-1..=n
        let d = if negative { -(n as isize) - 2 - k as isize } else { n as isize + 1 + k as isize };
        assert_err!(x.unsqueeze(d), TensorError::Dim { op: "unsqueeze", .. });
        assert_err!(Tensor::stack(&[&x, &x], d), TensorError::Dim { op: "stack", .. });
        // a permutation naming a dimension out of range
        if n > 0 {
            let mut p: Vec<isize> = (0..n as isize).collect();
            p[k % n] = bad_dim(n, k, negative);
            assert_err!(x.permute(&p), TensorError::Dim { op: "permute", .. });
        }
        // a repeated dimension is `Invalid`
        if n > 0 {
            let r = x.sum(&[0, -(n as isize)], false);
            prop_assert!(matches!(r, Err(TensorError::Invalid { op: "sum", .. })), "{r:?}");
        }
    }

    /// `reshape`/`view` to a shape of another size, with two `-1`s, with a negative size
    /// other than `-1`, or with `-1` beside a zero are `Reshape` errors naming both shapes;
    /// `view` of a transposed matrix to one dimension is a `View` error.
    #[test]
    fn malformed_reshapes_are_reshape_errors(
        shape in shape_nonempty(1..=4),
        extra in 1..=3usize,
        a in 2..=6usize,
        b in 2..=6usize,
    ) {
        let x = Tensor::<f64>::zeros(&shape);
        let n = numel(&shape);
        let specs: Vec<Vec<isize>> = vec![
            vec![(n + extra) as isize],
            vec![-1, -1],
            vec![n as isize, -1, -1],
            vec![-2, -(n as isize) / 2],
            vec![(n * (extra + 1)) as isize, -1],
            vec![0, -1],
        ];
        for spec in &specs {
            for (name, r) in [("reshape", x.reshape(spec)), ("view", x.view(spec))] {
                let ok = matches!(&r, Err(TensorError::Reshape { op, from, to }) if *op == name && *from == shape && to == spec);
                prop_assert!(ok, "{name}({spec:?}) of {shape:?}: {r:?}");
                prop_assert_eq!(
                    r.unwrap_err().to_string(),
                    format!("{name}: cannot reshape {shape:?} into {spec:?}")
                );
            }
        }
        // a view whose strides cannot express the shape
        let m = Tensor::<f64>::zeros(&[a, b]).transpose(0, 1).or_fail("transpose")?;
        let r = m.view([-1]);
        let ok = matches!(&r, Err(TensorError::View { op: "view", shape, strides, to }) if *shape == [b, a] && *strides == [1, b] && *to == [a * b]);
        prop_assert!(ok, "{r:?}");
        // the left half of each row: rows `2b` apart, `b` long (every other column would be
        // evenly strided, hence viewable)
        let s = Tensor::<f64>::zeros(&[a, 2 * b]).narrow(1, 0, b).or_fail("narrow")?;
        assert_err!(s.view([a * b]), TensorError::View { .. });
        let r = s.reshape([a * b]).or_fail("reshape")?;
        prop_assert_eq!(r.shape(), &[a * b]);
    }

    /// Indices out of range, negative or past the end, are `Index` errors naming the op,
    /// the index, the dimension and its size.
    #[test]
    fn bad_indices_are_index_errors(
        shape in shape_nonempty(1..=4),
        dim in any::<usize>(),
        past in 0..=3i64,
        negative in any::<bool>(),
    ) {
        let x = Tensor::<f64>::zeros(&shape);
        let (d, sd) = pick_dim(dim, shape.len());
        let size = shape[d];
        let bad = if negative { -1 - past } else { size as i64 + past };
        let one = IndexTensor::from_vec(vec![bad], &[1]).or_fail("index")?;
        let r = x.index_select(sd, &one);
        let ok = matches!(&r, Err(TensorError::Index { op: "index_select", index, dim, size: s }) if *index == bad && *dim == d && *s == size);
        prop_assert!(ok, "{r:?}");
        prop_assert_eq!(
            r.unwrap_err().to_string(),
            format!("index_select: index {bad} is out of bounds for dimension {d} with size {size}")
        );
        let mut src_shape = shape.clone();
        src_shape[d] = 1;
        assert_err!(x.index_add(sd, &one, &Tensor::zeros(&src_shape)), TensorError::Index { op: "index_add", .. });
        let g = IndexTensor::from_vec(vec![bad; numel(&src_shape)], &src_shape).or_fail("index")?;
        assert_err!(x.gather(sd, &g), TensorError::Index { op: "gather", .. });
        assert_err!(x.scatter_add(sd, &g, &Tensor::zeros(&src_shape)), TensorError::Index { op: "scatter_add", .. });
        assert_err!(Tensor::<f64>::one_hot(&one, Some(size)), TensorError::Index { op: "one_hot", .. });
        // select takes negative indices from the end: -size is the first, -size-1 is out
        let sel = if negative { -(size as i64) - 1 - past } else { size as i64 + past };
        let r = x.select(sd, sel as isize);
        let ok = matches!(&r, Err(TensorError::Index { op: "select", dim, size: s, .. }) if *dim == d && *s == size);
        prop_assert!(ok, "select({sd}, {sel}) on {shape:?}: {r:?}");
        // get: one index too far, or the wrong number of indices
        let mut at = vec![0; shape.len()];
        at[d] = size + past as usize;
        assert_err!(x.get(&at), TensorError::Index { op: "get", .. });
        assert_err!(x.get(&at[1..]), TensorError::Shape { op: "get", .. });
        // max_pool2d_backward with an index outside its plane
        let p = Tensor::<f64>::zeros(&[1, 1, 2, 2]);
        let (y, _) = p.max_pool2d(Pool2dParams::new(2)).or_fail("max_pool2d")?;
        let i = IndexTensor::from_vec(vec![if negative { -2 - past } else { 4 + past }], &[1, 1, 1, 1]).or_fail("index")?;
        assert_err!(Tensor::max_pool2d_backward(&y, &i, p.shape()), TensorError::Index { op: "max_pool2d_backward", .. });
    }

    /// Parameters outside their domain are `Invalid` errors: zero steps, kernels, strides,
    /// dilations or groups, pooling padding above half the kernel (as PyTorch refuses it),
    /// dilated or zero-divisor average pooling, zero adaptive sizes, zero chunks.
    #[test]
    fn invalid_parameters_are_invalid_errors(
        kernel in 1..=4usize,
        over in 1..=2usize,
        which in 0..3usize,
        hw in 5..=8usize,
    ) {
        let x = Tensor::<f64>::zeros(&[1, 2, hw, hw]);
        let w = Tensor::<f64>::zeros(&[2, 2, 1, 1]);
        let mut p = Conv2dParams::default();
        match which {
            0 => p.stride[1] = 0,
            1 => p.dilation[0] = 0,
            _ => p.groups = 0,
        }
        assert_err!(x.conv2d(&w, None, p), TensorError::Invalid { op: "conv2d", .. });
        let gy = Tensor::<f64>::zeros(&[1, 2, hw, hw]);
        assert_err!(Tensor::conv2d_backward_input(&gy, &w, x.shape(), p), TensorError::Invalid { .. });
        assert_err!(Tensor::conv2d_backward_weight(&gy, &x, w.shape(), p), TensorError::Invalid { .. });
        let p1 = Conv1dParams { stride: if which == 0 { 0 } else { 1 }, dilation: if which == 1 { 0 } else { 1 }, groups: if which == 2 { 0 } else { 1 }, padding: strata_tensor::Padding::Explicit([0]) };
        let x1 = Tensor::<f64>::zeros(&[1, 2, hw]);
        assert_err!(x1.conv1d(&Tensor::zeros(&[2, 2, 1]), None, p1), TensorError::Invalid { .. });
        // pooling: zero sizes
        let mut pp = Pool2dParams::new(kernel);
        match which {
            0 => pp.kernel[0] = 0,
            1 => pp.stride[1] = 0,
            _ => pp.dilation[0] = 0,
        }
        assert_err!(x.max_pool2d(pp), TensorError::Invalid { op: "max_pool2d", .. });
        // padding above half the kernel, whatever the dilation
        let pp = Pool2dParams::new(kernel).stride(1).padding(kernel / 2 + over).dilation(1 + which);
        assert_err!(x.max_pool2d(pp), TensorError::Invalid { op: "max_pool2d", .. });
        let pp = Pool2dParams::new(kernel).stride(1).padding(kernel / 2 + over);
        assert_err!(x.avg_pool2d(pp), TensorError::Invalid { op: "avg_pool2d", .. });
        assert_err!(Tensor::avg_pool2d_backward(&x, x.shape(), pp), TensorError::Invalid { .. });
        let pp = Pool2dParams::new(kernel).dilation(2);
        assert_err!(x.avg_pool2d(pp), TensorError::Invalid { op: "avg_pool2d", .. });
        let pp = Pool2dParams::new(kernel).divisor_override(Some(0));
        assert_err!(x.avg_pool2d(pp), TensorError::Invalid { op: "avg_pool2d", .. });
        let size = if which == 0 { [0, kernel] } else { [kernel, 0] };
        assert_err!(x.adaptive_avg_pool2d(size), TensorError::Invalid { op: "adaptive_avg_pool2d", .. });
        // views and shape ops
        assert_err!(x.slice(2, 0, 3, 0), TensorError::Invalid { op: "slice", .. });
        assert_err!(x.narrow(2, hw - 1, 2), TensorError::Invalid { op: "narrow", .. });
        assert_err!(x.chunk(0, 1), TensorError::Invalid { op: "chunk", .. });
        assert_err!(x.split(0, 2), TensorError::Invalid { op: "split", .. });
        assert_err!(x.flatten(3, 1), TensorError::Invalid { op: "flatten", .. });
        assert_err!(x.permute(&[0, 1, 2]), TensorError::Invalid { op: "permute", .. });
        assert_err!(x.permute(&[0, 1, 1, 3]), TensorError::Invalid { op: "permute", .. });
        assert_err!(x.pad(&[1, 1, 1], 0.0), TensorError::Invalid { op: "pad", .. });
        assert_err!(x.pad(&[0; 10], 0.0), TensorError::Invalid { op: "pad", .. });
        assert_err!(x.pad(&[-(hw as isize) - 1, 0], 0.0), TensorError::Invalid { op: "pad", .. });
        assert_err!(x.repeat(&[2, 2]), TensorError::Invalid { op: "repeat", .. });
        assert_err!(Tensor::<f64>::cat::<Tensor<f64>>(&[], 0), TensorError::Invalid { op: "cat", .. });
        assert_err!(Tensor::<f64>::stack::<Tensor<f64>>(&[], 0), TensorError::Invalid { op: "stack", .. });
        assert_err!(Tensor::cat(&[Tensor::<f64>::scalar(1.0)], 0), TensorError::Invalid { op: "cat", .. });
        assert_err!(Tensor::<f64>::scalar(1.0).select(0, 0), TensorError::Invalid { op: "select", .. });
        assert_err!(Tensor::<f64>::arange(0.0, 1.0, 0.0), TensorError::Invalid { op: "arange", .. });
        assert_err!(Tensor::<f64>::arange(0.0, 1.0, -0.5), TensorError::Invalid { op: "arange", .. });
    }

    /// Convolutions whose input channels do not fit the weight and groups, whose output
    /// channels are not divisible by groups, whose bias or gradient has the wrong shape, or
    /// whose input has the wrong rank are `Shape` errors; so is a kernel larger than the
    /// padded input, and pooling an input too small for one window.
    #[test]
    fn mismatched_convolutions_are_shape_errors(
        (cg, o, groups) in (1..=4usize, 1..=4usize, 1..=3usize),
        off in 1..=2usize,
        hw in 3..=6usize,
    ) {
        let p = Conv2dParams::default().groups(groups);
        let x = Tensor::<f64>::zeros(&[2, cg * groups, hw, hw]);
        // input channels: the weight expects cg per group
        let w_bad_c = Tensor::<f64>::zeros(&[o * groups, cg + off, 1, 1]);
        let r = x.conv2d(&w_bad_c, None, p);
        let ok = matches!(&r, Err(TensorError::Shape { op: "conv2d", msg }) if msg.contains(&format!("{:?}", x.shape())) && msg.contains(&format!("{:?}", w_bad_c.shape())));
        prop_assert!(ok, "{r:?}");
        // out channels not divisible by groups
        if groups > 1 {
            let w = Tensor::<f64>::zeros(&[o * groups + 1, cg, 1, 1]);
            assert_err!(x.conv2d(&w, None, p), TensorError::Shape { op: "conv2d", .. });
        }
        let w = Tensor::<f64>::zeros(&[o * groups, cg, 1, 1]);
        // bias of the wrong length
        let b = Tensor::<f64>::zeros(&[o * groups + off]);
        assert_err!(x.conv2d(&w, Some(&b), p), TensorError::Shape { op: "conv2d", .. });
        // input of the wrong rank
        assert_err!(Tensor::<f64>::zeros(&[cg * groups, hw]).conv2d(&w, None, p), TensorError::Shape { op: "conv2d", .. });
        assert_err!(x.conv2d(&Tensor::zeros(&[o * groups, cg, 1]), None, p), TensorError::Shape { op: "conv2d", .. });
        // kernel larger than the padded input
        let wk = Tensor::<f64>::zeros(&[o * groups, cg, hw + off, 1]);
        assert_err!(x.conv2d(&wk, None, p), TensorError::Shape { op: "conv2d", .. });
        // gradients of the wrong shape
        let gy = Tensor::<f64>::zeros(&[2, o * groups, hw + off, hw]);
        assert_err!(Tensor::conv2d_backward_input(&gy, &w, x.shape(), p), TensorError::Shape { op: "conv2d_backward_input", .. });
        assert_err!(Tensor::conv2d_backward_weight(&gy, &x, w.shape(), p), TensorError::Shape { op: "conv2d_backward_weight", .. });
        assert_err!(Tensor::conv2d_backward_bias(&Tensor::<f64>::zeros(&[2, 3])), TensorError::Shape { op: "conv2d_backward_bias", .. });
        // conv1d
        let x1 = Tensor::<f64>::zeros(&[2, cg * groups, hw]);
        let p1 = Conv1dParams { groups, ..Conv1dParams::default() };
        assert_err!(x1.conv1d(&Tensor::zeros(&[o * groups, cg + off, 1]), None, p1), TensorError::Shape { .. });
        assert_err!(x1.conv1d(&Tensor::zeros(&[o * groups, cg, 1, 1]), None, p1), TensorError::Shape { op: "conv1d", .. });
        // pooling: rank and size
        let pp = Pool2dParams::new(hw + off);
        assert_err!(x.max_pool2d(pp), TensorError::Shape { op: "max_pool2d", .. });
        assert_err!(x.avg_pool2d(pp), TensorError::Shape { op: "avg_pool2d", .. });
        assert_err!(Tensor::<f64>::zeros(&[hw, hw]).max_pool2d(Pool2dParams::new(2)), TensorError::Shape { op: "max_pool2d", .. });
        assert_err!(Tensor::<f64>::zeros(&[hw]).adaptive_avg_pool2d([1, 1]), TensorError::Shape { op: "adaptive_avg_pool2d", .. });
        let g = Tensor::<f64>::zeros(&[3, cg * groups, 1, 1]);
        assert_err!(Tensor::adaptive_avg_pool2d_backward(&g, x.shape()), TensorError::Shape { .. });
        let (y, i) = x.max_pool2d(Pool2dParams::new(2)).or_fail("max_pool2d")?;
        let y1 = y.sum(&[0], true).or_fail("sum")?;
        assert_err!(Tensor::max_pool2d_backward(&y1, &i, x.shape()), TensorError::Shape { .. });
        assert_err!(Tensor::avg_pool2d_backward(&y1, x.shape(), Pool2dParams::new(2)), TensorError::Shape { .. });
    }

    /// `from_vec`/`from_slice` with a buffer of the wrong length are `DataLength` errors
    /// naming the length and the shape; `item` of anything but one element is `NotScalar`.
    #[test]
    fn wrong_lengths_and_non_scalars(
        shape in shape(0..=3),
        delta in prop_oneof![Just(-1isize), 1..=3isize],
    ) {
        let n = numel(&shape);
        let len = n as isize + delta;
        prop_assume!(len >= 0);
        let len = len as usize;
        let r = Tensor::<f64>::from_vec(vec![0.0; len], &shape);
        let ok = matches!(&r, Err(TensorError::DataLength { op: "from_vec", len: l, shape: s, numel }) if *l == len && *s == shape && *numel == n);
        prop_assert!(ok, "{r:?}");
        prop_assert_eq!(
            r.unwrap_err().to_string(),
            format!("from_vec: {len} values cannot fill shape {shape:?}, which holds {n}")
        );
        assert_err!(Tensor::<f32>::from_slice(&vec![0.0; len], &shape), TensorError::DataLength { op: "from_slice", .. });
        assert_err!(IndexTensor::from_vec(vec![0; len], &shape), TensorError::DataLength { .. });
        let x = Tensor::<f64>::zeros(&shape);
        if n == 1 {
            prop_assert_eq!(x.item().or_fail("item")?, 0.0);
        } else {
            let r = x.item();
            let ok = matches!(&r, Err(TensorError::NotScalar { op: "item", shape: s }) if *s == shape);
            prop_assert!(ok, "{r:?}");
            prop_assert_eq!(r.unwrap_err().to_string(), format!("item: a tensor of shape {shape:?} is not a single value"));
        }
        // other shape mismatches
        assert_err!(x.softmax_backward(&Tensor::zeros(&[n + 1]), 0), TensorError::Shape { .. });
        if shape.len() < 2 {
            assert_err!(x.tril(0), TensorError::Shape { op: "tril", .. });
            assert_err!(x.triu(1), TensorError::Shape { op: "triu", .. });
        } else {
            let big: Vec<usize> = std::iter::once(2).chain(shape.iter().copied()).chain([2]).collect();
            assert_err!(Tensor::<f64>::zeros(&big).t(), TensorError::Shape { op: "t", .. });
        }
        let k = shape.last().map_or(0, |&k| k + 1);
        assert_err!(x.matmul(&Tensor::zeros(&[k, 2])), TensorError::Matmul { .. });
    }
}

/// Messages by hand, for each variant whose wording the docs show.
#[test]
fn messages_name_the_op_and_shapes() {
    let a = Tensor::<f32>::zeros(&[2, 3]);
    let msg = |r: Result<Tensor<f32>>| r.unwrap_err().to_string();
    assert_eq!(
        msg(a.add(&Tensor::zeros(&[4]))),
        "add: shapes [2, 3] and [4] cannot be broadcast together"
    );
    assert_eq!(
        msg(a.matmul(&Tensor::zeros(&[4, 5]))),
        "matmul: cannot multiply [2, 3] by [4, 5]"
    );
    assert_eq!(
        msg(a.sum(&[2], false)),
        "sum: dimension 2 is out of range for a tensor of shape [2, 3]"
    );
    assert_eq!(
        msg(a.softmax(-3)),
        "softmax: dimension -3 is out of range for a tensor of shape [2, 3]"
    );
    assert_eq!(
        msg(a.reshape([4, -1])),
        "reshape: cannot reshape [2, 3] into [4, -1]"
    );
    assert_eq!(
        msg(a.transpose(0, 1).unwrap().view([6])),
        "view: a tensor of shape [3, 2] and strides [1, 3] cannot be viewed as [6] without a \
         copy; use reshape"
    );
    assert_eq!(
        msg(a.select(1, 3)),
        "select: index 3 is out of bounds for dimension 1 with size 3"
    );
    assert_eq!(
        msg(Tensor::from_vec(vec![0.0; 5], &[2, 3])),
        "from_vec: 5 values cannot fill shape [2, 3], which holds 6"
    );
    assert_eq!(
        a.item().unwrap_err().to_string(),
        "item: a tensor of shape [2, 3] is not a single value"
    );
    assert_eq!(
        msg(Tensor::<f32>::zeros(&[1, 1, 4, 4]).avg_pool2d(Pool2dParams::new(2).padding(2))),
        "avg_pool2d: padding [2, 2] should be at most half of the kernel [2, 2]"
    );
    // an empty tensor is not a single value either
    assert!(matches!(
        Tensor::<f32>::zeros(&[0]).item(),
        Err(TensorError::NotScalar { .. })
    ));
}
