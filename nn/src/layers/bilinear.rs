//! `Bilinear`: y = x1ᵀ·A·x2 + b.

use strata_autograd::{Var, einsum};
use strata_tensor::rand::Rng;
use strata_tensor::{Element, Tensor};

use crate::error::input_error;
use crate::{Module, Result, StateKind};

/// A bilinear layer, like `nn.Bilinear(in1_features, in2_features, out_features, bias)`:
/// `y_o = Σ_ij x1_i·A_oij·x2_j + b_o`, weight `[out, in1, in2]` and bias `[out]` uniform in
/// `±1/√in1` as PyTorch initialises them. Inputs `[*, in1]` and `[*, in2]`.
pub struct Bilinear<T: Element = f32> {
    /// `[out_features, in1_features, in2_features]`.
    pub weight: Var<T>,
    /// `[out_features]`, when the layer has a bias.
    pub bias: Option<Var<T>>,
}

impl<T: Element> Bilinear<T> {
    /// A layer with PyTorch's initialisation drawn from `rng`.
    pub fn new<R: Rng + ?Sized>(
        in1_features: usize,
        in2_features: usize,
        out_features: usize,
        bias: bool,
        rng: &mut R,
    ) -> Self {
        let bound = 1.0 / (in1_features.max(1) as f64).sqrt();
        let (lo, hi) = (T::from_f64(-bound), T::from_f64(bound));
        let uniform = |shape: &[usize], rng: &mut R| {
            Var::parameter(Tensor::uniform(shape, lo, hi, rng).expect("finite bounds"))
        };
        let weight = uniform(&[out_features, in1_features, in2_features], rng);
        let bias = bias.then(|| uniform(&[out_features], rng));
        Bilinear { weight, bias }
    }
}

impl<T: Element> Module<T> for Bilinear<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        f("weight", &self.weight, StateKind::Parameter);
        if let Some(b) = &self.bias {
            f("bias", b, StateKind::Parameter);
        }
    }
}

impl<T: Element> Bilinear<T> {
    /// The layer on a pair of inputs.
    ///
    /// # Errors
    /// [`NnError::Input`](crate::NnError::Input) when the feature sizes or the leading
    /// dimensions do not fit.
    pub fn forward(&self, x1: &Var<T>, x2: &Var<T>) -> Result<Var<T>> {
        let w = self.weight.shape();
        let ok = x1.shape().last() == Some(&w[1])
            && x2.shape().last() == Some(&w[2])
            && x1.shape()[..x1.ndim().saturating_sub(1)]
                == x2.shape()[..x2.ndim().saturating_sub(1)];
        if !ok {
            return Err(input_error(
                "Bilinear",
                format!(
                    "expected inputs [*, {}] and [*, {}] with the same leading dimensions, got {:?} and {:?}",
                    w[1],
                    w[2],
                    x1.shape(),
                    x2.shape()
                ),
            ));
        }
        let y = einsum(
            "...i,oij,...j->...o",
            &[x1.clone(), self.weight.clone(), x2.clone()],
        )?;
        Ok(match &self.bias {
            Some(b) => y.add(b)?,
            None => y,
        })
    }
}
