//! The reference trainings behind the `strata` command: each model with its data set,
//! defaults, metrics, checkpoint and plot; and evaluation, prediction and inspection of a
//! checkpoint.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};
use strata_autograd::{Var, no_grad};
use strata_nn::Forward;
use strata_nn::Module;
use strata_optim::{Adam, AdamConfig, AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig};
use strata_tensor::{Tensor, seeded_rng};

use crate::data::bundled::{self, Provenance};
use crate::data::readers::{CharVocab, read_csv, read_idx, read_text};
use crate::data::{Dataset, InMemoryDataset, Labels, Standardizer};
use crate::language::{self, CharModel, TextCorpus};
use crate::models::{
    CharRnn, CharRnnConfig, CharTransformer, CharTransformerConfig, Cnn, CnnConfig, Forecaster,
    LinearRegression, LogisticRegression, Mlp, PolynomialRegression, RecurrentKind,
    SequenceClassifier, SequenceClassifierConfig, r2_score,
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
    /// A character-level LSTM (or GRU) language model on Moby Dick.
    CharRnn,
    /// A character-level transformer language model (causal mask) on Moby Dick.
    CharTransformer,
    /// A recurrent one-step-ahead forecaster of the monthly sunspot numbers.
    Forecast,
    /// A transformer-encoder classifier of MNIST digits read as sequences of 28 rows.
    SeqClassifier,
}

impl ModelKind {
    const ALL: [ModelKind; 9] = [
        ModelKind::Linreg,
        ModelKind::Polyreg,
        ModelKind::Logreg,
        ModelKind::Mlp,
        ModelKind::Cnn,
        ModelKind::CharRnn,
        ModelKind::CharTransformer,
        ModelKind::Forecast,
        ModelKind::SeqClassifier,
    ];

    /// The name used on the command line and in checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Linreg => "linreg",
            ModelKind::Polyreg => "polyreg",
            ModelKind::Logreg => "logreg",
            ModelKind::Mlp => "mlp",
            ModelKind::Cnn => "cnn",
            ModelKind::CharRnn => "char-rnn",
            ModelKind::CharTransformer => "char-transformer",
            ModelKind::Forecast => "forecast",
            ModelKind::SeqClassifier => "seq-classifier",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether this is a character language model (trained in steps, used with
    /// [`generate`]).
    pub fn is_language_model(self) -> bool {
        matches!(self, ModelKind::CharRnn | ModelKind::CharTransformer)
    }
}

/// What to train and how; `None` takes the model's default. Start from
/// [`TrainOptions::new`] and change what you need.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOptions {
    /// The model.
    pub model: ModelKind,
    /// Epochs (not for the character models, which train in steps).
    pub epochs: Option<usize>,
    /// Optimizer steps of the character models.
    pub steps: Option<usize>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// Batch size.
    pub batch_size: Option<usize>,
    /// LSTM or GRU, for char-rnn and forecast.
    pub cell: Option<RecurrentKind>,
    /// The seed of initialisation, splits and shuffling.
    pub seed: u64,
    /// Where to write metrics.json, the checkpoint and the plot.
    pub out: PathBuf,
    /// Data to train on instead of the bundled set: a folder of files of the model's
    /// format, or a UTF-8 text file for the character models.
    pub data: Option<PathBuf>,
    /// A bundled data set other than the model's default (`digits` for the CNN and MLP,
    /// `iris`/`wine` for logistic regression, `sunspots-yearly`/`airline` for forecast).
    pub dataset: Option<String>,
    /// Use only the first `n` training samples (quick runs and tests); for the character
    /// models, the first `n` characters of the text.
    pub limit: Option<usize>,
    /// Draw progress bars.
    pub progress: bool,
}

