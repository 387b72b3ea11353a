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
