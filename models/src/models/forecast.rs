//! The recurrent one-step-ahead forecaster, and the `forecast` reference training.

use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_autograd::Var;
use strata_nn::{Forward, Linear, Module, RnnConfig, StateKind, visit_child};
use strata_tensor::Tensor;
use strata_tensor::rand::Rng;
use strata_tensor::rand::rngs::StdRng;

use super::{Recurrent, RecurrentKind, r2_score};
use crate::data::bundled;
use crate::data::readers::{read_maybe_gzip, utf8_text};
use crate::data::{InMemoryDataset, Labels};
use crate::error::{data_error, finite_outputs};
use crate::reference::{
    Defaults, Figures, Length, OptimizerKind, Prepared, Record, ReferenceModel, Schedule, Split,
    SupervisedTask, TrainOptions, data_root, figures,
};
use crate::train::Objective;
use crate::{ModelsError, Result};

/// A one-step-ahead forecaster: an LSTM/GRU reads a window `[N, W, 1]` of a
/// (standardised) series, a linear head maps its last output to the next value `[N]`.
/// State-dict keys `rnn.weight_ih_l0`, …, `head.weight`, `head.bias`.
pub struct Forecaster {
    /// The recurrent layers (batch-first).
    pub rnn: Recurrent,
    /// The last hidden output → the next value.
    pub head: Linear,
}

impl Forecaster {
    /// A forecaster with `layers` recurrent layers of `hidden` units.
    ///
    /// # Errors
    /// Layer configuration errors.
    pub fn new<R: Rng + ?Sized>(
        kind: RecurrentKind,
        hidden: usize,
        layers: usize,
        rng: &mut R,
    ) -> Result<Self> {
        let config = RnnConfig::new(1, hidden)
            .num_layers(layers)
            .batch_first(true);
        Ok(Forecaster {
            rnn: Recurrent::new(kind, config, rng)?,
            head: Linear::new(hidden, 1, true, rng),
        })
    }
}

impl Module for Forecaster {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        visit_child("rnn", &self.rnn, f);
        visit_child("head", &self.head, f);
    }

    fn set_training(&mut self, training: bool) {
        self.rnn.set_training(training);
    }
}

impl Forward for Forecaster {
    /// `[N, W, 1]` (or `[N, W]`) → `[N]`.
    fn forward(&self, x: &Var) -> strata_nn::Result<Var> {
        let x = if x.ndim() == 2 {
            x.unsqueeze(-1)?
        } else {
            x.clone()
        };
        let (y, _) = self.rnn.forward(&x, None)?;
        let last = y.select(1, -1)?;
        Ok(self.head.forward(&last)?.squeeze(-1)?)
    }
}

impl strata_onnx::Export for Forecaster {
    /// `[N, W, 1]` → `[N]`.
    fn export(
        &self,
        g: &mut strata_onnx::Graph,
        x: &strata_onnx::Value,
    ) -> strata_onnx::Result<strata_onnx::Value> {
        use strata_onnx::ops;
        let y = g.scoped("rnn", |g| self.rnn.export(g, x))?;
        let last = ops::select(g, &y, 1, -1)?;
        let out = g.scoped("head", |g| self.head.export(g, &last))?;
        ops::squeeze(g, &out, -1)
    }
}

/// The architecture record of `forecast` checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastArchitecture {
    /// LSTM or GRU.
    pub cell: RecurrentKind,
    /// Units per recurrent layer.
    pub hidden: usize,
    /// Recurrent layers.
    pub layers: usize,
    /// Values per input window.
    pub window: usize,
}

/// The extra record of `forecast` checkpoints: the series' standardisation, which
/// prediction applies to raw values and undoes on forecasts, and the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastExtra {
    /// The mean of the training part of the series.
    pub series_mean: f64,
    /// Its standard deviation.
    pub series_std: f64,
    /// The test R² of repeating the last value.
    pub persistence_test_r2: f64,
}

/// `strata train forecast`: a [`Forecaster`] (LSTM 64, or `--cell gru`) of the monthly
/// sunspot numbers from the previous 60 months (`--dataset sunspots-yearly`: 20 years;
/// `airline`: 12 months), split in time 80/20; 20 epochs of Adam under a one-cycle
/// schedule peaking at 5e-3, batch 32.
pub struct ForecastSpec;

