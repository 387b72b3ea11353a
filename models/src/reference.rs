//! The reference trainings behind the `strata` command: each model with its data set,
//! defaults, metrics, checkpoint and plot; and evaluation, prediction and inspection of a
//! checkpoint.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};
use strata_autograd::{Var, no_grad};
use strata_nn::Forward;
use strata_optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use strata_tensor::{Tensor, seeded_rng};

use crate::data::bundled::{self, Provenance};
use crate::data::readers::{read_csv, read_idx};
use crate::data::{Dataset, InMemoryDataset, Labels, Standardizer};
use crate::models::{
    Cnn, CnnConfig, LinearRegression, LogisticRegression, Mlp, PolynomialRegression,
};
use crate::train::{self, EpochRecord, Evaluation, Objective, TrainConfig};
use crate::{ModelsError, Result, checkpoint, plot};

/// The reference models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    /// Linear regression on the diabetes data (gradient descent, checked against least squares).
    Linreg,
    /// Cubic regression of diabetes progression on body-mass index.
    Polyreg,
    /// Logistic regression on breast cancer (binary; iris and wine: multinomial).
    Logreg,
    /// A 784-256-128-10 perceptron on MNIST.
    Mlp,
    /// The reference CNN on MNIST (or the 8×8 digits, Fashion-MNIST, CIFAR-10).
    Cnn,
}

impl ModelKind {
    /// The name used on the command line and in checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Linreg => "linreg",
            ModelKind::Polyreg => "polyreg",
            ModelKind::Logreg => "logreg",
            ModelKind::Mlp => "mlp",
            ModelKind::Cnn => "cnn",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            ModelKind::Linreg,
            ModelKind::Polyreg,
            ModelKind::Logreg,
            ModelKind::Mlp,
            ModelKind::Cnn,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// What to train and how; `None` takes the model's default.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOptions {
    /// The model.
    pub model: ModelKind,
    /// Epochs.
    pub epochs: Option<usize>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// Batch size.
    pub batch_size: Option<usize>,
    /// The seed of initialisation, splits and shuffling.
    pub seed: u64,
    /// Where to write metrics.json, the checkpoint and the plot.
    pub out: PathBuf,
    /// A folder of files of the model's data format to train on instead of the bundled set.
    pub data: Option<PathBuf>,
    /// A bundled data set other than the model's default (`digits` for the CNN and MLP,
    /// `iris`/`wine` for logistic regression).
    pub dataset: Option<String>,
    /// Use only the first `n` training samples (quick runs and tests).
    pub limit: Option<usize>,
    /// Draw progress bars.
    pub progress: bool,
}

/// A model ready to train: the network, its objective, its data and its record fields.
struct Setup {
    model: Box<dyn Forward>,
    objective: Objective,
    train: InMemoryDataset,
    test: InMemoryDataset,
    dataset: Provenance,
    architecture: Value,
    extra: Value,
    defaults: (usize, f64, usize),
    optimizer: &'static str,
}

fn data_root(opts_data: Option<&Path>) -> PathBuf {
    opts_data
        .map(Path::to_path_buf)
        .unwrap_or_else(bundled::data_dir)
}

/// A tabular set split 80/20 with `seed`, standardised on the training part.
fn tabular(
    data: InMemoryDataset,
    seed: u64,
) -> Result<(InMemoryDataset, InMemoryDataset, Standardizer)> {
    let mut parts = data.split(&[0.8, 0.2], seed)?;
    let mut test = parts.pop().expect("two parts");
    let mut train = parts.pop().expect("two parts");
    let st = Standardizer::fit(&train);
    st.apply(&mut train)?;
    st.apply(&mut test)?;
    Ok((train, test, st))
}

fn standardizer_json(st: &Standardizer) -> Value {
    json!({ "mean": st.mean, "std": st.std })
}

