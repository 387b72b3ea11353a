//! Linear and polynomial regression, with the closed-form least-squares fit, and the
//! `linreg` and `polyreg` reference trainings.

use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_autograd::Var;
use strata_nn::{Forward, Linear, Module, StateKind, visit_child};
use strata_tensor::rand::Rng;
use strata_tensor::rand::rngs::StdRng;
use strata_tensor::{Tensor, seeded_rng};

use crate::data::bundled;
use crate::data::{Dataset, InMemoryDataset, Labels};
use crate::reference::{
    Defaults, Figures, Length, NoExtra, OptimizerKind, Prepared, Record, ReferenceModel, Schedule,
    Split, Standardized, SupervisedTask, TrainOptions, data_root, figures, outputs, row_input,
    tabular,
};
use crate::train::{self, Objective};
use crate::{ModelsError, Result};

/// Linear regression `y = θ0 + θ·x`, trained by gradient descent or solved in closed form
/// by least squares ([`fit_closed_form`](LinearRegression::fit_closed_form)). The forward
/// pass maps `[B, features]` to `[B]`.
pub struct LinearRegression {
    /// `[1, features]` weights and the bias θ0.
    pub linear: Linear,
}

impl LinearRegression {
    /// A model for `features` inputs, initialised as PyTorch's `nn.Linear`.
    pub fn new<R: Rng + ?Sized>(features: usize, rng: &mut R) -> Self {
        LinearRegression {
            linear: Linear::new(features, 1, true, rng),
        }
    }

    /// The least-squares coefficients `(θ, θ0)` of `x` `[n, features]` against `y` `[n]`,
    /// by QR on `[x, 1]` (strata-tensor's `lstsq`, computed in f64).
    ///
    /// # Errors
    /// [`ModelsError::Config`] when there are fewer samples than coefficients; a tensor
    /// error when the solution is not unique (a constant feature, collinear features) or
    /// the data holds NaN or infinities.
    pub fn closed_form(x: &Tensor<f32>, y: &Tensor<f32>) -> Result<(Vec<f64>, f64)> {
        let (n, f) = match x.shape() {
            &[n, f] => (n, f),
            s => {
                return Err(ModelsError::Config(format!(
                    "closed form needs x [n, features], got {s:?}"
                )));
            }
        };
        if n <= f {
            return Err(ModelsError::Config(format!(
                "{n} samples cannot determine {} coefficients",
                f + 1
            )));
        }
        let xs = x.to_vec();
        let design: Vec<f64> = (0..n)
            .flat_map(|i| {
                xs[i * f..(i + 1) * f]
                    .iter()
                    .map(|&v| v as f64)
                    .chain(std::iter::once(1.0))
            })
            .collect();
        let a = Tensor::from_vec(design, &[n, f + 1])?;
        let b = Tensor::from_vec(y.to_vec().into_iter().map(f64::from).collect(), &[n])?;
        let coef = a.lstsq(&b)?.to_vec();
        Ok((coef[..f].to_vec(), coef[f]))
    }

    /// Sets the parameters to the closed-form solution on `x`, `y`.
    ///
    /// # Errors
    /// As [`closed_form`](LinearRegression::closed_form).
    pub fn fit_closed_form(&self, x: &Tensor<f32>, y: &Tensor<f32>) -> Result<(Vec<f64>, f64)> {
        let (w, b) = Self::closed_form(x, y)?;
        let f = w.len();
        self.linear.weight.set_value(Tensor::from_vec(
            w.iter().map(|&v| v as f32).collect(),
            &[1, f],
        )?)?;
        if let Some(bias) = &self.linear.bias {
            bias.set_value(Tensor::from_vec(vec![b as f32], &[1])?)?;
        }
        Ok((w, b))
    }
}

impl Module for LinearRegression {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        visit_child("linear", &self.linear, f);
    }
}

impl Forward for LinearRegression {
    fn forward(&self, x: &Var) -> strata_nn::Result<Var> {
        Ok(self.linear.forward(x)?.squeeze(-1)?)
    }
}

impl strata_onnx::Export for LinearRegression {
    fn export(
        &self,
        g: &mut strata_onnx::Graph,
        x: &strata_onnx::Value,
    ) -> strata_onnx::Result<strata_onnx::Value> {
        let y = g.scoped("linear", |g| self.linear.export(g, x))?;
        strata_onnx::ops::squeeze(g, &y, -1)
    }
}

/// Polynomial regression in one input, `y = θ0 + θ1·x + … + θn·xⁿ`: the powers of `x` are
/// standardised with statistics fitted on the training data (kept as buffers
/// `feature_mean` and `feature_std`, so they travel with the checkpoint), then a linear
/// layer. Input `[B, 1]`, output `[B]`.
pub struct PolynomialRegression {
    /// The linear layer on the standardised powers.
    pub linear: Linear,
    mean: Var,
    std: Var,
    degree: usize,
}

