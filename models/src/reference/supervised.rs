//! The supervised reference models' shared parts: [`SupervisedTask`] (a network trained
//! against targets on a train/test split), the image and table loaders, and the readers of
//! prediction inputs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_autograd::{Var, no_grad};
use strata_nn::Forward;
use strata_optim::Optimizer;
use strata_tensor::Tensor;

use super::TrainOptions;
use super::record::{DatasetRecord, Preprocessing};
use super::spec::{Figures, Length, Plan, Task, figures};
use crate::data::bundled::{self, Provenance};
use crate::data::readers::{read_csv, read_idx};
use crate::data::{Batch, Dataset, InMemoryDataset, Standardizer};
use crate::error::{data_error, finite_outputs};
use crate::train::{
    self, Batches, EpochEnd, EpochRecord, Epochs, Evaluation, Objective, PoissonEpochs, Supervised,
};
use crate::{ModelsError, Result};

/// A training and a test set.
pub struct Split {
    /// The training samples.
    pub train: InMemoryDataset,
    /// The test samples.
    pub test: InMemoryDataset,
}

impl Split {
    /// The first part of `split(&[0.8, 0.2], seed)` for training, the second for testing.
    ///
    /// # Errors
    /// As [`InMemoryDataset::split`].
    pub fn of(data: &InMemoryDataset, seed: u64) -> Result<Split> {
        let mut parts = data.split(&[0.8, 0.2], seed)?.into_iter();
        match (parts.next(), parts.next()) {
            (Some(train), Some(test)) => Ok(Split { train, test }),
            _ => Err(ModelsError::Config(
                "an 80/20 split gave no two parts".into(),
            )),
        }
    }
}

/// The extra record of a model trained on standardised features: the standardiser, which
/// prediction applies to raw rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Standardized {
    /// The features' means and deviations on the training set.
    pub standardizer: Standardizer,
}

impl Standardized {
    /// Checks a standardiser read from a record for `features` inputs: one finite mean and
    /// one finite, positive deviation per feature (a hand-edited 0 would divide by zero, a
    /// list of another length standardise the wrong columns).
    ///
    /// # Errors
    /// A message saying what does not fit.
    pub fn check(&self, features: usize) -> std::result::Result<(), String> {
        let st = &self.standardizer;
        if st.mean.len() != features || st.std.len() != features {
            return Err(format!(
                "its standardizer has {} means and {} deviations for {features} features",
                st.mean.len(),
                st.std.len()
            ));
        }
        if let Some((i, m)) = st.mean.iter().enumerate().find(|(_, m)| !m.is_finite()) {
            return Err(format!("its standardizer's mean {i} is {m}"));
        }
        if let Some((i, s)) = st
            .std
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(format!(
                "its standardizer's deviation {i} is {s}, not a finite number above 0"
            ));
        }
        Ok(())
    }
}

/// The task of the supervised models: epochs of shuffled batches of the training set, the
/// loss of an [`Objective`], an evaluation on the test set after each epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SupervisedTask {
    /// What the network's output is trained against.
    pub objective: Objective,
}

impl SupervisedTask {
    /// The task for `objective`.
    pub fn new(objective: Objective) -> Self {
        SupervisedTask { objective }
    }
}

/// The figures of a supervised training.
#[derive(Serialize)]
struct SupervisedFigures {
    test_loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    test_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    test_r2: Option<f64>,
    /// The mean of the epochs' throughputs.
    samples_per_s: f64,
}

impl Task for SupervisedTask {
    type Network = dyn Forward;
    type Data = Split;

    fn limit(&self, data: &mut Split, n: usize) {
        let keep: Vec<usize> = (0..n.min(data.train.len())).collect();
        data.train = data.train.subset(&keep);
        let keep: Vec<usize> = (0..n.min(data.test.len())).collect();
        data.test = data.test.subset(&keep);
    }

    fn train_len(&self, data: &Split) -> usize {
        data.train.len()
    }