impl TrainOptions {
    /// The model's defaults, seed 0, writing into `out`, with progress bars.
    pub fn new(model: ModelKind, out: impl Into<PathBuf>) -> Self {
        TrainOptions {
            model,
            epochs: None,
            steps: None,
            lr: None,
            batch_size: None,
            cell: None,
            seed: 0,
            out: out.into(),
            data: None,
            dataset: None,
            limit: None,
            progress: true,
        }
    }
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
        ModelKind::Forecast => {
            let name = opts.dataset.as_deref().unwrap_or("sunspots");
            let (series, dataset) = bundled::series(&root, name)?;
            let window = forecast_window(name);
            let data = forecast_data(&series, window)?;
            let cell = opts.cell.unwrap_or(RecurrentKind::Lstm);
            let (hidden, layers) = (64, 1);
            Setup {
                model: Box::new(Forecaster::new(cell, hidden, layers, &mut rng)?),
                objective: Objective::Mse,
                architecture: json!({ "cell": cell.name(), "hidden": hidden, "layers": layers, "window": window }),
                extra: json!({
                    "series_mean": data.mean,
                    "series_std": data.std,
                    "persistence_test_r2": data.persistence_r2,
                }),
                train: data.train,
                test: data.test,
                dataset,
                // Adam under a one-cycle schedule peaking at 5e-3.
                defaults: (20, 5e-3, 32),
                optimizer: "adam",
            }
        }
        ModelKind::SeqClassifier => {
            let (train, test, dataset) = images(opts)?;
            let shape = train.sample_shape().to_vec();
            if shape[0] != 1 {
                return Err(ModelsError::Config(format!(
                    "seq-classifier reads one-channel images as sequences of rows, got images {shape:?}"
                )));
            }
            let config = SequenceClassifierConfig {
                features: shape[2],
                length: shape[1],
                d_model: 64,
                heads: 4,
                layers: 2,
                feedforward: 128,
                classes: train.classes().unwrap_or(10),
                // No dropout: two epochs reach ~98 % test accuracy without it.
                dropout: 0.0,
            };
            Setup {
                model: Box::new(SequenceClassifier::new(config, &mut rng)?),
                objective: Objective::CrossEntropy,
                architecture: seq_classifier_json(&config),
                extra: json!({}),
                train,
                test,
                dataset,
                defaults: (2, 2e-3, 64),
                optimizer: "adam",
            }
        }
        ModelKind::CharRnn | ModelKind::CharTransformer => {
            return Err(ModelsError::Config(format!(
                "{} is a language model: it trains through `train` and samples with `generate`",
                opts.model.name()
            )));
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

/// The window a forecaster reads: five years of months, twenty years, or one year.
fn forecast_window(series: &str) -> usize {
    match series {
        "sunspots" => 60,
        "sunspots-yearly" => 20,
        _ => 12,
    }
}

/// Windows of a series for one-step-ahead forecasting, split in time.
struct ForecastData {
    train: InMemoryDataset,
    test: InMemoryDataset,
    mean: f64,
    std: f64,
    persistence_r2: f64,
}

/// The windows of `window` values of `series`, each labelled with the value after it,
/// standardised with the mean and deviation of the training part; the first 80% of the
/// windows train, the rest test (in time order, so the test data lies in the future).
fn forecast_data(series: &[f64], window: usize) -> Result<ForecastData> {
    if series.len() < window + 10 {
        return Err(ModelsError::Config(format!(
            "a series of {} values is too short for windows of {window}",
            series.len()
        )));
    }
    let windows = series.len() - window;
    let split = windows * 4 / 5;
    let seen = &series[..split + window];
    let mean = seen.iter().sum::<f64>() / seen.len() as f64;
    let std = (seen.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / seen.len() as f64)
        .sqrt()
        .max(1e-12);
    let z: Vec<f32> = series.iter().map(|v| ((v - mean) / std) as f32).collect();
    let part = |starts: std::ops::Range<usize>| -> Result<InMemoryDataset> {
        let features = starts
            .clone()
            .flat_map(|s| z[s..s + window].iter().copied())
            .collect();
        let labels = starts.map(|s| z[s + window]).collect();
        InMemoryDataset::new(features, &[window, 1], Labels::Values(labels))
    };
    let persistence: Vec<f32> = (split..windows).map(|s| z[s + window - 1]).collect();
    let truth: Vec<f32> = (split..windows).map(|s| z[s + window]).collect();
    Ok(ForecastData {
        train: part(0..split)?,
        test: part(split..windows)?,
        mean,
        std,
        persistence_r2: r2_score(&persistence, &truth),
    })
}

fn seq_classifier_json(c: &SequenceClassifierConfig) -> Value {
    json!({
        "features": c.features, "length": c.length, "d_model": c.d_model, "heads": c.heads,
        "layers": c.layers, "feedforward": c.feedforward, "classes": c.classes, "dropout": c.dropout,
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
    if opts.model.is_language_model() {
        return train_language_model(opts);
    }
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
        s.model.as_mut(),
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
    if opts.model == ModelKind::Forecast {
        metrics["persistence_test_r2"] = s.extra["persistence_test_r2"].clone();
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
        ModelKind::Forecast => {
            let cell = RecurrentKind::from_name(a["cell"].as_str().unwrap_or(""))
                .map_err(|_| bad("no recurrent cell"))?;
            (
                Box::new(Forecaster::new(
                    cell,
                    num(&a["hidden"])?,
                    num(&a["layers"])?,
                    &mut rng,
                )?),
                Objective::Mse,
            )
        }
        ModelKind::SeqClassifier => {
            let config = SequenceClassifierConfig {
                features: num(&a["features"])?,
                length: num(&a["length"])?,
                d_model: num(&a["d_model"])?,
                heads: num(&a["heads"])?,
                layers: num(&a["layers"])?,
                feedforward: num(&a["feedforward"])?,
                classes: num(&a["classes"])?,
                dropout: a["dropout"].as_f64().unwrap_or(0.0),
            };
            (
                Box::new(SequenceClassifier::new(config, &mut rng)?),
                Objective::CrossEntropy,
            )
        }
        ModelKind::CharRnn | ModelKind::CharTransformer => {
            return Err(bad(
                "a language model: use `strata generate` to sample from it",
            ));
        }
    };
    checkpoint::load_model(dir, model.as_ref())?;
    let mut model = model;
    model.eval();
    Ok((kind, model, objective))
}

/// The options a checkpoint was trained with, to rebuild its data.
fn options_from(record: &Value, kind: ModelKind) -> TrainOptions {
    TrainOptions {
        seed: record["seed"].as_u64().unwrap_or(0),
        data: record["dataset"]["data_dir"].as_str().map(PathBuf::from),
        dataset: record["dataset"]["variant"].as_str().map(String::from),
        progress: false,
        ..TrainOptions::new(kind, PathBuf::new())
    }
}

/// Evaluates the checkpoint in `dir` on the test split of the data it was trained on.
///
/// # Errors
/// [`ModelsError::Checkpoint`] for a missing or foreign checkpoint; data errors.
pub fn eval(dir: &Path) -> Result<Evaluation> {
    let record = checkpoint::read_record(dir)?;
    if record["model"]
        .as_str()
        .and_then(ModelKind::from_name)
        .is_some_and(ModelKind::is_language_model)
    {
        return eval_language_model(&record, dir);
    }
    let (kind, model, objective) = rebuild(&record, dir)?;
    let s = setup(&options_from(&record, kind))?;
    train::evaluate(model.as_ref(), &s.test, objective, 256)
}

/// Predictions of the checkpoint in `dir` for the samples in `input`: an IDX image file
/// for the image models (cnn, mlp, seq-classifier), CSV rows of raw features (no header)
/// for the tabular ones, or a series of raw values (one per line) for the forecaster.
/// One line per sample: the class or the value; for the forecaster, one forecast per
/// window of the series, the last one of the value after the series' end.
///
/// # Errors
/// [`ModelsError::Checkpoint`] for a missing or foreign checkpoint, [`ModelsError::Data`]
/// for an input of the wrong format or size.
pub fn predict(dir: &Path, input: &Path) -> Result<Vec<String>> {
    let record = checkpoint::read_record(dir)?;
    let (kind, model, objective) = rebuild(&record, dir)?;
    let x = match kind {
        ModelKind::Forecast => forecast_input(&record, input)?,
        ModelKind::Mlp | ModelKind::Cnn | ModelKind::SeqClassifier => {
            let img = read_idx(input)?;
            let shape: Vec<usize> = if kind == ModelKind::SeqClassifier {
                let a = &record["architecture"];
                vec![
                    1,
                    a["length"].as_u64().unwrap_or(0) as usize,
                    a["features"].as_u64().unwrap_or(0) as usize,
                ]
            } else if kind == ModelKind::Cnn {
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
        Objective::Mse if kind == ModelKind::Forecast => {
            let (mean, std) = (
                record["extra"]["series_mean"].as_f64().unwrap_or(0.0),
                record["extra"]["series_std"].as_f64().unwrap_or(1.0),
            );
            out.to_vec()
                .iter()
                .map(|&v| format!("{}", f64::from(v) * std + mean))
                .collect()
        }
        Objective::Mse => out.to_vec().iter().map(|v| format!("{v}")).collect(),
    })
}

/// The forecaster's input from a file of raw values, one per line (or the last field of
/// each CSV row; a non-numeric first line is taken as a header): every window of the
/// model's length, standardised as in training, so the output is one forecast per
/// window — the last line forecasts the value after the file's last one.
fn forecast_input(record: &Value, input: &Path) -> Result<Tensor<f32>> {
    let window = record["architecture"]["window"].as_u64().unwrap_or(0) as usize;
    let text = std::fs::read_to_string(input)
        .map_err(|e| crate::error::data_error(input, e.to_string()))?;
    let mut values = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let field = line
            .rsplit(',')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if field.is_empty() {
            continue;
        }
        match field.parse::<f64>() {
            Ok(v) => values.push(v),
            Err(_) if i == 0 => {}
            Err(_) => {
                return Err(crate::error::data_error(
                    input,
                    format!("line {}: {field:?} is not a number", i + 1),
                ));
            }
        }
    }
    if window == 0 || values.len() < window {
        return Err(crate::error::data_error(
            input,
            format!(
                "{} values, the forecaster reads windows of {window}",
                values.len()
            ),
        ));
    }
    let (mean, std) = (
        record["extra"]["series_mean"].as_f64().unwrap_or(0.0),
        record["extra"]["series_std"].as_f64().unwrap_or(1.0),
    );
    let z: Vec<f32> = values.iter().map(|v| ((v - mean) / std) as f32).collect();
    let n = z.len() - window + 1;
    let flat = (0..n)
        .flat_map(|s| z[s..s + window].iter().copied())
        .collect();
    Ok(Tensor::from_vec(flat, &[n, window, 1])?)
}

/// The provenance record of the checkpoint in `dir`, pretty-printed.
///
/// # Errors
/// [`ModelsError::Checkpoint`] for a missing or unreadable record.
pub fn info(dir: &Path) -> Result<String> {
    let record = checkpoint::read_record(dir)?;
    Ok(serde_json::to_string_pretty(&record).expect("plain JSON values"))
}

/// The held-out share of the text the character models are evaluated on (its end).
const HELD_OUT_FRACTION: f64 = 0.1;

/// The architecture of a character model with the defaults, as recorded in checkpoints.
fn language_architecture(kind: ModelKind, cell: Option<RecurrentKind>) -> Value {
    match kind {
        ModelKind::CharRnn => json!({
            "cell": cell.unwrap_or(RecurrentKind::Lstm).name(),
            "embed_dim": 64, "hidden": 256, "layers": 2, "dropout": 0.0,
        }),
        _ => json!({
            "d_model": 128, "heads": 4, "layers": 2, "feedforward": 512,
            "context": 64, "dropout": 0.0,
        }),
    }
}

/// Default (steps, peak lr, batch, characters per window) of the character models.
fn language_defaults(kind: ModelKind) -> (usize, f64, usize, usize) {
    match kind {
        ModelKind::CharRnn => (3000, 4e-3, 32, 64),
        _ => (3000, 2e-3, 32, 64),
    }
}

/// A freshly initialised character model of `kind` with `architecture` over `vocab`
/// characters.
fn char_model(kind: ModelKind, a: &Value, vocab: usize, seed: u64) -> Result<CharModel> {
    let num = |key: &str| {
        a[key]
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| ModelsError::Config(format!("the architecture lacks {key:?}: {a}")))
    };
    let mut rng = seeded_rng(seed);
    Ok(match kind {
        ModelKind::CharRnn => CharModel::Rnn(CharRnn::new(
            CharRnnConfig {
                vocab,
                embed_dim: num("embed_dim")?,
                hidden: num("hidden")?,
                layers: num("layers")?,
                kind: RecurrentKind::from_name(a["cell"].as_str().unwrap_or(""))?,
                dropout: a["dropout"].as_f64().unwrap_or(0.0),
            },
            &mut rng,
        )?),
        _ => CharModel::Transformer(CharTransformer::new(
            CharTransformerConfig {
                vocab,
                d_model: num("d_model")?,
                heads: num("heads")?,
                layers: num("layers")?,
                feedforward: num("feedforward")?,
                context: num("context")?,
                dropout: a["dropout"].as_f64().unwrap_or(0.0),
            },
            &mut rng,
        )?),
    })
}

/// The text a character model trains on (`data`: a text file, else the bundled Moby
/// Dick), cut to its first `limit` characters.
fn language_corpus(data: Option<&Path>, limit: Option<usize>) -> Result<(TextCorpus, Provenance)> {
    let (path, provenance) = match data {
        Some(file) => (
            file.to_path_buf(),
            Provenance {
                name: file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                source: file.display().to_string(),
                license: "see the text's terms".into(),
            },
        ),
        None => (
            bundled::moby_dick_path(&bundled::data_dir()),
            bundled::moby_dick_provenance(),
        ),
    };
    let (mut text, _) = read_text(&path)?;
    if let Some(n) = limit
        && let Some((cut, _)) = text.char_indices().nth(n)
    {
        text.truncate(cut);
    }
    Ok((TextCorpus::new(&text, HELD_OUT_FRACTION)?, provenance))
}

/// Trains a character language model (see [`train`]).
fn train_language_model(opts: &TrainOptions) -> Result<Value> {
    if opts.epochs.is_some() {
        return Err(ModelsError::Config(format!(
            "{} trains in steps: use --steps instead of --epochs",
            opts.model.name()
        )));
    }
    if opts.dataset.is_some() {
        return Err(ModelsError::Config(format!(
            "{} has one bundled text (Moby Dick); give another with --data FILE",
            opts.model.name()
        )));
    }
    let (corpus, dataset) = language_corpus(opts.data.as_deref(), opts.limit)?;
    let architecture = language_architecture(opts.model, opts.cell);
    let mut model = char_model(opts.model, &architecture, corpus.vocab.len(), opts.seed)?;
    let (steps, lr, batch, seq_len) = language_defaults(opts.model);
    let config = language::LmTrainConfig {
        steps: opts.steps.unwrap_or(steps),
        batch_size: opts.batch_size.unwrap_or(batch),
        seq_len,
        max_lr: opts.lr.unwrap_or(lr),
        clip: Some(1.0),
        eval_every: (opts.steps.unwrap_or(steps) / 20).max(1),
        eval_chars: 16_384,
        progress: opts.progress,
    };
    let mut optimizer = AdamW::new(
        model.parameters(),
        AdamWConfig {
            lr: config.max_lr,
            ..AdamWConfig::default()
        },
    )?;
    let mut rng = seeded_rng(opts.seed ^ 0x5eed);
    let start = Instant::now();
    let history = language::fit(&mut model, &mut optimizer, &corpus, &config, &mut rng)?;
    let seconds = start.elapsed().as_secs_f64();
    let last = history.last().expect("at least one evaluation");
    let sample = language::generate(&model, &corpus.vocab, "\n", 240, 0.8, &mut rng)?;
    let vocab: String = (0..corpus.vocab.len())
        .filter_map(|i| corpus.vocab.char(i))
        .collect();
    let metrics = json!({
        "model": opts.model.name(),
        "dataset": dataset.name,
        "steps": config.steps,
        "train_loss": last.train_loss,
        "held_out_loss": last.test.loss,
        "held_out_bits_per_char": last.test.loss / std::f64::consts::LN_2,
        "held_out_accuracy": last.test.accuracy,
        "unigram_entropy": corpus.unigram_entropy,
        "below_unigram": 1.0 - last.test.loss / corpus.unigram_entropy,
        "seconds": seconds,
        "train_chars_per_s": (config.steps * config.batch_size * config.seq_len) as f64
            / history.iter().map(|r| r.seconds).sum::<f64>().max(1e-9),
        "sample": sample,
    });
    let record = json!({
        "model": opts.model.name(),
        "architecture": architecture,
        "vocab": vocab,
        "hyperparameters": {
            "steps": config.steps, "lr": config.max_lr, "batch_size": config.batch_size,
            "seq_len": config.seq_len, "optimizer": "adamw", "schedule": "one-cycle",
            "clip_grad_norm": config.clip, "limit": opts.limit, "held_out_fraction": HELD_OUT_FRACTION,
        },
        "dataset": { "name": dataset.name, "source": dataset.source, "license": dataset.license,
                      "data_file": opts.data.as_ref().map(|d| d.display().to_string()) },
        "seed": opts.seed,
        "threads": threads(),
        "strata_version": strata_version(),
        "metrics": metrics,
    });
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| ModelsError::Config(format!("{}: {e}", opts.out.display())))?;
    checkpoint::save(&opts.out.join("checkpoint"), &model, &optimizer, &record)?;
    let text = serde_json::to_string_pretty(&metrics).expect("plain JSON values");
    std::fs::write(opts.out.join("metrics.json"), text + "\n")
        .map_err(|e| ModelsError::Config(format!("{}: {e}", opts.out.display())))?;
    plot::training_curves(&history, opts.model.name(), &opts.out.join("curves.svg"))?;
    Ok(metrics)
}

/// The character model of a checkpoint with its weights, its vocabulary and the window
/// length it trained on.
fn rebuild_language_model(record: &Value, dir: &Path) -> Result<(CharModel, CharVocab, usize)> {
    let bad = |msg: &str| ModelsError::Checkpoint {
        path: dir.to_path_buf(),
        msg: msg.to_string(),
    };
    let kind = record["model"]
        .as_str()
        .and_then(ModelKind::from_name)
        .filter(|k| k.is_language_model())
        .ok_or_else(|| bad("not a character language model"))?;
    let vocab = record["vocab"]
        .as_str()
        .filter(|v| !v.is_empty())
        .map(CharVocab::from_text)
        .ok_or_else(|| bad("the record has no vocabulary"))?;
    let mut model = char_model(kind, &record["architecture"], vocab.len(), 0)?;
    checkpoint::load_model(dir, &model)?;
    model.eval();
    let seq_len = record["hyperparameters"]["seq_len"]
        .as_u64()
        .map_or(64, |n| n as usize);
    Ok((model, vocab, seq_len))
}

/// The held-out loss of the character model of a checkpoint, on the text it trained on.
fn eval_language_model(record: &Value, dir: &Path) -> Result<Evaluation> {
    let (model, vocab, seq_len) = rebuild_language_model(record, dir)?;
    let data = record["dataset"]["data_file"].as_str().map(PathBuf::from);
    let limit = record["hyperparameters"]["limit"]
        .as_u64()
        .map(|n| n as usize);
    let (corpus, _) = language_corpus(data.as_deref(), limit)?;
    if corpus.vocab != vocab {
        return Err(ModelsError::Checkpoint {
            path: dir.to_path_buf(),
            msg: "the text it was trained on has changed (another vocabulary)".into(),
        });
    }
    language::held_out_loss(&model, &corpus.held_out, seq_len, usize::MAX)
}

/// Text sampled from the character model of the checkpoint in `dir`: `prompt` continued
/// by `length` characters at `temperature` (0: the most likely character each time),
/// drawn with an RNG seeded with `seed`.
///
/// # Errors
/// [`ModelsError::Checkpoint`] for a missing checkpoint or one of another model;
/// [`ModelsError::Config`] for a prompt with characters the model never saw or a
/// negative temperature.
pub fn generate(
    dir: &Path,
    prompt: &str,
    length: usize,
    temperature: f64,
    seed: u64,
) -> Result<String> {
    let record = checkpoint::read_record(dir)?;
    let (model, vocab, _) = rebuild_language_model(&record, dir)?;
    language::generate(
        &model,
        &vocab,
        prompt,
        length,
        temperature,
        &mut seeded_rng(seed),
    )
}
