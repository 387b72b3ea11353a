//! Each feed-forward layer kind, exported and run by tract at batch 3 and 5.

use strata_nn::{
    AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool1d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d,
    Conv1dParams, Conv2d, Conv2dParams, Dropout, Embedding, Flatten, Forward, GELU, GroupNorm,
    Identity, LayerNorm, LeakyReLU, Linear, LogSoftmax, MaxPool1d, MaxPool2d, Module, Padding,
    Pool1dParams, ReLU, Sequential, SiLU, Sigmoid, SinusoidalPositionalEncoding, Softmax, Tanh,
};
use strata_onnx::{Example, Export, ExportOptions};
use strata_tensor::{Pool2dParams, Tensor, seeded_rng};

use crate::common::{check_batches, float, floats, indices};

/// Exports a single-input layer traced on `[batch, rest…]` and checks it with tract.
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
fn linear_layers_of_rank_two_and_three() {
    let mut rng = seeded_rng(1);
    check("Linear", &Linear::new(6, 4, true, &mut rng), &[6]);
    check("Linear 3-d", &Linear::new(6, 4, true, &mut rng), &[2, 6]);
    check("Linear no bias", &Linear::new(6, 4, false, &mut rng), &[6]);
}

#[test]
fn convolutions_with_stride_padding_dilation_and_groups() {
    let mut rng = seeded_rng(2);
    let plain = Conv2d::new(3, 4, 3, &mut rng).unwrap();
    check("Conv2d", &plain, &[3, 7, 6]);
    let p = Conv2dParams::default()
        .stride(2)
        .padding(2)
        .dilation(2)
        .groups(2);
    let fancy = Conv2d::with_params(4, 6, [3, 2], p, true, &mut rng).unwrap();
    check("Conv2d strided dilated grouped", &fancy, &[4, 9, 8]);
    let same = Conv2dParams::default().padding(Padding::Same);
    let same = Conv2d::with_params(2, 3, [4, 3], same, false, &mut rng).unwrap();
    check("Conv2d same (odd padding)", &same, &[2, 6, 5]);
    let p1 = Conv1dParams::default()
        .stride(2)
        .padding(1)
        .dilation(2)
        .groups(3);
    let c1 = Conv1d::with_params(3, 6, 3, p1, true, &mut rng).unwrap();
    check("Conv1d", &c1, &[3, 11]);
}

#[test]
fn pools_max_average_and_adaptive() {
    check("MaxPool2d", &MaxPool2d::new(2), &[2, 6, 7]);
    let p = Pool2dParams {
        kernel: [3, 2],
        stride: [2, 1],
        padding: [1, 1],
        dilation: [1, 1],
        ceil_mode: false,
        count_include_pad: false,
        divisor_override: None,
    };
    check("MaxPool2d padded", &MaxPool2d::with_params(p), &[2, 6, 7]);
    check(
        "AvgPool2d no pad count",
        &AvgPool2d::with_params(p),
        &[2, 6, 7],
    );
    let counted = Pool2dParams {
        count_include_pad: true,
        ..p
    };
    check(
        "AvgPool2d pad count",
        &AvgPool2d::with_params(counted),
        &[2, 6, 7],
    );
    let p1 = Pool1dParams::new(3);
    check("MaxPool1d", &MaxPool1d { params: p1 }, &[2, 10]);
    check("AvgPool1d", &AvgPool1d { params: p1 }, &[2, 10]);
    let global = AdaptiveAvgPool2d {
        output_size: [1, 1],
    };
    check("AdaptiveAvgPool2d 1x1", &global, &[3, 5, 4]);
    let even = AdaptiveAvgPool2d {
        output_size: [2, 3],
    };
    check("AdaptiveAvgPool2d even windows", &even, &[3, 4, 6]);
    let max = AdaptiveMaxPool2d {
        output_size: [2, 2],
    };
    check("AdaptiveMaxPool2d", &max, &[3, 4, 6]);
}