/// Image data for the MLP and CNN: the bundled MNIST, the 8×8 digits, or a folder of
/// IDX (MNIST / Fashion-MNIST) or CIFAR-10 files.
fn images(opts: &TrainOptions) -> Result<(InMemoryDataset, InMemoryDataset, Provenance)> {
    match (opts.dataset.as_deref(), &opts.data) {
        (Some("digits"), _) => {
            let all = bundled::digits(&data_root(opts.data.as_deref()))?;
            let mut parts = all.split(&[0.8, 0.2], opts.seed)?;
            let test = parts.pop().expect("two parts");
            Ok((
                parts.pop().expect("two parts"),
                test,
                bundled::uci_provenance("digits"),
            ))
        }
        (Some(other), _) if other != "mnist" => Err(ModelsError::Config(format!(
            "unknown image data set {other:?} (mnist or digits)"
        ))),
        (_, Some(dir)) if dir.join("data_batch_1.bin").is_file() => {
            let (train, test) = bundled::cifar10(dir)?;
            let p = Provenance {
                name: "CIFAR-10".into(),
                source: dir.display().to_string(),
                license: "see the data set's terms".into(),
            };
            Ok((train, test, p))
        }
        (_, Some(dir)) => {
            let (train, test) = bundled::mnist(dir)?;
            let p = Provenance {
                name: "IDX images".into(),
                source: dir.display().to_string(),
                license: "see the data set's terms".into(),
            };
            Ok((train, test, p))
        }
        (_, None) => {
            let (train, test) = bundled::mnist(&bundled::data_dir().join("mnist"))?;
            Ok((train, test, bundled::mnist_provenance()))
        }
    }
}

fn setup(opts: &TrainOptions) -> Result<Setup> {
    let mut rng = seeded_rng(opts.seed);
    let root = data_root(opts.data.as_deref());
    Ok(match opts.model {
        ModelKind::Linreg => {
            let (train, test, st) = tabular(bundled::diabetes(&root)?, opts.seed)?;
            let n = train.len();
            Setup {
                model: Box::new(LinearRegression::new(10, &mut rng)),
                objective: Objective::Mse,
                architecture: json!({ "features": 10 }),
                extra: json!({ "standardizer": standardizer_json(&st) }),
                train,
                test,
                dataset: bundled::uci_provenance("diabetes"),
                defaults: (5000, 0.1, n),
                optimizer: "sgd",
            }
        }
        ModelKind::Polyreg => {
            let all = bundled::diabetes(&root)?;
            let bmi: Vec<f32> = all.features().chunks(10).map(|r| r[2]).collect();
            let Labels::Values(y) = all.labels().clone() else {
                unreachable!("diabetes is regression data")
            };
            let one = InMemoryDataset::new(bmi, &[1], Labels::Values(y))?;
            let mut parts = one.split(&[0.8, 0.2], opts.seed)?;
            let test = parts.pop().expect("two parts");
            let train = parts.pop().expect("two parts");
            let model = PolynomialRegression::new(3, &mut rng)?;
            model.fit_standardization(&Tensor::from_vec(
                train.features().to_vec(),
                &[train.len(), 1],
            )?)?;
            let n = train.len();
            Setup {
                model: Box::new(model),
                objective: Objective::Mse,
                architecture: json!({ "degree": 3, "input": "bmi" }),
                extra: json!({}),
                train,
                test,
                dataset: bundled::uci_provenance("diabetes"),
                defaults: (2000, 0.1, n),
                optimizer: "sgd",
            }
        }
        ModelKind::Logreg => {
            let (name, data) = match opts.dataset.as_deref().unwrap_or("breast_cancer") {
                "breast_cancer" => ("breast_cancer", bundled::breast_cancer(&root)?),
                "iris" => ("iris", bundled::iris(&root)?),
                "wine" => ("wine", bundled::wine(&root)?),
                other => {
                    return Err(ModelsError::Config(format!(
                        "unknown data set {other:?} for logreg (breast_cancer, iris, wine)"
                    )));
                }
            };
            let classes = data.classes().expect("classification data");
            let features = data.sample_shape()[0];
            let (train, test, st) = tabular(data, opts.seed)?;
            let model = LogisticRegression::new(features, classes, &mut rng);
            Setup {
                objective: if model.is_binary() {
                    Objective::BinaryLogits
                } else {
                    Objective::CrossEntropy
                },
                model: Box::new(model),
                architecture: json!({ "features": features, "classes": classes }),
                extra: json!({ "standardizer": standardizer_json(&st) }),
                train,
                test,
                dataset: bundled::uci_provenance(name),
                defaults: (30, 0.05, 32),
                optimizer: "sgd",
            }
        }
        ModelKind::Mlp | ModelKind::Cnn => {
            let (train, test, dataset) = images(opts)?;
            let shape = train.sample_shape().to_vec();
            let classes = train.classes().unwrap_or(10);
            let (model, architecture): (Box<dyn Forward>, Value) = if opts.model == ModelKind::Cnn {
                let config = CnnConfig {
                    in_channels: shape[0],
                    image_size: [shape[1], shape[2]],
                    classes,
                };
                let arch = json!({ "in_channels": shape[0], "image_size": [shape[1], shape[2]], "classes": classes });
                (Box::new(Cnn::new(config, &mut rng)?), arch)
            } else {
                let inputs: usize = shape.iter().product();
                let sizes = [inputs, 256, 128, classes];
                (
                    Box::new(Mlp::new(&sizes, &mut rng)?),
                    json!({ "sizes": sizes, "input_shape": shape }),
                )
            };
            let epochs = if opts.model == ModelKind::Cnn { 1 } else { 3 };
            Setup {
                model,
                objective: Objective::CrossEntropy,
                architecture,
                extra: json!({}),
                train,
                test,
                dataset,
                // Adam under a one-cycle schedule peaking at 3e-3.
                defaults: (epochs, 3e-3, 64),
                optimizer: "adam",
            }
        }
    })
}

