//! A small CNN on wavelet scattering features for private training, and the `dp-scatter`
//! reference training.

use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_autograd::{Var, no_grad};
use strata_nn::{
    Conv2d, Conv2dParams, Forward, GroupNorm, Linear, MaxPool2d, Module, StateKind, visit_child,
};
use strata_tensor::Tensor;
use strata_tensor::rand::Rng;
use strata_tensor::rand::rngs::StdRng;

use crate::data::{Dataset, InMemoryDataset, Scattering2d};
use crate::reference::{
    Defaults, Length, NoExtra, OptimizerKind, Prepared, Record, ReferenceModel, Schedule,
    SupervisedTask, TrainOptions, image_input, images, outputs,
};
use crate::train::Objective;
use crate::{ModelsError, Result};

/// The scales of the scattering transform `dp-scatter` trains on.
pub const SCATTER_J: usize = 2;
/// Its orientations.
pub const SCATTER_L: usize = 8;

/// What [`DpScatterNet`] is built for: the images, the scattering transform of each of
/// their channels, and the classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScatterConfig {
    /// Image channels (each is scattered on its own).
    pub in_channels: usize,
    /// Image height and width.
    pub image_size: [usize; 2],
    /// The scattering transform's scales `J`.
    pub j: usize,
    /// Its orientations `L`.
    pub l: usize,
    /// The number of classes.
    pub classes: usize,
}

impl ScatterConfig {
    /// MNIST: 1 × 28 × 28 images, `J = 2`, `L = 8` (81 × 7 × 7 features), 10 classes.
    pub const MNIST: ScatterConfig = ScatterConfig {
        in_channels: 1,
        image_size: [28, 28],
        j: SCATTER_J,
        l: SCATTER_L,
        classes: 10,
    };

    /// The transform of one channel.
    ///
    /// # Errors
    /// Settings the transform refuses (see [`Scattering2d::new`]).
    pub fn scattering(&self) -> Result<Scattering2d> {
        Scattering2d::new(self.j, self.l, self.image_size)
    }

    /// The shape of one image's features: channels × scattering channels, then the
    /// feature map's height and width.
    ///
    /// # Errors
    /// As [`scattering`](ScatterConfig::scattering); a product beyond `usize`.
    pub fn feature_shape(&self) -> Result<[usize; 3]> {
        let [k, h, w] = self.scattering()?.output_shape();
        let c = k
            .checked_mul(self.in_channels)
            .ok_or_else(|| ModelsError::Config(format!("{self:?} has too many channels")))?;
        Ok([c, h, w])
    }

    /// The features of `images` (`[n, channels, height, width]`): each channel scattered,
    /// `[n, channels · K, h, w]`.
    ///
    /// # Errors
    /// Images of another shape.
    pub fn features(&self, images: &Tensor<f32>) -> Result<Tensor<f32>> {
        let [hh, ww] = self.image_size;
        let n = match images.shape() {
            &[n, c, h, w] if [c, h, w] == [self.in_channels, hh, ww] => n,
            s => {
                return Err(ModelsError::Config(format!(
                    "dp-scatter takes [n, {}, {hh}, {ww}] images, got {s:?}",
                    self.in_channels
                )));
            }
        };
        let planes = images.reshape([(n * self.in_channels) as isize, hh as isize, ww as isize])?;
        let [c, h, w] = self.feature_shape()?;
        Ok(self
            .scattering()?
            .transform(&planes)?
            .reshape([n as isize, c as isize, h as isize, w as isize])?)
    }
}

/// A CNN on the scattering coefficients of an image (Tramèr & Boneh 2021, "Differentially
/// Private Learning Needs Better Features"): GroupNorm over the coefficients → Conv2d(K,
/// 32, 3, padding 1) → tanh → MaxPool2d(2) → Conv2d(32, 32, 3, padding 1) → tanh →
/// flatten → Linear(·, 32) → tanh → Linear(32, classes). Its input is the features of
/// [`ScatterConfig::features`], not the pixels: the scattering transform is fixed, so a
/// training computes it once per image rather than in every step. 42 348 parameters for
/// MNIST (81 × 7 × 7 features).
///
/// ```
/// use strata_models::models::{DpScatterNet, ScatterConfig};
/// use strata_nn::{Forward, Module};
/// use strata_autograd::Var;
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let config = ScatterConfig::MNIST;
/// let net = DpScatterNet::new(config, &mut seeded_rng(0))?;
/// assert_eq!(net.num_parameters(), 42_348);
/// let images = Tensor::zeros(&[2, 1, 28, 28]);
/// let features = config.features(&images)?; // [2, 81, 7, 7]
/// let logits = net.forward(&Var::new(features))?;
/// assert_eq!(logits.shape(), &[2, 10]);
/// # Ok::<(), strata_models::ModelsError>(())
/// ```
pub struct DpScatterNet {
    /// Normalises the coefficients per sample, in groups of channels.
    pub norm: GroupNorm,
    /// 3×3 over the coefficients.
    pub conv1: Conv2d,
    /// 3×3.
    pub conv2: Conv2d,
    /// The hidden fully connected layer.
    pub fc1: Linear,
    /// The classifier.
    pub fc2: Linear,
    config: ScatterConfig,
}

