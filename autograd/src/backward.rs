//! The backward walk: one pass over the graph in reverse topological order.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use strata_tensor::{Element, Tensor};

use crate::var::{Needs, Origin, lock};
use crate::{AutogradError, Result, Var};

impl<T: Element> Var<T> {
    /// Computes the gradient of this one-element var with respect to every leaf that
    /// requires grad, accumulating into their gradient slots (`loss.backward()`). The
    /// graph is freed as the walk passes it.
    ///
    /// # Errors
    /// [`AutogradError::NonScalarOutput`] when the var has more than one element,
    /// [`AutogradError::NoGraph`] when it does not require grad,
    /// [`AutogradError::GraphFreed`] on a second walk through a freed graph.
    pub fn backward(&self) -> Result<()> {
        self.backward_with_options(None, false)
    }

    /// [`backward`](Var::backward) with an explicit gradient of this var's shape
    /// (`out.backward(grad)`), for outputs of any shape.
    ///
    /// # Errors
    /// As [`backward`](Var::backward), and [`AutogradError::GradShape`] when `grad`'s
    /// shape is not the var's.
    pub fn backward_with(&self, grad: &Tensor<T>) -> Result<()> {
        self.backward_with_options(Some(grad), false)
    }

    /// The general backward: `grad` defaults to one for a one-element output;
    /// `retain_graph` keeps the graph and its saved tensors for another walk.
    ///
    /// # Errors
    /// As [`backward_with`](Var::backward_with).
    pub fn backward_with_options(
        &self,
        grad: Option<&Tensor<T>>,
        retain_graph: bool,
    ) -> Result<()> {
        let seed = match grad {
            Some(g) if g.shape() != self.shape() => {
                return Err(AutogradError::GradShape {
                    grad: g.shape().to_vec(),
                    output: self.shape().to_vec(),
                });
            }
            Some(g) => g.clone(),
            None if self.numel() != 1 => {
                return Err(AutogradError::NonScalarOutput {
                    shape: self.shape().to_vec(),
                });
            }
            None => Tensor::ones(self.shape()),
        };
        if !self.needs_grad() {
            return Err(AutogradError::NoGraph);
        }
        let (mut order, index) = topological_order(self)?;
        let mut grads: Vec<Option<Tensor<T>>> = vec![None; order.len()];
        grads[order.len() - 1] = Some(seed);

        for pos in (0..order.len()).rev() {
            let var = order[pos].take().expect("each position is visited once");
            let Some(grad) = grads[pos].take() else {
                continue;
            };
            let grad = var.run_grad_hooks(grad)?;
            let mut origin = lock(&var.inner.origin);
            let node = match &*origin {
                Origin::Leaf => {
                    drop(origin);
                    accumulate_into_slot(&var, grad);
                    var.run_post_accumulate_hooks();
                    continue;
                }
                Origin::Freed(op) => return Err(AutogradError::GraphFreed { op }),
                Origin::Op(node) => node,
            };
            if var.retains_grad() {
                accumulate_into_slot(&var, grad.clone());
            }
            let mut flags = [false; 8];
            let needs_vec: Vec<bool>;
            let needs: &[bool] = if node.inputs.len() <= flags.len() {
                for (f, i) in flags.iter_mut().zip(node.inputs.iter()) {
                    *f = i.is_some();
                }
                &flags[..node.inputs.len()]
            } else {
                needs_vec = node.inputs.iter().map(Option::is_some).collect();
                &needs_vec
            };
            let input_grads = (node.backward)(&grad, Needs::new(needs))?;
            drop(grad);
            for (k, (input, g)) in node.inputs.iter().zip(input_grads).enumerate() {
                let (Some(input), Some(g)) = (input, g) else {
                    continue;
                };
                if g.shape() != input.shape() {
                    return Err(AutogradError::BackwardShape {
                        op: node.op,
                        input: k,
                        got: g.shape().to_vec(),
                        expected: input.shape().to_vec(),
                    });
                }
                let pos = index
                    .get(input.id())
                    .expect("every tracked input was ordered before its consumer");
                let slot = &mut grads[pos];
                match slot {
                    None => *slot = Some(g),
                    Some(acc) => acc.add_(&g)?,
                }
            }
            if !retain_graph {
                let op = node.op;
                *origin = Origin::Freed(op);
            }
        }
        Ok(())
    }
}

