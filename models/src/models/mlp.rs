//! A multilayer perceptron.

use strata_autograd::Var;
use strata_nn::{Forward, Linear, Module, ReLU, Sequential, StateKind};
use strata_tensor::rand::Rng;

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
