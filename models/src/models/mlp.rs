//! A multilayer perceptron, and the `mlp` reference training.

use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_autograd::Var;
use strata_nn::{Forward, Linear, Module, ReLU, Sequential, StateKind};
use strata_tensor::rand::Rng;
use strata_tensor::rand::rngs::StdRng;

use crate::data::Dataset;
use crate::reference::{
    Defaults, Length, NoExtra, OptimizerKind, Prepared, Record, ReferenceModel, Schedule,
    SupervisedTask, TrainOptions, image_input, images, outputs,
};
use crate::train::Objective;
use crate::{ModelsError, Result};

/// A multilayer perceptron: Linear layers with ReLU between them, like
/// `nn.Sequential(nn.Linear(784, 256), nn.ReLU(), …)`; inputs of any shape are flattened
/// from dimension 1. State-dict keys are `layers.0.weight`, `layers.2.weight`, ….
pub struct Mlp {
    /// The layers.
    pub layers: Sequential,
    sizes: Vec<usize>,
}

impl Mlp {
    /// An MLP through `sizes` (input, hidden…, output), e.g. `[784, 256, 128, 10]`.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for fewer than two sizes or a zero size.
    pub fn new<R: Rng + ?Sized>(sizes: &[usize], rng: &mut R) -> Result<Self> {
        if sizes.len() < 2 || sizes.contains(&0) {
            return Err(ModelsError::Config(format!(
                "an MLP needs at least input and output sizes, got {sizes:?}"
            )));
        }
        let mut layers = Sequential::new();
        for (i, pair) in sizes.windows(2).enumerate() {
            if i > 0 {
                layers = layers.push(ReLU);
            }
            layers = layers.push(Linear::new(pair[0], pair[1], true, rng));
        }
        Ok(Mlp {
            layers,
            sizes: sizes.to_vec(),
        })
    }

    /// The layer sizes.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }
}

impl Module for Mlp {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        strata_nn::visit_child("layers", &self.layers, f);
    }
}

impl Forward for Mlp {
    fn forward(&self, x: &Var) -> strata_nn::Result<Var> {
        let x = if x.ndim() > 2 {
            x.flatten(1, -1)?
        } else {
            x.clone()
        };
        self.layers.forward(&x)
    }
}

impl strata_onnx::Export for Mlp {
    fn export(
        &self,
        g: &mut strata_onnx::Graph,
        x: &strata_onnx::Value,
    ) -> strata_onnx::Result<strata_onnx::Value> {
        let h = if x.ndim() > 2 {
            strata_onnx::ops::flatten(g, x, 1, -1)?
        } else {
            x.clone()
        };
        g.scoped("layers", |g| self.layers.export(g, &h))
    }
}

/// The architecture record of `mlp` checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpArchitecture {
    /// The layer sizes, input first.
    pub sizes: Vec<usize>,
    /// The shape of one input image, which is flattened.
    pub input_shape: Vec<usize>,
}

/// `strata train mlp`: an [`Mlp`] 784→256→128→10 on MNIST (or `--dataset digits`, or a
/// folder of IDX or CIFAR-10 files); 3 epochs of Adam under a one-cycle schedule peaking
/// at 3e-3, batch 64.
pub struct MlpSpec;

impl ReferenceModel for MlpSpec {
    type Architecture = MlpArchitecture;
    type Extra = NoExtra;
    type Task = SupervisedTask;

    const NAME: &'static str = "mlp";
    const ABOUT: &'static str = "A 784-256-128-10 perceptron on MNIST.";
    const DATASETS: &'static [&'static str] = &["digits"];

    fn preprocessing(
        &self,
        dataset: &crate::reference::DatasetRecord,
        _extra: &Self::Extra,
    ) -> Option<crate::reference::Preprocessing> {
        Some(crate::reference::image_preprocessing(dataset))
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            length: Length::Epochs(3),
            lr: 3e-3,
            batch_size: Some(64),
            optimizer: OptimizerKind::Adam,
            schedule: Schedule::OneCycle,
            clip_grad_norm: None,
            ema: None,
        }
    }

    fn prepare(&self, opts: &TrainOptions) -> Result<Prepared<Self>> {
        let (data, dataset) = images(opts)?;
        let input_shape = data.train.sample_shape().to_vec();
        let classes = data.train.classes().unwrap_or(10);
        let sizes = vec![input_shape.iter().product(), 256, 128, classes];
        Ok(Prepared {
            data,
            architecture: MlpArchitecture { sizes, input_shape },
            extra: NoExtra {},
            dataset,
        })
    }

    fn build(&self, a: &MlpArchitecture, rng: &mut StdRng) -> Result<Box<dyn Forward>> {
        Ok(Box::new(Mlp::new(&a.sizes, rng)?))
    }

    fn export(&self, net: &dyn Forward, a: &MlpArchitecture) -> Result<strata_onnx::Exported> {
        let mut shape = vec![1];
        shape.extend(&a.input_shape);
        let example = strata_tensor::Tensor::randn(&shape, &mut strata_tensor::seeded_rng(0));
        super::export_net::<Mlp>(net, example, Self::NAME)
    }

    fn task(&self, _: &MlpArchitecture) -> SupervisedTask {
        SupervisedTask::new(Objective::CrossEntropy)
    }

    /// The class of each image of an IDX file.
    fn predict(
        &self,
        net: &dyn Forward,
        record: &Record<MlpArchitecture, NoExtra>,
        input: &Path,
    ) -> Result<Vec<String>> {
        let x = image_input(input, &record.architecture.input_shape, &record.dataset)?;
        outputs(net, Objective::CrossEntropy, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::assert_round_trip;
    use serde_json::json;

    #[test]
    fn the_architecture_round_trips() {
        let a = MlpArchitecture {
            sizes: vec![784, 256, 128, 10],
            input_shape: vec![1, 28, 28],
        };
        let keys = json!({ "sizes": [784, 256, 128, 10], "input_shape": [1, 28, 28] });
        assert_round_trip(&a, keys);
    }
}