/// The most groups of the normalisation (27 for MNIST's 81 coefficients, as Tramèr &
/// Boneh use).
const MAX_GROUPS: usize = 27;

impl DpScatterNet {
    /// A network with PyTorch's default initialisation drawn from `rng`.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for no channels or classes, or images whose feature maps are
    /// smaller than 2 × 2.
    pub fn new<R: Rng + ?Sized>(config: ScatterConfig, rng: &mut R) -> Result<Self> {
        if config.in_channels == 0 || config.classes == 0 {
            return Err(ModelsError::Config(format!(
                "dp-scatter needs channels and classes, got {config:?}"
            )));
        }
        let [c, h, w] = config.feature_shape()?;
        if h < 2 || w < 2 {
            return Err(ModelsError::Config(format!(
                "dp-scatter needs feature maps of at least 2 × 2, got {h} × {w} for {config:?}"
            )));
        }
        let groups = (1..=MAX_GROUPS.min(c))
            .rev()
            .find(|g| c % g == 0)
            .unwrap_or(1);
        let same = Conv2dParams::default().padding(1);
        Ok(DpScatterNet {
            norm: GroupNorm::new(groups, c)?,
            conv1: Conv2d::with_params(c, 32, [3, 3], same, true, rng)?,
            conv2: Conv2d::with_params(32, 32, [3, 3], same, true, rng)?,
            fc1: Linear::new(32 * (h / 2) * (w / 2), 32, true, rng),
            fc2: Linear::new(32, config.classes, true, rng),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> ScatterConfig {
        self.config
    }
}

impl Module for DpScatterNet {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        visit_child("norm", &self.norm, f);
        visit_child("conv1", &self.conv1, f);
        visit_child("conv2", &self.conv2, f);
        visit_child("fc1", &self.fc1, f);
        visit_child("fc2", &self.fc2, f);
    }
}

impl Forward for DpScatterNet {
    fn forward(&self, x: &Var) -> strata_nn::Result<Var> {
        let h = self.norm.forward(x)?;
        let h = MaxPool2d::new(2).forward(&self.conv1.forward(&h)?.tanh())?;
        let h = self.conv2.forward(&h)?.tanh();
        let h = self.fc1.forward(&h.flatten(1, -1)?)?.tanh();
        self.fc2.forward(&h)
    }
}

impl strata_onnx::Export for DpScatterNet {
    fn export(
        &self,
        g: &mut strata_onnx::Graph,
        x: &strata_onnx::Value,
    ) -> strata_onnx::Result<strata_onnx::Value> {
        use strata_onnx::ops;
        let h = g.scoped("norm", |g| self.norm.export(g, x))?;
        let h = g.scoped("conv1", |g| self.conv1.export(g, &h))?;
        let t = ops::tanh(g, &h)?;
        let h = MaxPool2d::new(2).export(g, &t)?;
        let h = g.scoped("conv2", |g| self.conv2.export(g, &h))?;
        let h = ops::tanh(g, &h)?;
        let h = ops::flatten(g, &h, 1, -1)?;
        let h = g.scoped("fc1", |g| self.fc1.export(g, &h))?;
        let h = ops::tanh(g, &h)?;
        g.scoped("fc2", |g| self.fc2.export(g, &h))
    }
}

/// The scattering features of every sample of `data` (images of `config`), in chunks.
fn scattered(data: &InMemoryDataset, config: &ScatterConfig) -> Result<InMemoryDataset> {
    let shape = data.sample_shape().to_vec();
    let n = data.len();
    let images = Tensor::from_vec(data.features().to_vec(), &[&[n][..], &shape[..]].concat())?;
    let features = no_grad(|| config.features(&images))?;
    let feature_shape = config.feature_shape()?;
    InMemoryDataset::new(features.into_vec(), &feature_shape, data.labels().clone())
}

/// `strata train dp-scatter`: the [`DpScatterNet`] on the scattering features of MNIST,
/// trained with DP-SGD (`--dp`) like [`DpCnnSpec`](super::DpCnnSpec): Poisson batches of
/// expected size 2048, 40 epochs of Adam under a one-cycle schedule peaking at 4e-3 (at
/// 1e-2 the accuracy fell back by half a point mid-run, and ended 0.2 lower). The
/// features are computed once per run (a few seconds for MNIST); `strata predict` computes
/// them from the images, and the ONNX export takes them as its input.
pub struct DpScatterSpec;

impl ReferenceModel for DpScatterSpec {
    type Architecture = ScatterConfig;
    type Extra = NoExtra;
    type Task = SupervisedTask;

    const NAME: &'static str = "dp-scatter";
    const ABOUT: &'static str = "A small CNN on wavelet scattering features, for private \
                                 training (--dp) on MNIST (or the other image sets).";
    const DATASETS: &'static [&'static str] = &["digits"];

    fn preprocessing(
        &self,
        dataset: &crate::reference::DatasetRecord,
        _extra: &Self::Extra,
    ) -> Option<crate::reference::Preprocessing> {
        let mut p = crate::reference::image_preprocessing(dataset);
        p.description = format!(
            "{}; then each channel's 2-D scattering transform, Kymatio's Scattering2D(J={}, \
             L={}) with its defaults (the model's input is those coefficients)",
            p.description, SCATTER_J, SCATTER_L
        );
        Some(p)
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            length: Length::Epochs(40),
            lr: 4e-3,
            batch_size: Some(2048),
            optimizer: OptimizerKind::Adam,
            schedule: Schedule::OneCycle,
            clip_grad_norm: None,
            ema: None,
        }
    }