fn optimizer_for(setup: &Setup, lr: f64) -> Result<Box<dyn Optimizer>> {
    let params = setup.model.parameters();
    Ok(match setup.optimizer {
        "adam" => Box::new(Adam::new(
            params,
            AdamConfig {
                lr,
                ..AdamConfig::default()
            },
        )?),
        _ => Box::new(Sgd::new(
            params,
            SgdConfig {
                lr,
                ..SgdConfig::default()
            },
        )?),
    })
}

fn strata_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn threads() -> usize {
    rayon::current_num_threads()
}

/// Trains a reference model and writes `metrics.json`, the checkpoint (`checkpoint/`) and
/// the loss curves (`curves.svg`) into `opts.out`; returns the metrics.
///
/// # Errors
/// Data, configuration, training and file errors, each naming what is wrong.
pub fn train(opts: &TrainOptions) -> Result<Value> {
    let mut s = setup(opts)?;
    if let Some(limit) = opts.limit {
        let keep: Vec<usize> = (0..limit.min(s.train.len())).collect();
        s.train = s.train.subset(&keep);
        let keep: Vec<usize> = (0..limit.min(s.test.len())).collect();
        s.test = s.test.subset(&keep);
    }
    let (epochs, lr, batch) = s.defaults;
    let config = TrainConfig {
        epochs: opts.epochs.unwrap_or(epochs),
        batch_size: opts.batch_size.unwrap_or(batch),
        seed: opts.seed,
        progress: opts.progress,
        one_cycle_max_lr: None,
    };
    let lr = opts.lr.unwrap_or(lr);
    let config = TrainConfig {
        one_cycle_max_lr: (s.optimizer == "adam").then_some(lr),
        ..config
    };
    let mut optimizer = optimizer_for(&s, lr)?;
    let start = Instant::now();
    let history = train::fit(
        s.model.as_ref(),
        optimizer.as_mut(),
        &s.train,
        &s.test,
        s.objective,
        &config,
        |r| {
            if opts.progress && (config.epochs <= 50 || r.epoch % (config.epochs / 10).max(1) == 0)
            {
                eprintln!("epoch {}: {}", r.epoch, describe(r));
            }
            Ok(())
        },
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let last = history.last().expect("at least one epoch");
    let mut metrics = json!({
        "model": opts.model.name(),
        "dataset": s.dataset.name,
        "epochs": config.epochs,
        "train_loss": last.train_loss,
        "test_loss": last.test.loss,
        "seconds": seconds,
        "samples_per_s": history.iter().map(|r| r.samples_per_s).sum::<f64>() / history.len() as f64,
    });
    if let Some(acc) = last.test.accuracy {
        metrics["test_accuracy"] = json!(acc);
    }
    if let Some(r2) = last.test.r2 {
        metrics["test_r2"] = json!(r2);
    }
    if opts.model == ModelKind::Linreg {
        metrics["closed_form"] = closed_form_report(&s)?;
    }
    let record = json!({
        "model": opts.model.name(),
        "architecture": s.architecture,
        "hyperparameters": { "epochs": config.epochs, "lr": lr, "batch_size": config.batch_size, "optimizer": s.optimizer,
                              "schedule": if config.one_cycle_max_lr.is_some() { "one-cycle" } else { "constant" } },
        "dataset": { "name": s.dataset.name, "source": s.dataset.source, "license": s.dataset.license,
                      "data_dir": opts.data.as_ref().map(|d| d.display().to_string()), "variant": opts.dataset },
        "seed": opts.seed,
        "threads": threads(),
        "strata_version": strata_version(),
        "metrics": metrics,
        "extra": s.extra,
    });
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| ModelsError::Config(format!("{}: {e}", opts.out.display())))?;
    checkpoint::save(
        &opts.out.join("checkpoint"),
        s.model.as_ref(),
        optimizer.as_ref(),
        &record,
    )?;
    let text = serde_json::to_string_pretty(&metrics).expect("plain JSON values");
    std::fs::write(opts.out.join("metrics.json"), text + "\n")
        .map_err(|e| ModelsError::Config(format!("{}: {e}", opts.out.display())))?;
    plot::training_curves(&history, opts.model.name(), &opts.out.join("curves.svg"))?;
    Ok(metrics)
}

