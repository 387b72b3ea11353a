//! `Dropout`.

use std::sync::Mutex;

use strata_autograd::Var;
use strata_tensor::rand::rngs::StdRng;
use strata_tensor::{Element, seeded_rng};

use crate::error::config_error;
use crate::{Forward, Module, Result, StateKind};

/// Zeroes each element with probability `p` in train mode and scales the rest by
/// `1/(1-p)`, like `nn.Dropout(p)`; the identity in eval mode. Its RNG is seeded
/// explicitly, so a run with the same seed drops the same elements.
///
/// ```
/// use strata_nn::{Dropout, Forward};
/// use strata_autograd::Var;
/// use strata_tensor::Tensor;
///
/// let mut drop = Dropout::new(0.5, 42)?;
/// let x = Var::new(Tensor::<f32>::ones(&[1000]));
/// let kept = drop.forward(&x)?.to_vec().iter().filter(|&&v| v == 2.0).count();
/// assert!((400..600).contains(&kept));
/// drop.eval();
/// assert_eq!(drop.forward(&x)?.to_vec(), x.to_vec());
/// # Ok::<(), strata_nn::NnError>(())
/// ```
pub struct Dropout {
    p: f64,
    training: bool,
    rng: Mutex<StdRng>,
}

impl Dropout {
    /// Dropout with probability `p`, its masks drawn from an RNG seeded with `seed`; in
    /// train mode, as PyTorch modules start.
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) unless `0 <= p <= 1`.
    pub fn new(p: f64, seed: u64) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(config_error(
                "Dropout",
                format!("dropout probability has to be between 0 and 1, but got {p}"),
            ));
        }
        Ok(Dropout {
            p,
            training: true,
            rng: Mutex::new(seeded_rng(seed)),
        })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Train mode (also reachable as [`Module::train`]; this inherent method needs no
    /// element type).
    pub fn train(&mut self) {
        self.training = true;
    }

    /// Eval mode: the identity.
    pub fn eval(&mut self) {
        self.training = false;
    }

    /// Whether the layer is in train mode.
    pub fn is_training(&self) -> bool {
        self.training
    }
}

impl<T: Element> Module<T> for Dropout {
    fn visit_state(&self, _f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {}

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

impl<T: Element> Forward<T> for Dropout {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        crate::functional::dropout(x, self.p, self.training, &mut *rng)
    }
}
