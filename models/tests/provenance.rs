//! The provenance record states the input preprocessing a user running the weights
//! elsewhere must apply: the scaling and standardisation of images (what the loaders do),
//! a table's standardiser (the same numbers as the record's own), and words where numbers
//! do not say it.

use serde_json::Value;
use strata_models::reference::{self, Model, TrainOptions};

use crate::common::TempDir;

fn info(dir: &TempDir, opts: TrainOptions) -> Value {
    let out = opts.out.clone();
    reference::train(&TrainOptions {
        progress: false,
        ..opts
    })
    .unwrap();
    let _ = dir;
    serde_json::from_str(&reference::info(&out.join("checkpoint")).unwrap()).unwrap()
}

#[test]
fn the_record_states_the_input_preprocessing() {
    let dir = TempDir::new("provenance");
    let digits = info(
        &dir,
        TrainOptions {
            epochs: Some(1),
            limit: Some(64),
            dataset: Some("digits".into()),
            ..TrainOptions::new(Model::named("mlp").unwrap(), dir.join("mlp"))
        },
    );
    let p = &digits["dataset"]["preprocessing"];
    assert_eq!(p["scale"].as_f64().unwrap(), 1.0 / 16.0);
    assert!(p.get("mean").is_none());

    let logreg = info(
        &dir,
        TrainOptions::new(Model::named("logreg").unwrap(), dir.join("logreg")),
    );
    let p = &logreg["dataset"]["preprocessing"];
    let means: Vec<f64> = p["mean"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let recorded: Vec<f64> = logreg["extra"]["standardizer"]["mean"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(means.len(), 30);
    assert_eq!(means, recorded);
    assert_eq!(p["std"].as_array().unwrap().len(), 30);

    let pinn = info(
        &dir,
        TrainOptions {
            steps: Some(1),
            limit: Some(20),
            ..TrainOptions::new(Model::named("pinn").unwrap(), dir.join("pinn"))
        },
    );
    assert!(
        pinn["dataset"]["preprocessing"]["description"]
            .as_str()
            .unwrap()
            .starts_with("none")
    );
}

/// MNIST's numbers as the record states them are what the loader and `predict` apply.
#[test]
fn mnist_preprocessing_is_the_loaders() {
    use strata_models::reference::{DatasetRecord, image_preprocessing};
    let mnist = DatasetRecord {
        name: "MNIST".into(),
        source: String::new(),
        license: String::new(),
        data_dir: None,
        data_file: None,
        variant: None,
        preprocessing: None,
    };
    let p = image_preprocessing(&mnist);
    assert_eq!(
        (p.scale, p.mean.as_slice(), p.std.as_slice()),
        (1.0 / 255.0, &[0.1307][..], &[0.3081][..])
    );
    let cifar = image_preprocessing(&DatasetRecord {
        name: "CIFAR-10".into(),
        ..mnist
    });
    assert_eq!(cifar.mean, vec![0.4914, 0.4822, 0.4465]);
    assert_eq!(cifar.std, vec![0.247, 0.2435, 0.2616]);
}