    fn fit(
        &mut self,
        net: &mut Self::Network,
        data: &Split,
        optimizer: &mut dyn Optimizer,
        plan: &Plan,
        on_epoch: &mut dyn FnMut(&EpochEnd<'_>) -> Result<()>,
    ) -> Result<Vec<EpochRecord>> {
        let Length::Epochs(epochs) = plan.length else {
            return Err(ModelsError::Config(
                "a supervised model trains in epochs: use --epochs".into(),
            ));
        };
        let comm = &plan.loop_config.comm;
        let mut batches: Box<dyn Batches<Batch = Batch>> = match &plan.loop_config.privacy {
            // Private training draws Poisson batches, from the OS generator unless the
            // noise is seeded (then the whole run repeats, and is recorded as not private).
            Some(private) => {
                let sampler = private.sampler(data.train.len(), plan.seed, comm)?;
                Box::new(PoissonEpochs::new(&data.train, sampler, epochs)?)
            }
            None => Box::new(Epochs::distributed(
                &data.train,
                plan.batch_size,
                epochs,
                plan.seed,
                comm,
            )?),
        };
        let mut learner =
            Supervised::new(net, self.objective, &data.test, plan.batch_size).shared_by(comm);
        train::run_from(
            &mut learner,
            batches.as_mut(),
            optimizer,
            &plan.loop_config,
            plan.start,
            on_epoch,
        )
    }

    fn private_units(&self, data: &Split) -> Result<(usize, &'static str)> {
        Ok((data.train.len(), "training sample"))
    }

    fn evaluate(&self, net: &dyn Forward, data: &Split) -> Result<Evaluation> {
        train::evaluate(net, &data.test, self.objective, 256)
    }

    fn metrics(
        &mut self,
        _net: &dyn Forward,
        _data: &Split,
        history: &[EpochRecord],
        _plan: &Plan,
    ) -> Result<Figures> {
        let last = history.last().map(|r| r.test).unwrap_or_default();
        figures(&SupervisedFigures {
            test_loss: last.loss,
            test_accuracy: last.accuracy,
            test_r2: last.r2,
            samples_per_s: history.iter().map(|r| r.samples_per_s).sum::<f64>()
                / history.len() as f64,
        })
    }
}

/// The folder of the bundled data sets, or the one `--data` gives.
pub fn data_root(opts: &TrainOptions) -> PathBuf {
    opts.data.clone().unwrap_or_else(bundled::data_dir)
}

/// A table split 80/20 with `seed`, standardised on the training part.
///
/// # Errors
/// As [`Split::of`].
pub fn tabular(data: InMemoryDataset, seed: u64) -> Result<(Split, Standardized)> {
    let mut split = Split::of(&data, seed)?;
    let standardizer = Standardizer::fit(&split.train);
    standardizer.apply(&mut split.train)?;
    standardizer.apply(&mut split.test)?;
    Ok((split, Standardized { standardizer }))
}

/// Images for the image models: the bundled MNIST, the 8×8 digits (`--dataset digits`,
/// split 80/20), or a folder of IDX (MNIST, Fashion-MNIST) or CIFAR-10 files (`--data`).
///
/// # Errors
/// Data errors naming the file; an unknown data set.
pub fn images(opts: &TrainOptions) -> Result<(Split, Provenance)> {
    match (opts.dataset.as_deref(), &opts.data) {
        (Some("digits"), _) => {
            let all = bundled::digits(&data_root(opts))?;
            Ok((
                Split::of(&all, opts.seed)?,
                bundled::uci_provenance("digits"),
            ))
        }
        (Some(other), _) if other != "mnist" => Err(ModelsError::Config(format!(
            "unknown image data set {other:?} (mnist or digits)"
        ))),
        // CIFAR-10's batches, gzipped or not (`data_batch_1.bin.gz` is found too).
        (_, Some(dir)) if bundled::find(dir, "data_batch_1.bin").is_ok() => {
            let (train, test) = bundled::cifar10(dir)?;
            let p = Provenance {
                name: "CIFAR-10".into(),
                source: dir.display().to_string(),
                license: "see the data set's terms".into(),
            };
            Ok((Split { train, test }, p))
        }
        (_, Some(dir)) => {
            let (train, test) = bundled::mnist(dir)?;
            let p = Provenance {
                name: "IDX images".into(),
                source: dir.display().to_string(),
                license: "see the data set's terms".into(),
            };
            Ok((Split { train, test }, p))
        }
        (_, None) => {
            let (train, test) = bundled::mnist(&bundled::data_dir().join("mnist"))?;
            Ok((Split { train, test }, bundled::mnist_provenance()))
        }
    }
}

/// The images of the IDX file `input` as a model input `[n, ...shape]`, scaled and
/// normalised as the training data `dataset` was: the 8×8 digits from 0–16 to `[0, 1]`,
/// CIFAR-10 per channel, other images with MNIST's mean and deviation.
///
/// # Errors
/// [`ModelsError::Data`] for a file that is not IDX or whose images do not have `shape`.
pub fn image_input(input: &Path, shape: &[usize], dataset: &DatasetRecord) -> Result<Tensor<f32>> {
    let img = read_idx(input)?;
    // `shape` comes from a checkpoint's record: counted, never wrapped.
    let per = strata_tensor::checked_numel(shape).ok_or_else(|| {
        ModelsError::Config(format!("the model's input shape {shape:?} is too large"))
    })?;
    let n = img.dims[0];
    // The images must have the model's shape, not merely as many pixels: [n, 14, 56] read
    // as [n, 28, 28] would predict from scrambled images. Leading sizes of 1 (a channel of
    // a grey image) may be left out.
    let trim = |s: &[usize]| -> Vec<usize> { s.iter().copied().skip_while(|&d| d == 1).collect() };
    if trim(&img.dims[1..]) != trim(shape) {
        return Err(data_error(
            input,
            format!(
                "images of shape {:?} do not fit the model's input {shape:?}",
                &img.dims[1..]
            ),
        ));
    }
    let mut full = vec![n];
    full.extend_from_slice(shape);
    let pre = image_preprocessing(dataset);
    let divisor = (1.0 / pre.scale).round() as f32;
    let channels = pre.mean.len().max(1);
    let plane = (per / channels).max(1);
    let values = img
        .data
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let x = p as f32 / divisor;
            match (
                pre.mean.get((i / plane) % channels),
                pre.std.get((i / plane) % channels),
            ) {
                (Some(&m), Some(&s)) => (x - m as f32) / s as f32,
                _ => x,
            }
        })
        .collect();
    Ok(Tensor::from_vec(values, &full)?)
}

