//! Hostile sizes through every constructor and shape-making op: shapes whose element count
//! wraps (`[3, K]` with `3·K` ≡ 2), counts that fit `usize` but no memory, zero sizes
//! beside huge ones, and extreme arguments (paddings of `isize::MIN`, kernels of 2^40).
//!
//! The property is the bar: never a crash (panic, abort, out-of-bounds read),
//! never a wrong shape. Each call either returns an error, or a tensor whose shape is the
//! one computed here independently with checked arithmetic, and whose last element can be
//! read (so its layout stays inside its storage). The sizes are drawn so that a count is
//! either small (at most 5^4 elements) or at least 2^58: beyond any address space, so an
//! allocation is refused at once and no test ever touches gigabytes.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use strata_tensor::{
    Conv2dParams, IndexTensor, Padding, Pool2dParams, SdpaParams, Tensor, TensorError,
    checked_numel, seeded_rng, with_allocation_limit,
};

/// A size: small, or large enough that any count holding it is huge or overflows.
fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..6,
        1 => Just(1usize << 58),
        1 => Just(1usize << 62),
        1 => Just(usize::MAX / 3 + 1), // 3 · this wraps to 2 (mod 2^64)
        1 => Just(isize::MAX as usize + 1),
        1 => Just(usize::MAX),
    ]
}

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(dim(), 0..5)
}

/// The element count of `shape` when it is a small tensor's.
fn small(shape: &[usize]) -> Option<usize> {
    checked_numel(shape).filter(|&n| n <= 1 << 16)
}

/// What a fallible call may return for `shape`: the tensor (small shapes), or the error
/// that says it cannot exist (anything else).
fn expect_sized<T: strata_tensor::Element>(
    what: &str,
    shape: &[usize],
    got: Result<Tensor<T>, TensorError>,
) -> Result<(), TestCaseError> {
    match (small(shape), got) {
        (Some(n), Ok(t)) => {
            prop_assert_eq!(t.shape(), shape, "{}", what);
            prop_assert_eq!(t.numel(), n);
            prop_assert_eq!(t.to_vec().len(), n);
        }
        (None, Err(TensorError::TooLarge { .. } | TensorError::OutOfMemory { .. })) => {}
        (expected, got) => {
            return Err(TestCaseError::fail(format!(
                "{what} of {shape:?} (small: {expected:?}) gave {:?}",
                got.map(|t| t.shape().to_vec())
            )));
        }
    }
    Ok(())
}

/// Runs `f`, turning a panic into a test failure that names `what` (proptest reports the
/// input): no hostile input may panic a fallible op.
fn no_panic<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, TestCaseError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        TestCaseError::fail(format!("{what} panicked: {msg}"))
    })
}

/// A view of `shape` over one element (stride 0 everywhere): no memory, any count that
/// `usize` can count.
fn broadcast_view(shape: &[usize]) -> Result<Tensor<f32>, TensorError> {
    Tensor::scalar(1.5f32).broadcast_to(shape)
}