impl ReferenceModel for ForecastSpec {
    type Architecture = ForecastArchitecture;
    type Extra = ForecastExtra;
    type Task = SupervisedTask;

    const NAME: &'static str = "forecast";
    const ABOUT: &'static str =
        "A recurrent one-step-ahead forecaster of the monthly sunspot numbers.";
    const DATASETS: &'static [&'static str] = &["sunspots-yearly", "airline"];
    const CELL: bool = true;

    fn preprocessing(
        &self,
        _dataset: &crate::reference::DatasetRecord,
        extra: &Self::Extra,
    ) -> Option<crate::reference::Preprocessing> {
        Some(crate::reference::Preprocessing {
            description: "the series standardised with its training part's mean and deviation, \\
                          (x - mean) / std; the network's forecasts are in those units (times \\
                          std plus mean gives the series' own)"
                .into(),
            scale: 1.0,
            mean: vec![extra.series_mean],
            std: vec![extra.series_std],
        })
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            length: Length::Epochs(20),
            lr: 5e-3,
            batch_size: Some(32),
            optimizer: OptimizerKind::Adam,
            schedule: Schedule::OneCycle,
            clip_grad_norm: None,
            ema: None,
        }
    }

    fn prepare(&self, opts: &TrainOptions) -> Result<Prepared<Self>> {
        let name = opts.dataset.as_deref().unwrap_or("sunspots");
        let (series, dataset) = bundled::series(&data_root(opts), name)?;
        let window = forecast_window(name);
        let (data, extra) = forecast_data(&series, window)?;
        Ok(Prepared {
            data,
            architecture: ForecastArchitecture {
                cell: opts.cell.unwrap_or(RecurrentKind::Lstm),
                hidden: 64,
                layers: 1,
                window,
            },
            extra,
            dataset,
        })
    }

    fn build(&self, a: &ForecastArchitecture, rng: &mut StdRng) -> Result<Box<dyn Forward>> {
        Ok(Box::new(Forecaster::new(a.cell, a.hidden, a.layers, rng)?))
    }

    fn export(&self, net: &dyn Forward, a: &ForecastArchitecture) -> Result<strata_onnx::Exported> {
        let example =
            strata_tensor::Tensor::randn(&[1, a.window, 1], &mut strata_tensor::seeded_rng(0));
        super::export_net::<Forecaster>(net, example, Self::NAME)
    }

    fn task(&self, _: &ForecastArchitecture) -> SupervisedTask {
        SupervisedTask::new(Objective::Mse)
    }

    fn check_extra(
        &self,
        _: &ForecastArchitecture,
        e: &ForecastExtra,
    ) -> std::result::Result<(), String> {
        if !(e.series_mean.is_finite() && e.series_std.is_finite() && e.series_std > 0.0) {
            return Err(format!(
                "its series mean {} and deviation {} must be finite, the deviation above 0",
                e.series_mean, e.series_std
            ));
        }
        Ok(())
    }

    fn report(&self, _net: &dyn Forward, prepared: &Prepared<Self>) -> Result<Figures> {
        #[derive(Serialize)]
        struct Baseline {
            persistence_test_r2: f64,
        }
        figures(&Baseline {
            persistence_test_r2: prepared.extra.persistence_test_r2,
        })
    }

    /// One forecast per window of the raw series in `input`, in the series' units.
    fn predict(
        &self,
        net: &dyn Forward,
        record: &Record<ForecastArchitecture, ForecastExtra>,
        input: &Path,
    ) -> Result<Vec<String>> {
        let (mean, std) = (record.extra.series_mean, record.extra.series_std);
        // The window is the series' (a record edited to a window of half a long input
        // would materialise len²/4 values).
        let series = record.dataset.variant.as_deref().unwrap_or("sunspots");
        let window = forecast_window(series);
        if record.architecture.window != window {
            return Err(ModelsError::Config(format!(
                "the record's window of {} values is not the {window} that the {series} \
                 forecaster reads",
                record.architecture.window
            )));
        }
        let x = forecast_input(window, mean, std, input)?;
        let out = strata_autograd::no_grad(|| net.forward(&Var::new(x)))?.value();
        Ok(finite_outputs("forecast", &out.to_vec())?
            .iter()
            .map(|&v| format!("{}", f64::from(v) * std + mean))
            .collect())
    }
}

