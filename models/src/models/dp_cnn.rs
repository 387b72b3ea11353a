//! The CNN for private training, and the `dp-cnn` reference training.

use std::path::Path;

use strata_autograd::Var;
use strata_nn::{Conv2d, Conv2dParams, Forward, Linear, MaxPool2d, Module, StateKind, visit_child};
use strata_tensor::Pool2dParams;
use strata_tensor::rand::Rng;
use strata_tensor::rand::rngs::StdRng;

use super::cnn::CnnConfig;
use crate::data::Dataset;
use crate::reference::{
    Defaults, Length, NoExtra, OptimizerKind, Prepared, Record, ReferenceModel, Schedule,
    SupervisedTask, TrainOptions, image_input, images, outputs,
};
use crate::train::Objective;
use crate::{ModelsError, Result};

/// A small CNN made for DP-SGD, after Papernot et al. 2021 ("Tempered Sigmoid Activations
/// for Deep Learning with Differential Privacy"): Conv2d(C, 16, 8, stride 2, padding 3) →
/// tanh → MaxPool2d(2, stride 1) → Conv2d(16, 32, 4, stride 2) → tanh → MaxPool2d(2,
/// stride 1) → flatten → Linear(·, 32) → tanh → Linear(32, classes). 26 010 parameters
/// for MNIST. Why these choices: every sample's gradient is clipped and noise is added to
/// every coordinate, so a small model has less noise in total; tanh keeps activations (and
/// so gradient norms) bounded, so clipping loses less signal than after ReLU; no
/// BatchNorm, which DP-SGD cannot use.
///
/// ```
/// use strata_models::models::{CnnConfig, DpCnn};
/// use strata_nn::{Forward, Module};
/// use strata_autograd::Var;
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let net = DpCnn::new(CnnConfig::MNIST, &mut seeded_rng(0))?;
/// assert_eq!(net.num_parameters(), 26_010);
/// let logits = net.forward(&Var::new(Tensor::zeros(&[2, 1, 28, 28])))?;
/// assert_eq!(logits.shape(), &[2, 10]);
/// # Ok::<(), strata_models::ModelsError>(())
/// ```
pub struct DpCnn {
    /// 8×8, stride 2.
    pub conv1: Conv2d,
    /// 4×4, stride 2.
    pub conv2: Conv2d,
    /// The hidden fully connected layer.
    pub fc1: Linear,
    /// The classifier.
    pub fc2: Linear,
    config: CnnConfig,
}

/// The side of a map after `conv1`, `pool`, `conv2`, `pool` (or `None` when it vanishes).
fn feature_side(size: usize) -> Option<usize> {
    let conv1 = (size + 6).checked_sub(8)? / 2 + 1;
    let pool1 = conv1.checked_sub(1)?;
    let conv2 = pool1.checked_sub(4)? / 2 + 1;
    conv2.checked_sub(1).filter(|&s| s > 0)
}

impl DpCnn {
    /// A network with PyTorch's default initialisation drawn from `rng`.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for images too small for the two strided convolutions, or no
    /// channels or classes.
    pub fn new<R: Rng + ?Sized>(config: CnnConfig, rng: &mut R) -> Result<Self> {
        let [h, w] = config.image_size;
        let (Some(fh), Some(fw)) = (feature_side(h), feature_side(w)) else {
            return Err(ModelsError::Config(format!(
                "dp-cnn needs images of at least 9×9, got {config:?}"
            )));
        };
        if config.in_channels == 0 || config.classes == 0 {
            return Err(ModelsError::Config(format!(
                "dp-cnn needs channels and classes, got {config:?}"
            )));
        }
        let c1 = Conv2dParams::default().stride(2).padding(3);
        let c2 = Conv2dParams::default().stride(2);
        Ok(DpCnn {
            conv1: Conv2d::with_params(config.in_channels, 16, [8, 8], c1, true, rng)?,
            conv2: Conv2d::with_params(16, 32, [4, 4], c2, true, rng)?,
            fc1: Linear::new(32 * fh * fw, 32, true, rng),
            fc2: Linear::new(32, config.classes, true, rng),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> CnnConfig {
        self.config
    }
}

impl Module for DpCnn {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        visit_child("conv1", &self.conv1, f);
        visit_child("conv2", &self.conv2, f);
        visit_child("fc1", &self.fc1, f);
        visit_child("fc2", &self.fc2, f);
    }
}

impl Forward for DpCnn {
    fn forward(&self, x: &Var) -> strata_nn::Result<Var> {
        let pool = MaxPool2d::with_params(Pool2dParams::new(2).stride(1));
        let h = pool.forward(&self.conv1.forward(x)?.tanh())?;
        let h = pool.forward(&self.conv2.forward(&h)?.tanh())?;
        let h = self.fc1.forward(&h.flatten(1, -1)?)?.tanh();
        self.fc2.forward(&h)
    }
}

impl strata_onnx::Export for DpCnn {
    fn export(
        &self,
        g: &mut strata_onnx::Graph,
        x: &strata_onnx::Value,
    ) -> strata_onnx::Result<strata_onnx::Value> {
        use strata_onnx::ops;
        let pool = MaxPool2d::with_params(Pool2dParams::new(2).stride(1));
        let h = g.scoped("conv1", |g| self.conv1.export(g, x))?;
        let t = ops::tanh(g, &h)?;
        let h = pool.export(g, &t)?;
        let h = g.scoped("conv2", |g| self.conv2.export(g, &h))?;
        let t = ops::tanh(g, &h)?;
        let h = pool.export(g, &t)?;
        let h = ops::flatten(g, &h, 1, -1)?;
        let h = g.scoped("fc1", |g| self.fc1.export(g, &h))?;
        let h = ops::tanh(g, &h)?;
        g.scoped("fc2", |g| self.fc2.export(g, &h))
    }
}

/// `strata train dp-cnn`: the [`DpCnn`] on MNIST; 40 epochs of Adam under a one-cycle
/// schedule peaking at 1e-2, batch 2048 — the schedule for private training (`--dp`):
/// the noise is added once per batch, so large batches (Dörmann et al. 2021) carry
/// relatively less of it (at ε = 3 the noise over the batch is half that of batch 512).
pub struct DpCnnSpec;

impl ReferenceModel for DpCnnSpec {
    type Architecture = CnnConfig;
    type Extra = NoExtra;
    type Task = SupervisedTask;

    const NAME: &'static str = "dp-cnn";
    const ABOUT: &'static str =
        "A small tanh CNN made for private training (--dp) on MNIST (or the other image sets).";
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
            length: Length::Epochs(40),
            lr: 1e-2,
            batch_size: Some(2048),
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
        Ok(Box::new(DpCnn::new(*config, rng)?))
    }

    fn export(&self, net: &dyn Forward, a: &CnnConfig) -> Result<strata_onnx::Exported> {
        let shape = [1, a.in_channels, a.image_size[0], a.image_size[1]];
        let example = strata_tensor::Tensor::randn(&shape, &mut strata_tensor::seeded_rng(0));
        super::export_net::<DpCnn>(net, example, Self::NAME)
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