/// Reads the first and last element of a view: both must be inside its storage.
fn touch_ends(t: &Tensor<f32>) -> Result<(), TestCaseError> {
    if t.numel() == 0 {
        return Ok(());
    }
    let first = vec![0; t.ndim()];
    let last: Vec<usize> = t.shape().iter().map(|&d| d - 1).collect();
    prop_assert!(t.get(&first).is_ok());
    prop_assert!(t.get(&last).is_ok());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// `from_vec`, `from_slice` and the fallible constructors: the right tensor or
    /// TooLarge / OutOfMemory (or DataLength for a buffer of the wrong length), never a
    /// tensor whose count wrapped to the buffer's length.
    #[test]
    fn constructors_refuse_impossible_shapes(shape in shape(), len in 0usize..8) {
        let data = vec![0.5f32; len];
        let r = no_panic("from_vec", || Tensor::from_vec(data.clone(), &shape))?;
        match (checked_numel(&shape), r) {
            (Some(n), Ok(t)) => {
                prop_assert_eq!(n, len);
                prop_assert_eq!(t.shape(), &shape[..]);
            }
            (Some(n), Err(TensorError::DataLength { .. })) => prop_assert_ne!(n, len),
            (Some(_), Err(TensorError::TooLarge { .. })) => {}
            (None, Err(TensorError::TooLarge { .. })) => {}
            (c, r) => prop_assert!(false, "from_vec {:?} (count {:?}): {:?}", shape, c, r.map(|t| t.shape().to_vec())),
        }
        let r = no_panic("from_slice", || Tensor::from_slice(&data, &shape))?;
        prop_assert!(r.map_or(true, |t| t.shape() == &shape[..] && t.numel() == len));
        let r = no_panic("IndexTensor::from_vec", || IndexTensor::from_vec(vec![0; len], &shape))?;
        prop_assert!(r.map_or(true, |t| t.shape() == &shape[..] && t.numel() == len));

        expect_sized("try_zeros", &shape, no_panic("try_zeros", || Tensor::<f32>::try_zeros(&shape))?)?;
        expect_sized("try_full", &shape, no_panic("try_full", || Tensor::<f64>::try_full(&shape, 2.0))?)?;
        let mut rng = seeded_rng(1);
        expect_sized("uniform", &shape, no_panic("uniform", || Tensor::<f32>::uniform(&shape, 0.0, 1.0, &mut rng))?)?;
        expect_sized("normal", &shape, no_panic("normal", || Tensor::<f64>::normal(&shape, 0.0, 1.0, &mut rng))?)?;
        expect_sized("bernoulli", &shape, no_panic("bernoulli", || Tensor::<f32>::bernoulli(&shape, 0.5, &mut rng))?)?;
    }

    /// The infallible constructors panic on shapes that cannot exist — with a message that
    /// names the op and the shape — and never return a tensor of another size.
    #[test]
    fn infallible_constructors_panic_clearly(shape in shape()) {
        let outcomes: [(&str, std::thread::Result<Tensor<f32>>); 4] = [
            ("zeros", std::panic::catch_unwind(|| Tensor::<f32>::zeros(&shape))),
            ("ones", std::panic::catch_unwind(|| Tensor::<f32>::ones(&shape))),
            ("rand", std::panic::catch_unwind(|| Tensor::<f32>::rand(&shape, &mut seeded_rng(0)))),
            ("randn", std::panic::catch_unwind(|| Tensor::<f32>::randn(&shape, &mut seeded_rng(0)))),
        ];
        for (op, outcome) in outcomes {
            match (small(&shape), outcome) {
                (Some(n), Ok(t)) => {
                    prop_assert_eq!(t.shape(), &shape[..]);
                    prop_assert_eq!(t.to_vec().len(), n);
                }
                (None, Err(panic)) => {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_default();
                    prop_assert!(
                        msg.contains(op) || msg.contains("refused"),
                        "{} of {:?}: {}", op, shape, msg
                    );
                }
                (c, o) => prop_assert!(false, "{} of {:?} (small {:?}): {:?}", op, shape, c, o.map(|t| t.shape().to_vec())),
            }
        }
    }

    /// Views of hostile shapes over one element: refused when the count overflows,
    /// otherwise a view of exactly that shape whose ends can be read.
    #[test]
    fn views_never_wrap(target in shape(), spec in prop::collection::vec(prop_oneof![
        Just(-1isize), Just(-7isize), 0isize..4, Just(isize::MAX), Just(isize::MIN),
        Just(1isize << 40)], 0..5))
    {
        match no_panic("broadcast_to", || broadcast_view(&target))? {
            Ok(v) => {
                prop_assert_eq!(v.shape(), &target[..]);
                prop_assert!(checked_numel(&target).is_some());
                touch_ends(&v)?;
            }
            Err(TensorError::TooLarge { .. }) => prop_assert!(checked_numel(&target).is_none()),
            Err(e) => prop_assert!(false, "broadcast_to {:?}: {}", target, e),
        }
        let base = Tensor::from_vec((0..6).map(|i| i as f32).collect(), &[2, 3]).unwrap();
        let r = no_panic("reshape", || base.reshape(&spec))?;
        if let Ok(v) = r {
            prop_assert_eq!(v.numel(), 6);
            prop_assert_eq!(v.to_vec(), base.to_vec());
        }
        let r = no_panic("expand", || Tensor::scalar(2.0f32).reshape([1, 1]).unwrap().expand(&spec))?;
        if let Ok(v) = r {
            prop_assert_eq!(v.ndim(), spec.len());
            touch_ends(&v)?;
        }
    }

    /// Slicing with extreme starts, lengths and steps stays inside the tensor.
    #[test]
    fn slices_stay_inside(
        start in prop_oneof![Just(isize::MIN), Just(isize::MAX), -9isize..9],
        end in prop_oneof![Just(isize::MIN), Just(isize::MAX), -9isize..9],
        step in prop_oneof![Just(usize::MAX), Just(0usize), 1usize..5],
        nstart in prop_oneof![Just(usize::MAX), 0usize..9],
        nlen in prop_oneof![Just(usize::MAX), 0usize..9],
        index in prop_oneof![Just(isize::MIN), Just(isize::MAX), -9isize..9],
    ) {
        let t = Tensor::from_vec((0..24).map(|i| i as f32).collect(), &[4, 6]).unwrap();
        let t = t.transpose(0, 1).unwrap(); // [6, 4], strided
        for dim in [0isize, 1, -1] {
            if let Ok(v) = no_panic("slice", || t.slice(dim, start, end, step))? {
                touch_ends(&v)?;
                prop_assert!(v.numel() <= 24);
            }
            if let Ok(v) = no_panic("narrow", || t.narrow(dim, nstart, nlen))? {
                prop_assert_eq!(v.shape()[dim.rem_euclid(2) as usize], nlen);
                touch_ends(&v)?;
            }
            if let Ok(v) = no_panic("select", || t.select(dim, index))? {
                prop_assert_eq!(v.ndim(), 1);
                touch_ends(&v)?;
            }
        }
    }

    /// `repeat` and `pad`: refused when the result cannot exist, otherwise the result has
    /// the shape computed here.
    #[test]
    fn repeat_and_pad_check_their_sizes(
        repeats in prop::collection::vec(dim(), 2..4),
        pads in prop::collection::vec(prop_oneof![
            4 => -3isize..4, 1 => Just(isize::MAX), 1 => Just(isize::MIN),
            1 => Just(isize::MAX / 2), 1 => Just(1isize << 60)], 0..5),
    ) {
        let t = Tensor::from_vec((0..6).map(|i| i as f32).collect(), &[2, 3]).unwrap();
        let expected: Option<Vec<usize>> = {
            let lead = repeats.len() - 2;
            let padded: Vec<usize> = std::iter::repeat_n(1, lead).chain([2, 3]).collect();
            repeats.iter().zip(&padded).map(|(r, s)| r.checked_mul(*s)).collect()
        };
        let r = no_panic("repeat", || t.repeat(&repeats))?;
        match (expected.as_deref().and_then(small).map(|_| expected.clone().unwrap()), r) {
            (Some(shape), Ok(y)) => {
                prop_assert_eq!(y.shape(), &shape[..]);
                prop_assert_eq!(y.to_vec().len(), checked_numel(&shape).unwrap());
            }
            (None, Err(TensorError::TooLarge { .. } | TensorError::OutOfMemory { .. })) => {}
            (s, r) => prop_assert!(false, "repeat {:?}: expected {:?}, got {:?}", repeats, s, r.map(|y| y.shape().to_vec())),
        }

        let r = no_panic("pad", || t.pad(&pads, 0.0))?;
        if let Ok(y) = r {
            // Recompute each padded size in i128, where nothing overflows.
            let mut shape: Vec<i128> = vec![2, 3];
            for (k, pair) in pads.chunks(2).enumerate() {
                let d = 1 - k;
                shape[d] += pair[0] as i128 + pair[1] as i128;
            }
            let shape: Vec<usize> = shape.iter().map(|&s| s as usize).collect();
            prop_assert_eq!(y.shape(), &shape[..]);
            prop_assert_eq!(y.to_vec().len(), checked_numel(&shape).unwrap());
        }
    }

    /// Binary ops, `matmul`, `cat`, `index_select` and `one_hot` on huge broadcast views
    /// and empty tensors with huge sizes: the result exists with the right shape, or the
    /// op says it cannot.
    #[test]
    fn ops_on_huge_views_refuse_or_fit(
        a in prop::collection::vec(dim(), 1..4),
        b in prop::collection::vec(dim(), 1..4),
        classes in prop_oneof![0usize..4, Just(1usize << 58), Just(usize::MAX)],
    ) {
        let (Ok(x), Ok(y)) = (broadcast_view(&a), broadcast_view(&b)) else {
            return Ok(());
        };
        let r = no_panic("add", || x.add(&y))?;
        let bshape = strata_tensor::broadcast_shapes("add", &a, &b);
        match (bshape, r) {
            (Ok(s), Ok(z)) => {
                prop_assert_eq!(z.shape(), &s[..]);
                prop_assert!(small(&s).is_some(), "a huge sum was allocated: {:?}", s);
            }
            (Ok(s), Err(TensorError::TooLarge { .. } | TensorError::OutOfMemory { .. })) => {
                prop_assert!(small(&s).is_none());
            }
            (Err(_), Err(TensorError::Broadcast { .. } | TensorError::TooLarge { .. })) => {}
            (s, r) => prop_assert!(false, "add {:?} + {:?}: {:?} vs {:?}", a, b, s, r.map(|z| z.shape().to_vec())),
        }
        // A product over a huge inner dimension is a legal request for 2^58 and more
        // multiply-adds (a broadcast view's dot product): it runs, it does not fail. Only
        // products whose work is small or whose result cannot exist are drawn here.
        let inner = *a.last().unwrap();
        let out_small = {
            let (ba, bb) = (&a[..a.len().saturating_sub(2)], &b[..b.len().saturating_sub(2)]);
            let mut s = strata_tensor::broadcast_shapes("matmul", ba, bb).unwrap_or_default();
            if a.len() > 1 {
                s.push(a[a.len() - 2]);
            }
            if b.len() > 1 {
                s.push(b[b.len() - 1]);
            }
            small(&s).is_some()
        };
        if inner <= 5 || !out_small {
            let r = no_panic("matmul", || x.matmul(&y))?;
            if let Ok(z) = r {
                prop_assert!(small(z.shape()).is_some());
                prop_assert_eq!(z.to_vec().len(), z.numel());
            }
        }
        let r = no_panic("cat", || Tensor::cat(&[&x, &x], 0))?;
        if let Ok(z) = r {
            let mut s = a.clone();
            s[0] *= 2;
            prop_assert_eq!(z.shape(), &s[..]);
        }
        let idx = IndexTensor::from_indices(&[0, 0, 0]);
        let r = no_panic("index_select", || x.index_select(-1, &idx))?;
        if let Ok(z) = r {
            let mut s = a.clone();
            *s.last_mut().unwrap() = 3;
            prop_assert_eq!(z.shape(), &s[..]);
        }
        let r = no_panic("one_hot", || Tensor::<f32>::one_hot(&IndexTensor::from_indices(&[0, 1]), Some(classes)))?;
        match r {
            Ok(z) => prop_assert_eq!(z.shape(), &[2, classes][..]),
            Err(TensorError::Index { .. } | TensorError::TooLarge { .. } | TensorError::OutOfMemory { .. }) => {}
            Err(e) => prop_assert!(false, "one_hot {}: {}", classes, e),
        }
    }

    /// Convolution and pooling with hostile padding, stride, dilation, groups and kernels:
    /// a result of the size the formulas give, or an error — never an index outside the
    /// input, never a loop as long as the padding.
    #[test]
    fn conv_and_pool_take_hostile_settings(
        padding in prop_oneof![0usize..3, Just(1usize << 40), Just(usize::MAX / 2), Just(usize::MAX)],
        stride in prop_oneof![0usize..3, Just(usize::MAX)],
        dilation in prop_oneof![0usize..3, Just(1usize << 40), Just(usize::MAX)],
        groups in prop_oneof![0usize..3, Just(usize::MAX / 2 + 1), Just(usize::MAX)],
        kernel in prop_oneof![1usize..4, Just(1usize << 40), Just(usize::MAX)],
    ) {
        let x = Tensor::<f32>::ones(&[1, 2, 5, 5]);
        let w = Tensor::<f32>::ones(&[2, 2, 3, 3]);
        let p = Conv2dParams {
            stride: [stride, 1],
            padding: Padding::Explicit([padding, 0]),
            dilation: [dilation, 1],
            groups,
        };
        let r = no_panic("conv2d", || x.conv2d(&w, None, p))?;
        if let Ok(y) = r {
            prop_assert_eq!(y.to_vec().len(), y.numel());
            prop_assert!(y.numel() <= 1 << 16);
        }
        let pool = Pool2dParams {
            kernel: [kernel, 2],
            stride: [stride, 1],
            padding: [padding, 0],
            dilation: [dilation, 1],
            ceil_mode: stride % 2 == 1,
            count_include_pad: true,
            divisor_override: None,
        };
        if let Ok((y, i)) = no_panic("max_pool2d", || x.max_pool2d(pool))? {
            prop_assert_eq!(y.shape(), i.shape());
            prop_assert!(y.numel() <= 1 << 16);
        }
        if let Ok(y) = no_panic("avg_pool2d", || x.avg_pool2d(pool))? {
            prop_assert!(y.numel() <= 1 << 16);
        }
        if let Ok(y) = no_panic("adaptive_avg_pool2d", || x.adaptive_avg_pool2d([kernel, 1]))? {
            prop_assert_eq!(y.shape(), &[1, 2, kernel, 1][..]);
        }
    }

    /// `arange`, `linspace` and `eye` with counts no memory holds.
    #[test]
    fn ranges_refuse_impossible_counts(
        end in prop_oneof![Just(1e300f64), Just(f64::MAX), Just(4.0), Just(1e19)],
        step in prop_oneof![Just(1e-300f64), Just(1.0), Just(f64::MIN_POSITIVE)],
        n in dim(),
        m in dim(),
    ) {
        match no_panic("arange", || Tensor::<f32>::arange(-end, end, step))? {
            Ok(t) => prop_assert!(t.numel() <= 1 << 16),
            Err(TensorError::TooLarge { .. } | TensorError::OutOfMemory { .. }) => {}
            Err(e) => prop_assert!(false, "arange: {}", e),
        }
        expect_sized("linspace", &[n], no_panic("linspace", || Tensor::<f32>::linspace(0.0, 1.0, n))?)?;
        expect_sized("eye", &[n, m], no_panic("eye", || Tensor::<f64>::eye(n, m))?)?;
    }
}

