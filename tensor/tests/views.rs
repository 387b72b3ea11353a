//! Views: reshape/view and permute/transpose round trips give back the original; every view
//! op (narrow, slice, select, squeeze, unsqueeze, expand, flatten) equals a naive index
//! map; `contiguous()` of any view equals its `to_vec`; views share storage, copies do not.

use crate::common;

use common::*;
use proptest::prelude::*;
use strata_tensor::{Tensor, TensorError};

/// A reshape target for `shape`: its sizes reordered (by `keys`), neighbours merged where
/// `merge` says, size-1 dimensions inserted at `ones`, and one size replaced by `-1` (at
/// `minus_one`) when the others determine it.
fn target_shape(
    shape: &[usize],
    keys: &[u32; 6],
    merge: &[bool],
    ones: &[usize],
    minus_one: Option<usize>,
) -> (Vec<usize>, Vec<isize>) {
    let p = perm_from_keys(keys, shape.len());
    let mut sizes: Vec<usize> = Vec::new();
    for (k, &d) in p.iter().map(|&i| &shape[i]).enumerate() {
        match sizes.last_mut() {
            Some(last) if merge[k] => *last *= d,
            _ => sizes.push(d),
        }
    }
    for &at in ones {
        let at = at % (sizes.len() + 1);
        sizes.insert(at, 1);
    }
    let mut spec: Vec<isize> = sizes.iter().map(|&d| d as isize).collect();
    if let Some(key) = minus_one.filter(|_| !sizes.is_empty()) {
        let i = key % sizes.len();
        let others: usize = sizes
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, &d)| d)
            .product();
        if others > 0 {
            spec[i] = -1;
        }
    }
    (sizes, spec)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `reshape` (with `-1` inferred) gives the row-major values in the new shape and back;
    /// `view` agrees with it wherever the strides allow, and fails with `View` exactly when
    /// `reshape` had to copy.
    #[test]
    fn reshape_and_view_round_trip(
        (shape, data, kind) in viewed(shape(0..=4)),
        keys in prop::array::uniform6(any::<u32>()),
        merge in prop::collection::vec(any::<bool>(), 4),
        ones in prop::collection::vec(any::<usize>(), 0..=2),
        minus_one in prop::option::of(any::<usize>()),
    ) {
        let x = make_view::<f64>(&data, &shape, &kind);
        let (target, spec) = target_shape(&shape, &keys, &merge, &ones, minus_one);
        let r = x.reshape(&spec).or_fail("reshape")?;
        assert_tensor("reshape", &r, &target, &data, EXACT)?;
        let back = r.reshape(&shape).or_fail("reshape back")?;
        assert_tensor("reshape back", &back, &shape, &data, EXACT)?;
        let flat = x.reshape([-1]).or_fail("reshape [-1]")?;
        assert_tensor("reshape [-1]", &flat, &[numel(&shape)], &data, EXACT)?;
        match x.view(&spec) {
            Ok(v) => {
                assert_tensor("view", &v, &target, &data, EXACT)?;
                prop_assert!(v.shares_storage(&x), "view copied");
                prop_assert!(r.shares_storage(&x), "reshape copied although view works");
                let vb = v.view(&shape).or_fail("view back")?;
                assert_tensor("view back", &vb, &shape, &data, EXACT)?;
            }
            Err(TensorError::View { op, shape: from, to, .. }) => {
                prop_assert!(!x.is_contiguous(), "view of a contiguous tensor failed");
                prop_assert_eq!(op, "view");
                prop_assert_eq!(from, shape.clone());
                prop_assert_eq!(to, target.clone());
                prop_assert!(!r.shares_storage(&x), "reshape kept a layout view cannot express");
            }
            Err(e) => prop_assert!(false, "view: unexpected error {e}"),
        }
        // reshape and view of a contiguous tensor never copy
        let c = x.contiguous();
        prop_assert!(c.reshape(&spec).or_fail("reshape")?.shares_storage(&c));
        prop_assert!(c.view(&spec).or_fail("view")?.shares_storage(&c));
    }

    /// `permute(p)` equals `naive_permute`; permuting back by the inverse restores the
    /// original layout; `transpose(a, b)` is the permutation swapping `a` and `b`, and is its
    /// own inverse.
    #[test]
    fn permute_and_transpose_round_trip(
        (shape, data, kind) in viewed(shape(1..=5)),
        keys in prop::array::uniform6(any::<u32>()),
        a in any::<usize>(),
        b in any::<usize>(),
    ) {
        let x = make_view::<f64>(&data, &shape, &kind);
        let n = shape.len();
        let p = perm_from_keys(&keys, n);
        // write half the dimensions as negative numbers
        let signed: Vec<isize> = p
            .iter()
            .enumerate()
            .map(|(k, &d)| if k % 2 == 1 { d as isize - n as isize } else { d as isize })
            .collect();
        let y = x.permute(&signed).or_fail("permute")?;
        let (want, want_shape) = naive_permute(&data, &shape, &p);
        assert_tensor("permute", &y, &want_shape, &want, EXACT)?;
        prop_assert!(y.shares_storage(&x));
        let q: Vec<isize> = inverse_perm(&p).iter().map(|&d| d as isize).collect();
        let z = y.permute(&q).or_fail("permute back")?;
        prop_assert_eq!(z.layout(), x.layout());
        assert_tensor("permute back", &z, &shape, &data, EXACT)?;

        let (da, sa) = pick_dim(a, n);
        let (db, sb) = pick_dim(b, n);
        let mut swap: Vec<usize> = (0..n).collect();
        swap.swap(da, db);
        let t = x.transpose(sa, sb).or_fail("transpose")?;
        let (want, want_shape) = naive_permute(&data, &shape, &swap);
        assert_tensor("transpose", &t, &want_shape, &want, EXACT)?;
        prop_assert!(t.shares_storage(&x));
        let tt = t.transpose(sb, sa).or_fail("transpose back")?;
        prop_assert_eq!(tt.layout(), x.layout());
        if n == 2 {
            let m = x.t().or_fail("t")?;
            assert_tensor("t", &m, &[shape[1], shape[0]], &naive_permute(&data, &shape, &[1, 0]).0, EXACT)?;
        }
    }

    /// `narrow` and `slice` (Python `start:end:step`, negative and out-of-range bounds
    /// clamped) equal an index map `i -> start + i * step` along the dimension.
    #[test]
    fn narrow_and_slice_equal_index_maps(
        (shape, data, kind) in viewed(shape(1..=4)),
        dim in any::<usize>(),
        start in -8..=8isize,
        end in prop_oneof![-8..=8isize, Just(isize::MAX), Just(isize::MIN)],
        step in 1..=4usize,
        nstart in any::<usize>(),
        nlen in any::<usize>(),
    ) {
        let x = make_view::<f64>(&data, &shape, &kind);
        let (d, sd) = pick_dim(dim, shape.len());
        let size = shape[d] as isize;
        let clamp = |i: isize| (if i < 0 { i.saturating_add(size) } else { i }).clamp(0, size) as usize;
        let (s, e) = (clamp(start), clamp(end));
        let len = if e > s { (e - s).div_ceil(step) } else { 0 };
        let mut out = shape.clone();
        out[d] = len;
        let want = naive_map(&data, &shape, &out, |o| {
            let mut i = o.to_vec();
            i[d] = s + o[d] * step;
            i
        });
        let y = x.slice(sd, start, end, step).or_fail("slice")?;
        assert_tensor(&format!("slice({sd}, {start}, {end}, {step})"), &y, &out, &want, EXACT)?;
        prop_assert!(y.shares_storage(&x));
        // slice the slice again: strides compose
        let yy = y.slice(sd, 1, isize::MAX, 2).or_fail("slice of slice")?;
        let mut out2 = out.clone();
        out2[d] = len.saturating_sub(1).div_ceil(2);
        let want2 = naive_map(&want, &out, &out2, |o| {
            let mut i = o.to_vec();
            i[d] = 1 + 2 * o[d];
            i
        });
        assert_tensor("slice of slice", &yy, &out2, &want2, EXACT)?;

        let nstart = nstart % (shape[d] + 1);
        let nlen = nlen % (shape[d] - nstart + 1);
        let mut out = shape.clone();
        out[d] = nlen;
        let want = naive_map(&data, &shape, &out, |o| {
            let mut i = o.to_vec();
            i[d] += nstart;
            i
        });
        let y = x.narrow(sd, nstart, nlen).or_fail("narrow")?;
        assert_tensor(&format!("narrow({sd}, {nstart}, {nlen})"), &y, &out, &want, EXACT)?;
        prop_assert!(y.shares_storage(&x));
        let too_long = shape[d] - nstart + 1;
        assert_err!(x.narrow(sd, nstart, too_long), TensorError::Invalid { .. });
        assert_err!(x.slice(sd, 0, 1, 0), TensorError::Invalid { .. });
    }

    /// `select(dim, i)` (negative `i` from the end) removes the dimension and equals the
    /// index map inserting `i`; out-of-range indices are `Index` errors.
    #[test]
    fn select_equals_index_map(
        (shape, data, kind) in viewed(shape(1..=4)),
        dim in any::<usize>(),
        index in -7..=7isize,
    ) {
        let x = make_view::<f64>(&data, &shape, &kind);
        let (d, sd) = pick_dim(dim, shape.len());
        let size = shape[d] as isize;
        let i = if index < 0 { index + size } else { index };
        if i < 0 || i >= size {
            let r = x.select(sd, index);
            prop_assert!(
                matches!(r, Err(TensorError::Index { op: "select", dim, size: sz, .. }) if dim == d && sz == shape[d]),
                "select({sd}, {index}) on {shape:?}: {r:?}"
            );
            return Ok(());
        }
        let mut out = shape.clone();
        out.remove(d);
        let want = naive_map(&data, &shape, &out, |o| {
            let mut v = o.to_vec();
            v.insert(d, i as usize);
            v
        });
        let y = x.select(sd, index).or_fail("select")?;
        assert_tensor(&format!("select({sd}, {index})"), &y, &out, &want, EXACT)?;
        prop_assert!(y.shares_storage(&x));
    }

    /// `squeeze`, `squeeze_all`, `unsqueeze` and `flatten` keep the row-major values and
    /// change only the shape, as PyTorch's do.
    #[test]
    fn squeeze_unsqueeze_flatten_keep_values(
        (shape, data, kind) in viewed(prop::collection::vec(prop_oneof![1 => Just(1usize), 2 => dim_size()], 0..=4)),
        dim in any::<usize>(),
        ins in any::<usize>(),
        fa in any::<usize>(),
        fb in any::<usize>(),
    ) {
        let x = make_view::<f64>(&data, &shape, &kind);
        let n = shape.len();
        // squeeze one dimension (a no-op unless it has size 1)
        let (d, sd) = pick_dim(dim, n);
        let mut out = shape.clone();
        if n > 0 && shape[d] == 1 {
            out.remove(d);
        }
        let y = x.squeeze(sd).or_fail("squeeze")?;
        assert_tensor(&format!("squeeze({sd})"), &y, &out, &data, EXACT)?;
        prop_assert!(y.shares_storage(&x));
        let out: Vec<usize> = shape.iter().copied().filter(|&s| s != 1).collect();
        assert_tensor("squeeze_all", &x.squeeze_all(), &out, &data, EXACT)?;
        // unsqueeze anywhere in -n-1..=n
        let (at, sat) = pick_dim(ins, n + 1);
        let mut out = shape.clone();
        out.insert(at, 1);
        let y = x.unsqueeze(sat).or_fail("unsqueeze")?;
        assert_tensor(&format!("unsqueeze({sat})"), &y, &out, &data, EXACT)?;
        prop_assert!(y.shares_storage(&x));
        assert_tensor("unsqueeze then squeeze", &y.squeeze(sat).or_fail("squeeze")?, &shape, &data, EXACT)?;
        assert_err!(x.unsqueeze(n as isize + 1), TensorError::Dim { .. });
        assert_err!(x.unsqueeze(-(n as isize) - 2), TensorError::Dim { .. });
        // flatten(start, end), either written negative
        let (s, ss) = pick_dim(fa, n);
        let (e, se) = pick_dim(fb, n);
        let f = x.flatten(ss, se);
        if n == 0 {
            assert_tensor("flatten of 0-d", &f.or_fail("flatten")?, &[1], &data, EXACT)?;
        } else if s > e {
            prop_assert!(matches!(f, Err(TensorError::Invalid { op: "flatten", .. })), "{f:?}");
        } else {
            let mut out = shape[..s].to_vec();
            out.push(numel(&shape[s..=e]));
            out.extend_from_slice(&shape[e + 1..]);
            assert_tensor(&format!("flatten({ss}, {se})"), &f.or_fail("flatten")?, &out, &data, EXACT)?;
        }
    }

    /// `expand` (with `-1` keeping a size, new leading dimensions) and `broadcast_to` equal
    /// `naive_broadcast`, and share storage.
    #[test]
    fn expand_equals_naive_broadcast(
        (out, small) in shape(0..=4).prop_flat_map(|out| {
            let r = out.len();
            (Just(out), 0..=r, prop::collection::vec(prop::bool::weighted(0.3), r))
                .prop_map(|(out, drop, ones)| {
                    let small = shrink_shape(&out, drop, &ones);
                    (out, small)
                })
        }),
        keep in prop::collection::vec(any::<bool>(), 4),
        seed in any::<u64>(),
        kind in view_kind(),
    ) {
        let data = seeded_values(seed, numel(&small));
        let x = make_view::<f64>(&data, &small, &kind);
        let lead = out.len() - small.len();
        let sizes: Vec<isize> = out
            .iter()
            .enumerate()
            .map(|(i, &d)| if i >= lead && keep[i] && small[i - lead] == d { -1 } else { d as isize })
            .collect();
        let want = naive_broadcast(&data, &small, &out);
        let e = x.expand(&sizes).or_fail("expand")?;
        assert_tensor(&format!("expand({sizes:?})"), &e, &out, &want, EXACT)?;
        prop_assert!(e.shares_storage(&x));
        let b = x.broadcast_to(&out).or_fail("broadcast_to")?;
        assert_tensor("broadcast_to", &b, &out, &want, EXACT)?;
        assert_tensor("expand then contiguous", &e.contiguous(), &out, &want, EXACT)?;
    }

    /// `contiguous()` of any view holds the view's `to_vec`, is contiguous, and is the same
    /// handle when the view already was; `as_slice` exists exactly for contiguous views;
    /// `get` reads single elements through the layout.
    #[test]
    fn contiguous_of_any_view_equals_to_vec(
        (shape, data, kind) in viewed(shape(0..=4)),
        probe in any::<usize>(),
    ) {
        let x = make_view::<f64>(&data, &shape, &kind);
        let c = x.contiguous();
        prop_assert!(c.is_contiguous());
        assert_tensor("contiguous", &c, &shape, &to_f64(&x), EXACT)?;
        assert_tensor("to_vec", &x, &shape, &data, EXACT)?;
        prop_assert_eq!(c.shares_storage(&x), x.is_contiguous());
        prop_assert_eq!(x.as_slice().is_some(), x.is_contiguous());
        prop_assert_eq!(c.as_slice().map(<[f64]>::to_vec), Some(data.clone()));
        assert_tensor("into_vec", &Tensor::from_vec(x.clone().into_vec(), &shape).or_fail("from_vec")?, &shape, &data, EXACT)?;
        if !data.is_empty() {
            let k = probe % data.len();
            let got = x.get(&unravel(k, &shape)).or_fail("get")?;
            prop_assert!(got == data[k], "get({:?}) = {got}, expected {}", unravel(k, &shape), data[k]);
        }
        // a copy does not change when the original's handle is written
        let mut w = x.clone();
        w.fill_(7.0);
        assert_tensor("view after a write through another handle", &x, &shape, &data, EXACT)?;
        assert_tensor("contiguous copy after the write", &c, &shape, &data, EXACT)?;
    }
}