impl PolynomialRegression {
    /// A model of the given degree (at least 1).
    ///
    /// # Errors
    /// [`ModelsError::Config`] for degree 0.
    pub fn new<R: Rng + ?Sized>(degree: usize, rng: &mut R) -> Result<Self> {
        if degree == 0 {
            return Err(ModelsError::Config(
                "the polynomial degree must be at least 1".into(),
            ));
        }
        Ok(PolynomialRegression {
            linear: Linear::new(degree, 1, true, rng),
            mean: Var::new(Tensor::zeros(&[degree])),
            std: Var::new(Tensor::ones(&[degree])),
            degree,
        })
    }

    /// The degree.
    pub fn degree(&self) -> usize {
        self.degree
    }

    /// The raw powers `[x, x², …, xⁿ]` of `x` `[B, 1]`.
    ///
    /// # Errors
    /// When `x` is not `[B, 1]`.
    pub fn powers(&self, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        if x.ndim() != 2 || x.shape()[1] != 1 {
            return Err(ModelsError::Config(format!(
                "polynomial regression takes x [B, 1], got {:?}",
                x.shape()
            )));
        }
        let powers: Vec<Tensor<f32>> = (1..=self.degree).map(|k| x.pow_scalar(k as f32)).collect();
        Ok(Tensor::cat(&powers, 1)?)
    }

    /// Fits the standardisation of the powers on training inputs `x` `[n, 1]`.
    ///
    /// # Errors
    /// When `x` is not `[n, 1]`.
    pub fn fit_standardization(&self, x: &Tensor<f32>) -> Result<()> {
        let p = self.powers(x)?;
        let mean = p.mean(&[0], false)?;
        let std = p
            .std(&[0], false, false)?
            .map(|s| if s > 1e-12 { s } else { 1.0 });
        self.mean.set_value(mean)?;
        self.std.set_value(std)?;
        Ok(())
    }
}

impl Module for PolynomialRegression {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        visit_child("linear", &self.linear, f);
        f("feature_mean", &self.mean, StateKind::Buffer);
        f("feature_std", &self.std, StateKind::Buffer);
    }
}

impl Forward for PolynomialRegression {
    fn forward(&self, x: &Var) -> strata_nn::Result<Var> {
        let p = self
            .powers(&x.value())
            .map_err(|e| strata_nn::NnError::Input {
                layer: "PolynomialRegression",
                msg: e.to_string(),
            })?;
        let z = Var::new(p).sub(&self.mean)?.div(&self.std)?;
        Ok(self.linear.forward(&z)?.squeeze(-1)?)
    }
}

impl strata_onnx::Export for PolynomialRegression {
    /// The powers `x, x·x, …` (products, not `Pow`), concatenated, standardised with the
    /// buffers, then the linear layer.
    fn export(
        &self,
        g: &mut strata_onnx::Graph,
        x: &strata_onnx::Value,
    ) -> strata_onnx::Result<strata_onnx::Value> {
        use strata_onnx::{Attr, OnnxError, Value};
        let Some(strata_onnx::Example::Float(t)) = Some(x.example().clone()) else {
            return Err(OnnxError::Input {
                shape: x.shape().to_vec(),
                why: "polynomial regression takes floats".into(),
            });
        };
        let p = self.powers(&t).map_err(|e| OnnxError::Input {
            shape: t.shape().to_vec(),
            why: e.to_string(),
        })?;
        let mut names = vec![x.name().to_string()];
        for _ in 1..self.degree {
            let last = names.last().cloned().unwrap_or_default();
            names.push(g.op("Mul", &[&last, x.name()], vec![]));
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let powers = g.op("Concat", &refs, vec![("axis", Attr::Int(1))]);
        let mean = g.param("feature_mean", &self.mean);
        let std = g.param("feature_std", &self.std);
        let centred = g.op("Sub", &[&powers, &mean], vec![]);
        let z = g.op("Div", &[&centred, &std], vec![]);
        let zv = p.sub(&self.mean.value())?.div(&self.std.value())?;
        let z = Value::new(z, zv, Some(0));
        let y = g.scoped("linear", |g| self.linear.export(g, &z))?;
        strata_onnx::ops::squeeze(g, &y, -1)
    }
}

/// The coefficient of determination `1 - SS_res / SS_tot` of predictions against targets.
pub fn r2_score(predictions: &[f32], targets: &[f32]) -> f64 {
    let n = targets.len().max(1) as f64;
    let mean = targets.iter().map(|&t| t as f64).sum::<f64>() / n;
    let ss_tot: f64 = targets.iter().map(|&t| (t as f64 - mean).powi(2)).sum();
    let ss_res: f64 = predictions
        .iter()
        .zip(targets)
        .map(|(&p, &t)| (p as f64 - t as f64).powi(2))
        .sum();
    if ss_tot == 0.0 {
        0.0
    } else {
        1.0 - ss_res / ss_tot
    }
}

/// The architecture record of `linreg` checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinregArchitecture {
    /// Input features.
    pub features: usize,
}

