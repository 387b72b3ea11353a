//! Exports that cannot work fail with errors that say why, never a panic.

use strata_autograd::Var;
use strata_nn::{
    AdaptiveAvgPool2d, BatchNorm2d, BatchNormConfig, Dropout, Forward, Linear, Module, ReLU,
    Sequential, StateKind,
};
use strata_onnx::{Export, ExportOptions, OnnxError, export};
use strata_tensor::{IndexTensor, Tensor, seeded_rng};

use crate::common::{check_batches, float, floats};

/// A layer the exporter has never heard of.
struct Mystery;

impl Module for Mystery {
    fn visit_state(&self, _f: &mut dyn FnMut(&str, &Var, StateKind)) {}
}

impl Forward for Mystery {
    fn forward(&self, x: &Var) -> strata_nn::Result<Var> {
        Ok(x.exp())
    }
}

#[test]
fn an_unknown_layer_is_named() {
    let mut rng = seeded_rng(30);
    let model = Sequential::new()
        .push(Linear::new(3, 3, true, &mut rng))
        .push(Mystery);
    let err = export(&model, Tensor::ones(&[2, 3]), &ExportOptions::default()).unwrap_err();
    assert!(
        matches!(err, OnnxError::Unsupported { ref what, .. } if what.contains("Mystery")),
        "{err}"
    );
}

#[test]
fn settings_without_an_onnx_equivalent_are_refused() {
    // Adaptive pooling with unequal windows (5 rows into 2).
    let pool = AdaptiveAvgPool2d {
        output_size: [2, 2],
    };
    let err = export(
        &pool,
        Tensor::ones(&[1, 1, 5, 4]),
        &ExportOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, OnnxError::Unsupported { ref what, .. } if what == "AdaptiveAvgPool2d"),
        "{err}"
    );
    // Dropout and BatchNorm in train mode.
    let dropout = Dropout::new(0.5, 0).unwrap();
    let err = export(&dropout, Tensor::ones(&[2, 3]), &ExportOptions::default()).unwrap_err();
    assert!(err.to_string().contains("eval()"), "{err}");
    let bn = BatchNorm2d::new(2);
    let err = export(&bn, Tensor::ones(&[2, 2, 3, 3]), &ExportOptions::default()).unwrap_err();
    assert!(
        matches!(err, OnnxError::Unsupported { ref what, .. } if what == "BatchNorm2d"),
        "{err}"
    );
    // BatchNorm without running statistics normalises with the batch's, even in eval.
    let config = BatchNormConfig {
        track_running_stats: false,
        ..BatchNormConfig::default()
    };
    let mut bn = BatchNorm2d::with_config(2, config);
    bn.eval();
    let err = export(&bn, Tensor::ones(&[2, 2, 3, 3]), &ExportOptions::default()).unwrap_err();
    assert!(err.to_string().contains("running statistics"), "{err}");
}

#[test]
fn bad_examples_are_refused() {
    let mut rng = seeded_rng(31);
    let linear = Linear::new(3, 2, true, &mut rng);
    let options = ExportOptions::default();
    let err = export(&linear, Tensor::zeros(&[0, 3]), &options).unwrap_err();
    assert!(
        matches!(err, OnnxError::Input { ref shape, .. } if shape == &[0, 3]),
        "{err}"
    );
    let err = export(&linear, Tensor::zeros(&[2, 4]), &options).unwrap_err();
    assert!(matches!(err, OnnxError::Forward(_)), "{err}");
    let err = export(&linear, Tensor::scalar(1.0), &options).unwrap_err();
    assert!(matches!(err, OnnxError::Input { .. }), "{err}");
    let ids = IndexTensor::from_vec(vec![0, 1], &[2]).unwrap();
    let err = export(&linear, ids, &options).unwrap_err();
    assert!(err.to_string().contains("indices"), "{err}");
}

#[test]
fn a_missing_directory_is_an_io_error_naming_the_path() {
    let mut rng = seeded_rng(32);
    let exported = export(
        &Linear::new(3, 2, true, &mut rng),
        Tensor::ones(&[1, 3]),
        &ExportOptions::default(),
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("strata-onnx-missing-{}", std::process::id()));
    let path = dir.join("nested").join("model.onnx");
    let err = exported.save(&path).unwrap_err();
    assert!(
        matches!(err, OnnxError::Io { path: ref p, .. } if p == &path),
        "{err}"
    );
    assert!(err.to_string().contains("model.onnx"), "{err}");
    // And in an existing directory the file appears whole.
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.onnx");
    exported.save(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), exported.to_bytes());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn modules_without_parameters_export_as_graphs_without_initializers() {
    // A parameter-free module is still a function ONNX can run; so is the empty sequence
    // (the identity).
    let relu = Sequential::new().push(ReLU);
    let bytes = check_batches(
        "ReLU alone",
        &relu,
        |b| floats(b, &[4]),
        |x| float(x).relu().value(),
        &ExportOptions::default(),
    );
    let model =
        <strata_onnx::proto::ModelProto as prost::Message>::decode(bytes.as_slice()).unwrap();
    assert!(model.graph.unwrap().initializer.is_empty());
    let empty = Sequential::new();
    check_batches(
        "empty Sequential",
        &empty,
        |b| floats(b, &[4]),
        |x| float(x).value(),
        &ExportOptions::default(),
    );
}