/// The input that once read out of bounds: `[3, K]` whose count wraps to 2, times a
/// matrix. Every way to make such a tensor is now refused.
#[test]
fn the_wrapping_matmul_is_refused_at_construction() {
    let k = usize::MAX / 3 + 1;
    assert_eq!(3usize.wrapping_mul(k), 2, "3·K wraps to 2");
    let shape = [3, k];
    assert!(matches!(
        Tensor::from_vec(vec![1.0f32; 2], &shape),
        Err(TensorError::TooLarge { op: "from_vec", .. })
    ));
    assert!(matches!(
        Tensor::<f32>::try_zeros(&shape),
        Err(TensorError::TooLarge { op: "zeros", .. })
    ));
    let panic = std::panic::catch_unwind(|| Tensor::<f32>::zeros(&shape)).unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(msg.starts_with("zeros: a tensor of shape"), "{msg}");
    assert!(
        Tensor::<f32>::ones(&[2, 2])
            .expand(&[3, k as isize])
            .is_err()
    );
}

/// `[2^40, 0] @ [0, 2^40]` multiplies two empty tensors into one no memory holds.
#[test]
fn an_empty_product_with_a_huge_result_is_refused() {
    let a = Tensor::<f32>::zeros(&[0])
        .broadcast_to(&[1 << 40, 0])
        .unwrap();
    let b = Tensor::<f32>::zeros(&[0, 1]).expand(&[0, 1 << 40]).unwrap();
    assert!(matches!(
        a.matmul(&b),
        Err(TensorError::TooLarge { op: "matmul", .. } | TensorError::OutOfMemory { .. })
    ));
}

