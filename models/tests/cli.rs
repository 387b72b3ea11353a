//! The `strata` binary end to end, on tiny settings: train, eval, predict, info and help
//! succeed and write what they document; every error is one line on stderr starting with
//! `error:` and a non-zero exit status.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::{TempDir, cifar_bytes, data_dir, idx_bytes};
use serde_json::Value;
use strata_autograd::Var;
use strata_models::checkpoint;
use strata_models::data::readers::read_csv;
use strata_models::data::{Dataset, bundled};
use strata_models::models::{Cnn, CnnConfig};
use strata_models::train::{self, Objective};
use strata_nn::{Forward, Module};
use strata_tensor::{Tensor, seeded_rng};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env_remove("STRATA_DATA_DIR")
        .output()
        .expect("run the strata binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

/// Runs `strata args`, expects success, returns stdout.
#[track_caller]
fn ok(args: &[&str]) -> String {
    let out = strata(args);
    assert!(
        out.status.success(),
        "strata {args:?} failed ({}):\n{}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs `strata args`, expects failure with exactly one line on stderr that starts with
/// `error:`, and nothing on stdout; returns that line.
#[track_caller]
fn fails(args: &[&str]) -> String {
    let out = strata(args);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "strata {args:?} succeeded:\n{}",
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "strata {args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "strata {args:?}: expected one line on stderr, got {stderr:?}"
    );
    assert!(
        lines[0].starts_with("error: "),
        "strata {args:?}: {stderr:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "strata {args:?} printed {:?}",
        text(&out.stdout)
    );
    lines[0].to_string()
}

/// Runs `strata args`, expects clap to reject the command line: a non-zero exit and a
/// message starting with `error:`.
#[track_caller]
fn rejected(args: &[&str]) -> String {
    let out = strata(args);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "strata {args:?} succeeded");
    assert_eq!(out.status.code(), Some(2), "strata {args:?}: {stderr}");
    assert!(stderr.starts_with("error: "), "strata {args:?}: {stderr:?}");
    stderr
}

fn json_file(path: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// A finite number in a JSON value.
#[track_caller]
fn num(v: &Value, key: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"));
    assert!(x.is_finite(), "{key} = {x}");
    x
}

/// The rows of a bundled table without their header, split into features and label.
fn table_rows(file: &str, header: bool, n: usize) -> Vec<(Vec<f64>, f64)> {
    let t = read_csv(&data_dir().join("uci-small").join(file), header, Some(',')).unwrap();
    t.rows
        .iter()
        .take(n)
        .map(|r| {
            let (label, features) = r.split_last().unwrap();
            (features.to_vec(), *label)
        })
        .collect()
}

fn csv(rows: &[Vec<f64>]) -> String {
    rows.iter()
        .map(|r| r.iter().map(f64::to_string).collect::<Vec<_>>().join(",") + "\n")
        .collect()
}

#[test]
fn train_cnn_on_digits_then_eval_info_predict() {
    let dir = TempDir::new("cli-cnn");
    let out = dir.join("run");
    let stdout = ok(&[
        "train",
        "cnn",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--limit",
        "300",
        "--quiet",
        "--out",
        p(&out),
    ]);

    // metrics.json, also printed on stdout.
    let metrics = json_file(&out.join("metrics.json"));
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), metrics);
    let keys: Vec<&str> = metrics
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "model",
        "dataset",
        "epochs",
        "train_loss",
        "test_loss",
        "test_accuracy",
        "seconds",
        "samples_per_s",
    ] {
        assert!(keys.contains(&key), "metrics.json lacks {key}: {metrics}");
    }
    assert_eq!(metrics["model"], "cnn");
    assert_eq!(metrics["dataset"], "digits");
    assert_eq!(metrics["epochs"], 1);
    assert!(num(&metrics, "train_loss") > 0.0 && num(&metrics, "test_loss") > 0.0);
    assert!((0.0..=1.0).contains(&num(&metrics, "test_accuracy")));
    assert!(num(&metrics, "seconds") > 0.0 && num(&metrics, "samples_per_s") > 0.0);

    // The checkpoint and its provenance record.
    let ck = out.join("checkpoint");
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "provenance.json",
    ] {
        assert!(ck.join(f).is_file(), "checkpoint/{f} missing");
    }
    let record = json_file(&ck.join("provenance.json"));
    assert_eq!(record["model"], "cnn");
    assert_eq!(record["architecture"]["in_channels"], 1);
    assert_eq!(
        record["architecture"]["image_size"],
        serde_json::json!([8, 8])
    );
    assert_eq!(record["architecture"]["classes"], 10);
    let hp = &record["hyperparameters"];
    assert_eq!(hp["epochs"], 1);
    assert!(
        num(hp, "lr") > 0.0
            && hp["batch_size"].as_u64().unwrap() > 0
            && hp["optimizer"].is_string(),
        "{hp}"
    );
    let ds = &record["dataset"];
    assert_eq!(ds["name"], "digits");
    assert!(
        !ds["source"].as_str().unwrap().is_empty() && !ds["license"].as_str().unwrap().is_empty(),
        "{ds}"
    );
    assert_eq!(record["seed"], 0);
    assert_eq!(record["strata_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(record["metrics"], metrics);

    // The curves.
    let svg = std::fs::read_to_string(out.join("curves.svg")).unwrap();
    assert!(
        svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
        "not an SVG file"
    );
    assert!(svg.contains("cnn: loss") && svg.contains("test accuracy"));

    // The weights, loaded here, for the checks of eval and predict.
    let model = Cnn::new(CnnConfig::DIGITS, &mut seeded_rng(1)).unwrap();
    checkpoint::load_model(&ck, &model).unwrap();

    // eval: the test split of the data it was trained on (the 359 test digits, --limit
    // applied to the training only), as the library computes it.
    let line = ok(&["eval", p(&ck)]);
    let mut parts = bundled::digits(&data_dir())
        .unwrap()
        .split(&[0.8, 0.2], 0)
        .unwrap();
    let test = parts.pop().unwrap();
    assert_eq!(test.len(), 1797 - 1438);
    let e = train::evaluate(&model, &test, Objective::CrossEntropy, 256).unwrap();
    assert_eq!(
        line.trim(),
        format!(
            "test loss {:.6}, test accuracy {:.4}",
            e.loss,
            e.accuracy.unwrap()
        )
    );

    // info: the record.
    let info: Value = serde_json::from_str(&ok(&["info", p(&ck)])).unwrap();
    assert_eq!(info, record);

    // predict: an IDX file of raw 8×8 digits (values 0-16).
    let rows = table_rows("digits.csv.gz", false, 20);
    let pixels: Vec<u8> = rows
        .iter()
        .flat_map(|(f, _)| f.iter().map(|&v| v as u8))
        .collect();
    let images = dir.write("digits-idx3-ubyte", &idx_bytes(&[20, 8, 8], &pixels));
    let predictions = ok(&["predict", p(&ck), p(&images)]);
    let classes: Vec<i64> = predictions.lines().map(|l| l.parse().unwrap()).collect();
    // The model's own argmax on the same digits scaled as in training (0-16 to [0, 1]).
    let x = Tensor::from_vec(
        pixels.iter().map(|&v| v as f32 / 16.0).collect(),
        &[20, 1, 8, 8],
    )
    .unwrap();
    let logits = model.forward(&Var::new(x)).unwrap().value();
    assert_eq!(classes, logits.argmax(Some(1), false).unwrap().to_vec());

    // Images of another size, or not IDX at all.
    let big = dir.write("big-idx3-ubyte", &idx_bytes(&[2, 28, 28], &[0; 2 * 784]));
    let err = fails(&["predict", p(&ck), p(&big)]);
    assert!(
        err.contains("big-idx3-ubyte") && err.contains("do not fit the model's input"),
        "{err}"
    );
    let not_idx = dir.write("rows.csv", b"1,2,3\n");
    let err = fails(&["predict", p(&ck), p(&not_idx)]);
    assert!(
        err.contains("rows.csv") && err.contains("bad magic"),
        "{err}"
    );
    let err = fails(&["predict", p(&ck), p(&dir.join("missing-idx"))]);
    assert!(err.contains("missing-idx"), "{err}");
}

#[test]
fn train_logreg_then_eval_and_predict_raw_rows() {
    let dir = TempDir::new("cli-logreg");
    let out = dir.join("run");
    ok(&["train", "logreg", "--quiet", "--out", p(&out)]);
    let metrics = json_file(&out.join("metrics.json"));
    assert_eq!(
        (&metrics["model"], &metrics["dataset"]),
        (&Value::from("logreg"), &Value::from("breast_cancer"))
    );
    let acc = num(&metrics, "test_accuracy");
    assert!(acc > 0.9, "{metrics}");
    let ck = out.join("checkpoint");
    let record = json_file(&ck.join("provenance.json"));
    assert_eq!(
        record["architecture"],
        serde_json::json!({ "features": 30, "classes": 2 })
    );
    assert_eq!(
        record["extra"]["standardizer"]["mean"]
            .as_array()
            .unwrap()
            .len(),
        30
    );

    // Without --limit, eval reproduces the training's final test metrics.
    let line = ok(&["eval", p(&ck)]);
    let want = format!(
        "test loss {:.6}, test accuracy {:.4}",
        num(&metrics, "test_loss"),
        acc
    );
    assert_eq!(line.trim(), want);

    // predict: raw (unstandardised) feature rows, no header.
    let rows = table_rows("breast_cancer.csv", true, 569);
    let picked: Vec<&(Vec<f64>, f64)> = rows.iter().step_by(57).collect();
    let input = dir.write(
        "rows.csv",
        csv(&picked.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>()).as_bytes(),
    );
    let predictions = ok(&["predict", p(&ck), p(&input)]);
    let classes: Vec<&str> = predictions.lines().collect();
    assert_eq!(classes.len(), picked.len());
    assert!(
        classes.iter().all(|c| *c == "0" || *c == "1"),
        "{classes:?}"
    );
    let right = classes
        .iter()
        .zip(&picked)
        .filter(|(c, (_, label))| c.parse::<f64>().unwrap() == *label)
        .count();
    assert!(
        right + 1 >= picked.len(),
        "{right} of {} right",
        picked.len()
    );

    // Rows of the wrong width, or not numbers.
    let narrow = dir.write("narrow.csv", csv(&[picked[0].0[..29].to_vec()]).as_bytes());
    let err = fails(&["predict", p(&ck), p(&narrow)]);
    assert!(
        err.contains("narrow.csv") && err.contains("rows have 29 features, the model takes 30"),
        "{err}"
    );
    let words = dir.write("words.csv", b"a,b\n");
    let err = fails(&["predict", p(&ck), p(&words)]);
    assert!(
        err.contains("words.csv") && err.contains("line 1, column 1"),
        "{err}"
    );
}

#[test]
fn train_linreg_reports_closed_form() {
    let dir = TempDir::new("cli-linreg");
    let out = dir.join("run");
    ok(&[
        "train",
        "linreg",
        "--epochs",
        "50",
        "--quiet",
        "--out",
        p(&out),
    ]);
    let metrics = json_file(&out.join("metrics.json"));
    assert_eq!(
        (&metrics["model"], &metrics["dataset"], &metrics["epochs"]),
        (
            &Value::from("linreg"),
            &Value::from("diabetes"),
            &Value::from(50)
        )
    );
    let r2 = num(&metrics, "test_r2");
    assert!(metrics.get("test_accuracy").is_none());
    let cf = &metrics["closed_form"];
    assert_eq!(cf["coefficients"].as_array().unwrap().len(), 11);
    let cf_r2 = num(cf, "test_r2");
    let rel = num(cf, "max_relative_difference");
    eprintln!("linreg 50 epochs: test r2 {r2}, closed form {cf_r2}, max relative difference {rel}");
    assert!((0.3..0.7).contains(&cf_r2), "{cf}");
    assert!(
        (r2 - cf_r2).abs() < 0.05,
        "gradient descent {r2} vs closed form {cf_r2}"
    );
    assert!(rel >= 0.0);

    let line = ok(&["eval", p(&out.join("checkpoint"))]);
    assert_eq!(
        line.trim(),
        format!(
            "test loss {:.6}, test R² {:.4}",
            num(&metrics, "test_loss"),
            r2
        )
    );

    // Predictions of disease progression for raw diabetes rows.
    let raw = read_csv(
        &data_dir().join("uci-small/diabetes_data_raw.csv.gz"),
        false,
        None,
    )
    .unwrap();
    let input = dir.write("rows.csv", csv(&raw.rows[..5]).as_bytes());
    let values: Vec<f64> = ok(&["predict", p(&out.join("checkpoint")), p(&input)])
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(values.len(), 5);
    assert!(
        values.iter().all(|v| (0.0..400.0).contains(v)),
        "{values:?}"
    );
}

/// Polynomial regression end to end; the number of worker threads does not change a bit
/// of the result.
#[test]
fn train_polyreg_with_one_and_two_threads() {
    let dir = TempDir::new("cli-polyreg");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let common = ["train", "polyreg", "--epochs", "20", "--quiet", "--out"];
    ok(&[&common[..], &[p(&a), "--threads", "1"]].concat());
    ok(&[&common[..], &[p(&b), "--threads", "2"]].concat());
    let (ma, mb) = (
        json_file(&a.join("metrics.json")),
        json_file(&b.join("metrics.json")),
    );
    for key in ["train_loss", "test_loss", "test_r2"] {
        assert_eq!(
            num(&ma, key).to_bits(),
            num(&mb, key).to_bits(),
            "{key}: {ma} vs {mb}"
        );
    }
    let weights = |d: &Path| std::fs::read(d.join("checkpoint/model.safetensors")).unwrap();
    assert!(weights(&a) == weights(&b));
    assert_eq!(
        json_file(&a.join("checkpoint/provenance.json"))["threads"],
        1
    );

    let ck = a.join("checkpoint");
    let line = ok(&["eval", p(&ck)]);
    assert_eq!(
        line.trim(),
        format!(
            "test loss {:.6}, test R² {:.4}",
            num(&ma, "test_loss"),
            num(&ma, "test_r2")
        )
    );
    // Progression rises with body-mass index.
    let input = dir.write("bmi.csv", b"20\n26\n32\n");
    let values: Vec<f64> = ok(&["predict", p(&ck), p(&input)])
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(values.len(), 3);
    assert!(values[0] < values[1] && values[1] < values[2], "{values:?}");
    let err = fails(&["predict", p(&ck), p(&dir.write("two.csv", b"20,1\n"))]);
    assert!(err.starts_with("error: "), "{err}");
}

/// MNIST-style IDX files and CIFAR-10 batches from `--data`.
#[test]
fn train_on_data_folders() {
    let dir = TempDir::new("cli-data");
    let idx = dir.join("fashion");
    let image = |n: u32, salt: u32| -> Vec<u8> {
        (0..n * 784)
            .map(|v| ((v * 7 + salt * 13) % 256) as u8)
            .collect()
    };
    std::fs::create_dir_all(&idx).unwrap();
    std::fs::write(
        idx.join("train-images-idx3-ubyte"),
        idx_bytes(&[20, 28, 28], &image(20, 1)),
    )
    .unwrap();
    std::fs::write(
        idx.join("train-labels-idx1-ubyte"),
        idx_bytes(&[20], &(0..20).map(|i| i % 10).collect::<Vec<u8>>()),
    )
    .unwrap();
    std::fs::write(
        idx.join("t10k-images-idx3-ubyte"),
        idx_bytes(&[10, 28, 28], &image(10, 2)),
    )
    .unwrap();
    std::fs::write(
        idx.join("t10k-labels-idx1-ubyte"),
        idx_bytes(&[10], &(0..10).collect::<Vec<u8>>()),
    )
    .unwrap();
    let out = dir.join("mlp");
    ok(&[
        "train",
        "mlp",
        "--data",
        p(&idx),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--quiet",
        "--out",
        p(&out),
    ]);
    let record = json_file(&out.join("checkpoint/provenance.json"));
    assert_eq!(record["dataset"]["name"], "IDX images");
    assert_eq!(record["dataset"]["data_dir"], p(&idx));
    assert_eq!(
        record["architecture"]["sizes"],
        serde_json::json!([784, 256, 128, 10])
    );
    let line = ok(&["eval", p(&out.join("checkpoint"))]);
    assert!(line.starts_with("test loss "), "{line}");
    let input = dir.write("three-idx3-ubyte", &idx_bytes(&[3, 28, 28], &image(3, 5)));
    assert_eq!(
        ok(&["predict", p(&out.join("checkpoint")), p(&input)])
            .lines()
            .count(),
        3
    );

    // A truncated image file in the folder.
    std::fs::write(
        idx.join("t10k-images-idx3-ubyte"),
        idx_bytes(&[10, 28, 28], &image(9, 2)),
    )
    .unwrap();
    let err = fails(&[
        "train",
        "mlp",
        "--data",
        p(&idx),
        "--epochs",
        "1",
        "--quiet",
        "--out",
        p(&dir.join("bad")),
    ]);
    assert!(
        err.contains("t10k-images-idx3-ubyte") && err.contains("truncated"),
        "{err}"
    );
    assert!(
        !dir.join("bad").exists(),
        "a failed training wrote its output folder"
    );

    let cifar = dir.join("cifar");
    std::fs::create_dir_all(&cifar).unwrap();
    for b in 1..=5u8 {
        std::fs::write(
            cifar.join(format!("data_batch_{b}.bin")),
            cifar_bytes(&[b, 9 - b], b as usize * 2),
        )
        .unwrap();
    }
    std::fs::write(cifar.join("test_batch.bin"), cifar_bytes(&[3, 4], 50)).unwrap();
    let out = dir.join("cnn");
    ok(&[
        "train",
        "cnn",
        "--data",
        p(&cifar),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--quiet",
        "--out",
        p(&out),
    ]);
    let record = json_file(&out.join("checkpoint/provenance.json"));
    assert_eq!(record["dataset"]["name"], "CIFAR-10");
    assert_eq!(
        record["architecture"],
        serde_json::json!({ "in_channels": 3, "image_size": [32, 32], "classes": 10 })
    );
    // predict on an IDX file of [n, 3, 32, 32] bytes normalises them per channel as the
    // CIFAR-10 training did. The weights of a fresh CNN replace the barely trained ones
    // (which answer one class for everything), and the images are planes of one random
    // intensity per channel, so that the normalisation decides the classes.
    let ck = dir.join("cnn-fresh");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::copy(
        out.join("checkpoint/provenance.json"),
        ck.join("provenance.json"),
    )
    .unwrap();
    let model = Cnn::new(CnnConfig::CIFAR10, &mut seeded_rng(1)).unwrap();
    model
        .save_safetensors(&ck.join("model.safetensors"))
        .unwrap();
    let n = 64;
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 56) as u8
    };
    let pixels: Vec<u8> = (0..n * 3)
        .flat_map(|_| std::iter::repeat_n(next(), 1024))
        .collect();
    let classes_with = |norm: &dyn Fn(u8, usize) -> f32| -> Vec<i64> {
        let x: Vec<f32> = pixels
            .iter()
            .enumerate()
            .map(|(i, &v)| norm(v, (i / 1024) % 3))
            .collect();
        let x = Tensor::from_vec(x, &[n, 3, 32, 32]).unwrap();
        let logits = strata_autograd::no_grad(|| model.forward(&Var::new(x)))
            .unwrap()
            .value();
        logits.argmax(Some(1), false).unwrap().to_vec()
    };
    const MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
    const STD: [f32; 3] = [0.2470, 0.2435, 0.2616];
    let cifar_norm = classes_with(&|v, c| (v as f32 / 255.0 - MEAN[c]) / STD[c]);
    let mnist_norm = classes_with(&|v, _| (v as f32 / 255.0 - 0.1307) / 0.3081);
    assert_ne!(
        cifar_norm, mnist_norm,
        "the images do not tell the normalisations apart"
    );
    let input = dir.write(
        "cifar-idx4-ubyte",
        &idx_bytes(&[n as u32, 3, 32, 32], &pixels),
    );
    let predicted: Vec<i64> = ok(&["predict", p(&ck), p(&input)])
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(predicted, cifar_norm);
    // A record with a label above 9.
    let mut bad = cifar_bytes(&[1, 2], 0);
    bad[3073] = 12;
    std::fs::write(cifar.join("data_batch_3.bin"), bad).unwrap();
    let err = fails(&[
        "train",
        "cnn",
        "--data",
        p(&cifar),
        "--epochs",
        "1",
        "--quiet",
        "--out",
        p(&dir.join("bad")),
    ]);
    assert!(
        err.contains("data_batch_3.bin") && err.contains("label 12"),
        "{err}"
    );
}

