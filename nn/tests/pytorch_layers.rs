//! The layers added for PyTorch parity against fixtures of `tests/fixtures/generate.py`
//! (`parity_layers`): outputs, input and parameter gradients, buffers after the step.

use strata_autograd::Var;
use strata_nn::*;
use strata_tensor::{Tensor, seeded_rng};

use crate::pytorch_fixtures::{assert_close, check_layer, get, load};

#[test]
fn group_and_instance_norms() {
    check_layer("group_norm", &GroupNorm::<f64>::new(2, 6).unwrap());
    check_layer(
        "group_norm_plain_2d",
        &GroupNorm::<f64>::with_options(3, 3, 1e-3, false).unwrap(),
    );
    let tracked = InstanceNormConfig {
        affine: true,
        track_running_stats: true,
        momentum: 0.3,
        ..Default::default()
    };
    check_layer(
        "instance_norm1d_tracked",
        &InstanceNorm1d::<f64>::with_config(4, tracked),
    );
    check_layer("instance_norm2d", &InstanceNorm2d::<f64>::new(3));
    check_layer("instance_norm1d_unbatched", &InstanceNorm1d::<f64>::new(3));
    let mut eval = InstanceNorm2d::<f64>::with_config(
        2,
        InstanceNormConfig {
            track_running_stats: true,
            ..Default::default()
        },
    );
    eval.eval();
    check_layer("instance_norm2d_eval", &eval);
}

#[test]
fn rearranging_and_resampling_layers() {
    check_layer("unflatten", &Unflatten::new(1, &[2, -1]).unwrap());
    check_layer("pixel_shuffle", &PixelShuffle::new(2).unwrap());
    check_layer("pixel_unshuffle", &PixelUnshuffle::new(2).unwrap());
    let linear = |align_corners| InterpolateMode::Linear { align_corners };
    for (name, resize, mode) in [
        (
            "upsample_nearest_1d",
            Resize::Scale(vec![2.5]),
            InterpolateMode::Nearest,
        ),
        (
            "upsample_nearest_2d_size",
            Resize::Size(vec![5, 3]),
            InterpolateMode::Nearest,
        ),
        ("upsample_linear_1d", Resize::Size(vec![7]), linear(false)),
        ("upsample_bilinear", Resize::Scale(vec![1.5]), linear(false)),
        (
            "upsample_bilinear_corners",
            Resize::Size(vec![5, 2]),
            linear(true),
        ),
        (
            "upsample_bilinear_down",
            Resize::Size(vec![2, 3]),
            linear(false),
        ),
    ] {
        check_layer(name, &Upsample { resize, mode });
    }
}

#[test]
fn bilinear() {
    let sd = load("bilinear");
    let layer = Bilinear::<f64>::new(3, 4, 5, true, &mut seeded_rng(0));
    layer.weight.set_value(get(&sd, "p.weight")).unwrap();
    layer
        .bias
        .as_ref()
        .unwrap()
        .set_value(get(&sd, "p.bias"))
        .unwrap();
    let (x1, x2) = (
        Var::parameter(get(&sd, "x1")),
        Var::parameter(get(&sd, "x2")),
    );
    let y = layer.forward(&x1, &x2).unwrap();
    assert_close(&y.value(), &get(&sd, "y"), "bilinear output");
    y.mul(&Var::new(get(&sd, "proj")))
        .unwrap()
        .sum_all()
        .backward()
        .unwrap();
    assert_close(
        &x1.grad().unwrap(),
        &get(&sd, "grad_x1"),
        "bilinear x1 gradient",
    );
    assert_close(
        &x2.grad().unwrap(),
        &get(&sd, "grad_x2"),
        "bilinear x2 gradient",
    );
    assert_close(
        &layer.weight.grad().unwrap(),
        &get(&sd, "g.weight"),
        "bilinear weight gradient",
    );
    let b = layer.bias.as_ref().unwrap().grad().unwrap();
    assert_close(&b, &get(&sd, "g.bias"), "bilinear bias gradient");
    let bad = Var::new(Tensor::<f64>::zeros(&[2, 5, 3]));
    assert!(
        layer
            .forward(&bad, &x2)
            .unwrap_err()
            .to_string()
            .contains("leading dimensions")
    );
}

