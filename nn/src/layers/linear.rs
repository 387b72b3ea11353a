//! `Linear`: y = x·Wᵀ + b.

use strata_autograd::Var;
use strata_tensor::Element;
use strata_tensor::rand::Rng;

use crate::init::default_layer_init;
use crate::{Forward, Module, Result, StateKind};

/// A fully connected layer, like `nn.Linear(in_features, out_features, bias)`: weight
/// `[out_features, in_features]`, bias `[out_features]`, both initialised uniform in
/// `±1/√in_features` as PyTorch does. Input `[*, in_features]`, output `[*, out_features]`.
///
/// ```
/// use strata_nn::{Forward, Linear};
/// use strata_autograd::Var;
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let fc = Linear::<f32>::new(3, 2, true, &mut seeded_rng(0));
/// let y = fc.forward(&Var::new(Tensor::ones(&[5, 3])))?;
/// assert_eq!(y.shape(), &[5, 2]);
/// # Ok::<(), strata_nn::NnError>(())
/// ```
pub struct Linear<T: Element = f32> {
    /// `[out_features, in_features]`.
    pub weight: Var<T>,
    /// `[out_features]`, when the layer has a bias.
    pub bias: Option<Var<T>>,
}

impl<T: Element> Linear<T> {
    /// A layer with PyTorch's default initialisation drawn from `rng`.
    pub fn new<R: Rng + ?Sized>(
        in_features: usize,
        out_features: usize,
        bias: bool,
        rng: &mut R,
    ) -> Self {
        let (weight, bias) = default_layer_init(&[out_features, in_features], bias, rng);
        Linear { weight, bias }
    }

    /// A layer around given parameters (weight `[out, in]`, bias `[out]`).
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) when the shapes do not fit.
    pub fn from_parameters(weight: Var<T>, bias: Option<Var<T>>) -> Result<Self> {
        let ok = weight.ndim() == 2
            && bias
                .as_ref()
                .is_none_or(|b| b.shape() == [weight.shape()[0]]);
        if !ok {
            return Err(crate::error::config_error(
                "Linear",
                format!(
                    "weight must be [out, in] and bias [out], got {:?} and {:?}",
                    weight.shape(),
                    bias.as_ref().map(|b| b.shape().to_vec())
                ),
            ));
        }
        Ok(Linear { weight, bias })
    }

    /// `in_features`.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// `out_features`.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
}

impl<T: Element> Module<T> for Linear<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        f("weight", &self.weight, StateKind::Parameter);
        if let Some(b) = &self.bias {
            f("bias", b, StateKind::Parameter);
        }
    }
}

impl<T: Element> Forward<T> for Linear<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        crate::functional::linear(x, &self.weight, self.bias.as_ref())
    }
}