    fn prepare(&self, opts: &TrainOptions) -> Result<Prepared<Self>> {
        let (mut data, dataset) = images(opts)?;
        let shape = data.train.sample_shape().to_vec();
        let &[in_channels, h, w] = shape.as_slice() else {
            return Err(ModelsError::Config(format!(
                "dp-scatter takes images [channels, height, width], got samples of {shape:?}"
            )));
        };
        let architecture = ScatterConfig {
            in_channels,
            image_size: [h, w],
            j: SCATTER_J,
            l: SCATTER_L,
            classes: data.train.classes().unwrap_or(10),
        };
        // Only the samples the run uses are scattered (the loop's --limit comes later).
        if let Some(n) = opts.limit {
            let first = |d: &InMemoryDataset| d.subset(&(0..n.min(d.len())).collect::<Vec<_>>());
            data.train = first(&data.train);
            data.test = first(&data.test);
        }
        data.train = scattered(&data.train, &architecture)?;
        data.test = scattered(&data.test, &architecture)?;
        Ok(Prepared {
            data,
            architecture,
            extra: NoExtra {},
            dataset,
        })
    }

    fn build(&self, config: &ScatterConfig, rng: &mut StdRng) -> Result<Box<dyn Forward>> {
        Ok(Box::new(DpScatterNet::new(*config, rng)?))
    }

    fn export(&self, net: &dyn Forward, a: &ScatterConfig) -> Result<strata_onnx::Exported> {
        let [c, h, w] = a.feature_shape()?;
        let images = Tensor::randn(
            &[1, a.in_channels, a.image_size[0], a.image_size[1]],
            &mut strata_tensor::seeded_rng(0),
        );
        let example = a.features(&images)?;
        debug_assert_eq!(example.shape(), &[1, c, h, w]);
        super::export_net::<DpScatterNet>(net, example, Self::NAME)
    }

    fn task(&self, _: &ScatterConfig) -> SupervisedTask {
        SupervisedTask::new(Objective::CrossEntropy)
    }

    /// The class of each image of an IDX file (its scattering features computed first).
    fn predict(
        &self,
        net: &dyn Forward,
        record: &Record<ScatterConfig, NoExtra>,
        input: &Path,
    ) -> Result<Vec<String>> {
        let a = &record.architecture;
        let shape = [a.in_channels, a.image_size[0], a.image_size[1]];
        let images = image_input(input, &shape, &record.dataset)?;
        outputs(net, Objective::CrossEntropy, a.features(&images)?)
    }
}