fn describe(r: &EpochRecord) -> String {
    let metric = match (r.test.accuracy, r.test.r2) {
        (Some(a), _) => format!("test accuracy {:.2}%", 100.0 * a),
        (_, Some(r2)) => format!("test R² {r2:.4}"),
        _ => String::new(),
    };
    format!(
        "train loss {:.4}, test loss {:.4}, {metric}, {:.0} samples/s",
        r.train_loss, r.test.loss, r.samples_per_s
    )
}

/// Linear regression: the least-squares coefficients on the training data beside the
/// trained ones, their largest relative difference, and both test R².
fn closed_form_report(s: &Setup) -> Result<Value> {
    let n = s.train.len();
    let x = Tensor::from_vec(s.train.features().to_vec(), &[n, 10])?;
    let Labels::Values(y) = s.train.labels() else {
        unreachable!("regression data")
    };
    let y = Tensor::from_vec(y.clone(), &[n])?;
    let (w, b) = LinearRegression::closed_form(&x, &y)?;
    let trained: Vec<f64> = s
        .model
        .named_parameters()
        .iter()
        .flat_map(|(_, p)| p.to_vec())
        .map(f64::from)
        .collect();
    let exact: Vec<f64> = w.iter().copied().chain(std::iter::once(b)).collect();
    let scale = exact.iter().map(|v| v.abs()).fold(0.0, f64::max);
    let rel = trained
        .iter()
        .zip(&exact)
        .map(|(t, e)| (t - e).abs() / scale)
        .fold(0.0, f64::max);
    let cf = LinearRegression::new(10, &mut seeded_rng(0));
    cf.fit_closed_form(&x, &y)?;
    let eval = train::evaluate(&cf, &s.test, Objective::Mse, 256)?;
    Ok(json!({ "coefficients": exact, "max_relative_difference": rel, "test_r2": eval.r2 }))
}

