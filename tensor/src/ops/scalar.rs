//! Tensor–scalar arithmetic: `x + c`, `x · c`, `x^c`, … for a number `c`.

use crate::engine::par::Cost;
use crate::{Element, Result, Tensor};

impl<T: Element> Tensor<T> {
    /// `x^exponent`, like `torch.pow(x, exponent)` with a number exponent. The exponents
    /// PyTorch special-cases (±0.5, ±1, ±2, 3) are computed the same way
    /// (`sqrt`, `x * x`, ...), so results match it to the bit there.
    pub fn pow_scalar(&self, exponent: T) -> Tensor<T> {
        let e = exponent.to_f64();
        if e == 2.0 {
            self.map_cost(Cost::Cheap, |x| x * x)
        } else if e == 3.0 {
            self.map_cost(Cost::Cheap, |x| x * x * x)
        } else if e == 0.5 {
            self.map_cost(Cost::Cheap, |x| x.sqrt())
        } else if e == -0.5 {
            self.map_cost(Cost::Cheap, |x| x.sqrt().recip())
        } else if e == 1.0 {
            self.map_cost(Cost::Cheap, |x| x)
        } else if e == -1.0 {
            self.map_cost(Cost::Cheap, |x| x.recip())
        } else if e == -2.0 {
            self.map_cost(Cost::Cheap, |x| (x * x).recip())
        } else {
            self.map_cost(Cost::Transcendental, move |x| x.powf(exponent))
        }
    }

    /// `x + value` for every element.
    pub fn add_scalar(&self, value: T) -> Tensor<T> {
        self.map_cost(Cost::Cheap, move |x| x + value)
    }

    /// `x - value` for every element.
    pub fn sub_scalar(&self, value: T) -> Tensor<T> {
        self.map_cost(Cost::Cheap, move |x| x - value)
    }

    /// `x * value` for every element.
    pub fn mul_scalar(&self, value: T) -> Tensor<T> {
        self.map_cost(Cost::Cheap, move |x| x * value)
    }

    /// `x / value` for every element.
    pub fn div_scalar(&self, value: T) -> Tensor<T> {
        self.map_cost(Cost::Cheap, move |x| x / value)
    }

    /// `value - x` for every element, like `torch.rsub`.
    pub fn rsub_scalar(&self, value: T) -> Tensor<T> {
        self.map_cost(Cost::Cheap, move |x| value - x)
    }

    /// `max(x, value)` for every element (NaN propagates), like `torch.clamp_min`.
    pub fn maximum_scalar(&self, value: T) -> Tensor<T> {
        self.map_cost(Cost::Cheap, move |x| if x < value { value } else { x })
    }

    /// `min(x, value)` for every element (NaN propagates), like `torch.clamp_max`.
    pub fn minimum_scalar(&self, value: T) -> Tensor<T> {
        self.map_cost(Cost::Cheap, move |x| if x > value { value } else { x })
    }

    /// Gradient of [`pow_scalar`](Tensor::pow_scalar) from its input `x`:
    /// `grad · e · x^(e - 1)` (zero for `e = 0`, as PyTorch).
    ///
    /// # Errors
    /// [`TensorError::Shape`](crate::TensorError::Shape) when the shapes differ.
    #[doc(hidden)]
    pub fn pow_scalar_backward(&self, grad: &Tensor<T>, exponent: T) -> Result<Tensor<T>> {
        self.check_same_shape("pow_scalar_backward", grad)?;
        if exponent == T::zero() {
            return Ok(Tensor::zeros(self.shape()));
        }
        let d = self.pow_scalar(exponent - T::one());
        d.zip_map(grad, "pow_scalar_backward", Cost::Cheap, move |p, g| {
            g * exponent * p
        })
    }
}