/// Slicing a tensor with an empty dimension at a non-zero position (or selecting from one)
/// gives an empty view that can still be read, copied and computed with: PyTorch returns
/// `tensor([], size=(0, 2))` for `torch.zeros(0, 5)[:, 3:]`.
#[test]
fn slices_of_empty_tensors_stay_readable() {
    let z = Tensor::<f64>::zeros(&[0, 5]);
    let s = z.slice(1, 3, isize::MAX, 1).unwrap();
    assert_eq!(s.shape(), &[0, 2]);
    assert!(s.to_vec().is_empty());
    assert!(s.contiguous().to_vec().is_empty());
    assert_eq!(s.sum(&[0], false).unwrap().to_vec(), vec![0.0, 0.0]);
    assert_eq!(s.add(&s).unwrap().shape(), &[0, 2]);
    assert_eq!(s.reshape([-1, 1]).unwrap().shape(), &[0, 1]);
    let n = z.narrow(1, 4, 1).unwrap();
    assert_eq!(n.shape(), &[0, 1]);
    assert!(n.to_vec().is_empty());
    let z = Tensor::<f64>::zeros(&[3, 0, 2]);
    let s = z.select(0, 2).unwrap();
    assert_eq!(s.shape(), &[0, 2]);
    assert!(s.to_vec().is_empty());
    let s = z.slice(2, 1, 2, 1).unwrap();
    assert_eq!(s.shape(), &[3, 0, 1]);
    assert!(s.to_vec().is_empty());
    assert_eq!(s.mean(&[1], false).unwrap().shape(), &[3, 1]);
    let s = z.slice(0, 1, 3, 1).unwrap().transpose(0, 2).unwrap();
    assert_eq!(s.shape(), &[2, 0, 2]);
    assert!(s.contiguous().to_vec().is_empty());
}