/// A model rebuilt from a checkpoint's record, with its objective.
fn rebuild(record: &Value, dir: &Path) -> Result<(ModelKind, Box<dyn Forward>, Objective)> {
    let bad = |msg: &str| ModelsError::Checkpoint {
        path: dir.to_path_buf(),
        msg: msg.to_string(),
    };
    let kind = record["model"]
        .as_str()
        .and_then(ModelKind::from_name)
        .ok_or_else(|| bad("the record names no known model"))?;
    let a = &record["architecture"];
    let num = |v: &Value| {
        v.as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| bad("the record's architecture is incomplete"))
    };
    let mut rng = seeded_rng(0);
    let (model, objective): (Box<dyn Forward>, Objective) = match kind {
        ModelKind::Linreg => (
            Box::new(LinearRegression::new(num(&a["features"])?, &mut rng)),
            Objective::Mse,
        ),
        ModelKind::Polyreg => (
            Box::new(PolynomialRegression::new(num(&a["degree"])?, &mut rng)?),
            Objective::Mse,
        ),
        ModelKind::Logreg => {
            let m = LogisticRegression::new(num(&a["features"])?, num(&a["classes"])?, &mut rng);
            let o = if m.is_binary() {
                Objective::BinaryLogits
            } else {
                Objective::CrossEntropy
            };
            (Box::new(m), o)
        }
        ModelKind::Mlp => {
            let sizes: Vec<usize> = a["sizes"]
                .as_array()
                .ok_or_else(|| bad("no sizes"))?
                .iter()
                .map(num)
                .collect::<Result<_>>()?;
            (
                Box::new(Mlp::new(&sizes, &mut rng)?),
                Objective::CrossEntropy,
            )
        }
        ModelKind::Cnn => {
            let size = a["image_size"]
                .as_array()
                .filter(|s| s.len() == 2)
                .ok_or_else(|| bad("no image size"))?;
            let config = CnnConfig {
                in_channels: num(&a["in_channels"])?,
                image_size: [num(&size[0])?, num(&size[1])?],
                classes: num(&a["classes"])?,
            };
            (
                Box::new(Cnn::new(config, &mut rng)?),
                Objective::CrossEntropy,
            )
        }
    };
    checkpoint::load_model(dir, model.as_ref())?;
    Ok((kind, model, objective))
}

/// The options a checkpoint was trained with, to rebuild its data.
fn options_from(record: &Value, kind: ModelKind) -> TrainOptions {
    TrainOptions {
        model: kind,
        epochs: None,
        lr: None,
        batch_size: None,
        seed: record["seed"].as_u64().unwrap_or(0),
        out: PathBuf::new(),
        data: record["dataset"]["data_dir"].as_str().map(PathBuf::from),
        dataset: record["dataset"]["variant"].as_str().map(String::from),
        limit: None,
        progress: false,
    }
}

/// Evaluates the checkpoint in `dir` on the test split of the data it was trained on.
///
/// # Errors
/// [`ModelsError::Checkpoint`] for a missing or foreign checkpoint; data errors.
pub fn eval(dir: &Path) -> Result<Evaluation> {
    let record = checkpoint::read_record(dir)?;
    let (kind, model, objective) = rebuild(&record, dir)?;
    let s = setup(&options_from(&record, kind))?;
    train::evaluate(model.as_ref(), &s.test, objective, 256)
}

