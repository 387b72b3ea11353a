//! The layers of "PyTorch parity": transposed and 3-d convolutions, 3-d pools, RMSNorm,
//! instance norms, EmbeddingBag, Bilinear, Upsample, pixel shuffles, Unflatten and hooked
//! modules, each exported and run by tract at batch 3 and 5.

use strata_autograd::{ConvTransposeParams, Var};
use strata_nn::{
    AvgPool3d, BagMode, Bilinear, Conv3d, Conv3dParams, ConvTranspose1d, ConvTranspose2d,
    EmbeddingBag, Forward, Hooked, InstanceNorm1d, InstanceNorm2d, InstanceNormConfig,
    InterpolateMode, Linear, MaxPool3d, Module, PixelShuffle, PixelUnshuffle, Pool3dParams,
    RMSNorm, ReLU, Resize, Sequential, Unflatten, Upsample,
};
use strata_onnx::{Example, Export, ExportOptions, GraphInput, export_bilinear};
use strata_tensor::{IndexTensor, Tensor, seeded_rng};

use crate::common::{check_batches, check_inputs, float, floats};

fn check<M: Forward + Export>(what: &str, layer: &M, rest: &[usize]) -> Vec<u8> {
    check_batches(
        what,
        layer,
        |b| floats(b, rest),
        |x| layer.forward(&float(x)).expect("strata forward").value(),
        &ExportOptions::default(),
    )
}

#[test]
fn transposed_convolutions() {
    let mut rng = seeded_rng(40);
    let plain =
        ConvTranspose2d::new(3, 4, [3, 3], ConvTransposeParams::default(), true, &mut rng).unwrap();
    check("ConvTranspose2d", &plain, &[3, 5, 4]);
    let p = ConvTransposeParams {
        stride: [2, 3],
        padding: [1, 2],
        output_padding: [1, 2],
        dilation: [2, 1],
        groups: 2,
    };
    let fancy = ConvTranspose2d::new(4, 6, [3, 4], p, true, &mut rng).unwrap();
    check(
        "ConvTranspose2d strided padded dilated grouped",
        &fancy,
        &[4, 5, 6],
    );
    let p1 = ConvTransposeParams {
        stride: [2],
        padding: [1],
        output_padding: [1],
        dilation: [3],
        groups: 3,
    };
    let c1 = ConvTranspose1d::new(3, 6, [3], p1, false, &mut rng).unwrap();
    check("ConvTranspose1d", &c1, &[3, 7]);
}

#[test]
fn volumes_conv3d_and_pools() {
    let mut rng = seeded_rng(41);
    let conv = Conv3d::new(2, 4, [2, 3, 3], Conv3dParams::default(), true, &mut rng).unwrap();
    check("Conv3d", &conv, &[2, 4, 5, 5]);
    let p = Conv3dParams {
        stride: [2, 1, 2],
        padding: [1, 2, 1],
        dilation: [1, 2, 1],
        groups: 2,
    };
    let fancy = Conv3d::new(4, 6, [3, 2, 3], p, false, &mut rng).unwrap();
    check(
        "Conv3d strided padded dilated grouped",
        &fancy,
        &[4, 5, 6, 7],
    );
    check(
        "MaxPool3d",
        &MaxPool3d {
            params: Pool3dParams::new(2),
        },
        &[2, 4, 5, 6],
    );
    // tract's MaxPool ignores `dilations` (onnxruntime honours them: see the fixtures), so
    // the dilated pool is checked there.
    let p = Pool3dParams {
        kernel: [3, 2, 3],
        stride: [2, 1, 2],
        padding: [1, 1, 1],
        dilation: [1; 3],
        count_include_pad: true,
    };
    check("MaxPool3d padded", &MaxPool3d { params: p }, &[2, 5, 6, 7]);
    let avg = p;
    check(
        "AvgPool3d counting the padding",
        &AvgPool3d { params: avg },
        &[2, 5, 6, 7],
    );
    let exclusive = Pool3dParams {
        count_include_pad: false,
        ..avg
    };
    check(
        "AvgPool3d not counting the padding",
        &AvgPool3d { params: exclusive },
        &[2, 5, 6, 7],
    );
}