/// Rank 5 and 6: shapes and strides no longer fit inline (`Dims` holds four entries) and
/// live on the heap; views, broadcasting, copies and reductions must not notice.
#[test]
fn tensors_of_rank_five_and_six() {
    let dims = [2usize, 3, 4, 5, 6];
    let x = Tensor::<f64>::arange(0.0, 720.0, 1.0)
        .unwrap()
        .reshape(dims)
        .unwrap();
    let flat = |i: [usize; 5]| (((i[0] * 3 + i[1]) * 4 + i[2]) * 5 + i[3]) * 6 + i[4];
    let every = || {
        (0..720).map(|mut f| {
            let mut i = [0; 5];
            for d in (0..5).rev() {
                i[d] = f % dims[d];
                f /= dims[d];
            }
            i
        })
    };
    let p = x.permute(&[4, 2, 0, 3, 1]).unwrap();
    assert_eq!(p.shape(), &[6, 4, 2, 5, 3]);
    let u = x.unsqueeze(2).unwrap();
    assert_eq!(u.shape(), &[2, 3, 1, 4, 5, 6]);
    for i in every() {
        let v = flat(i) as f64;
        assert_eq!(p.get(&[i[4], i[2], i[0], i[3], i[1]]).unwrap(), v);
        assert_eq!(u.get(&[i[0], i[1], 0, i[2], i[3], i[4]]).unwrap(), v);
    }
    // The permuted copy is row-major in the permuted order; permuting back restores `x`.
    let back = p.contiguous().permute(&[2, 4, 1, 3, 0]).unwrap();
    assert_eq!(back.contiguous().to_vec(), x.to_vec());
    assert_eq!(u.squeeze(2).unwrap().to_vec(), x.to_vec());
    // Broadcasting a [5, 1] column over the last two dimensions, at rank 6.
    let col = Tensor::<f64>::arange(0.0, 5.0, 1.0)
        .unwrap()
        .reshape([5, 1])
        .unwrap();
    let sum = u.add(&col).unwrap();
    assert_eq!(sum.shape(), &[2, 3, 1, 4, 5, 6]);
    let got = sum.to_vec();
    for i in every() {
        assert_eq!(got[flat(i)], flat(i) as f64 + i[3] as f64);
    }
    // Reducing dimensions 1 and 3 of the rank-5 tensor, and summing a gradient back.
    let r = x.sum(&[1, 3], false).unwrap();
    assert_eq!(r.shape(), &[2, 4, 6]);
    let mut want = vec![0.0; 48];
    for i in every() {
        want[(i[0] * 4 + i[2]) * 6 + i[4]] += flat(i) as f64;
    }
    assert_eq!(r.to_vec(), want);
    let g = sum.sum_to_shape(&[3, 1, 1, 1, 6]).unwrap();
    let mut want = vec![0.0; 18];
    for i in every() {
        want[i[1] * 6 + i[4]] += flat(i) as f64 + i[3] as f64;
    }
    assert_eq!(g.to_vec(), want);
}
