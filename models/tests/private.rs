//! Private training through the reference trainings (`strata train --dp`): the noise is
//! solved for the target ε, which the run does not exceed; ε per epoch lands in the
//! metrics and the guarantee in the provenance record; seeded noise repeats exactly and
//! is recorded as not private; a model that cannot train privately is refused.

use strata_models::reference::{self, Model, PrivacyOptions, TrainOptions};
use strata_privacy::AccountantKind;

use crate::common::TempDir;

fn private(model: &str, out: &std::path::Path, dp: PrivacyOptions) -> TrainOptions {
    TrainOptions {
        epochs: Some(2),
        batch_size: Some(32),
        dataset: Some("digits".into()),
        limit: Some(300),
        progress: false,
        privacy: Some(dp),
        ..TrainOptions::new(Model::named(model).unwrap(), out)
    }
}

fn seeded(epsilon: f64) -> PrivacyOptions {
    PrivacyOptions {
        accountant: AccountantKind::Rdp,
        seeded_noise: true,
        ..PrivacyOptions::target(epsilon, 1e-5)
    }
}

#[test]
fn a_private_cnn_spends_at_most_its_target_and_records_the_guarantee() {
    let dir = TempDir::new("private-cnn");
    let out = dir.join("run");
    let metrics = reference::train(&private("cnn", &out, seeded(4.0))).unwrap();
    let eps = metrics["epsilon"].as_f64().unwrap();
    // The bisection stops within 0.01 below the target.
    assert!(eps <= 4.0 && eps > 3.9, "{eps}");
    let per_epoch: Vec<f64> = metrics["epsilon_per_epoch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(per_epoch.len(), 2);
    assert!(per_epoch[0] < per_epoch[1] && per_epoch[1] == eps);
    let info: serde_json::Value =
        serde_json::from_str(&reference::info(&out.join("checkpoint")).unwrap()).unwrap();
    let p = &info["privacy"];
    assert_eq!(p["epsilon"].as_f64().unwrap(), eps);
    assert_eq!(p["delta"].as_f64().unwrap(), 1e-5);
    assert_eq!(p["accountant"], "rdp");
    assert_eq!(p["noise"], "seeded");
    assert_eq!(p["max_grad_norm"].as_f64().unwrap(), 1.0);
    // 300 digits at batch 32: q = 32/300, ⌊1/q⌋ = 9 steps an epoch.
    assert!((p["sample_rate"].as_f64().unwrap() - 32.0 / 300.0).abs() < 1e-12);
    assert_eq!(p["steps"].as_u64().unwrap(), 18);
    assert!(p["noise_multiplier"].as_f64().unwrap() > 0.5);
    assert_eq!(p["unit"], "training sample");
    // A checkpoint of a private run evaluates like any other.
    let e = reference::eval(&out.join("checkpoint")).unwrap();
    assert!(e.accuracy.unwrap() > 0.1);
}

#[test]
fn seeded_private_runs_repeat_and_a_given_noise_multiplier_reports_epsilon() {
    let dir = TempDir::new("private-repeat");
    let a = reference::train(&private("mlp", &dir.join("a"), seeded(3.0))).unwrap();
    let b = reference::train(&private("mlp", &dir.join("b"), seeded(3.0))).unwrap();
    assert_eq!(a["train_loss"], b["train_loss"]);
    assert_eq!(a["test_accuracy"], b["test_accuracy"]);
    let given = PrivacyOptions {
        epsilon: None,
        noise_multiplier: Some(2.0),
        ..seeded(3.0)
    };
    let c = reference::train(&private("mlp", &dir.join("c"), given)).unwrap();
    let eps = c["epsilon"].as_f64().unwrap();
    assert!(
        eps > 0.0 && eps < 3.0,
        "σ = 2 spends less than the σ solved for ε = 3: {eps}"
    );
}

#[test]
fn models_that_cannot_train_privately_are_refused() {
    let dir = TempDir::new("private-refused");
    let err = reference::train(&TrainOptions {
        progress: false,
        privacy: Some(seeded(3.0)),
        ..TrainOptions::new(Model::named("pinn").unwrap(), dir.join("pinn"))
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("cannot train with DP-SGD"),
        "{err}"
    );
    let neither = PrivacyOptions {
        epsilon: None,
        ..seeded(3.0)
    };
    let err = reference::train(&private("cnn", &dir.join("cnn"), neither)).unwrap_err();
    assert!(err.to_string().contains("--noise-multiplier"), "{err}");
}

/// `dp-scatter` trains privately on the scattering features of the images, predicts from
/// the images themselves (their features computed as in training) and exports the network
/// on the features; its record states the transform.
#[test]
fn the_scattering_model_trains_privately_predicts_from_images_and_exports() {
    use strata_autograd::Var;
    use strata_models::checkpoint;
    use strata_models::models::{DpScatterNet, ScatterConfig};
    use strata_nn::Forward;
    use strata_tensor::{Tensor, seeded_rng};

    let dir = TempDir::new("private-scatter");
    let out = dir.join("run");
    // 300 digits are too few to learn from at a small ε in two epochs: a loose guarantee
    // shows that it learns (chance is 0.1).
    let opts = TrainOptions {
        lr: Some(0.03),
        ..private("dp-scatter", &out, seeded(100.0))
    };
    let metrics = reference::train(&opts).unwrap();
    assert!(metrics["epsilon"].as_f64().unwrap() <= 100.0);
    assert!(
        metrics["test_accuracy"].as_f64().unwrap() > 0.3,
        "{metrics}"
    );
    let ck = out.join("checkpoint");
    let record = checkpoint::read_record(&ck).unwrap();
    let config: ScatterConfig = serde_json::from_value(record["architecture"].clone()).unwrap();
    assert_eq!(
        config,
        ScatterConfig {
            in_channels: 1,
            image_size: [8, 8],
            j: 2,
            l: 8,
            classes: 10
        }
    );
    let described = record["dataset"]["preprocessing"]["description"]
        .as_str()
        .unwrap();
    assert!(described.contains("Scattering2D(J=2, L=8)"), "{described}");
    // predict: raw 8×8 digits (0-16) in an IDX file; the checkpoint's argmax on their
    // features.
    let pixels: Vec<u8> = (0..5 * 64).map(|i| ((i * 7) % 17) as u8).collect();
    let images = dir.write(
        "digits-idx3-ubyte",
        &crate::common::idx_bytes(&[5, 8, 8], &pixels),
    );
    let predicted = reference::predict(&ck, &images).unwrap();
    let net = DpScatterNet::new(config, &mut seeded_rng(1)).unwrap();
    checkpoint::load_model(&ck, &net).unwrap();
    let x = Tensor::from_vec(
        pixels.iter().map(|&v| v as f32 / 16.0).collect(),
        &[5, 1, 8, 8],
    )
    .unwrap();
    let logits = net
        .forward(&Var::new(config.features(&x).unwrap()))
        .unwrap()
        .value();
    let want: Vec<String> = logits
        .argmax(Some(1), false)
        .unwrap()
        .to_vec()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(predicted, want);
    // The export takes the features: [batch, 81, 2, 2].
    let exported = reference::export(&ck, &dir.join("scatter.onnx")).unwrap();
    assert_eq!(exported.output.shape(), &[1, 10]);
}
