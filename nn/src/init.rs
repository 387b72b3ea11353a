//! Parameter initialisation, like `torch.nn.init`: every function fills a var in place
//! from an explicit RNG, so the same seed gives the same weights.
//!
//! ```
//! use strata_nn::init::{self, FanMode, Nonlinearity};
//! use strata_autograd::Var;
//! use strata_tensor::{Tensor, seeded_rng};
//!
//! let w = Var::parameter(Tensor::<f32>::zeros(&[64, 32]));
//! init::kaiming_normal_(&w, 0.0, FanMode::FanIn, Nonlinearity::Relu, &mut seeded_rng(0))?;
//! let std = w.value().std(&[], true, false)?.item()?;
//! assert!((std - (2.0f32 / 32.0).sqrt()).abs() < 0.02);
//! # Ok::<(), strata_nn::NnError>(())
//! ```

use strata_autograd::Var;
use strata_tensor::rand::Rng;
use strata_tensor::{Element, Tensor};

use crate::Result;
use crate::error::config_error;

/// The nonlinearity a layer feeds, for [`calculate_gain`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Nonlinearity {
    /// Identity, convolutions and sigmoid: gain 1.
    Linear,
    /// Sigmoid: gain 1.
    Sigmoid,
    /// Tanh: gain 5/3.
    Tanh,
    /// ReLU: gain √2.
    Relu,
    /// Leaky ReLU with the given negative slope (the `a` argument of the kaiming
    /// functions overrides it there): gain √(2 / (1 + slope²)).
    LeakyRelu,
    /// SELU: gain 3/4.
    Selu,
}

/// Whether kaiming initialisation preserves the variance of the forward pass (`FanIn`)
/// or of the backward pass (`FanOut`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanMode {
    /// The number of inputs of a unit.
    FanIn,
    /// The number of outputs of a unit.
    FanOut,
}

/// The recommended gain for a nonlinearity (`nn.init.calculate_gain`); `param` is the
/// leaky-ReLU slope.
pub fn calculate_gain(nonlinearity: Nonlinearity, param: f64) -> f64 {
    match nonlinearity {
        Nonlinearity::Linear | Nonlinearity::Sigmoid => 1.0,
        Nonlinearity::Tanh => 5.0 / 3.0,
        Nonlinearity::Relu => 2f64.sqrt(),
        Nonlinearity::LeakyRelu => (2.0 / (1.0 + param * param)).sqrt(),
        Nonlinearity::Selu => 0.75,
    }
}

/// `(fan_in, fan_out)` of a weight shape: `shape[1]` and `shape[0]` times the receptive
/// field (the product of the remaining dimensions), like PyTorch's
/// `_calculate_fan_in_and_fan_out`.
///
/// # Errors
/// [`NnError::Config`](crate::NnError::Config) for fewer than 2 dimensions, or fans too
/// large to count.
pub fn fan_in_and_fan_out(shape: &[usize]) -> Result<(usize, usize)> {
    if shape.len() < 2 {
        return Err(config_error(
            "init",
            format!("fan in and fan out need at least 2 dimensions, got shape {shape:?}"),
        ));
    }
    let fans = shape[2..]
        .iter()
        .try_fold(1usize, |r, &d| r.checked_mul(d))
        .and_then(|r| Some((shape[1].checked_mul(r)?, shape[0].checked_mul(r)?)));
    fans.ok_or_else(|| {
        config_error(
            "init",
            format!("the fans of shape {shape:?} are too large to count"),
        )
    })
}

fn fill<T: Element>(var: &Var<T>, t: Tensor<T>) -> Result<()> {
    Ok(var.set_value(t)?)
}

/// Fills with values uniform in `[low, high)` (`nn.init.uniform_`).
///
/// # Errors
/// When `low > high` or a bound is not finite.
pub fn uniform_<T: Element, R: Rng + ?Sized>(
    var: &Var<T>,
    low: f64,
    high: f64,
    rng: &mut R,
) -> Result<()> {
    let t = Tensor::uniform(var.shape(), T::from_f64(low), T::from_f64(high), rng)?;
    fill(var, t)
}

/// Fills with normal values (`nn.init.normal_`).
///
/// # Errors
/// When `std` is negative or an argument is not finite.
pub fn normal_<T: Element, R: Rng + ?Sized>(
    var: &Var<T>,
    mean: f64,
    std: f64,
    rng: &mut R,
) -> Result<()> {
    let t = Tensor::normal(var.shape(), T::from_f64(mean), T::from_f64(std), rng)?;
    fill(var, t)
}