/// An infallible op whose result no memory holds panics with the size; it does not abort.
#[test]
fn an_impossible_unary_result_panics_with_its_size() {
    let huge = Tensor::scalar(1.0f32).broadcast_to(&[1 << 58]).unwrap();
    let panic = std::panic::catch_unwind(|| huge.relu()).unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(msg.contains("refused"), "{msg}");
    // Scaled dot-product attention over a broadcast batch of 2^58 matrices.
    let q = Tensor::<f32>::ones(&[1, 2, 2])
        .expand(&[1 << 58, 2, 2])
        .unwrap();
    assert!(matches!(
        q.sdpa(&q, &q, None, None, SdpaParams::new(2), false),
        Err(TensorError::TooLarge { .. } | TensorError::OutOfMemory { .. })
    ));
}

/// Under `with_allocation_limit`, every way of asking too much is refused and caught: an
/// allocation past the limit, a shape whose count wraps (an infallible constructor, which
/// must panic, panics with the limit's payload, so the caller gets an error, not a crash),
/// and a fallible constructor's `OutOfMemory`.
#[test]
fn allocation_limits_catch_uncountable_shapes() {
    let limit = 1 << 20;
    let wrapping = [3, usize::MAX / 3 + 1];
    type Case = Box<dyn Fn() + std::panic::RefUnwindSafe>;
    let cases: [(&str, Case); 4] = [
        (
            "zeros past the limit",
            Box::new(|| drop(Tensor::<f32>::zeros(&[1 << 20]))),
        ),
        (
            "zeros, wrapping",
            Box::new(move || drop(Tensor::<f32>::zeros(&wrapping))),
        ),
        (
            "randn, wrapping",
            Box::new(move || drop(Tensor::<f64>::randn(&wrapping, &mut seeded_rng(0)))),
        ),
        (
            "full, count beyond isize",
            Box::new(|| drop(Tensor::<f32>::full(&[1 << 62], 1.0))),
        ),
    ];
    for (what, f) in cases {
        let err = with_allocation_limit(limit, f).expect_err(what);
        assert_eq!(err.limit, limit, "{what}");
        assert!(err.requested > limit, "{what}: {err}");
    }
    let refused = with_allocation_limit(limit, || Tensor::<f32>::try_zeros(&wrapping)).unwrap();
    assert!(
        matches!(refused, Err(TensorError::TooLarge { op: "zeros", .. })),
        "{refused:?}"
    );
    let refused = with_allocation_limit(limit, || {
        Tensor::<f32>::uniform(&[1 << 20], -1.0, 1.0, &mut seeded_rng(0))
    })
    .unwrap();
    assert!(
        matches!(refused, Err(TensorError::OutOfMemory { op: "uniform", .. })),
        "{refused:?}"
    );
    // What fits is made, and the limit is per call.
    let small = with_allocation_limit(limit, || Tensor::<f32>::zeros(&[1000]).numel());
    assert_eq!(small, Ok(1000));
    assert_eq!(Tensor::<f32>::zeros(&[1 << 20]).numel(), 1 << 20);
}

