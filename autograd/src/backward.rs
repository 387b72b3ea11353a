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
        let seed = seed_for(self, grad)?;
        if !self.needs_grad() {
            return Err(AutogradError::NoGraph);
        }
        walk_tensors(
            std::slice::from_ref(self),
            [seed],
            retain_graph,
            Sink::Leaves,
        )?;
        Ok(())
    }

    /// [`backward`](Var::backward) with `create_graph`: the walk runs each op's backward
    /// as differentiable ops, so each leaf's gradient is also kept as a var with a graph
    /// of its own ([`grad_var`](Var::grad_var)), which can be differentiated again (a
    /// gradient penalty, a Hessian-vector product). The graph is kept. `grad` defaults to
    /// one for a one-element output.
    ///
    /// ```
    /// use strata_autograd::Var;
    /// use strata_tensor::Tensor;
    ///
    /// let x = Var::parameter(Tensor::from_vec(vec![3.0f64], &[1])?);
    /// x.pow_scalar(3.0).sum_all().backward_create_graph(None)?; // dy/dx = 3x² = 27
    /// let dx = x.grad_var().unwrap();
    /// x.zero_grad();
    /// dx.sum_all().backward()?; // d²y/dx² = 6x = 18
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![18.0]);
    /// # Ok::<(), strata_autograd::AutogradError>(())
    /// ```
    ///
    /// # Errors
    /// As [`backward_with`](Var::backward_with), and [`AutogradError::NoDoubleBackward`]
    /// when an op on the way has no differentiable backward.
    pub fn backward_create_graph(&self, grad: Option<&Var<T>>) -> Result<()> {
        let seed = match grad {
            Some(g) => {
                seed_for(self, Some(&g.value()))?;
                g.clone()
            }
            None => Var::new(seed_for(self, None)?),
        };
        if !self.needs_grad() {
            return Err(AutogradError::NoGraph);
        }
        walk_vars(std::slice::from_ref(self), [seed], Sink::Leaves)?;
        Ok(())
    }
}

/// The seed of a backward from `out`: `grad` (checked against its shape), or one for a
/// one-element output.
pub(crate) fn seed_for<T: Element>(out: &Var<T>, grad: Option<&Tensor<T>>) -> Result<Tensor<T>> {
    match grad {
        Some(g) if g.shape() != out.shape() => Err(AutogradError::GradShape {
            grad: g.shape().to_vec(),
            output: out.shape().to_vec(),
        }),
        Some(g) => Ok(g.clone()),
        None if out.numel() != 1 => Err(AutogradError::NonScalarOutput {
            shape: out.shape().to_vec(),
        }),
        None => Ok(Tensor::ones(out.shape())),
    }
}

/// Where a walk's gradients go: the leaves' `.grad` (a backward), or only the gradients
/// of the given vars, returned in their order (a functional `grad`), leaving `.grad`
/// alone.
pub(crate) enum Sink<'a, T: Element> {
    Leaves,
    Capture(&'a [Var<T>]),
}

impl<T: Element> Sink<'_, T> {
    /// The positions in the capture list of the var with this id.
    fn targets(&self, id: u64) -> impl Iterator<Item = usize> + '_ {
        let list: &[Var<T>] = match self {
            Sink::Leaves => &[],
            Sink::Capture(t) => t,
        };
        list.iter()
            .enumerate()
            .filter(move |(_, v)| v.id() == id)
            .map(|(i, _)| i)
    }

    fn len(&self) -> usize {
        match self {
            Sink::Leaves => 0,
            Sink::Capture(t) => t.len(),
        }
    }
}

/// The flags of a node's inputs: which are tracked.
fn flags_of<T: Element>(inputs: &[Option<Var<T>>], buf: &mut [bool; 8]) -> Option<Vec<bool>> {
    if inputs.len() <= buf.len() {
        for (f, i) in buf.iter_mut().zip(inputs) {
            *f = i.is_some();
        }
        None
    } else {
        Some(inputs.iter().map(Option::is_some).collect())
    }
}