/// `strata train linreg`: [`LinearRegression`] of diabetes progression on the ten
/// standardised features (80/20 split), by full-batch gradient descent (SGD, lr 0.1, 5000
/// epochs); the metrics compare it with the least-squares solution.
pub struct LinregSpec;

/// The closed-form comparison in `linreg`'s metrics.
#[derive(Serialize)]
struct ClosedForm {
    /// The least-squares coefficients on the training data, the intercept last.
    coefficients: Vec<f64>,
    /// The largest difference of a trained coefficient from them, relative to the largest.
    max_relative_difference: f64,
    /// Their test R².
    test_r2: Option<f64>,
}

impl ReferenceModel for LinregSpec {
    type Architecture = LinregArchitecture;
    type Extra = Standardized;
    type Task = SupervisedTask;

    const NAME: &'static str = "linreg";
    const ABOUT: &'static str =
        "Linear regression on the diabetes data (gradient descent, checked against least squares).";

    fn preprocessing(
        &self,
        _dataset: &crate::reference::DatasetRecord,
        extra: &Self::Extra,
    ) -> Option<crate::reference::Preprocessing> {
        Some(extra.preprocessing())
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            length: Length::Epochs(5000),
            lr: 0.1,
            batch_size: None,
            optimizer: OptimizerKind::Sgd,
            schedule: Schedule::Constant,
            clip_grad_norm: None,
            ema: None,
        }
    }

    fn prepare(&self, opts: &TrainOptions) -> Result<Prepared<Self>> {
        let (data, extra) = tabular(bundled::diabetes(&data_root(opts))?, opts.seed)?;
        Ok(Prepared {
            architecture: LinregArchitecture {
                features: data.train.sample_shape()[0],
            },
            data,
            extra,
            dataset: bundled::uci_provenance("diabetes"),
        })
    }

    fn build(&self, a: &LinregArchitecture, rng: &mut StdRng) -> Result<Box<dyn Forward>> {
        Ok(Box::new(LinearRegression::new(a.features, rng)))
    }

    fn export(&self, net: &dyn Forward, a: &LinregArchitecture) -> Result<strata_onnx::Exported> {
        let example =
            strata_tensor::Tensor::randn(&[1, a.features], &mut strata_tensor::seeded_rng(0));
        super::export_net::<LinearRegression>(net, example, Self::NAME)
    }

    fn task(&self, _: &LinregArchitecture) -> SupervisedTask {
        SupervisedTask::new(Objective::Mse)
    }

    fn check_extra(
        &self,
        a: &LinregArchitecture,
        extra: &Standardized,
    ) -> std::result::Result<(), String> {
        extra.check(a.features)
    }

    /// The least-squares coefficients on the training data beside the trained ones, their
    /// largest relative difference, and their test R².
    fn report(&self, net: &dyn Forward, prepared: &Prepared<Self>) -> Result<Figures> {
        let Split { train, test } = &prepared.data;
        let (n, features) = (train.len(), prepared.architecture.features);
        let x = Tensor::from_vec(train.features().to_vec(), &[n, features])?;
        let Labels::Values(y) = train.labels() else {
            return Err(ModelsError::Config("linreg trains on values".into()));
        };
        let y = Tensor::from_vec(y.clone(), &[n])?;
        let (w, b) = LinearRegression::closed_form(&x, &y)?;
        // A NaN here would make every comparison below false, and the largest difference
        // "0.0" beside NaN coefficients: say what happened instead.
        if w.iter().chain([&b]).any(|v| !v.is_finite()) {
            return Err(ModelsError::Config(format!(
                "the least-squares solution on {n} samples is not unique (a feature is \
                 constant or the features are collinear): no closed form to compare with"
            )));
        }
        let trained: Vec<f64> = net
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
        let cf = LinearRegression::new(features, &mut seeded_rng(0));
        cf.fit_closed_form(&x, &y)?;
        let eval = train::evaluate(&cf, test, Objective::Mse, 256)?;
        #[derive(Serialize)]
        struct Report {
            closed_form: ClosedForm,
        }
        figures(&Report {
            closed_form: ClosedForm {
                coefficients: exact,
                max_relative_difference: rel,
                test_r2: eval.r2,
            },
        })
    }

    /// The progression predicted for each CSV row of raw features.
    fn predict(
        &self,
        net: &dyn Forward,
        record: &Record<LinregArchitecture, Standardized>,
        input: &Path,
    ) -> Result<Vec<String>> {
        let x = row_input(input, Some(&record.extra.standardizer))?;
        outputs(net, Objective::Mse, x)
    }
}