/// `x` as the f64 of its shortest decimal (`0.1307f32` → `0.1307`, not
/// `0.13070000708…`), so that a record states the numbers as the f32 records do.
fn shortest(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// The preprocessing of the image data sets, as their loaders apply it: MNIST and
/// Fashion-MNIST pixels divided by 255 then standardised with MNIST's mean and deviation,
/// CIFAR-10's per channel with its own, the 8×8 digits' values (0–16) divided by 16.
pub fn image_preprocessing(dataset: &DatasetRecord) -> Preprocessing {
    let exact = |v: &[f32]| -> Vec<f64> { v.iter().copied().map(shortest).collect() };
    if dataset.variant.as_deref() == Some("digits") {
        Preprocessing {
            description: "pixel values (0 to 16) divided by 16".into(),
            scale: 1.0 / 16.0,
            mean: Vec::new(),
            std: Vec::new(),
        }
    } else if dataset.name == "CIFAR-10" {
        Preprocessing {
            description: "pixels (0 to 255) divided by 255, then (x - mean[c]) / std[c] for \
                          each colour channel c (CIFAR-10's training statistics)"
                .into(),
            scale: 1.0 / 255.0,
            mean: exact(&bundled::CIFAR10_MEAN),
            std: exact(&bundled::CIFAR10_STD),
        }
    } else {
        Preprocessing {
            description: "pixels (0 to 255) divided by 255, then (x - mean) / std with \
                          MNIST's training mean and deviation"
                .into(),
            scale: 1.0 / 255.0,
            mean: exact(&[bundled::MNIST_MEAN]),
            std: exact(&[bundled::MNIST_STD]),
        }
    }
}

impl Standardized {
    /// The preprocessing this standardiser applies: `(x - mean[f]) / std[f]` per feature.
    pub fn preprocessing(&self) -> Preprocessing {
        Preprocessing {
            description: "each feature standardised, (x - mean[f]) / std[f], with the \
                          training split's means and deviations"
                .into(),
            scale: 1.0,
            mean: self
                .standardizer
                .mean
                .iter()
                .copied()
                .map(shortest)
                .collect(),
            std: self
                .standardizer
                .std
                .iter()
                .copied()
                .map(shortest)
                .collect(),
        }
    }
}

/// The CSV rows (no header) of `input` as a model input `[n, features]`, standardised
/// with `standardizer` when there is one.
///
/// # Errors
/// [`ModelsError::Data`] for rows that are not numbers or do not have the standardiser's
/// width.
pub fn row_input(input: &Path, standardizer: Option<&Standardizer>) -> Result<Tensor<f32>> {
    let table = read_csv(input, false, Some(','))?;
    // `read_csv` gives at least one row, each with at least one field.
    let cols = table.rows.first().map_or(0, Vec::len);
    if cols == 0 {
        return Err(data_error(input, "the rows have no fields"));
    }
    // The models compute in f32: a value beyond its range would become infinite and
    // every output NaN.
    for (row, line) in table.rows.iter().zip(&table.lines) {
        if let Some(col) = row.iter().position(|&v| !(v as f32).is_finite()) {
            return Err(data_error(
                input,
                format!(
                    "line {line}, column {}: {:e} is beyond the range of f32",
                    col + 1,
                    row[col]
                ),
            ));
        }
    }
    let mut values: Vec<f32> = table
        .rows
        .iter()
        .flat_map(|r| r.iter().map(|&v| v as f32))
        .collect();
    if let Some(st) = standardizer {
        if st.mean.len() != cols {
            return Err(data_error(
                input,
                format!(
                    "rows have {cols} features, the model takes {}",
                    st.mean.len()
                ),
            ));
        }
        for row in values.chunks_mut(cols) {
            for ((v, m), s) in row.iter_mut().zip(&st.mean).zip(&st.std) {
                *v = (*v - m) / s;
            }
        }
    }
    Ok(Tensor::from_vec(values, &[table.rows.len(), cols])?)
}

/// The output of `net` for `x`, without recording graphs, one line per sample as
/// `objective` reads it: the argmax class, the class of the logit's sign, or the value.
///
/// # Errors
/// Errors of the network; [`ModelsError::Config`] when an output is NaN or infinite
/// (finite weights that overflow on this input: no class is read from a NaN).
pub fn outputs(net: &dyn Forward, objective: Objective, x: Tensor<f32>) -> Result<Vec<String>> {
    let out = no_grad(|| net.forward(&Var::new(x)))?.value();
    finite_outputs("output value", &out.to_vec())?;
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
