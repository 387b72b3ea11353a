//! Linear and polynomial regression, with the closed-form least-squares fit.

use strata_autograd::Var;
use strata_nn::{Forward, Linear, Module, StateKind, visit_child};
use strata_tensor::Tensor;
use strata_tensor::rand::Rng;

use crate::{ModelsError, Result};

/// Linear regression `y = θ0 + θ·x`, trained by gradient descent or solved in closed form
/// by least squares ([`fit_closed_form`](LinearRegression::fit_closed_form)). The forward
/// pass maps `[B, features]` to `[B]`.
pub struct LinearRegression {
    /// `[1, features]` weights and the bias θ0.
    pub linear: Linear,
}

impl LinearRegression {
    /// A model for `features` inputs, initialised as PyTorch's `nn.Linear`.
    pub fn new<R: Rng + ?Sized>(features: usize, rng: &mut R) -> Self {
        LinearRegression {
            linear: Linear::new(features, 1, true, rng),
        }
    }

    /// The least-squares coefficients `(θ, θ0)` of `x` `[n, features]` against `y` `[n]`,
    /// by QR on `[x, 1]` (strata-tensor's `lstsq`, computed in f64).
    ///
    /// # Errors
    /// [`ModelsError::Config`] when there are fewer samples than coefficients.
    pub fn closed_form(x: &Tensor<f32>, y: &Tensor<f32>) -> Result<(Vec<f64>, f64)> {
        let (n, f) = match x.shape() {
            &[n, f] => (n, f),
            s => {
                return Err(ModelsError::Config(format!(
                    "closed form needs x [n, features], got {s:?}"
                )));
            }
        };
        if n <= f {
            return Err(ModelsError::Config(format!(
                "{n} samples cannot determine {} coefficients",
                f + 1
            )));
        }
        let xs = x.to_vec();
        let design: Vec<f64> = (0..n)
            .flat_map(|i| {
                xs[i * f..(i + 1) * f]
                    .iter()
                    .map(|&v| v as f64)
                    .chain(std::iter::once(1.0))
            })
            .collect();
        let a = Tensor::from_vec(design, &[n, f + 1])?;
        let b = Tensor::from_vec(y.to_vec().into_iter().map(f64::from).collect(), &[n])?;
        let coef = a.lstsq(&b)?.to_vec();
        Ok((coef[..f].to_vec(), coef[f]))
    }

    /// Sets the parameters to the closed-form solution on `x`, `y`.
    ///
    /// # Errors
    /// As [`closed_form`](LinearRegression::closed_form).
    pub fn fit_closed_form(&self, x: &Tensor<f32>, y: &Tensor<f32>) -> Result<(Vec<f64>, f64)> {
        let (w, b) = Self::closed_form(x, y)?;
        let f = w.len();
        self.linear.weight.set_value(Tensor::from_vec(
            w.iter().map(|&v| v as f32).collect(),
            &[1, f],
        )?)?;
        if let Some(bias) = &self.linear.bias {
            bias.set_value(Tensor::from_vec(vec![b as f32], &[1])?)?;
        }
        Ok((w, b))
    }
}

impl Module for LinearRegression {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        visit_child("linear", &self.linear, f);
    }
}

impl Forward for LinearRegression {
    fn forward(&self, x: &Var) -> strata_nn::Result<Var> {
        Ok(self.linear.forward(x)?.squeeze(-1)?)
    }
}

/// Polynomial regression in one input, `y = θ0 + θ1·x + … + θn·xⁿ`: the powers of `x` are
/// standardised with statistics fitted on the training data (kept as buffers
/// `feature_mean` and `feature_std`, so they travel with the checkpoint), then a linear
/// layer. Input `[B, 1]`, output `[B]`.
pub struct PolynomialRegression {
    /// The linear layer on the standardised powers.
    pub linear: Linear,
    mean: Var,
    std: Var,
    degree: usize,
}

impl PolynomialRegression {
    /// A model of the given degree (at least 1).
    ///
    /// # Errors
    /// [`ModelsError::Config`] for degree 0.
    pub fn new<R: Rng + ?Sized>(degree: usize, rng: &mut R) -> Result<Self> {
        if degree == 0 {
            return Err(ModelsError::Config(
                "the polynomial degree must be at least 1".into(),
            ));
        }
        Ok(PolynomialRegression {
            linear: Linear::new(degree, 1, true, rng),
            mean: Var::new(Tensor::zeros(&[degree])),
            std: Var::new(Tensor::ones(&[degree])),
            degree,
        })
    }

    /// The degree.
    pub fn degree(&self) -> usize {
        self.degree
    }

    /// The raw powers `[x, x², …, xⁿ]` of `x` `[B, 1]`.
    ///
    /// # Errors
    /// When `x` is not `[B, 1]`.
    pub fn powers(&self, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        if x.ndim() != 2 || x.shape()[1] != 1 {
            return Err(ModelsError::Config(format!(
                "polynomial regression takes x [B, 1], got {:?}",
                x.shape()
            )));
        }
        let powers: Vec<Tensor<f32>> = (1..=self.degree).map(|k| x.pow_scalar(k as f32)).collect();
        Ok(Tensor::cat(&powers, 1)?)
    }

    /// Fits the standardisation of the powers on training inputs `x` `[n, 1]`.
    ///
    /// # Errors
    /// When `x` is not `[n, 1]`.
    pub fn fit_standardization(&self, x: &Tensor<f32>) -> Result<()> {
        let p = self.powers(x)?;
        let mean = p.mean(&[0], false)?;
        let std = p
            .std(&[0], false, false)?
            .map(|s| if s > 1e-12 { s } else { 1.0 });
        self.mean.set_value(mean)?;
        self.std.set_value(std)?;
        Ok(())
    }
}

impl Module for PolynomialRegression {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        visit_child("linear", &self.linear, f);
        f("feature_mean", &self.mean, StateKind::Buffer);
        f("feature_std", &self.std, StateKind::Buffer);
    }
}

impl Forward for PolynomialRegression {
    fn forward(&self, x: &Var) -> strata_nn::Result<Var> {
        let p = self
            .powers(&x.value())
            .map_err(|e| strata_nn::NnError::Input {
                layer: "PolynomialRegression",
                msg: e.to_string(),
            })?;
        let z = Var::new(p).sub(&self.mean)?.div(&self.std)?;
        Ok(self.linear.forward(&z)?.squeeze(-1)?)
    }
}

/// The coefficient of determination `1 - SS_res / SS_tot` of predictions against targets.
pub fn r2_score(predictions: &[f32], targets: &[f32]) -> f64 {
    let n = targets.len().max(1) as f64;
    let mean = targets.iter().map(|&t| t as f64).sum::<f64>() / n;
    let ss_tot: f64 = targets.iter().map(|&t| (t as f64 - mean).powi(2)).sum();
    let ss_res: f64 = predictions
        .iter()
        .zip(targets)
        .map(|(&p, &t)| (p as f64 - t as f64).powi(2))
        .sum();
    if ss_tot == 0.0 {
        0.0
    } else {
        1.0 - ss_res / ss_tot
    }
}