/// Fills with `value` (`nn.init.constant_`).
///
/// # Errors
/// Never in practice; the shape is the var's own.
pub fn constant_<T: Element>(var: &Var<T>, value: f64) -> Result<()> {
    fill(var, Tensor::full(var.shape(), T::from_f64(value)))
}

/// Fills with zeros (`nn.init.zeros_`).
///
/// # Errors
/// As [`constant_`].
pub fn zeros_<T: Element>(var: &Var<T>) -> Result<()> {
    constant_(var, 0.0)
}

/// Fills with ones (`nn.init.ones_`).
///
/// # Errors
/// As [`constant_`].
pub fn ones_<T: Element>(var: &Var<T>) -> Result<()> {
    constant_(var, 1.0)
}

/// Glorot uniform: bound `gain · √(6 / (fan_in + fan_out))` (`nn.init.xavier_uniform_`).
///
/// # Errors
/// For fewer than 2 dimensions.
pub fn xavier_uniform_<T: Element, R: Rng + ?Sized>(
    var: &Var<T>,
    gain: f64,
    rng: &mut R,
) -> Result<()> {
    let (fan_in, fan_out) = fan_in_and_fan_out(var.shape())?;
    let std = gain * (2.0 / (fan_in + fan_out) as f64).sqrt();
    let bound = 3f64.sqrt() * std;
    uniform_(var, -bound, bound, rng)
}

/// Glorot normal: std `gain · √(2 / (fan_in + fan_out))` (`nn.init.xavier_normal_`).
///
/// # Errors
/// For fewer than 2 dimensions.
pub fn xavier_normal_<T: Element, R: Rng + ?Sized>(
    var: &Var<T>,
    gain: f64,
    rng: &mut R,
) -> Result<()> {
    let (fan_in, fan_out) = fan_in_and_fan_out(var.shape())?;
    let std = gain * (2.0 / (fan_in + fan_out) as f64).sqrt();
    normal_(var, 0.0, std, rng)
}

fn kaiming_std(shape: &[usize], a: f64, mode: FanMode, nonlinearity: Nonlinearity) -> Result<f64> {
    let (fan_in, fan_out) = fan_in_and_fan_out(shape)?;
    let fan = match mode {
        FanMode::FanIn => fan_in,
        FanMode::FanOut => fan_out,
    };
    Ok(calculate_gain(nonlinearity, a) / (fan as f64).sqrt())
}

/// He uniform: bound `gain · √(3 / fan)` (`nn.init.kaiming_uniform_(w, a, mode,
/// nonlinearity)`; PyTorch's defaults are `a = 0`, `FanIn`, `LeakyRelu`). Linear and
/// convolution layers use `a = √5` with `LeakyRelu`, which gives the bound `1/√fan_in`.
///
/// # Errors
/// For fewer than 2 dimensions.
pub fn kaiming_uniform_<T: Element, R: Rng + ?Sized>(
    var: &Var<T>,
    a: f64,
    mode: FanMode,
    nonlinearity: Nonlinearity,
    rng: &mut R,
) -> Result<()> {
    let bound = 3f64.sqrt() * kaiming_std(var.shape(), a, mode, nonlinearity)?;
    uniform_(var, -bound, bound, rng)
}

/// He normal: std `gain / √fan` (`nn.init.kaiming_normal_`).
///
/// # Errors
/// For fewer than 2 dimensions.
pub fn kaiming_normal_<T: Element, R: Rng + ?Sized>(
    var: &Var<T>,
    a: f64,
    mode: FanMode,
    nonlinearity: Nonlinearity,
    rng: &mut R,
) -> Result<()> {
    let std = kaiming_std(var.shape(), a, mode, nonlinearity)?;
    normal_(var, 0.0, std, rng)
}

/// A (semi-)orthogonal matrix scaled by `gain` (`nn.init.orthogonal_`): the Q of a QR
/// factorisation of a normal matrix, with the signs fixed by R's diagonal as PyTorch
/// does. Dimensions after the first are flattened.
///
/// # Errors
/// For fewer than 2 dimensions.
pub fn orthogonal_<T: Element, R: Rng + ?Sized>(
    var: &Var<T>,
    gain: f64,
    rng: &mut R,
) -> Result<()> {
    let shape = var.shape().to_vec();
    if shape.len() < 2 {
        return Err(config_error(
            "init",
            format!("orthogonal_ needs at least 2 dimensions, got shape {shape:?}"),
        ));
    }
    let rows = shape[0];
    let cols = shape[1..].iter().product::<usize>();
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    // Work on the tall orientation: m >= n columns to orthonormalise.
    let (m, n) = if rows < cols {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let a = Tensor::<f64>::randn(&[m, n], rng).to_vec();
    let q = householder_q(&a, m, n);
    // q is m x n with orthonormal columns; the weight is rows x cols.
    let mut out = vec![T::zero(); rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let v = if rows < cols {
                q[j * n + i]
            } else {
                q[i * n + j]
            };
            out[i * cols + j] = T::from_f64(v * gain);
        }
    }
    fill(var, Tensor::from_vec(out, &shape)?)
}