/// The first-order walk: gradients as tensors, each op's backward kernel.
pub(crate) fn walk_tensors<T: Element>(
    roots: &[Var<T>],
    seeds: impl IntoIterator<Item = Tensor<T>>,
    retain_graph: bool,
    sink: Sink<'_, T>,
) -> Result<Vec<Option<Tensor<T>>>> {
    let (mut order, index) = topological_order(roots)?;
    let mut grads: Vec<Option<Tensor<T>>> = vec![None; order.len()];
    for (root, seed) in roots.iter().zip(seeds) {
        let pos = index.get(root.id()).expect("roots are ordered");
        match &mut grads[pos] {
            slot @ None => *slot = Some(seed),
            Some(acc) => acc.add_(&seed)?,
        }
    }
    let mut captured: Vec<Option<Tensor<T>>> = vec![None; sink.len()];
    let capture = matches!(sink, Sink::Capture(_));
    // A functional `grad` computes only what leads to the vars it returns, as PyTorch's
    // engine does: an input's gradient is asked for only when a captured var lies at or
    // below it.
    let needed = capture.then(|| needed_for_capture(&order, &index, &sink));

    for pos in (0..order.len()).rev() {
        let var = order[pos].take().expect("each position is visited once");
        let Some(grad) = grads[pos].take() else {
            continue;
        };
        let (grad, _) = var.run_grad_hooks(grad)?;
        for i in sink.targets(var.id()) {
            captured[i] = Some(grad.clone());
        }
        let mut origin = lock(&var.inner.origin);
        let node = match &*origin {
            Origin::Leaf => {
                drop(origin);
                if !capture {
                    accumulate_into_slot(&var, grad);
                    var.run_post_accumulate_hooks();
                }
                continue;
            }
            Origin::Freed(op) => return Err(AutogradError::GraphFreed { op }),
            Origin::Op(node) => node,
        };
        if var.retains_grad() && !capture {
            accumulate_into_slot(&var, grad.clone());
        }
        let mut buf = [false; 8];
        let mut many = flags_of(&node.inputs, &mut buf);
        let needs: &mut [bool] = match &mut many {
            Some(v) => v,
            None => &mut buf[..node.inputs.len()],
        };
        if let Some(needed) = &needed {
            for (flag, input) in needs.iter_mut().zip(node.inputs.iter()) {
                *flag = *flag
                    && input
                        .as_ref()
                        .and_then(|v| index.get(v.id()))
                        .is_some_and(|p| needed[p]);
            }
            if !needs.iter().any(|&f| f) {
                continue;
            }
        }
        let input_grads = (node.backward)(&grad, Needs::new(needs))?;
        drop(grad);
        let anomaly = crate::anomaly::is_anomaly_enabled();
        for (k, (input, g)) in node.inputs.iter().zip(input_grads).enumerate() {
            let (Some(input), Some(g)) = (input, g) else {
                continue;
            };
            if anomaly {
                crate::anomaly::check(node.op, k, &g, node.trace.as_ref())?;
            }
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
    Ok(captured)
}

/// For a capturing walk: whether each var of `order` is captured or has a captured var
/// among its inputs, transitively (`order` lists inputs before their consumers).
fn needed_for_capture<T: Element>(
    order: &[Option<Var<T>>],
    index: &IdIndex,
    sink: &Sink<'_, T>,
) -> Vec<bool> {
    let mut needed = vec![false; order.len()];
    for (pos, var) in order.iter().enumerate() {
        let Some(var) = var else { continue };
        if sink.targets(var.id()).next().is_some() {
            needed[pos] = true;
            continue;
        }
        if let Origin::Op(node) = &*lock(&var.inner.origin) {
            needed[pos] = node
                .inputs
                .iter()
                .flatten()
                .any(|input| index.get(input.id()).is_some_and(|p| needed[p]));
        }
    }
    needed
}

/// The walk with `create_graph`: gradients as vars, each op's differentiable backward run
/// with grad mode on, so the gradients have graphs of their own. The graph walked is kept.
pub(crate) fn walk_vars<T: Element>(
    roots: &[Var<T>],
    seeds: impl IntoIterator<Item = Var<T>>,
    sink: Sink<'_, T>,
) -> Result<Vec<Option<Var<T>>>> {
    let (mut order, index) = topological_order(roots)?;
    let mut grads: Vec<Option<Var<T>>> = vec![None; order.len()];
    crate::grad_mode::enable_grad(|| -> Result<Vec<Option<Var<T>>>> {
        for (root, seed) in roots.iter().zip(seeds) {
            let pos = index.get(root.id()).expect("roots are ordered");
            grads[pos] = Some(match grads[pos].take() {
                None => seed,
                Some(acc) => acc.add(&seed)?,
            });
        }
        let mut captured: Vec<Option<Var<T>>> = vec![None; sink.len()];
        let capture = matches!(sink, Sink::Capture(_));
        for pos in (0..order.len()).rev() {
            let var = order[pos].take().expect("each position is visited once");
            let Some(mut grad) = grads[pos].take() else {
                continue;
            };
            // Hooks see the gradient's value; a replacement enters as a constant.
            let (value, replaced) = var.run_grad_hooks(grad.value())?;
            if replaced {
                grad = Var::new(value);
            }
            for i in sink.targets(var.id()) {
                captured[i] = Some(grad.clone());
            }
            let origin = lock(&var.inner.origin);
            let node = match &*origin {
                Origin::Leaf => {
                    drop(origin);
                    if !capture {
                        accumulate_into_slot(&var, grad.value());
                        accumulate_graph_grad(&var, grad)?;
                        var.run_post_accumulate_hooks();
                    }
                    continue;
                }
                Origin::Freed(op) => return Err(AutogradError::GraphFreed { op }),
                Origin::Op(node) => node,
            };
            if var.retains_grad() && !capture {
                accumulate_into_slot(&var, grad.value());
            }
            let graph = node
                .graph
                .as_ref()
                .ok_or(AutogradError::NoDoubleBackward { op: node.op })?;
            let mut buf = [false; 8];
            let many = flags_of(&node.inputs, &mut buf);
            let needs: &[bool] = match &many {
                Some(v) => v,
                None => &buf[..node.inputs.len()],
            };
            let input_grads = graph(&grad, &node.inputs, Needs::new(needs))?;
            let anomaly = crate::anomaly::is_anomaly_enabled();
            for (k, (input, g)) in node.inputs.iter().zip(input_grads).enumerate() {
                let (Some(input), Some(g)) = (input, g) else {
                    continue;
                };
                if anomaly {
                    crate::anomaly::check(node.op, k, &g.value(), node.trace.as_ref())?;
                }
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
                grads[pos] = Some(match grads[pos].take() {
                    None => g,
                    Some(acc) => acc.add(&g)?,
                });
            }
        }
        Ok(captured)
    })
}

/// Adds `grad` to a leaf's differentiable gradient ([`Var::grad_var`]).
fn accumulate_graph_grad<T: Element>(var: &Var<T>, grad: Var<T>) -> Result<()> {
    let mut slot = lock(&var.inner.grad_var);
    *slot = Some(match slot.take() {
        None => grad,
        Some(acc) => acc.add(&grad)?,
    });
    Ok(())
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
        let (order, _) = topological_order(std::slice::from_ref(self))?;
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

/// The vars reachable from `roots` through tracked inputs, in topological order (every var
/// after all of its inputs), and each var's position by id.
///
/// Fails on a freed node before anything has been accumulated.
#[allow(clippy::type_complexity)]
fn topological_order<T: Element>(roots: &[Var<T>]) -> Result<(Vec<Option<Var<T>>>, IdIndex)> {
    let mut order: Vec<Option<Var<T>>> = Vec::with_capacity(16);
    let mut index = IdIndex::new();
    let mut stack: Vec<(Var<T>, bool)> = Vec::with_capacity(16);
    stack.extend(roots.iter().rev().map(|r| (r.clone(), false)));
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