#[test]
fn rms_norm_and_instance_norms() {
    let mut rng = seeded_rng(42);
    let rms = RMSNorm::new(&[6]);
    rms.weight
        .as_ref()
        .unwrap()
        .set_value(Tensor::randn(&[6], &mut rng))
        .unwrap();
    check("RMSNorm (PyTorch's eps)", &rms, &[4, 6]);
    // Tiny inputs, where the eps matters.
    let x = |b: usize| {
        Example::Float(Tensor::randn(&[b, 2, 6], &mut seeded_rng(b as u64)).mul_scalar(1e-4))
    };
    check_batches(
        "RMSNorm small values",
        &rms,
        x,
        |x| rms.forward(&float(x)).unwrap().value(),
        &ExportOptions::default(),
    );
    let rms2 = RMSNorm::with_options(&[3, 4], Some(1e-3), false);
    check("RMSNorm over two dims, eps 1e-3", &rms2, &[3, 4]);

    check("InstanceNorm1d", &InstanceNorm1d::new(3), &[3, 7]);
    let affine = InstanceNormConfig {
        affine: true,
        ..InstanceNormConfig::default()
    };
    let inorm = InstanceNorm2d::with_config(3, affine);
    inorm
        .weight()
        .unwrap()
        .set_value(Tensor::randn(&[3], &mut rng))
        .unwrap();
    inorm
        .bias()
        .unwrap()
        .set_value(Tensor::randn(&[3], &mut rng))
        .unwrap();
    check("InstanceNorm2d affine", &inorm, &[3, 4, 5]);
    // Running statistics in eval mode: the instance's own statistics are not used.
    let tracked = InstanceNormConfig {
        affine: true,
        track_running_stats: true,
        ..InstanceNormConfig::default()
    };
    let mut running = InstanceNorm2d::with_config(3, tracked);
    for _ in 0..3 {
        running
            .forward(&Var::new(Tensor::randn(&[4, 3, 5, 5], &mut rng)))
            .unwrap();
    }
    running.eval();
    running
        .weight()
        .unwrap()
        .set_value(Tensor::randn(&[3], &mut rng))
        .unwrap();
    check("InstanceNorm2d running statistics", &running, &[3, 4, 5]);
    let mut running1 = InstanceNorm1d::with_config(3, tracked);
    running1
        .forward(&Var::new(Tensor::randn(&[4, 3, 6], &mut rng)))
        .unwrap();
    running1.eval();
    check("InstanceNorm1d running statistics", &running1, &[3, 6]);
}

fn bag_ids(batch: usize, len: usize, vocab: usize, pad: Option<usize>) -> Example {
    let mut data: Vec<i64> = (0..batch * len)
        .map(|i| ((i * 5 + batch * 3) % vocab) as i64)
        .collect();
    if let Some(p) = pad {
        // Some padding in each bag, and the last bag all padding (an empty bag).
        for b in 0..batch {
            data[b * len + len - 1] = p as i64;
        }
        data[(batch - 1) * len..].fill(p as i64);
    }
    Example::Index(IndexTensor::from_vec(data, &[batch, len]).unwrap())
}

#[test]
fn embedding_bags_sum_mean_max() {
    let mut rng = seeded_rng(43);
    for mode in [BagMode::Sum, BagMode::Mean, BagMode::Max] {
        for pad in [None, Some(2)] {
            let bag = EmbeddingBag::new(9, 4, mode, pad, &mut rng).unwrap();
            check_batches(
                &format!("EmbeddingBag {mode:?} padding_idx {pad:?}"),
                &bag,
                |b| bag_ids(b, 4, 9, pad),
                |x| match x {
                    Example::Index(ids) => bag.forward(ids, None, None).unwrap().value(),
                    _ => unreachable!(),
                },
                &ExportOptions::default(),
            );
        }
    }
}