#[test]
fn configuration_and_input_errors() {
    assert!(GroupNorm::<f32>::new(4, 6).is_err() && GroupNorm::<f32>::new(0, 6).is_err());
    let gn = GroupNorm::<f32>::new(2, 6).unwrap();
    assert!(gn.forward(&Var::new(Tensor::zeros(&[2, 4, 3]))).is_err());
    let inorm = InstanceNorm2d::<f32>::new(3);
    assert!(inorm.forward(&Var::new(Tensor::zeros(&[3, 4, 5]))).is_ok()); // unbatched [C, H, W]
    assert!(inorm.forward(&Var::new(Tensor::zeros(&[3, 4]))).is_err());
    assert!(
        inorm
            .forward(&Var::new(Tensor::zeros(&[2, 3, 1, 1])))
            .is_err()
    ); // one value per channel
    assert!(Unflatten::new(1, &[-1, -1]).is_err());
    let u = Unflatten::new(1, &[4, 2]).unwrap();
    assert!(Forward::<f32>::forward(&u, &Var::new(Tensor::zeros(&[2, 6]))).is_err());
    assert!(PixelShuffle::new(0).is_err());
    let ps = PixelShuffle::new(2).unwrap();
    assert!(Forward::<f32>::forward(&ps, &Var::new(Tensor::zeros(&[1, 6, 2, 2]))).is_err());
    let up = Upsample {
        resize: Resize::Scale(vec![0.1]),
        mode: InterpolateMode::Nearest,
    };
    assert!(Forward::<f32>::forward(&up, &Var::new(Tensor::zeros(&[1, 1, 4]))).is_err()); // size 0
    let up = Upsample {
        resize: Resize::Scale(vec![f64::NAN]),
        mode: InterpolateMode::Nearest,
    };
    assert!(Forward::<f32>::forward(&up, &Var::new(Tensor::zeros(&[1, 1, 4]))).is_err());
    let up = Upsample {
        resize: Resize::Size(vec![2, 2]),
        mode: InterpolateMode::Nearest,
    };
    assert!(Forward::<f32>::forward(&up, &Var::new(Tensor::zeros(&[1, 1, 4]))).is_err());
}

#[test]
fn transposed_convolutions() {
    let mut rng = seeded_rng(0);
    let p2 = strata_autograd::ConvTransposeParams {
        stride: [2, 1],
        padding: [1, 0],
        output_padding: [1, 0],
        dilation: [1, 2],
        groups: 2,
    };
    check_layer(
        "conv_transpose2d",
        &ConvTranspose2d::<f64>::new(4, 6, [3, 2], p2, true, &mut rng).unwrap(),
    );
    let p = strata_autograd::ConvTransposeParams {
        stride: [3, 3],
        ..Default::default()
    };
    let layer = ConvTranspose2d::<f64>::new(3, 2, [3, 3], p, false, &mut rng).unwrap();
    check_layer("conv_transpose2d_unbatched", &layer);
    let p1 = strata_autograd::ConvTransposeParams {
        stride: [3],
        padding: [2],
        output_padding: [2],
        ..Default::default()
    };
    check_layer(
        "conv_transpose1d",
        &ConvTranspose1d::<f64>::new(2, 3, [4], p1, true, &mut rng).unwrap(),
    );
    let p1 = strata_autograd::ConvTransposeParams {
        stride: [2],
        padding: [1],
        output_padding: [2],
        dilation: [3],
        groups: 1,
    };
    let dilated = ConvTranspose1d::<f64>::new(2, 3, [3], p1, true, &mut rng).unwrap();
    check_layer("conv_transpose1d_dilated_op", &dilated);
    // Output padding must stay below the stride or the dilation; groups must divide.
    let bad = strata_autograd::ConvTransposeParams {
        stride: [2, 2],
        output_padding: [2, 0],
        ..Default::default()
    };
    let l = ConvTranspose2d::<f64>::new(2, 2, [3, 3], bad, true, &mut rng).unwrap();
    assert!(
        l.forward(&Var::new(Tensor::zeros(&[1, 2, 3, 3])))
            .unwrap_err()
            .to_string()
            .contains("output padding")
    );
    let g3 = strata_autograd::ConvTransposeParams {
        groups: 3,
        ..Default::default()
    };
    assert!(ConvTranspose2d::<f64>::new(4, 6, [3, 3], g3, true, &mut rng).is_err());
    assert!(
        layer
            .forward(&Var::new(Tensor::zeros(&[1, 2, 3, 3])))
            .is_err()
    ); // 2 channels, not 3
}

#[test]
fn one_dimensional_and_adaptive_max_pools() {
    let max = Pool1dParams {
        stride: 2,
        padding: 1,
        dilation: 2,
        ceil_mode: true,
        ..Pool1dParams::new(3)
    };
    check_layer("max_pool1d", &MaxPool1d { params: max });
    let avg = Pool1dParams {
        stride: 3,
        padding: 2,
        count_include_pad: false,
        ..Pool1dParams::new(4)
    };
    check_layer("avg_pool1d", &AvgPool1d { params: avg });
    check_layer(
        "avg_pool1d_unbatched",
        &AvgPool1d {
            params: Pool1dParams::new(2),
        },
    );
    check_layer(
        "adaptive_max_pool2d",
        &AdaptiveMaxPool2d {
            output_size: [3, 2],
        },
    );
    let bad = AdaptiveMaxPool2d {
        output_size: [0, 2],
    };
    assert!(Forward::<f32>::forward(&bad, &Var::new(Tensor::zeros(&[1, 2, 3, 3]))).is_err());
    let pool = MaxPool1d {
        params: Pool1dParams::new(2),
    };
    assert!(Forward::<f32>::forward(&pool, &Var::new(Tensor::zeros(&[1, 2, 3, 3]))).is_err());
}