/// The architecture record of `polyreg` checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolyregArchitecture {
    /// The polynomial's degree.
    pub degree: usize,
    /// The input variable (`"bmi"`).
    pub input: String,
}

/// `strata train polyreg`: cubic [`PolynomialRegression`] of diabetes progression on
/// body-mass index (80/20 split), by full-batch gradient descent (SGD, lr 0.1, 2000
/// epochs).
pub struct PolyregSpec;

impl ReferenceModel for PolyregSpec {
    type Architecture = PolyregArchitecture;
    type Extra = NoExtra;
    type Task = SupervisedTask;

    const NAME: &'static str = "polyreg";
    const ABOUT: &'static str = "Cubic regression of diabetes progression on body-mass index.";

    fn preprocessing(
        &self,
        _dataset: &crate::reference::DatasetRecord,
        _extra: &Self::Extra,
    ) -> Option<crate::reference::Preprocessing> {
        Some(crate::reference::Preprocessing::described(
            "none outside the network: it standardises body-mass index itself, with the training split's mean and deviation kept as its buffers (`feature_mean`, …)",
        ))
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            length: Length::Epochs(2000),
            lr: 0.1,
            batch_size: None,
            optimizer: OptimizerKind::Sgd,
            schedule: Schedule::Constant,
            clip_grad_norm: None,
            ema: None,
        }
    }

    fn prepare(&self, opts: &TrainOptions) -> Result<Prepared<Self>> {
        let all = bundled::diabetes(&data_root(opts))?;
        let bmi: Vec<f32> = all.features().chunks(10).map(|r| r[2]).collect();
        let Labels::Values(y) = all.labels().clone() else {
            return Err(ModelsError::Config("diabetes is regression data".into()));
        };
        let one = InMemoryDataset::new(bmi, &[1], Labels::Values(y))?;
        Ok(Prepared {
            data: Split::of(&one, opts.seed)?,
            architecture: PolyregArchitecture {
                degree: 3,
                input: "bmi".into(),
            },
            extra: NoExtra {},
            dataset: bundled::uci_provenance("diabetes"),
        })
    }

    fn build(&self, a: &PolyregArchitecture, rng: &mut StdRng) -> Result<Box<dyn Forward>> {
        Ok(Box::new(PolynomialRegression::new(a.degree, rng)?))
    }

    /// The model with the standardisation of the powers fitted on the training data.
    fn init(&self, prepared: &Prepared<Self>, rng: &mut StdRng) -> Result<Box<dyn Forward>> {
        let model = PolynomialRegression::new(prepared.architecture.degree, rng)?;
        let train = &prepared.data.train;
        model.fit_standardization(&Tensor::from_vec(
            train.features().to_vec(),
            &[train.len(), 1],
        )?)?;
        Ok(Box::new(model))
    }

    fn export(&self, net: &dyn Forward, _: &PolyregArchitecture) -> Result<strata_onnx::Exported> {
        let example = strata_tensor::Tensor::randn(&[1, 1], &mut strata_tensor::seeded_rng(0));
        super::export_net::<PolynomialRegression>(net, example, Self::NAME)
    }

    fn task(&self, _: &PolyregArchitecture) -> SupervisedTask {
        SupervisedTask::new(Objective::Mse)
    }

    /// The progression predicted for each CSV row of one raw body-mass index.
    fn predict(
        &self,
        net: &dyn Forward,
        _record: &Record<PolyregArchitecture, NoExtra>,
        input: &Path,
    ) -> Result<Vec<String>> {
        outputs(net, Objective::Mse, row_input(input, None)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::assert_round_trip;
    use serde_json::json;

    #[test]
    fn the_architectures_round_trip() {
        assert_round_trip(
            &LinregArchitecture { features: 10 },
            json!({ "features": 10 }),
        );
        let poly = PolyregArchitecture {
            degree: 3,
            input: "bmi".into(),
        };
        assert_round_trip(&poly, json!({ "degree": 3, "input": "bmi" }));
        let err =
            serde_json::from_value::<LinregArchitecture>(json!({ "features": -1 })).unwrap_err();
        assert!(err.to_string().contains("-1"), "{err}");
    }
}
