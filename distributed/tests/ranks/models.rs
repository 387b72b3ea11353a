//! The small models and data the multi-rank checks train.

use strata_autograd::Var;
use strata_nn::loss::{ClassLossOptions, cross_entropy};
use strata_nn::{
    Conv2d, Flatten, Forward, Linear, Module, Sequential, StateKind, Tanh, visit_child,
};
use strata_tensor::rand::RngExt;
use strata_tensor::{Element, IndexTensor, Tensor, seeded_rng};

/// Conv2d(2→3, 3×3) → tanh → flatten → Linear(48→hidden) → tanh → Linear(hidden→3): 6
/// parameters of 3 to 288 elements, inputs `[B, 2, 6, 6]`.
pub fn net<T: Element>(seed: u64, hidden: usize) -> Sequential<T> {
    let mut rng = seeded_rng(seed);
    Sequential::new()
        .push(Conv2d::new(2, 3, 3, &mut rng).expect("a valid convolution"))
        .push(Tanh)
        .push(Flatten::default())
        .push(Linear::new(48, hidden, true, &mut rng))
        .push(Tanh)
        .push(Linear::new(hidden, 3, true, &mut rng))
}

/// A global batch of `n` samples for the net, drawn from `seed`.
pub fn batch<T: Element>(seed: u64, n: usize) -> (Tensor<T>, Vec<i64>) {
    let mut rng = seeded_rng(seed);
    let x = Tensor::randn(&[n, 2, 6, 6], &mut rng);
    let y = (0..n).map(|_| rng.random_range(0..3i64)).collect();
    (x, y)
}

/// Rows `[start, start + len)` of a batch.
pub fn rows<T: Element>(
    batch: &(Tensor<T>, Vec<i64>),
    start: usize,
    len: usize,
) -> (Var<T>, IndexTensor) {
    let x = batch
        .0
        .narrow(0, start, len)
        .expect("rows inside the batch")
        .contiguous();
    let y =
        IndexTensor::from_vec(batch.1[start..start + len].to_vec(), &[len]).expect("len labels");
    (Var::new(x), y)
}

/// The mean cross-entropy of `model` on `(x, y)`.
pub fn loss<T: Element>(
    model: &dyn Forward<T>,
    x: &Var<T>,
    y: &IndexTensor,
) -> Result<Var<T>, String> {
    let out = model.forward(x).map_err(|e| e.to_string())?;
    cross_entropy(&out, y, &ClassLossOptions::default()).map_err(|e| e.to_string())
}

/// A trunk and three heads: `a` used by every rank, `b` only by odd ranks, `never` by none.
pub struct Heads {
    pub trunk: Linear<f64>,
    pub a: Linear<f64>,
    pub b: Linear<f64>,
    pub never: Linear<f64>,
}

impl Heads {
    pub fn new(seed: u64) -> Self {
        let mut rng = seeded_rng(seed);
        Heads {
            trunk: Linear::new(4, 5, true, &mut rng),
            a: Linear::new(5, 2, true, &mut rng),
            b: Linear::new(5, 2, true, &mut rng),
            never: Linear::new(5, 2, true, &mut rng),
        }
    }

    /// The output on `x`, with head `b` when `use_b`.
    pub fn forward(&self, x: &Var<f64>, use_b: bool) -> strata_nn::Result<Var<f64>> {
        let h = self.trunk.forward(x)?.tanh();
        let out = self.a.forward(&h)?;
        if use_b {
            Ok(out.add(&self.b.forward(&h)?)?)
        } else {
            Ok(out)
        }
    }
}

impl Module<f64> for Heads {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<f64>, StateKind)) {
        visit_child("trunk", &self.trunk, f);
        visit_child("a", &self.a, f);
        visit_child("b", &self.b, f);
        visit_child("never", &self.never, f);
    }
}
