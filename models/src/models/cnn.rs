//! The reference CNN.

use strata_autograd::Var;
use strata_nn::{
    Conv2d, ConvConfig, Forward, Linear, MaxPool2d, Module, Padding, StateKind, visit_child,
};
use strata_tensor::rand::Rng;

use crate::{ModelsError, Result};

/// The input and output sizes of a [`Cnn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CnnConfig {
    /// Image channels (1 for MNIST, 3 for CIFAR-10).
    pub in_channels: usize,
    /// Image height and width (even).
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
    /// [`ModelsError::Config`] for odd or zero image sizes, or no channels or classes.
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
        let conv = ConvConfig::default().padding(Padding::Explicit([1, 1]));
        Ok(Cnn {
            conv1: Conv2d::with_config(config.in_channels, 32, [3, 3], conv, rng)?,
            fc1: Linear::new(32 * (h / 2) * (w / 2), 128, true, rng),
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
        let h = MaxPool2d::new(2).forward(&self.conv1.forward(x)?.relu())?;
        let h = self.fc1.forward(&h.flatten(1, -1)?)?.relu();
        self.fc2.forward(&h)
    }
}
