//! The reference CNN, and the `cnn` reference training.

use std::path::Path;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use strata_autograd::Var;
use strata_nn::{Conv2d, Conv2dParams, Forward, Linear, MaxPool2d, Module, StateKind, visit_child};
use strata_tensor::rand::Rng;
use strata_tensor::rand::rngs::StdRng;

use crate::data::Dataset;
use crate::reference::{
    Defaults, Length, NoExtra, OptimizerKind, Prepared, Record, ReferenceModel, Schedule,
    SupervisedTask, TrainOptions, image_input, images, outputs,
};
use crate::train::Objective;
use crate::{ModelsError, Result};

/// The input and output sizes of a [`Cnn`], and the architecture record of `cnn`
/// checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnConfig {
    /// Image channels (1 for MNIST, 3 for CIFAR-10).
    pub in_channels: usize,
    /// Image height and width (even).
    #[serde(deserialize_with = "image_size")]
    pub image_size: [usize; 2],
    /// The number of classes.
    pub classes: usize,
}

impl CnnConfig {
    /// MNIST and Fashion-MNIST: 1 × 28 × 28, 10 classes.
    pub const MNIST: CnnConfig = CnnConfig {
        in_channels: 1,
        image_size: [28, 28],
        classes: 10,
    };
    /// The 8 × 8 digits: 1 × 8 × 8, 10 classes.
    pub const DIGITS: CnnConfig = CnnConfig {
        in_channels: 1,
        image_size: [8, 8],
        classes: 10,
    };
    /// CIFAR-10: 3 × 32 × 32, 10 classes (the reference material's worked example).
    pub const CIFAR10: CnnConfig = CnnConfig {
        in_channels: 3,
        image_size: [32, 32],
        classes: 10,
    };
}

/// The reference CNN: Conv2d(C, 32, 3, padding 1) → ReLU → MaxPool2d(2, 2) → flatten →
/// Linear(32·H/2·W/2, 128) → ReLU → Linear(128, classes). Its state-dict keys (`conv1.*`,
/// `fc1.*`, `fc2.*`) match the same model written in PyTorch.
///
/// ```
/// use strata_models::models::{Cnn, CnnConfig};
/// use strata_nn::Forward;
/// use strata_autograd::Var;
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let cnn = Cnn::new(CnnConfig::CIFAR10, &mut seeded_rng(0))?;
/// let logits = cnn.forward(&Var::new(Tensor::zeros(&[2, 3, 32, 32])))?;
/// assert_eq!(logits.shape(), &[2, 10]);
/// # Ok::<(), strata_models::ModelsError>(())
/// ```
pub struct Cnn {
    /// The convolution.
    pub conv1: Conv2d,
    /// The hidden fully connected layer.
    pub fc1: Linear,
    /// The classifier.
    pub fc2: Linear,
    config: CnnConfig,
}