/// Predictions of the checkpoint in `dir` for the samples in `input`: an IDX image file
/// for the image models, or CSV rows of raw features (no header) for the tabular ones.
/// One line per sample: the class, or the value.
///
/// # Errors
/// [`ModelsError::Checkpoint`] for a missing or foreign checkpoint, [`ModelsError::Data`]
/// for an input of the wrong format or size.
pub fn predict(dir: &Path, input: &Path) -> Result<Vec<String>> {
    let record = checkpoint::read_record(dir)?;
    let (kind, model, objective) = rebuild(&record, dir)?;
    let x = match kind {
        ModelKind::Mlp | ModelKind::Cnn => {
            let img = read_idx(input)?;
            let shape: Vec<usize> = if kind == ModelKind::Cnn {
                let a = &record["architecture"];
                let s = a["image_size"].as_array().cloned().unwrap_or_default();
                vec![
                    a["in_channels"].as_u64().unwrap_or(1) as usize,
                    s[0].as_u64().unwrap_or(0) as usize,
                    s[1].as_u64().unwrap_or(0) as usize,
                ]
            } else {
                record["architecture"]["input_shape"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|v| v.as_u64().unwrap_or(0) as usize)
                    .collect()
            };
            let per: usize = shape.iter().product();
            let n = img.dims[0];
            if img.dims[1..].iter().product::<usize>() != per {
                return Err(crate::error::data_error(
                    input,
                    format!(
                        "images of shape {:?} do not fit the model's input {shape:?}",
                        &img.dims[1..]
                    ),
                ));
            }
            let mut full = vec![n];
            full.extend(shape);
            let scale = if record["dataset"]["variant"].as_str() == Some("digits") {
                16.0
            } else {
                255.0
            };
            // CIFAR-10 images are normalised per channel, as in training.
            let cifar = record["dataset"]["name"].as_str() == Some("CIFAR-10");
            let plane = (per / 3).max(1);
            let values = img
                .data
                .iter()
                .enumerate()
                .map(|(i, &p)| {
                    if scale == 16.0 {
                        p as f32 / 16.0
                    } else if cifar {
                        let c = (i / plane) % 3;
                        (p as f32 / 255.0 - bundled::CIFAR10_MEAN[c]) / bundled::CIFAR10_STD[c]
                    } else {
                        (p as f32 / 255.0 - 0.1307) / 0.3081
                    }
                })
                .collect();
            Tensor::from_vec(values, &full)?
        }
        _ => {
            let table = read_csv(input, false, Some(','))?;
            let cols = table.rows[0].len();
            let mut values: Vec<f32> = table
                .rows
                .iter()
                .flat_map(|r| r.iter().map(|&v| v as f32))
                .collect();
            if let Some(st) = record["extra"]["standardizer"].as_object() {
                let get = |k: &str| -> Vec<f32> {
                    st[k]
                        .as_array()
                        .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect())
                        .unwrap_or_default()
                };
                let (mean, std) = (get("mean"), get("std"));
                if mean.len() != cols {
                    return Err(crate::error::data_error(
                        input,
                        format!("rows have {cols} features, the model takes {}", mean.len()),
                    ));
                }
                for row in values.chunks_mut(cols) {
                    for ((v, m), s) in row.iter_mut().zip(&mean).zip(&std) {
                        *v = (*v - m) / s;
                    }
                }
            }
            Tensor::from_vec(values, &[table.rows.len(), cols])?
        }
    };
    let out = no_grad(|| model.forward(&Var::new(x)))?.value();
    Ok(match objective {
        Objective::CrossEntropy => out
            .argmax(Some(1), false)?
            .as_slice()
            .iter()
            .map(|c| c.to_string())
            .collect(),
        Objective::BinaryLogits => out
            .to_vec()
            .iter()
            .map(|&l| u8::from(l > 0.0).to_string())
            .collect(),
        Objective::Mse => out.to_vec().iter().map(|v| format!("{v}")).collect(),
    })
}

/// The provenance record of the checkpoint in `dir`, pretty-printed.
///
/// # Errors
/// [`ModelsError::Checkpoint`] for a missing or unreadable record.
pub fn info(dir: &Path) -> Result<String> {
    let record = checkpoint::read_record(dir)?;
    Ok(serde_json::to_string_pretty(&record).expect("plain JSON values"))
}