/// The window a forecaster reads: five years of months, twenty years, or one year.
fn forecast_window(series: &str) -> usize {
    match series {
        "sunspots" => 60,
        "sunspots-yearly" => 20,
        _ => 12,
    }
}

/// The windows of `window` values of `series`, each labelled with the value after it,
/// standardised with the mean and deviation of the training part; the first 80% of the
/// windows train, the rest test (in time order, so the test data lies in the future).
fn forecast_data(series: &[f64], window: usize) -> Result<(Split, ForecastExtra)> {
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
    Ok((
        Split {
            train: part(0..split)?,
            test: part(split..windows)?,
        },
        ForecastExtra {
            series_mean: mean,
            series_std: std,
            persistence_test_r2: r2_score(&persistence, &truth),
        },
    ))
}

/// The forecaster's input from a file of raw values, one per line (or the last field of
/// each CSV row; a non-numeric first line is taken as a header): every window of `window`
/// values, standardised with `mean` and `std` as in training, so the output is one
/// forecast per window — the last line forecasts the value after the file's last one.
fn forecast_input(window: usize, mean: f64, std: f64, input: &Path) -> Result<Tensor<f32>> {
    // Bounded and regular files only, like every reader (a FIFO would block).
    let text = utf8_text(input, read_maybe_gzip(input)?)?;
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
            // Standardised, the value must fit the f32 the model computes in.
            Ok(v) if v.is_finite() && (((v - mean) / std) as f32).is_finite() => values.push(v),
            Ok(v) if v.is_finite() => {
                return Err(data_error(
                    input,
                    format!(
                        "line {}: {v:e} is beyond the range the model computes in (f32, after \
                         standardising)",
                        i + 1
                    ),
                ));
            }
            Ok(v) => {
                return Err(data_error(
                    input,
                    format!("line {}: {v} is not a finite number", i + 1),
                ));
            }
            Err(_) if i == 0 => {}
            Err(_) => {
                return Err(data_error(
                    input,
                    format!("line {}: {field:?} is not a number", i + 1),
                ));
            }
        }
    }
    if window == 0 || values.len() < window {
        return Err(data_error(
            input,
            format!(
                "{} values, the forecaster reads windows of {window}",
                values.len()
            ),
        ));
    }
    let z: Vec<f32> = values.iter().map(|v| ((v - mean) / std) as f32).collect();
    let n = z.len() - window + 1;
    let flat = (0..n)
        .flat_map(|s| z[s..s + window].iter().copied())
        .collect();
    Ok(Tensor::from_vec(flat, &[n, window, 1])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::reference::assert_round_trip;
    use serde_json::json;

    #[test]
    fn the_records_round_trip() {
        let a = ForecastArchitecture {
            cell: RecurrentKind::Gru,
            hidden: 64,
            layers: 1,
            window: 60,
        };
        let keys = json!({ "cell": "gru", "hidden": 64, "layers": 1, "window": 60 });
        assert_round_trip(&a, keys);
        let e = ForecastExtra {
            series_mean: 81.5,
            series_std: 67.25,
            persistence_test_r2: 0.875,
        };
        let keys =
            json!({ "series_mean": 81.5, "series_std": 67.25, "persistence_test_r2": 0.875 });
        assert_round_trip(&e, keys);
        let bad = json!({ "cell": "rnn", "hidden": 64, "layers": 1, "window": 60 });
        let err = serde_json::from_value::<ForecastArchitecture>(bad).unwrap_err();
        assert!(err.to_string().contains("rnn"), "{err}");
    }

    #[test]
    fn windows_split_in_time() {
        let series: Vec<f64> = (0..40).map(f64::from).collect();
        let (split, extra) = forecast_data(&series, 5).unwrap();
        assert_eq!((split.train.len(), split.test.len()), (28, 7));
        assert!((extra.series_mean - 16.0).abs() < 1e-12, "{extra:?}");
        assert!(forecast_data(&series[..12], 5).is_err());
    }
}