/// Keeps `Export` used for the trait objects above.
fn _export_is_object_safe(_: &dyn Export) {}

/// `err` is an `Unsupported` whose `what` contains `layer` and whose message contains
/// `setting`.
fn assert_refused(err: OnnxError, layer: &str, setting: &str) {
    assert!(
        matches!(err, OnnxError::Unsupported { ref what, .. } if what.contains(layer)),
        "{err}"
    );
    assert!(err.to_string().contains(setting), "{err}");
}

#[test]
fn settings_of_the_newer_layers_without_an_onnx_equivalent_are_refused() {
    use strata_nn::{
        BagMode, EmbeddingBag, Hooked, InstanceNorm2d, InstanceNormConfig, TransformerDecoderLayer,
        TransformerEncoderLayerConfig, Unflatten,
    };
    use strata_onnx::{DecoderInputs, GraphInput, export_decoder_layer, export_with_inputs};
    let options = ExportOptions::default();
    let mut rng = seeded_rng(33);

    let tracked = InstanceNormConfig {
        track_running_stats: true,
        ..InstanceNormConfig::default()
    };
    let norm = InstanceNorm2d::with_config(2, tracked);
    let before = norm.running_mean().unwrap().to_vec();
    let err = export(&norm, Tensor::ones(&[2, 2, 3, 3]), &options).unwrap_err();
    assert_refused(err, "InstanceNorm2d", "eval()");
    assert_eq!(
        norm.running_mean().unwrap().to_vec(),
        before,
        "the refusal ran no forward"
    );

    let bag = EmbeddingBag::new(5, 2, BagMode::Mean, None, &mut rng).unwrap();
    let flat = IndexTensor::from_vec(vec![0, 1, 2, 3], &[4]).unwrap();
    let err = export(&bag, flat, &ExportOptions { ..options.clone() }).unwrap_err();
    assert_refused(err, "EmbeddingBag", "offsets");

    let hooked = Hooked::new(Linear::new(3, 2, true, &mut rng));
    let _h = hooked.register_forward_hook(|_, y| Some(y.mul_scalar(2.0)));
    let err = export(&hooked, Tensor::ones(&[2, 3]), &options).unwrap_err();
    assert_refused(err, "Hooked<", "hook");

    let unflatten = Unflatten::new(0, &[-1, 2]).unwrap();
    let err = export(&unflatten, Tensor::ones(&[4, 3]), &options).unwrap_err();
    assert_refused(err, "Unflatten", "batch");

    // A decoder in train mode (dropout), and a flatten across a symbolic length.
    let config = TransformerEncoderLayerConfig::new(4, 2).batch_first(true);
    let layer = TransformerDecoderLayer::new(config, &mut rng).unwrap();
    let inputs = || {
        vec![
            GraphInput::new("tgt", Tensor::ones(&[2, 3, 4])).dynamic(1, "tgt_len"),
            GraphInput::new("memory", Tensor::ones(&[2, 5, 4])).dynamic(1, "src_len"),
        ]
    };
    let err = export_with_inputs(inputs(), &options, |g, xs| {
        export_decoder_layer(&layer, g, &xs[0], &DecoderInputs::causal(&xs[1]))
    })
    .unwrap_err();
    assert_refused(err, "TransformerDecoderLayer", "eval()");
    let err = export_with_inputs(inputs(), &options, |g, xs| {
        strata_onnx::ops::flatten(g, &xs[0], 0, 0)
    })
    .unwrap_err();
    assert_refused(err, "Flatten", "symbolic");
}

#[test]
fn bad_inputs_of_several_are_refused() {
    use strata_onnx::{GraphInput, export_with_inputs};
    let options = ExportOptions::default();
    let twice = vec![
        GraphInput::new("x", Tensor::ones(&[2, 3])),
        GraphInput::new("x", Tensor::ones(&[2, 3])),
    ];
    let err = export_with_inputs(twice, &options, |_, xs| Ok(xs[0].clone())).unwrap_err();
    assert!(err.to_string().contains("two inputs"), "{err}");
    let out_of_range = vec![GraphInput::new("x", Tensor::ones(&[2, 3])).dynamic(2, "len")];
    let err = export_with_inputs(out_of_range, &options, |_, xs| Ok(xs[0].clone())).unwrap_err();
    assert!(matches!(err, OnnxError::Input { .. }), "{err}");
    let ids = IndexTensor::from_vec(vec![0, 1], &[1, 2]).unwrap();
    let mask = vec![
        GraphInput::new("x", Tensor::ones(&[1, 2, 4])),
        GraphInput::new("mask", ids),
    ];
    let mut rng = seeded_rng(34);
    let encoder = strata_nn::TransformerEncoder::new(
        strata_nn::TransformerEncoderLayerConfig::new(4, 2)
            .batch_first(true)
            .dropout(0.0),
        1,
        false,
        &mut rng,
    )
    .unwrap();
    let err = export_with_inputs(mask, &options, |g, xs| {
        let masks = strata_onnx::GraphMasks {
            causal: false,
            key_padding: Some(&xs[1]),
        };
        strata_onnx::export_encoder_masked(&encoder, g, &xs[0], masks)
    })
    .unwrap_err();
    assert!(err.to_string().contains("indices"), "{err}");
}
