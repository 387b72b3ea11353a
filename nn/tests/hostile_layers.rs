//! Hostile settings and inputs through the layers added for PyTorch parity: strides,
//! paddings, dilations, groups, output paddings and kernels at the ends of `usize`;
//! EmbeddingBag offsets and indices that do not fit; interpolation sizes and scales no
//! memory holds (or NaN); shuffle factors, unflatten sizes and group counts that do not
//! divide; a key/value cache fed inputs of another width. Each call returns an error or a
//! small result — never a panic, never an allocation past the limit.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use strata_autograd::{ConvTransposeParams, Var};
use strata_nn::functional::interpolate;
use strata_nn::{
    AvgPool3d, BagMode, Conv3d, Conv3dParams, ConvTranspose2d, DecoderCache, EmbeddingBag, Forward,
    GroupNorm, InterpolateMode, MaxPool3d, PixelShuffle, PixelUnshuffle, Pool3dParams, Resize,
    TransformerDecoder, TransformerEncoderLayerConfig, Unflatten,
};
use strata_tensor::{IndexTensor, Tensor, seeded_rng, with_allocation_limit};

/// Runs `f` under a 64 MiB allocation budget, failing the case on a panic or an
/// allocation past it.
fn bounded<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, TestCaseError> {
    with_allocation_limit(64 << 20, f).map_err(|e| TestCaseError::fail(format!("{what}: {e:?}")))
}

/// A setting: small, or at the ends of `usize`.
fn setting() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..4,
        1 => Just(1usize << 40),
        1 => Just(usize::MAX / 2 + 1),
        1 => Just(usize::MAX),
    ]
}

fn ones(shape: &[usize]) -> Var {
    Var::new(Tensor::ones(shape))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Conv3d, the 3-d pools and ConvTranspose2d with hostile settings.
    #[test]
    fn volume_and_transposed_layers_take_hostile_settings(
        stride in setting(), padding in setting(), dilation in setting(), groups in setting(),
        kernel in setting(), output_padding in setting(),
    ) {
        let mut rng = seeded_rng(0);
        let x = ones(&[1, 2, 4, 4, 4]);
        let params = Conv3dParams { stride: [stride, 1, 1], padding: [padding, 0, 0], dilation: [dilation, 1, 1], groups };
        if let Ok(conv) = bounded("Conv3d::new", || Conv3d::new(2, 2, [kernel.min(1 << 20), 1, 1], params, true, &mut rng))?
            && let Ok(y) = bounded("Conv3d forward", || conv.forward(&x))? {
                prop_assert!(y.numel() <= 1 << 16);
            }
        let pool = Pool3dParams { kernel: [kernel, 2, 2], stride: [stride, 2, 2], padding: [padding, 0, 0], dilation: [dilation, 1, 1], count_include_pad: stride % 2 == 0 };
        if let Ok(y) = bounded("MaxPool3d", || MaxPool3d { params: pool }.forward(&x))? {
            prop_assert!(y.numel() <= 1 << 16);
        }
        if let Ok(y) = bounded("AvgPool3d", || AvgPool3d { params: pool }.forward(&x))? {
            prop_assert!(y.numel() <= 1 << 16);
        }
        let tp = ConvTransposeParams { stride: [stride, 1], padding: [padding, 0], output_padding: [output_padding, 0], dilation: [dilation, 1], groups };
        let x2 = ones(&[1, 2, 3, 3]);
        if let Ok(layer) = bounded("ConvTranspose2d::new", || ConvTranspose2d::new(2, 2, [kernel.min(1 << 20), 2], tp, true, &mut rng))?
            && let Ok(y) = bounded("ConvTranspose2d forward", || layer.forward(&x2))? {
                prop_assert!(y.numel() <= 1 << 16);
            }
    }

    /// EmbeddingBag with offsets that are not increasing, start past the input or are
    /// negative, indices outside the table, and weights of another length.
    #[test]
    fn embedding_bag_takes_hostile_offsets(
        idx in prop::collection::vec(prop_oneof![0i64..5, Just(-1i64), Just(i64::MAX), Just(i64::MIN)], 0..6),
        offsets in prop::collection::vec(prop_oneof![0i64..7, Just(-3i64), Just(i64::MAX)], 0..4),
        mode in prop_oneof![Just(BagMode::Sum), Just(BagMode::Mean), Just(BagMode::Max)],
        weights in prop::option::of(0usize..7),
        two_d in any::<bool>(),
    ) {
        let bag = EmbeddingBag::new(5, 3, mode, Some(0), &mut seeded_rng(0)).unwrap();
        let n = idx.len();
        let input = if two_d && n % 2 == 0 && n > 0 {
            IndexTensor::from_vec(idx, &[2, n / 2]).unwrap()
        } else {
            IndexTensor::from_vec(idx, &[n]).unwrap()
        };
        let offsets = IndexTensor::from_vec(offsets.clone(), &[offsets.len()]).unwrap();
        let w = weights.map(|k| ones(&[k]));
        let r = bounded("EmbeddingBag", || bag.forward(&input, Some(&offsets), w.as_ref()))?;
        if let Ok(y) = r {
            prop_assert_eq!(y.shape()[1], 3);
            prop_assert!(y.numel() <= 64);
        }
        if let Ok(y) = bounded("EmbeddingBag without offsets", || bag.forward(&input, None, None))? {
            prop_assert!(y.numel() <= 64);
        }
    }

    /// interpolate to sizes and by scales no memory holds (and NaN or negative scales),
    /// PixelShuffle/Unshuffle factors that do not divide, Unflatten sizes and GroupNorm
    /// groups that do not fit.
    #[test]
    fn resampling_and_reshaping_take_hostile_sizes(
        size in setting(),
        scale in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-2.0), Just(0.0), Just(1e30), 0.1f64..3.0],
        linear in any::<bool>(), corners in any::<bool>(),
        factor in setting(), groups in setting(),
        sizes in prop::collection::vec(prop_oneof![Just(-1isize), Just(-2isize), 0isize..5, Just(isize::MAX)], 0..4),
    ) {
        let x = ones(&[1, 2, 4, 4]);
        let mode = if linear { InterpolateMode::Linear { align_corners: corners } } else { InterpolateMode::Nearest };
        if let Ok(y) = bounded("interpolate size", || interpolate(&x, &Resize::Size(vec![size, 2]), mode))? {
            prop_assert_eq!(y.shape(), &[1, 2, size, 2][..]);
        }
        if let Ok(y) = bounded("interpolate scale", || interpolate(&x, &Resize::Scale(vec![scale]), mode))? {
            prop_assert!(y.numel() <= 1 << 20);
        }
        if let Ok(p) = bounded("PixelShuffle::new", || PixelShuffle::new(factor))?
            && let Ok(y) = bounded("PixelShuffle", || p.forward(&ones(&[1, 4, 2, 2])))? {
                prop_assert_eq!(y.numel(), 16);
            }
        if let Ok(p) = bounded("PixelUnshuffle::new", || PixelUnshuffle::new(factor))?
            && let Ok(y) = bounded("PixelUnshuffle", || p.forward(&ones(&[1, 1, 4, 4])))? {
                prop_assert_eq!(y.numel(), 16);
            }
        if let Ok(u) = bounded("Unflatten::new", || Unflatten::new(1, &sizes))?
            && let Ok(y) = bounded("Unflatten", || u.forward(&ones(&[2, 6])))? {
                prop_assert_eq!(y.numel(), 12);
            }
        if let Ok(g) = bounded("GroupNorm::new", || GroupNorm::new(groups, 4))?
            && let Ok(y) = bounded("GroupNorm", || g.forward(&ones(&[2, 4, 3])))? {
                prop_assert_eq!(y.shape(), &[2, 4, 3][..]);
            }
    }
}