impl Cnn {
    /// A CNN with PyTorch's default initialisation drawn from `rng`.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for odd or zero image sizes, images too large to count, or
    /// no channels or classes.
    pub fn new<R: Rng + ?Sized>(config: CnnConfig, rng: &mut R) -> Result<Self> {
        let [h, w] = config.image_size;
        if h < 2
            || w < 2
            || h % 2 != 0
            || w % 2 != 0
            || config.in_channels == 0
            || config.classes == 0
        {
            return Err(ModelsError::Config(format!(
                "the CNN needs even image sizes, channels and classes, got {config:?}"
            )));
        }
        // Sizes can come from a checkpoint's record: counted, never wrapped.
        let flat = strata_tensor::checked_numel(&[32, h / 2, w / 2]).ok_or_else(|| {
            ModelsError::Config(format!("the CNN's images of {h} × {w} are too large"))
        })?;
        let conv = Conv2dParams::default().padding(1);
        Ok(Cnn {
            conv1: Conv2d::with_params(config.in_channels, 32, [3, 3], conv, true, rng)?,
            fc1: Linear::new(flat, 128, true, rng),
            fc2: Linear::new(128, config.classes, true, rng),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> CnnConfig {
        self.config
    }
}

impl Module for Cnn {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        visit_child("conv1", &self.conv1, f);
        visit_child("fc1", &self.fc1, f);
        visit_child("fc2", &self.fc2, f);
    }
}

impl Forward for Cnn {
    fn forward(&self, x: &Var) -> strata_nn::Result<Var> {
        // The convolution and its ReLU in one op (the clamp applied as it stores).
        let h = MaxPool2d::new(2).forward(&self.conv1.forward_relu(x)?)?;
        let h = self.fc1.forward(&h.flatten(1, -1)?)?.relu();
        self.fc2.forward(&h)
    }
}

impl strata_onnx::Export for Cnn {
    fn export(
        &self,
        g: &mut strata_onnx::Graph,
        x: &strata_onnx::Value,
    ) -> strata_onnx::Result<strata_onnx::Value> {
        use strata_onnx::ops;
        let h = g.scoped("conv1", |g| self.conv1.export(g, x))?;
        let h = ops::relu(g, &h)?;
        let h = MaxPool2d::new(2).export(g, &h)?;
        let h = ops::flatten(g, &h, 1, -1)?;
        let h = g.scoped("fc1", |g| self.fc1.export(g, &h))?;
        let h = ops::relu(g, &h)?;
        g.scoped("fc2", |g| self.fc2.export(g, &h))
    }
}

/// `[height, width]`, with an error that names the image size.
fn image_size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<[usize; 2], D::Error> {
    let sizes = Vec::<usize>::deserialize(d)?;
    <[usize; 2]>::try_from(sizes.as_slice())
        .map_err(|_| D::Error::custom(format!("the image size is [height, width], got {sizes:?}")))
}

/// `strata train cnn`: the [`Cnn`] on MNIST (or `--dataset digits`, or a folder of IDX
/// or CIFAR-10 files); 1 epoch of Adam under a one-cycle schedule peaking at 3e-3, batch
/// 64.
pub struct CnnSpec;

impl ReferenceModel for CnnSpec {
    type Architecture = CnnConfig;
    type Extra = NoExtra;
    type Task = SupervisedTask;

    const NAME: &'static str = "cnn";
    const ABOUT: &'static str =
        "The reference CNN on MNIST (or the 8×8 digits, Fashion-MNIST, CIFAR-10).";
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
            length: Length::Epochs(1),
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
        let shape = data.train.sample_shape().to_vec();
        let architecture = CnnConfig {
            in_channels: shape[0],
            image_size: [shape[1], shape[2]],
            classes: data.train.classes().unwrap_or(10),
        };
        Ok(Prepared {
            data,
            architecture,
            extra: NoExtra {},
            dataset,
        })
    }

    fn build(&self, config: &CnnConfig, rng: &mut StdRng) -> Result<Box<dyn Forward>> {
        Ok(Box::new(Cnn::new(*config, rng)?))
    }

    fn export(&self, net: &dyn Forward, a: &CnnConfig) -> Result<strata_onnx::Exported> {
        let shape = [1, a.in_channels, a.image_size[0], a.image_size[1]];
        let example = strata_tensor::Tensor::randn(&shape, &mut strata_tensor::seeded_rng(0));
        super::export_net::<Cnn>(net, example, Self::NAME)
    }

    fn task(&self, _: &CnnConfig) -> SupervisedTask {
        SupervisedTask::new(Objective::CrossEntropy)
    }

    /// The class of each image of an IDX file.
    fn predict(
        &self,
        net: &dyn Forward,
        record: &Record<CnnConfig, NoExtra>,
        input: &Path,
    ) -> Result<Vec<String>> {
        let a = &record.architecture;
        let shape = [a.in_channels, a.image_size[0], a.image_size[1]];
        outputs(
            net,
            Objective::CrossEntropy,
            image_input(input, &shape, &record.dataset)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::assert_round_trip;
    use serde_json::json;

    #[test]
    fn the_architecture_round_trips_and_names_a_bad_image_size() {
        let keys = json!({ "in_channels": 3, "image_size": [32, 32], "classes": 10 });
        assert_round_trip(&CnnConfig::CIFAR10, keys);
        let short = json!({ "in_channels": 1, "image_size": [8], "classes": 10 });
        let err = serde_json::from_value::<CnnConfig>(short).unwrap_err();
        assert!(err.to_string().contains("image size"), "{err}");
        let extra = json!({ "in_channels": 1, "image_size": [8, 8], "classes": 10, "depth": 2 });
        let err = serde_json::from_value::<CnnConfig>(extra).unwrap_err();
        assert!(err.to_string().contains("depth"), "{err}");
    }
}