/// The case proptest once drew from `conv_and_pool_take_hostile_settings`: a padding of
/// 2^40 rows makes an output of 52 TB from a 5×5 input. conv2d returns errors, so the
/// allocation (and the im2col scratch's) is fallible: an error, not a panic.
#[test]
fn a_padding_of_2_40_is_an_error_not_a_panic() {
    let x = Tensor::<f32>::ones(&[1, 2, 5, 5]);
    for kernel in [1, 3] {
        let w = Tensor::<f32>::ones(&[2, 2, kernel, kernel]);
        let p = Conv2dParams {
            padding: Padding::Explicit([1 << 40, 0]),
            ..Conv2dParams::default()
        };
        let r = std::panic::catch_unwind(|| x.conv2d(&w, None, p)).expect("conv2d panicked");
        assert!(
            matches!(
                r,
                Err(TensorError::OutOfMemory { op: "conv2d", .. } | TensorError::TooLarge { .. })
            ),
            "kernel {kernel}: {r:?}"
        );
    }
}

/// A transposed convolution is conv2d's input gradient taken as an op: its output size
/// comes from the stride, so a stride of 2^40 asks for terabytes. An error, not a panic.
#[test]
fn an_input_gradient_of_terabytes_is_an_error() {
    let gy = Tensor::<f32>::ones(&[1, 2, 3, 3]);
    let w = Tensor::<f32>::ones(&[2, 2, 1, 1]);
    let p = Conv2dParams {
        stride: [1 << 40, 1],
        ..Conv2dParams::default()
    };
    let input = [1, 2, 2 * (1 << 40) + 1, 3];
    let r = std::panic::catch_unwind(|| Tensor::conv2d_backward_input(&gy, &w, &input, p))
        .expect("conv2d_backward_input panicked");
    assert!(
        matches!(
            r,
            Err(TensorError::OutOfMemory { .. } | TensorError::TooLarge { .. })
        ),
        "{r:?}"
    );
}
