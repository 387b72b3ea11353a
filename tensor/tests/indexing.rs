//! Indexing, joining and splitting against naive loops: index_select, gather, scatter_add,
//! index_add, one_hot, cat, stack, split, split_with_sizes, chunk (PyTorch's chunk sizes),
//! pad (constant, negative amounts crop), repeat, tril/triu with diagonal offsets.
//! Out-of-range indices are `TensorError::Index` errors, never panics.

use crate::common;

use common::*;
use proptest::prelude::*;
use strata_tensor::{IndexTensor, Tensor, TensorError};

/// `n` indices into a dimension of `size`, or, when `size` is 0, none valid: drawn from
/// `keys`.
fn pick_indices(keys: &[usize], n: usize, size: usize) -> Vec<i64> {
    keys[..n]
        .iter()
        .map(|&k| (k % size.max(1)) as i64)
        .collect()
}

/// The shape of `shape` with dimension `d` set to `n`.
fn with_dim(shape: &[usize], d: usize, n: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    s[d] = n;
    s
}

/// The index map `o -> o` with position `d` replaced by `at(o)`.
fn along(o: &[usize], d: usize, at: usize) -> Vec<usize> {
    let mut i = o.to_vec();
    i[d] = at;
    i
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `index_select` picks slices (repeats allowed), `index_add` adds slices back
    /// (repeats accumulate); out-of-range and negative indices are `Index` errors.
    #[test]
    fn index_select_and_index_add_equal_loops(
        (shape, data, kind) in viewed(shape(1..=4)),
        dim in any::<usize>(),
        n in 0..=6usize,
        keys in prop::collection::vec(any::<usize>(), 6),
        seed in any::<u64>(),
        bad in prop_oneof![Just(-1i64), 0..=3i64],
    ) {
        let x = make_view::<f64>(&data, &shape, &kind);
        let (d, sd) = pick_dim(dim, shape.len());
        let size = shape[d];
        let n = if size == 0 { 0 } else { n };
        let idx = pick_indices(&keys, n, size);
        let index = IndexTensor::from_vec(idx.clone(), &[n]).or_fail("index")?;
        let out = with_dim(&shape, d, n);
        let want = naive_map(&data, &shape, &out, |o| along(o, d, idx[o[d]] as usize));
        let got = x.index_select(sd, &index).or_fail("index_select")?;
        assert_tensor(&format!("index_select({sd}, {idx:?})"), &got, &out, &want, EXACT)?;
        // index_add: self of `shape`, source of `out`
        let ds = seeded_values(seed, numel(&out));
        let src = make_view::<f64>(&ds, &out, &kind);
        let mut want = data.clone();
        for (k, o) in indices(&out).enumerate() {
            want[ravel(&along(&o, d, idx[o[d]] as usize), &shape)] += ds[k];
        }
        let got = x.index_add(sd, &index, &src).or_fail("index_add")?;
        assert_tensor(&format!("index_add({sd}, {idx:?})"), &got, &shape, &want, tol(1e-15))?;
        // an index past the end (or negative)
        let b = if bad < 0 { bad } else { size as i64 + bad };
        let bad_index = IndexTensor::from_vec(vec![b], &[1]).or_fail("index")?;
        let r = x.index_select(sd, &bad_index);
        prop_assert!(matches!(r, Err(TensorError::Index { op: "index_select", index, dim, size: s }) if index == b && dim == d && s == size), "{r:?}");
        let one = Tensor::<f64>::zeros(&with_dim(&shape, d, 1));
        let r = x.index_add(sd, &bad_index, &one);
        prop_assert!(matches!(r, Err(TensorError::Index { op: "index_add", .. })), "{r:?}");
    }

    /// `gather` reads `self[.., index[i], ..]` at each position of `index` (which may be
    /// smaller than `self` in the other dimensions); `scatter_add` adds `src` at those
    /// positions, repeats accumulating. Bad indices are `Index` errors.
    #[test]
    fn gather_and_scatter_add_equal_loops(
        (shape, data, kind) in viewed(shape_nonempty(1..=4)),
        dim in any::<usize>(),
        shrink in prop::collection::vec(0..=2usize, 4),
        grow in 0..=3usize,
        keys in prop::collection::vec(any::<usize>(), 6 * 6 * 6 * 9),
        seed in any::<u64>(),
        skind in view_kind(),
    ) {
        let x = make_view::<f64>(&data, &shape, &kind);
        let (d, sd) = pick_dim(dim, shape.len());
        // index shape: at most self's size outside `d`, any size along `d`
        let ishape: Vec<usize> = shape
            .iter()
            .enumerate()
            .map(|(k, &s)| if k == d { 1 + grow } else { s.saturating_sub(shrink[k]) })
            .collect();
        let idx = pick_indices(&keys, numel(&ishape), shape[d]);
        let index = IndexTensor::from_vec(idx.clone(), &ishape).or_fail("index")?;
        let want = naive_map(&data, &shape, &ishape, |o| along(o, d, idx[ravel(o, &ishape)] as usize));
        let got = x.gather(sd, &index).or_fail("gather")?;
        assert_tensor(&format!("gather({sd})"), &got, &ishape, &want, EXACT)?;
        // scatter_add with src of index's shape, on a non-contiguous src
        let ds = seeded_values(seed, numel(&ishape));
        let src = make_view::<f64>(&ds, &ishape, &skind);
        let mut want = data.clone();
        for (k, o) in indices(&ishape).enumerate() {
            want[ravel(&along(&o, d, idx[k] as usize), &shape)] += ds[k];
        }
        let got = x.scatter_add(sd, &index, &src).or_fail("scatter_add")?;
        assert_tensor(&format!("scatter_add({sd})"), &got, &shape, &want, tol(1e-15))?;
        // one bad index anywhere in the index tensor
        if !idx.is_empty() {
            let mut bad = idx.clone();
            let k = keys[0] % bad.len();
            bad[k] = if keys[1] % 2 == 0 { -1 } else { shape[d] as i64 };
            let bad = IndexTensor::from_vec(bad, &ishape).or_fail("index")?;
            let r = x.gather(sd, &bad);
            prop_assert!(matches!(r, Err(TensorError::Index { op: "gather", .. })), "{r:?}");
            let r = x.scatter_add(sd, &bad, &src);
            prop_assert!(matches!(r, Err(TensorError::Index { op: "scatter_add", .. })), "{r:?}");
        }
    }

    /// `one_hot` puts a single 1 at each index; `None` classes means max + 1; an index
    /// outside `0..classes` is an `Index` error.
    #[test]
    fn one_hot_equals_loop(
        ishape in shape(0..=2),
        keys in prop::collection::vec(any::<usize>(), 36),
        classes in 1..=5usize,
        explicit in any::<bool>(),
    ) {
        let idx = pick_indices(&keys, numel(&ishape), classes);
        // (PyTorch cannot infer the class count of an empty index tensor)
        prop_assume!(explicit || !idx.is_empty());
        let index = IndexTensor::from_vec(idx.clone(), &ishape).or_fail("index")?;
        let c = if explicit { classes } else { idx.iter().max().map_or(0, |&m| m as usize + 1) };
        let mut out = ishape.clone();
        out.push(c);
        let want: Vec<f64> = indices(&out)
            .map(|o| {
                let row = ravel(&o[..o.len() - 1], &ishape);
                f64::from(u8::from(idx[row] as usize == o[o.len() - 1]))
            })
            .collect();
        let got = Tensor::<f64>::one_hot(&index, explicit.then_some(classes)).or_fail("one_hot")?;
        assert_tensor("one_hot", &got, &out, &want, EXACT)?;
        if !idx.is_empty() {
            let mut bad = idx.clone();
            bad[0] = if explicit { classes as i64 } else { -1 };
            let bad = IndexTensor::from_vec(bad, &ishape).or_fail("index")?;
            let r = Tensor::<f64>::one_hot(&bad, Some(classes));
            prop_assert!(matches!(r, Err(TensorError::Index { op: "one_hot", .. })), "{r:?}");
        }
    }

    /// `cat` along any dimension of 1..=4 tensors (any layouts, sizes along `dim` may be 0)
    /// equals the loop; `stack` inserts a new dimension; a 1-d empty tensor is skipped by
    /// `cat` as in PyTorch.
    #[test]
    fn cat_and_stack_equal_loops(
        shape in shape_nonempty(1..=3),
        dim in any::<usize>(),
        sizes in prop::collection::vec(0..=3usize, 1..=4),
        kinds in prop::collection::vec(view_kind(), 4),
        seed in any::<u64>(),
        skip_empty in any::<bool>(),
    ) {
        let (d, sd) = pick_dim(dim, shape.len());
        let parts: Vec<(Vec<usize>, Vec<f64>)> = sizes
            .iter()
            .enumerate()
            .map(|(k, &s)| {
                let sh = with_dim(&shape, d, s);
                let n = numel(&sh);
                (sh, seeded_values(seed ^ k as u64, n))
            })
            .collect();
        let mut ts: Vec<Tensor<f64>> = parts.iter().zip(&kinds).map(|((s, v), k)| make_view(v, s, k)).collect();
        let total: usize = sizes.iter().sum();
        let out = with_dim(&shape, d, total);
        let want: Vec<f64> = indices(&out)
            .map(|o| {
                let (mut k, mut at) = (0, o[d]);
                while at >= sizes[k] {
                    at -= sizes[k];
                    k += 1;
                }
                parts[k].1[ravel(&along(&o, d, at), &parts[k].0)]
            })
            .collect();
        if skip_empty {
            ts.insert(sizes.len() / 2, Tensor::<f64>::zeros(&[0]));
        }
        let got = Tensor::cat(&ts, sd).or_fail("cat")?;
        assert_tensor(&format!("cat(dim {sd}, sizes {sizes:?})"), &got, &out, &want, EXACT)?;
        if skip_empty {
            ts.remove(sizes.len() / 2);
        }
        // stack: every part with the same shape
        let sh = with_dim(&shape, d, 1);
        let same: Vec<Tensor<f64>> = kinds[..sizes.len()]
            .iter()
            .enumerate()
            .map(|(k, kind)| make_view(&seeded_values(seed ^ (100 + k as u64), numel(&sh)), &sh, kind))
            .collect();
        let n = shape.len() + 1;
        let (at, sat) = pick_dim(dim / 7, n);
        let mut out = sh.clone();
        out.insert(at, same.len());
        let vals: Vec<Vec<f64>> = same.iter().map(to_f64).collect();
        let want: Vec<f64> = indices(&out)
            .map(|o| {
                let mut i = o.clone();
                let k = i.remove(at);
                vals[k][ravel(&i, &sh)]
            })
            .collect();
        let got = Tensor::stack(&same, sat).or_fail("stack")?;
        assert_tensor(&format!("stack(dim {sat})"), &got, &out, &want, EXACT)?;
        // shapes that differ outside `dim` cannot be joined
        let other = Tensor::<f64>::zeros(&ts[0].shape().iter().map(|&s| s + 1).collect::<Vec<_>>());
        let r = Tensor::cat(&[&ts[0], &other], sd);
        if shape.len() > 1 {
            prop_assert!(matches!(r, Err(TensorError::Shape { op: "cat", .. })), "{r:?}");
        }
        assert_err!(Tensor::stack(&[&ts[0], &other], 0), TensorError::Shape { op: "stack", .. });
    }

    /// `split`, `split_with_sizes` and `chunk` return views covering the dimension in
    /// order, with PyTorch's piece sizes: `chunk(c)` uses pieces of `ceil(size / c)` (so may
    /// return fewer than `c`), and an empty dimension still gives `c` empty pieces.
    #[test]
    fn split_and_chunk_follow_torch(
        (shape, data, kind) in viewed(shape(1..=3)),
        dim in any::<usize>(),
        split_size in 1..=7usize,
        chunks in 1..=7usize,
        cuts in prop::collection::vec(any::<usize>(), 0..=3),
    ) {
        let x = make_view::<f64>(&data, &shape, &kind);
        let (d, sd) = pick_dim(dim, shape.len());
        let size = shape[d];
        let check = |name: &str, parts: Vec<Tensor<f64>>, sizes: &[usize]| -> TestResult {
            let got: Vec<usize> = parts.iter().map(|p| p.shape()[d]).collect();
            prop_assert_eq!(&got, &sizes.to_vec(), "{} piece sizes", name);
            let mut start = 0;
            for (k, p) in parts.iter().enumerate() {
                let out = with_dim(&shape, d, sizes[k]);
                let want = naive_map(&data, &shape, &out, |o| along(o, d, o[d] + start));
                assert_tensor(&format!("{name} piece {k}"), p, &out, &want, EXACT)?;
                prop_assert!(p.shares_storage(&x), "{} piece {} is a copy", name, k);
                start += sizes[k];
            }
            Ok(())
        };
        // torch.split(x, split_size, dim): full pieces then the remainder; one empty piece
        // for an empty dimension
        let mut sizes = vec![split_size; size / split_size];
        if size % split_size != 0 || size == 0 {
            sizes.push(size % split_size);
        }
        check("split", x.split(split_size, sd).or_fail("split")?, &sizes)?;
        // torch.chunk: pieces of ceil(size / chunks); `chunks` empty pieces when size is 0
        let sizes = if size == 0 {
            vec![0; chunks]
        } else {
            let piece = size.div_ceil(chunks);
            let mut s = vec![piece; size / piece];
            if size % piece != 0 {
                s.push(size % piece);
            }
            s
        };
        check("chunk", x.chunk(chunks, sd).or_fail("chunk")?, &sizes)?;
        // split_with_sizes at arbitrary cut points
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (size + 1)).collect();
        points.sort_unstable();
        let mut sizes = Vec::new();
        let mut prev = 0;
        for &p in points.iter().chain(std::iter::once(&size)) {
            sizes.push(p - prev);
            prev = p;
        }
        check("split_with_sizes", x.split_with_sizes(&sizes, sd).or_fail("split_with_sizes")?, &sizes)?;
        let mut wrong = sizes.clone();
        wrong[0] += 1;
        let r = x.split_with_sizes(&wrong, sd);
        prop_assert!(matches!(r, Err(TensorError::Invalid { op: "split_with_sizes", .. })), "{r:?}");
        assert_err!(x.chunk(0, sd), TensorError::Invalid { op: "chunk", .. });
    }

    /// Constant `pad` with positive (pad) and negative (crop) amounts for the last
    /// dimensions equals the loop; PyTorch's rule for crops: each side may remove at most
    /// what is there, so `size + min(before, 0) + min(after, 0) >= 0`, else an error.
    #[test]
    fn pad_equals_loop(
        (shape, data, kind) in viewed(shape(1..=3)),
        amounts in prop::collection::vec(-3..=3isize, 6),
        pairs in 0..=3usize,
        value in -2.0..2.0f64,
    ) {
        let x = make_view::<f64>(&data, &shape, &kind);
        let n = shape.len();
        let pairs = pairs.min(n);
        let pads = &amounts[..2 * pairs];
        let mut out: Vec<isize> = shape.iter().map(|&s| s as isize).collect();
        let mut valid = true;
        let mut before = vec![0isize; n];
        for (k, pair) in pads.chunks(2).enumerate() {
            let d = n - 1 - k;
            let size = shape[d] as isize;
            valid &= size + pair[0].min(0) + pair[1].min(0) >= 0;
            out[d] = size + pair[0] + pair[1];
            before[d] = pair[0];
        }
        let r = x.pad(pads, value);
        if !valid {
            prop_assert!(matches!(r, Err(TensorError::Invalid { op: "pad", .. })), "pad({pads:?}) of {shape:?}: {r:?}");
            return Ok(());
        }
        let out: Vec<usize> = out.iter().map(|&s| s as usize).collect();
        let want: Vec<f64> = indices(&out)
            .map(|o| {
                let i: Vec<isize> = o.iter().zip(&before).map(|(&o, &b)| o as isize - b).collect();
                let inside = i.iter().zip(&shape).all(|(&i, &s)| i >= 0 && (i as usize) < s);
                if inside {
                    data[ravel(&i.iter().map(|&i| i as usize).collect::<Vec<_>>(), &shape)]
                } else {
                    value
                }
            })
            .collect();
        assert_tensor(&format!("pad({pads:?})"), &r.or_fail("pad")?, &out, &want, EXACT)?;
    }

    /// `repeat` tiles along each dimension, with new leading dimensions.
    #[test]
    fn repeat_equals_loop(
        (shape, data, kind) in viewed(shape(0..=3)),
        reps in prop::collection::vec(0..=3usize, 0..=2),
        inner in prop::collection::vec(0..=3usize, 3),
    ) {
        let x = make_view::<f64>(&data, &shape, &kind);
        let mut repeats = reps.clone();
        repeats.extend(&inner[..shape.len()]);
        let lead = reps.len();
        let padded: Vec<usize> = std::iter::repeat_n(1, lead).chain(shape.iter().copied()).collect();
        let out: Vec<usize> = repeats.iter().zip(&padded).map(|(r, s)| r * s).collect();
        let want = naive_map(&data, &shape, &out, |o| {
            o[lead..].iter().zip(&shape).map(|(&o, &s)| o % s).collect()
        });
        let got = x.repeat(&repeats).or_fail("repeat")?;
        assert_tensor(&format!("repeat({repeats:?})"), &got, &out, &want, EXACT)?;
        if !shape.is_empty() {
            let r = x.repeat(&repeats[lead + 1..]);
            prop_assert!(matches!(r, Err(TensorError::Invalid { op: "repeat", .. })), "{r:?}");
        }
    }

    /// `tril(k)` keeps `col - row <= k`, `triu(k)` keeps `col - row >= k`, over the last
    /// two dimensions of any batch, any layout; NaN outside the triangle does not leak.
    #[test]
    fn tril_triu_equal_loops(
        (shape, data, kind) in viewed(shape(2..=4)),
        diagonal in -7..=7isize,
        nan in any::<bool>(),
    ) {
        let data: Vec<f64> = if nan { data.iter().map(|&v| if v == 0.0 { f64::NAN } else { v }).collect() } else { data };
        let x = make_view::<f64>(&data, &shape, &kind);
        let n = shape.len();
        for (name, lower) in [("tril", true), ("triu", false)] {
            let want: Vec<f64> = indices(&shape)
                .zip(&data)
                .map(|(i, &v)| {
                    let off = i[n - 1] as isize - i[n - 2] as isize;
                    let keep = if lower { off <= diagonal } else { off >= diagonal };
                    if keep { v } else { 0.0 }
                })
                .collect();
            let got = if lower { x.tril(diagonal) } else { x.triu(diagonal) };
            assert_tensor(&format!("{name}({diagonal})"), &got.or_fail(name)?, &shape, &want, EXACT)?;
        }
    }
}

/// `torch.chunk` sizes by hand: 10 in 4 -> [3, 3, 3, 1]; 6 in 4 -> [2, 2, 2]; an empty
/// dimension in 3 -> three empty pieces.
#[test]
fn chunk_sizes_by_hand() {
    let sizes = |n: usize, c: usize| -> Vec<usize> {
        Tensor::<f64>::zeros(&[n, 2])
            .chunk(c, 0)
            .unwrap()
            .iter()
            .map(|p| p.shape()[0])
            .collect()
    };
    assert_eq!(sizes(10, 4), vec![3, 3, 3, 1]);
    assert_eq!(sizes(6, 4), vec![2, 2, 2]);
    assert_eq!(sizes(5, 1), vec![5]);
    assert_eq!(sizes(0, 3), vec![0, 0, 0]);
}
