//! Logistic regression, binary and multinomial, and the `logreg` reference training.

use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_autograd::Var;
use strata_nn::{Forward, Linear, Module, StateKind, visit_child};
use strata_tensor::rand::Rng;
use strata_tensor::rand::rngs::StdRng;

use crate::data::Dataset;
use crate::data::bundled;
use crate::reference::{
    Defaults, Length, OptimizerKind, Prepared, Record, ReferenceModel, Schedule, Standardized,
    SupervisedTask, TrainOptions, data_root, outputs, row_input, tabular,
};
use crate::train::Objective;
use crate::{ModelsError, Result};

/// Logistic regression, `P(y = 1 | x) = σ(θ0 + θ·x)` (binary: one logit, trained with
/// binary cross-entropy on logits) or its multinomial form (`classes` logits, softmax
/// cross-entropy). The forward pass returns logits.
pub struct LogisticRegression {
    /// `[1, features]` (binary) or `[classes, features]`.
    pub linear: Linear,
    classes: usize,
}

impl LogisticRegression {
    /// A model for `features` inputs and `classes` classes (2 gives the binary model with
    /// one logit).
    pub fn new<R: Rng + ?Sized>(features: usize, classes: usize, rng: &mut R) -> Self {
        let outputs = if classes <= 2 { 1 } else { classes };
        LogisticRegression {
            linear: Linear::new(features, outputs, true, rng),
            classes: classes.max(2),
        }
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Whether this is the binary (one-logit) model.
    pub fn is_binary(&self) -> bool {
        self.classes == 2
    }
}

impl Module for LogisticRegression {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        visit_child("linear", &self.linear, f);
    }
}

impl Forward for LogisticRegression {
    fn forward(&self, x: &Var) -> strata_nn::Result<Var> {
        let logits = self.linear.forward(x)?;
        if self.is_binary() {
            logits.squeeze(-1).map_err(Into::into)
        } else {
            Ok(logits)
        }
    }
}

impl strata_onnx::Export for LogisticRegression {
    fn export(
        &self,
        g: &mut strata_onnx::Graph,
        x: &strata_onnx::Value,
    ) -> strata_onnx::Result<strata_onnx::Value> {
        let logits = g.scoped("linear", |g| self.linear.export(g, x))?;
        if self.is_binary() {
            strata_onnx::ops::squeeze(g, &logits, -1)
        } else {
            Ok(logits)
        }
    }
}

/// The architecture record of `logreg` checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogregArchitecture {
    /// Input features.
    pub features: usize,
    /// Classes (2: the binary model).
    pub classes: usize,
}

/// `strata train logreg`: [`LogisticRegression`] on the standardised breast-cancer table
/// (binary; `--dataset iris` or `wine`: multinomial), 80/20 split; 30 epochs of SGD at lr
/// 0.05, batch 32.
pub struct LogregSpec;

impl ReferenceModel for LogregSpec {
    type Architecture = LogregArchitecture;
    type Extra = Standardized;
    type Task = SupervisedTask;

    const NAME: &'static str = "logreg";
    const ABOUT: &'static str =
        "Logistic regression on breast cancer (binary; iris and wine: multinomial).";
    const DATASETS: &'static [&'static str] = &["iris", "wine"];

    fn preprocessing(
        &self,
        _dataset: &crate::reference::DatasetRecord,
        extra: &Self::Extra,
    ) -> Option<crate::reference::Preprocessing> {
        Some(extra.preprocessing())
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            length: Length::Epochs(30),
            lr: 0.05,
            batch_size: Some(32),
            optimizer: OptimizerKind::Sgd,
            schedule: Schedule::Constant,
            clip_grad_norm: None,
            ema: None,
        }
    }

    fn prepare(&self, opts: &TrainOptions) -> Result<Prepared<Self>> {
        let root = data_root(opts);
        let (name, table) = match opts.dataset.as_deref().unwrap_or("breast_cancer") {
            "breast_cancer" => ("breast_cancer", bundled::breast_cancer(&root)?),
            "iris" => ("iris", bundled::iris(&root)?),
            "wine" => ("wine", bundled::wine(&root)?),
            other => {
                return Err(ModelsError::Config(format!(
                    "unknown data set {other:?} for logreg (breast_cancer, iris, wine)"
                )));
            }
        };
        let classes = table
            .classes()
            .ok_or_else(|| ModelsError::Config(format!("{name} has no classes")))?;
        let features = table.sample_shape()[0];
        let (data, extra) = tabular(table, opts.seed)?;
        Ok(Prepared {
            data,
            architecture: LogregArchitecture { features, classes },
            extra,
            dataset: bundled::uci_provenance(name),
        })
    }

    fn build(&self, a: &LogregArchitecture, rng: &mut StdRng) -> Result<Box<dyn Forward>> {
        Ok(Box::new(LogisticRegression::new(
            a.features, a.classes, rng,
        )))
    }

    fn export(&self, net: &dyn Forward, a: &LogregArchitecture) -> Result<strata_onnx::Exported> {
        let example =
            strata_tensor::Tensor::randn(&[1, a.features], &mut strata_tensor::seeded_rng(0));
        super::export_net::<LogisticRegression>(net, example, Self::NAME)
    }

    fn task(&self, a: &LogregArchitecture) -> SupervisedTask {
        SupervisedTask::new(objective(a))
    }

    fn check_extra(
        &self,
        a: &LogregArchitecture,
        extra: &Standardized,
    ) -> std::result::Result<(), String> {
        extra.check(a.features)
    }

    /// The class of each CSV row of raw features.
    fn predict(
        &self,
        net: &dyn Forward,
        record: &Record<LogregArchitecture, Standardized>,
        input: &Path,
    ) -> Result<Vec<String>> {
        let x = row_input(input, Some(&record.extra.standardizer))?;
        outputs(net, objective(&record.architecture), x)
    }
}

/// Binary cross-entropy on one logit for two classes, cross-entropy otherwise (as
/// [`LogisticRegression::is_binary`]).
fn objective(a: &LogregArchitecture) -> Objective {
    if a.classes <= 2 {
        Objective::BinaryLogits
    } else {
        Objective::CrossEntropy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::assert_round_trip;
    use serde_json::json;

    #[test]
    fn the_architecture_round_trips_and_picks_the_objective() {
        let a = LogregArchitecture {
            features: 30,
            classes: 2,
        };
        assert_round_trip(&a, json!({ "features": 30, "classes": 2 }));
        assert_eq!(objective(&a), Objective::BinaryLogits);
        let iris = LogregArchitecture {
            features: 4,
            classes: 3,
        };
        assert_eq!(objective(&iris), Objective::CrossEntropy);
    }
}