#[test]
fn help_on_every_subcommand() {
    for args in [
        &["--help"][..],
        &["train", "--help"],
        &["eval", "--help"],
        &["predict", "--help"],
        &["info", "--help"],
        &["generate", "--help"],
        &["help", "train"],
        &["train", "-h"],
    ] {
        let out = ok(args);
        assert!(out.contains("Usage: strata"), "strata {args:?}: {out}");
    }
    let train = ok(&["train", "--help"]);
    for word in [
        "linreg",
        "polyreg",
        "logreg",
        "mlp",
        "cnn",
        "char-rnn",
        "char-transformer",
        "forecast",
        "seq-classifier",
        "--steps",
        "--cell",
        "--epochs",
        "--data",
        "--dataset",
        "--limit",
        "--quiet",
        "--out",
        "--seed",
    ] {
        assert!(train.contains(word), "train --help lacks {word}");
    }
    assert!(ok(&["--version"]).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn train_a_char_model_then_generate() {
    let dir = TempDir::new("cli-generate");
    let out = dir.join("rnn");
    let metrics: Value = serde_json::from_str(&ok(&[
        "train",
        "char-rnn",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--limit",
        "5000",
        "--cell",
        "gru",
        "--quiet",
        "--out",
        p(&out),
    ]))
    .unwrap();
    assert!(num(&metrics, "held_out_loss") > 0.0);
    let ckpt = out.join("checkpoint");
    let text = ok(&[
        "generate",
        p(&ckpt),
        "--prompt",
        "The whale",
        "--length",
        "30",
        "--temperature",
        "0.5",
    ]);
    assert!(text.starts_with("The whale"), "{text}");
    assert_eq!(
        text.trim_end_matches('\n').chars().count(),
        "The whale".len() + 30
    );
    let eval = ok(&["eval", p(&ckpt)]);
    assert!(eval.starts_with("test loss"), "{eval}");
    let info: Value = serde_json::from_str(&ok(&["info", p(&ckpt)])).unwrap();
    assert_eq!(info["architecture"]["cell"], "gru");
    // Errors: a prompt with unseen characters, a negative temperature, generating from
    // another kind of checkpoint, epochs for a step-trained model.
    let err = fails(&["generate", p(&ckpt), "--prompt", "☃"]);
    assert!(err.contains("never saw"), "{err}");
    fails(&["generate", p(&ckpt), "--temperature=-1"]);
    fails(&["generate", p(&dir.join("nowhere"))]);
    let err = fails(&[
        "train",
        "char-rnn",
        "--epochs",
        "1",
        "--out",
        p(&dir.join("e")),
    ]);
    assert!(err.contains("--steps"), "{err}");
}

#[test]
fn command_line_errors() {
    let err = rejected(&["train", "cnn", "--bogus"]);
    assert!(err.contains("--bogus"), "{err}");
    let err = rejected(&["train", "resnet"]);
    assert!(err.contains("resnet"), "{err}");
    rejected(&["train", "cnn", "--epochs", "many"]);
    rejected(&["train"]);
    rejected(&["eval"]);
    rejected(&["predict", "somewhere"]);
    rejected(&["frobnicate"]);
    let out = strata(&[]);
    assert!(!out.status.success());
}

#[test]
fn errors_are_one_line() {
    let dir = TempDir::new("cli-errors");
    let missing = dir.join("no-such-checkpoint");
    for cmd in ["eval", "info"] {
        let err = fails(&[cmd, p(&missing)]);
        assert!(
            err.contains("no-such-checkpoint") && err.contains("no such checkpoint directory"),
            "{err}"
        );
    }
    let err = fails(&["predict", p(&missing), p(&dir.join("x.csv"))]);
    assert!(err.contains("no such checkpoint directory"), "{err}");

    // --data pointing to a missing folder: the first file looked for is named.
    let nowhere = dir.join("no-such-data");
    let out = dir.join("out");
    let err = fails(&[
        "train",
        "cnn",
        "--data",
        p(&nowhere),
        "--epochs",
        "1",
        "--quiet",
        "--out",
        p(&out),
    ]);
    assert!(
        err.contains("no-such-data")
            && err.contains("train-images-idx3-ubyte")
            && err.contains("no such file"),
        "{err}"
    );
    let err = fails(&[
        "train",
        "logreg",
        "--data",
        p(&nowhere),
        "--quiet",
        "--out",
        p(&out),
    ]);
    assert!(
        err.contains("no-such-data") && err.contains("breast_cancer.csv"),
        "{err}"
    );
    let err = fails(&[
        "train",
        "linreg",
        "--data",
        p(&nowhere),
        "--quiet",
        "--out",
        p(&out),
    ]);
    assert!(err.contains("diabetes_data_raw.csv"), "{err}");

    // Unknown data sets and impossible settings.
    let err = fails(&[
        "train",
        "logreg",
        "--dataset",
        "mnist",
        "--quiet",
        "--out",
        p(&out),
    ]);
    assert!(
        err.contains("unknown data set") && err.contains("mnist"),
        "{err}"
    );
    let err = fails(&[
        "train",
        "cnn",
        "--dataset",
        "iris",
        "--quiet",
        "--out",
        p(&out),
    ]);
    assert!(err.contains("iris"), "{err}");
    let err = fails(&[
        "train",
        "logreg",
        "--epochs",
        "0",
        "--quiet",
        "--out",
        p(&out),
    ]);
    assert!(err.contains("must be positive"), "{err}");
    let err = fails(&[
        "train",
        "logreg",
        "--batch-size",
        "0",
        "--quiet",
        "--out",
        p(&out),
    ]);
    assert!(err.contains("must be positive"), "{err}");
    assert!(!out.exists(), "a failed training wrote {}", out.display());
}

/// Checkpoints whose record or weights belong to another model are refused.
#[test]
fn foreign_checkpoints_are_refused() {
    let dir = TempDir::new("cli-foreign");
    let logreg = dir.join("logreg");
    ok(&[
        "train",
        "logreg",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        p(&logreg),
    ]);
    let cnn = dir.join("cnn");
    ok(&[
        "train",
        "cnn",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--limit",
        "64",
        "--quiet",
        "--out",
        p(&cnn),
    ]);
    let ck = logreg.join("checkpoint");
    let record = json_file(&ck.join("provenance.json"));

    // A copy of the logreg checkpoint whose record says it is another model.
    let copy = |name: &str, edit: &dyn Fn(&mut Value)| {
        let to = dir.join(name);
        std::fs::create_dir_all(&to).unwrap();
        for f in ["model.safetensors", "optimizer.safetensors"] {
            std::fs::copy(ck.join(f), to.join(f)).unwrap();
        }
        let mut r = record.clone();
        edit(&mut r);
        std::fs::write(
            to.join("provenance.json"),
            serde_json::to_string_pretty(&r).unwrap(),
        )
        .unwrap();
        to
    };
    let as_mlp = copy("as-mlp", &|r| r["model"] = "mlp".into());
    let err = fails(&["eval", p(&as_mlp)]);
    assert!(err.contains("as-mlp"), "{err}");
    let input = dir.write("rows.csv", b"1,2\n");
    fails(&["predict", p(&as_mlp), p(&input)]);

    let as_cnn = copy("as-cnn", &|r| {
        r["model"] = "cnn".into();
        r["architecture"] =
            serde_json::json!({ "in_channels": 1, "image_size": [8, 8], "classes": 10 });
    });
    let err = fails(&["eval", p(&as_cnn)]);
    assert!(
        err.contains("as-cnn") && err.contains("do not fit this model"),
        "{err}"
    );

    let unknown = copy("unknown", &|r| r["model"] = "transformer".into());
    let err = fails(&["eval", p(&unknown)]);
    assert!(err.contains("names no known model"), "{err}");

    let wider = copy("wider", &|r| r["architecture"]["features"] = 31.into());
    let err = fails(&["eval", p(&wider)]);
    assert!(err.contains("do not fit this model"), "{err}");

    // The CNN's weights in the logreg checkpoint.
    let swapped = copy("swapped", &|_| {});
    std::fs::copy(
        cnn.join("checkpoint/model.safetensors"),
        swapped.join("model.safetensors"),
    )
    .unwrap();
    let err = fails(&["eval", p(&swapped)]);
    assert!(
        err.contains("swapped") && err.contains("do not fit this model"),
        "{err}"
    );
    let err = fails(&["predict", p(&swapped), p(&input)]);
    assert!(err.contains("do not fit this model"), "{err}");

    // Broken records and missing weights.
    let broken = copy("broken", &|_| {});
    std::fs::write(broken.join("provenance.json"), "{ \"model\": ").unwrap();
    let err = fails(&["info", p(&broken)]);
    assert!(err.contains("not valid JSON"), "{err}");
    let no_record = copy("no-record", &|_| {});
    std::fs::remove_file(no_record.join("provenance.json")).unwrap();
    let err = fails(&["eval", p(&no_record)]);
    assert!(err.contains("provenance.json"), "{err}");
    let no_weights = copy("no-weights", &|_| {});
    std::fs::remove_file(no_weights.join("model.safetensors")).unwrap();
    let err = fails(&["eval", p(&no_weights)]);
    assert!(err.contains("no-weights"), "{err}");
    // A record without an architecture, or with a broken one.
    let bare = copy("bare", &|r| r["architecture"] = Value::Null);
    let err = fails(&["eval", p(&bare)]);
    assert!(err.contains("architecture"), "{err}");
    let short = copy("short", &|r| {
        r["model"] = "cnn".into();
        r["architecture"] =
            serde_json::json!({ "in_channels": 1, "image_size": [8], "classes": 10 });
    });
    let err = fails(&["eval", p(&short)]);
    assert!(err.contains("image size"), "{err}");
    fails(&["predict", p(&short), p(&input)]);
}