#[test]
fn embedding_bags() {
    use crate::pytorch_fixtures::indices;
    let mut rng = seeded_rng(0);
    for (name, mode, padding, last) in [
        ("bag_sum_weighted", BagMode::Sum, None, false),
        ("bag_mean_padding_2d", BagMode::Mean, Some(2), false),
        ("bag_max_empty", BagMode::Max, None, false),
        ("bag_mean_last_offset", BagMode::Mean, None, true),
    ] {
        let sd = load(name);
        let mut bag = EmbeddingBag::<f64>::new(6, 3, mode, padding, &mut rng).unwrap();
        bag.include_last_offset = last;
        bag.weight.set_value(get(&sd, "p.weight")).unwrap();
        let input = indices(&get(&sd, "input"));
        let offsets = sd.get("offsets").map(indices);
        let psw = sd.get("psw").map(|w| Var::parameter(w.clone()));
        let y = bag.forward(&input, offsets.as_ref(), psw.as_ref()).unwrap();
        assert_close(&y.value(), &get(&sd, "y"), &format!("{name} output"));
        y.mul(&Var::new(get(&sd, "proj")))
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        assert_close(
            &bag.weight.grad().unwrap(),
            &get(&sd, "g.weight"),
            &format!("{name} weight gradient"),
        );
        if let Some(w) = psw {
            assert_close(
                &w.grad().unwrap(),
                &get(&sd, "grad_psw"),
                &format!("{name} weight-per-index gradient"),
            );
        }
    }
    let bag = EmbeddingBag::<f64>::new(6, 3, BagMode::Mean, None, &mut rng).unwrap();
    let input = strata_tensor::IndexTensor::from_vec(vec![1, 2, 9], &[3]).unwrap();
    let offsets = strata_tensor::IndexTensor::from_vec(vec![0, 2], &[2]).unwrap();
    assert!(bag.forward(&input, Some(&offsets), None).is_err()); // index 9 of 6
    let backwards = strata_tensor::IndexTensor::from_vec(vec![0, 2, 1], &[3]).unwrap();
    let input = strata_tensor::IndexTensor::from_vec(vec![1, 2, 3], &[3]).unwrap();
    assert!(
        bag.forward(&input, Some(&backwards), None)
            .unwrap_err()
            .to_string()
            .contains("non-decreasing")
    );
    let w = Var::new(Tensor::ones(&[3]));
    assert!(
        bag.forward(&input, Some(&offsets), Some(&w))
            .unwrap_err()
            .to_string()
            .contains("Sum mode")
    );
}

#[test]
fn volumetric_layers() {
    let mut rng = seeded_rng(0);
    let p = Conv3dParams {
        stride: [2, 1, 1],
        padding: [1, 0, 1],
        dilation: [1, 1, 2],
        groups: 1,
    };
    check_layer(
        "conv3d",
        &Conv3d::<f64>::new(2, 4, [2, 3, 2], p, true, &mut rng).unwrap(),
    );
    let g = Conv3dParams {
        groups: 2,
        ..Default::default()
    };
    check_layer(
        "conv3d_groups_unbatched",
        &Conv3d::<f64>::new(4, 2, [2, 2, 2], g, false, &mut rng).unwrap(),
    );
    let max = Pool3dParams {
        kernel: [3, 2, 2],
        stride: [1, 2, 1],
        padding: [1, 1, 0],
        dilation: [2, 1, 1],
        count_include_pad: true,
    };
    check_layer("max_pool3d", &MaxPool3d { params: max });
    let avg = Pool3dParams {
        stride: [2; 3],
        padding: [1; 3],
        count_include_pad: false,
        ..Pool3dParams::new(3)
    };
    check_layer("avg_pool3d", &AvgPool3d { params: avg });
    check_layer(
        "avg_pool3d_default",
        &AvgPool3d {
            params: Pool3dParams::new(2),
        },
    );
    assert!(
        Conv3d::<f64>::new(
            3,
            2,
            [1, 1, 1],
            Conv3dParams {
                groups: 2,
                ..Default::default()
            },
            true,
            &mut rng
        )
        .is_err()
    );
    let bad = MaxPool3d {
        params: Pool3dParams {
            padding: [2, 0, 0],
            ..Pool3dParams::new(2)
        },
    };
    assert!(Forward::<f64>::forward(&bad, &Var::new(Tensor::zeros(&[1, 1, 4, 4, 4]))).is_err());
}