/// Incremental decoding fed a step of another width, another batch or a memory of
/// another width than the cache holds: errors, and the cache stays usable.
#[test]
fn a_decoder_cache_refuses_steps_that_do_not_fit() {
    let mut rng = seeded_rng(0);
    let config = TransformerEncoderLayerConfig::new(8, 2)
        .dim_feedforward(16)
        .dropout(0.0)
        .batch_first(true);
    let decoder = TransformerDecoder::<f32>::new(config, 2, true, &mut rng).unwrap();
    let memory = ones(&[2, 5, 8]);
    let mut cache = DecoderCache::new();
    let step = decoder
        .forward_incremental(&ones(&[2, 1, 8]), &memory, &mut cache, None)
        .unwrap();
    assert_eq!(step.shape(), &[2, 1, 8]);
    for (tgt, mem) in [
        (ones(&[2, 1, 6]), memory.clone()),
        (ones(&[3, 1, 8]), memory.clone()),
        (ones(&[2, 1]), memory.clone()),
        (ones(&[2, 1, 8]), ones(&[2, 5, 4])),
    ] {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decoder.forward_incremental(&tgt, &mem, &mut cache, None)
        }));
        assert!(
            matches!(r, Ok(Err(_))),
            "{:?} with memory {:?}",
            tgt.shape(),
            mem.shape()
        );
    }
    // The refused steps left nothing behind: the next step is the one a cache that never
    // saw them gives.
    let next = decoder
        .forward_incremental(&ones(&[2, 1, 8]), &memory, &mut cache, None)
        .unwrap();
    let mut clean = DecoderCache::new();
    decoder
        .forward_incremental(&ones(&[2, 1, 8]), &memory, &mut clean, None)
        .unwrap();
    let want = decoder
        .forward_incremental(&ones(&[2, 1, 8]), &memory, &mut clean, None)
        .unwrap();
    assert_eq!(next.value().to_vec(), want.value().to_vec());
}