#[test]
fn norms_in_eval_mode() {
    let mut rng = seeded_rng(3);
    // Running statistics that are not the defaults: train on two batches, then eval.
    let mut bn = BatchNorm2d::new(3);
    for _ in 0..2 {
        bn.forward(&strata_autograd::Var::new(Tensor::randn(
            &[4, 3, 5, 5],
            &mut rng,
        )))
        .unwrap();
    }
    bn.eval();
    assert!(
        bn.running_mean()
            .unwrap()
            .to_vec()
            .iter()
            .any(|&m| m != 0.0)
    );
    bn.weight()
        .unwrap()
        .set_value(Tensor::randn(&[3], &mut rng))
        .unwrap();
    check("BatchNorm2d", &bn, &[3, 4, 4]);
    let mut bn1 = BatchNorm1d::new(5);
    bn1.forward(&strata_autograd::Var::new(Tensor::randn(&[6, 5], &mut rng)))
        .unwrap();
    bn1.eval();
    check("BatchNorm1d", &bn1, &[5]);
    let ln = LayerNorm::new(&[4, 6]);
    ln.weight
        .as_ref()
        .unwrap()
        .set_value(Tensor::randn(&[4, 6], &mut rng))
        .unwrap();
    ln.bias
        .as_ref()
        .unwrap()
        .set_value(Tensor::randn(&[4, 6], &mut rng))
        .unwrap();
    check("LayerNorm", &ln, &[3, 4, 6]);
    let gn = GroupNorm::new(2, 4).unwrap();
    gn.weight
        .as_ref()
        .unwrap()
        .set_value(Tensor::randn(&[4], &mut rng))
        .unwrap();
    check("GroupNorm", &gn, &[4, 3, 3]);
}

#[test]
fn activations() {
    check("ReLU", &ReLU, &[7]);
    check("Sigmoid", &Sigmoid, &[7]);
    check("Tanh", &Tanh, &[7]);
    check("SiLU", &SiLU, &[7]);
    check("Identity", &Identity, &[7]);
    check(
        "LeakyReLU",
        &LeakyReLU {
            negative_slope: 0.2,
        },
        &[7],
    );
    check("GELU", &GELU { tanh: false }, &[7]);
    check("GELU tanh", &GELU { tanh: true }, &[7]);
    check("Softmax", &Softmax { dim: -1 }, &[3, 7]);
    check("Softmax dim 1", &Softmax { dim: 1 }, &[3, 7]);
    check("LogSoftmax", &LogSoftmax { dim: -1 }, &[7]);
}

#[test]
fn flatten_dropout_positions_and_sequential() {
    check("Flatten", &Flatten::default(), &[2, 3, 4]);
    let middle = Flatten {
        start_dim: 1,
        end_dim: 2,
    };
    check("Flatten 1..=2", &middle, &[2, 3, 4]);
    let mut dropout = Dropout::new(0.5, 0).unwrap();
    dropout.eval();
    check("Dropout (eval)", &dropout, &[5]);
    let pe = SinusoidalPositionalEncoding::new(6, 20).unwrap();
    check("SinusoidalPositionalEncoding", &pe, &[4, 6]);
    let mut rng = seeded_rng(4);
    let mut model = Sequential::new()
        .push(Conv2d::new(1, 4, 3, &mut rng).unwrap())
        .push(ReLU)
        .push(MaxPool2d::new(2))
        .push(Dropout::new(0.25, 0).unwrap())
        .push(Flatten::default())
        .push(Linear::new(4 * 3 * 3, 10, true, &mut rng))
        .push(LogSoftmax { dim: -1 });
    model.eval();
    let bytes = check("Sequential", &model, &[1, 8, 8]);
    // The weights are initializers under their state-dict names.
    let parsed = <strata_onnx::proto::ModelProto as prost::Message>::decode(bytes.as_slice());
    let graph = parsed.expect("the bytes decode").graph.expect("a graph");
    let names: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    for key in ["0.weight", "0.bias", "5.weight", "5.bias"] {
        assert!(names.contains(&key), "{key} in {names:?}");
    }
    let dims = |v: &strata_onnx::proto::ValueInfoProto| {
        use strata_onnx::proto::{tensor_shape_proto::dimension::Value, type_proto};
        let Some(type_proto::Value::TensorType(t)) =
            v.r#type.as_ref().and_then(|t| t.value.clone())
        else {
            panic!("a tensor type")
        };
        t.shape
            .expect("a shape")
            .dim
            .into_iter()
            .map(|d| match d.value {
                Some(Value::DimValue(v)) => v.to_string(),
                Some(Value::DimParam(p)) => p,
                None => "?".into(),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(dims(&graph.input[0]), ["batch", "1", "8", "8"]);
    assert_eq!(dims(&graph.output[0]), ["batch", "10"]);
}

#[test]
fn embedding_gathers_rows_for_int64_indices() {
    let mut rng = seeded_rng(5);
    let embed = Embedding::new(11, 4, None, &mut rng).unwrap();
    check_batches(
        "Embedding",
        &embed,
        |b| indices(b, 6, 11),
        |x| match x {
            Example::Index(ids) => embed.forward(ids).unwrap().value(),
            _ => unreachable!(),
        },
        &ExportOptions::default(),
    );
}