#[test]
fn bilinear_takes_two_inputs() {
    let mut rng = seeded_rng(44);
    for (bias, rest) in [(true, vec![]), (false, vec![3])] {
        let layer = Bilinear::new(4, 5, 3, bias, &mut rng);
        let shape = |b: usize, f: usize| [&[b][..], &rest, &[f]].concat();
        check_inputs(
            &format!("Bilinear bias {bias} rank {}", rest.len() + 2),
            &[3, 5],
            |b| {
                let mut r = seeded_rng(b as u64);
                vec![
                    GraphInput::new("x1", Tensor::randn(&shape(b, 4), &mut r)),
                    GraphInput::new("x2", Tensor::randn(&shape(b, 5), &mut r)),
                ]
            },
            |g, xs| export_bilinear(&layer, g, &xs[0], &xs[1]),
            |xs| {
                layer
                    .forward(&float(&xs[0]), &float(&xs[1]))
                    .unwrap()
                    .value()
            },
        );
    }
}

#[test]
fn upsample_nearest_and_bilinear() {
    let cases = [
        (
            "nearest scale 2",
            Resize::Scale(vec![2.0]),
            InterpolateMode::Nearest,
        ),
        (
            "nearest scale (1.5, 3)",
            Resize::Scale(vec![1.5, 3.0]),
            InterpolateMode::Nearest,
        ),
        (
            "nearest size 7x9",
            Resize::Size(vec![7, 9]),
            InterpolateMode::Nearest,
        ),
        (
            "nearest size down 3x2",
            Resize::Size(vec![3, 2]),
            InterpolateMode::Nearest,
        ),
        (
            "bilinear scale 2",
            Resize::Scale(vec![2.0]),
            InterpolateMode::Linear {
                align_corners: false,
            },
        ),
        (
            "bilinear size 7x3",
            Resize::Size(vec![7, 3]),
            InterpolateMode::Linear {
                align_corners: false,
            },
        ),
        (
            "bilinear align_corners scale 2",
            Resize::Scale(vec![2.0]),
            InterpolateMode::Linear {
                align_corners: true,
            },
        ),
        (
            "bilinear align_corners size 7x9",
            Resize::Size(vec![7, 9]),
            InterpolateMode::Linear {
                align_corners: true,
            },
        ),
        (
            "bilinear align_corners size 1x3",
            Resize::Size(vec![1, 3]),
            InterpolateMode::Linear {
                align_corners: true,
            },
        ),
    ];
    for (what, resize, mode) in cases {
        check(
            &format!("Upsample {what}"),
            &Upsample { resize, mode },
            &[2, 4, 5],
        );
    }
    let linear1d = Upsample {
        resize: Resize::Scale(vec![2.5]),
        mode: InterpolateMode::Linear {
            align_corners: false,
        },
    };
    check("Upsample linear 1-d", &linear1d, &[2, 4]);
    let nearest3d = Upsample {
        resize: Resize::Scale(vec![2.0]),
        mode: InterpolateMode::Nearest,
    };
    check("Upsample nearest 3-d", &nearest3d, &[2, 2, 3, 2]);
}

#[test]
fn pixel_shuffles_and_unflatten() {
    check("PixelShuffle", &PixelShuffle::new(2).unwrap(), &[8, 3, 4]);
    check(
        "PixelUnshuffle",
        &PixelUnshuffle::new(3).unwrap(),
        &[2, 6, 9],
    );
    check(
        "PixelShuffle 5-d",
        &PixelShuffle::new(2).unwrap(),
        &[2, 4, 2, 3],
    );
    check("Unflatten", &Unflatten::new(1, &[3, -1]).unwrap(), &[12, 2]);
    check(
        "Unflatten last",
        &Unflatten::new(-1, &[2, 2, 3]).unwrap(),
        &[5, 12],
    );
}

#[test]
fn hooked_modules_export_their_inner_module() {
    let mut rng = seeded_rng(45);
    let hooked = Hooked::new(Linear::new(4, 3, true, &mut rng));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(0));
    let count = seen.clone();
    let _h = hooked.register_forward_hook(move |_, _| {
        *count.lock().unwrap() += 1;
        None
    });
    check("Hooked<Linear> with an observing hook", &hooked, &[4]);
    assert!(*seen.lock().unwrap() > 0);
    // Inside a Sequential, by the dispatch on concrete types.
    let model = Sequential::new()
        .push(Hooked::new(Linear::new(4, 3, true, &mut rng)))
        .push(ReLU);
    check("Sequential of Hooked<Linear>", &model, &[4]);
    assert_eq!(model.state_dict().keys().next(), Some("0.weight"));
}