impl<T: Element> Var<T> {
    /// The leaves that require grad which a backward from this var would reach, each once
    /// (in no particular order): what tells, before the backward, which parameters will get
    /// no gradient from it (PyTorch's DistributedDataParallel walks the graph from the
    /// forward's output for `find_unused_parameters` in the same way). Empty for a var
    /// that does not require grad.
    ///
    /// ```
    /// use strata_autograd::Var;
    /// use strata_tensor::Tensor;
    ///
    /// let used = Var::parameter(Tensor::<f32>::ones(&[2]));
    /// let unused = Var::parameter(Tensor::<f32>::ones(&[2]));
    /// let y = used.square().sum_all();
    /// let leaves = y.reachable_leaves()?;
    /// assert!(leaves.iter().any(|v| v.id() == used.id()));
    /// assert!(!leaves.iter().any(|v| v.id() == unused.id()));
    /// # Ok::<(), strata_autograd::AutogradError>(())
    /// ```
    ///
    /// # Errors
    /// [`AutogradError::GraphFreed`] when an earlier backward freed part of the graph.
    pub fn reachable_leaves(&self) -> Result<Vec<Var<T>>> {
        if !self.needs_grad() {
            return Ok(Vec::new());
        }
        let (order, _) = topological_order(self)?;
        Ok(order
            .into_iter()
            .flatten()
            .filter(|v| v.is_leaf() && v.needs_grad())
            .collect())
    }
}

/// Adds `grad` into a var's gradient slot (the first gradient is stored as is, made
/// contiguous).
fn accumulate_into_slot<T: Element>(var: &Var<T>, grad: Tensor<T>) {
    let mut slot = lock(&var.inner.grad);
    match &mut *slot {
        None => *slot = Some(grad.contiguous()),
        Some(acc) => acc
            .add_(&grad)
            .expect("gradients are checked against the var's shape before they get here"),
    }
}

/// Var ids are distinct sequential integers: a multiplicative hash spreads them well and
/// costs one instruction, where the default SipHash dominated small graphs.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Var id → position in the walk. Small graphs (the per-op overhead that matters in tight
/// loops) scan a short vector, which beats hashing; past [`IdIndex::SMALL`] entries it
/// moves to a hash map.
enum IdIndex {
    Small(Vec<(u64, usize)>),
    Large(IdMap<usize>),
}

impl IdIndex {
    const SMALL: usize = 32;

    fn new() -> Self {
        IdIndex::Small(Vec::with_capacity(Self::SMALL))
    }

    fn get(&self, id: u64) -> Option<usize> {
        match self {
            IdIndex::Small(v) => v.iter().find(|e| e.0 == id).map(|e| e.1),
            IdIndex::Large(m) => m.get(&id).copied(),
        }
    }

    fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    /// Sets the position of `id`, adding it if absent.
    fn set(&mut self, id: u64, pos: usize) {
        match self {
            IdIndex::Small(v) => {
                if let Some(e) = v.iter_mut().find(|e| e.0 == id) {
                    e.1 = pos;
                } else if v.len() < Self::SMALL {
                    v.push((id, pos));
                } else {
                    let mut m: IdMap<usize> = v.drain(..).collect();
                    m.insert(id, pos);
                    *self = IdIndex::Large(m);
                }
            }
            IdIndex::Large(m) => {
                m.insert(id, pos);
            }
        }
    }
}

/// Marks a var whose inputs are being visited (its position is not known yet).
const VISITING: usize = usize::MAX;

/// The vars reachable from `root` through tracked inputs, in topological order (every var
/// after all of its inputs; `root` last), and each var's position by id.
///
/// Fails on a freed node before anything has been accumulated.
#[allow(clippy::type_complexity)]
fn topological_order<T: Element>(root: &Var<T>) -> Result<(Vec<Option<Var<T>>>, IdIndex)> {
    let mut order: Vec<Option<Var<T>>> = Vec::with_capacity(16);
    let mut index = IdIndex::new();
    let mut stack: Vec<(Var<T>, bool)> = Vec::with_capacity(16);
    stack.push((root.clone(), false));
    while let Some((var, expanded)) = stack.pop() {
        if expanded {
            index.set(var.id(), order.len());
            order.push(Some(var));
            continue;
        }
        if index.contains(var.id()) {
            continue;
        }
        index.set(var.id(), VISITING);
        let origin = lock(&var.inner.origin);
        let inputs: &[Option<Var<T>>] = match &*origin {
            Origin::Leaf => &[],
            Origin::Freed(op) => return Err(AutogradError::GraphFreed { op }),
            Origin::Op(node) => &node.inputs[..],
        };
        let at = stack.len();
        // Leaf inputs go below the others, so that they are popped, and ordered, last of
        // this var's inputs: the walk (this order reversed) then reaches a parameter right
        // after the op that consumes it, so its `.grad` is final, and its
        // post-accumulate-grad hooks run, as soon as that op's backward is done rather than
        // after the whole graph below it (data-parallel training starts a bucket's
        // all-reduce there, to overlap the rest of the backward). Leaves have no inputs, so
        // the non-leaf order, and with it every sum of gradients, is unchanged.
        for leaves in [true, false] {
            for input in inputs.iter().flatten() {
                if input.is_leaf() == leaves && !index.contains(input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
        drop(origin);
        // The var itself goes below its inputs, to be ordered once they are.
        stack.insert(at, (var, true));
    }
    Ok((order, index))
}