/// The thin Q (m x n, row-major) of the QR factorisation of `a` (m x n, m >= n) by
/// Householder reflections, with each column's sign chosen so that R's diagonal is
/// positive (PyTorch multiplies Q by sign(diag(R))).
fn householder_q(a: &[f64], m: usize, n: usize) -> Vec<f64> {
    let mut r = a.to_vec();
    let mut vs: Vec<Vec<f64>> = Vec::with_capacity(n);
    let mut signs = vec![1.0; n];
    for k in 0..n {
        let norm = (k..m).map(|i| r[i * n + k].powi(2)).sum::<f64>().sqrt();
        let x0 = r[k * n + k];
        let alpha = if x0 >= 0.0 { -norm } else { norm };
        let mut v: Vec<f64> = (k..m).map(|i| r[i * n + k]).collect();
        v[0] -= alpha;
        let vnorm2: f64 = v.iter().map(|x| x * x).sum();
        if vnorm2 > 0.0 {
            for j in k..n {
                let dot: f64 = (k..m).map(|i| v[i - k] * r[i * n + j]).sum();
                let s = 2.0 * dot / vnorm2;
                for i in k..m {
                    r[i * n + j] -= s * v[i - k];
                }
            }
        }
        signs[k] = if r[k * n + k] < 0.0 { -1.0 } else { 1.0 };
        vs.push(v);
    }
    // Q = H_0 H_1 ... H_{n-1} applied to the first n columns of the identity.
    let mut q = vec![0.0; m * n];
    for j in 0..n {
        q[j * n + j] = 1.0;
    }
    for k in (0..n).rev() {
        let v = &vs[k];
        let vnorm2: f64 = v.iter().map(|x| x * x).sum();
        if vnorm2 == 0.0 {
            continue;
        }
        for j in 0..n {
            let dot: f64 = (k..m).map(|i| v[i - k] * q[i * n + j]).sum();
            let s = 2.0 * dot / vnorm2;
            for i in k..m {
                q[i * n + j] -= s * v[i - k];
            }
        }
    }
    for i in 0..m {
        for j in 0..n {
            q[i * n + j] *= signs[j];
        }
    }
    q
}

/// PyTorch's default initialisation of Linear and Conv layers: the weight kaiming-uniform
/// with `a = √5` (bound `1/√fan_in`), the bias uniform in `±1/√fan_in`.
pub(crate) fn default_layer_init<T: Element, R: Rng + ?Sized>(
    weight_shape: &[usize],
    bias: bool,
    rng: &mut R,
) -> (Var<T>, Option<Var<T>>) {
    let (fan_in, _) = fan_in_and_fan_out(weight_shape).unwrap_or((0, 0));
    let bound = if fan_in > 0 {
        1.0 / (fan_in as f64).sqrt()
    } else {
        0.0
    };
    let b = T::from_f64(bound);
    let weight = uniform_parameter(weight_shape, b, rng);
    let bias = bias.then(|| uniform_parameter(&[weight_shape[0]], b, rng));
    (weight, bias)
}

/// A parameter uniform in `±bound` for an infallible layer constructor: what
/// `Tensor::uniform` draws, failing as `Tensor::zeros` does.
///
/// `bound` is finite by construction, so `Tensor::uniform` can only refuse the shape
/// (too large to count, or to allocate). A constructor that returns `Self` must then
/// panic, and the panic must be the one an infallible allocation makes: naming the
/// shape, and inside `strata_tensor::with_allocation_limit` carrying the payload that
/// function catches, so that building a network from an untrusted record is refused
/// instead of crashing. `Tensor::zeros` on the same shape makes exactly that panic (the
/// limit charged nothing for the refused allocation); should it succeed after all (memory
/// freed meanwhile), the error is reported as it is.
///
/// # Panics
/// When the shape cannot be allocated.
#[track_caller]
pub(crate) fn uniform_parameter<T: Element, R: Rng + ?Sized>(
    shape: &[usize],
    bound: T,
    rng: &mut R,
) -> Var<T> {
    match Tensor::uniform(shape, -bound, bound, rng) {
        Ok(t) => Var::parameter(t),
        Err(e) => {
            drop(Tensor::<T>::zeros(shape));
            panic!("{e}")
        }
    }
}
