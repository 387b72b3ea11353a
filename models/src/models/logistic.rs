//! Logistic regression, binary and multinomial.

use strata_autograd::Var;
use strata_nn::{Forward, Linear, Module, StateKind, visit_child};
use strata_tensor::rand::Rng;

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
