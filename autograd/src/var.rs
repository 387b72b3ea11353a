//! [`Var`]: a tensor in a dynamic graph.
//!
//! Invariants of [`Inner`]:
//! 1. `shape` is the shape of `value`, always: [`Var::set_value`] refuses another shape.
//! 2. `origin` is `Leaf` for values made by constructors, `Op` for values made by a tracked
//!    op until a backward without `retain_graph` passes them, then `Freed`. An `Op` var
//!    always requires grad; a var that does not require grad is always a `Leaf`.
//! 3. `grad`, when set, has `shape`. Only leaves that require grad, and non-leaves after
//!    [`Var::retain_grad`], ever have one.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use strata_tensor::{DType, Dims, Element, Tensor};

use crate::grad_mode::is_grad_enabled;
use crate::hooks::Hooks;
use crate::{AutogradError, Result};

/// The gradients an op's backward rule returns: one entry per input, `None` where the
/// input needs none (its `needs` flag was false) or receives nothing.
pub type InputGrads<T> = Vec<Option<Tensor<T>>>;

/// The backward rule of an op: given the gradient of the op's output and, per input,
/// whether that input needs a gradient, the gradient of each input.
pub(crate) type BackwardFn<T> =
    Box<dyn Fn(&Tensor<T>, Needs<'_>) -> Result<InputGrads<T>> + Send + Sync + 'static>;

/// The backward rule of an op written with differentiable ops: given the gradient of the
/// output as a var, the op's tracked inputs (`None` for untracked ones) and the flags, the
/// gradient of each input as a var. Used by walks with `create_graph`, so the gradients
/// can be differentiated again.
pub(crate) type GraphBackwardFn<T> = Box<
    dyn Fn(&Var<T>, &[Option<Var<T>>], Needs<'_>) -> Result<Vec<Option<Var<T>>>>
        + Send
        + Sync
        + 'static,
>;

/// Which inputs of an op need a gradient in this backward, by their position in the op's
/// input list: an input that does not require grad, or an optional input that is absent
/// (see [`Var::from_op_with`]), never does. `needs[i]` reads one flag; [`grad`](Needs::grad)
/// computes one input's gradient only when it is needed.
#[derive(Clone, Copy, Debug)]
pub struct Needs<'a>(&'a [bool]);

impl<'a> Needs<'a> {
    pub(crate) fn new(flags: &'a [bool]) -> Self {
        Needs(flags)
    }

    /// Whether input `i` needs a gradient (false past the end).
    pub fn get(&self, i: usize) -> bool {
        self.0.get(i).copied().unwrap_or(false)
    }

    /// The flags, input by input.
    pub fn iter(&self) -> impl Iterator<Item = bool> + 'a {
        self.0.iter().copied()
    }

    /// Whether any input needs a gradient.
    pub fn any(&self) -> bool {
        self.0.iter().any(|&n| n)
    }

    /// `Some(f())` when input `i` needs a gradient, `None` (without calling `f`) otherwise.
    ///
    /// # Errors
    /// Whatever `f` returns.
    pub fn grad<T: Element, E>(
        &self,
        i: usize,
        f: impl FnOnce() -> std::result::Result<Tensor<T>, E>,
    ) -> Result<Option<Tensor<T>>>
    where
        AutogradError: From<E>,
    {
        if self.get(i) {
            Ok(Some(f()?))
        } else {
            Ok(None)
        }
    }
}

impl Needs<'_> {
    /// [`grad`](Needs::grad) for the differentiable backward (`Var` gradients).
    ///
    /// # Errors
    /// Whatever `f` returns.
    pub fn grad_var<T: Element>(
        &self,
        i: usize,
        f: impl FnOnce() -> Result<Var<T>>,
    ) -> Result<Option<Var<T>>> {
        if self.get(i) {
            Ok(Some(f()?))
        } else {
            Ok(None)
        }
    }
}

impl std::ops::Index<usize> for Needs<'_> {
    type Output = bool;
    fn index(&self, i: usize) -> &bool {
        &self.0[i]
    }
}

/// The node that made a var: the op's name, its tracked inputs (`None` for inputs that
/// need no grad) and its backward rule, which owns whatever the op saved.
pub(crate) struct Node<T: Element> {
    pub(crate) op: &'static str,
    pub(crate) inputs: Inputs<T>,
    pub(crate) backward: BackwardFn<T>,
    /// The backward as differentiable ops, for walks that build a graph of their own
    /// (`create_graph`); `None` for ops without one.
    pub(crate) graph: Option<GraphBackwardFn<T>>,
    /// Where the op was called, when anomaly mode was on.
    pub(crate) trace: Option<std::sync::Arc<std::backtrace::Backtrace>>,
}

/// A node's inputs: one or two (almost every op) held inline, more on the heap.
pub(crate) enum Inputs<T: Element> {
    One([Option<Var<T>>; 1]),
    Two([Option<Var<T>>; 2]),
    Many(Vec<Option<Var<T>>>),
}

impl<T: Element> std::ops::Deref for Inputs<T> {
    type Target = [Option<Var<T>>];
    fn deref(&self) -> &[Option<Var<T>>] {
        match self {
            Inputs::One(a) => a,
            Inputs::Two(a) => a,
            Inputs::Many(v) => v,
        }
    }
}

pub(crate) enum Origin<T: Element> {
    Leaf,
    Op(Node<T>),
    Freed(&'static str),
}

pub(crate) struct Inner<T: Element> {
    pub(crate) id: u64,
    shape: Dims,
    value: RwLock<Tensor<T>>,
    requires_grad: AtomicBool,
    retains_grad: AtomicBool,
    pub(crate) grad: Mutex<Option<Tensor<T>>>,
    pub(crate) origin: Mutex<Origin<T>>,
    pub(crate) hooks: Hooks<T>,
    /// The differentiable gradient left by [`Var::backward_create_graph`].
    pub(crate) grad_var: Mutex<Option<Var<T>>>,
}

/// A tensor in a dynamic graph: the value plus, when it requires grad, the node that made
/// it. Cloning a `Var` is cheap and shares everything (value, gradient slot, node).
///
/// Leaves come from [`Var::new`] (a constant) and [`Var::parameter`] (a trainable value
/// with a gradient slot); every op on vars returns a new var, recording a node only when an
/// input requires grad and grad mode is on (see [`no_grad`](crate::no_grad)).
///
/// ```
/// use strata_autograd::Var;
/// use strata_tensor::Tensor;
///
/// let w = Var::parameter(Tensor::from_vec(vec![1.0f64, 2.0], &[2])?);
/// let x = Var::new(Tensor::from_vec(vec![3.0, 4.0], &[2])?);
/// let loss = w.mul(&x)?.sum_all();
/// loss.backward()?;
/// assert_eq!(w.grad().unwrap().to_vec(), vec![3.0, 4.0]);
/// # Ok::<(), strata_autograd::AutogradError>(())
/// ```
pub struct Var<T: Element = f32> {
    pub(crate) inner: Arc<Inner<T>>,
}

impl<T: Element> Clone for Var<T> {
    fn clone(&self) -> Self {
        Var {
            inner: Arc::clone(&self.inner),
        }
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub(crate) fn lock<U>(m: &Mutex<U>) -> MutexGuard<'_, U> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T: Element> Var<T> {
    fn make(value: Tensor<T>, requires_grad: bool, origin: Origin<T>) -> Self {
        Var {
            inner: Arc::new(Inner {
                id: next_id(),
                shape: Dims::from_slice(value.shape()),
                value: RwLock::new(value),
                requires_grad: AtomicBool::new(requires_grad),
                retains_grad: AtomicBool::new(false),
                grad: Mutex::new(None),
                origin: Mutex::new(origin),
                hooks: Hooks::default(),
                grad_var: Mutex::new(None),
            }),
        }
    }

    /// A constant leaf: no gradient flows into it.
    pub fn new(value: Tensor<T>) -> Self {
        Self::make(value, false, Origin::Leaf)
    }

    /// A trainable leaf: it requires grad, and `backward` accumulates into its gradient
    /// slot. Optimizers update its value in place with [`Var::update_value`].
    pub fn parameter(value: Tensor<T>) -> Self {
        Self::make(value, true, Origin::Leaf)
    }

    /// This var with `requires_grad` set to `flag`, like `tensor.requires_grad_(flag)`:
    /// `Var::new(t).requires_grad(true)` is [`Var::parameter(t)`](Var::parameter).
    ///
    /// Only leaves carry the flag; on the result of a tracked op it returns a new leaf
    /// holding the same value, cut out of the graph (as [`detach`](Var::detach) does).
    pub fn requires_grad(self, flag: bool) -> Self {
        if self.is_leaf() {
            self.inner.requires_grad.store(flag, Ordering::Relaxed);
            if !flag {
                *lock(&self.inner.grad) = None;
            }
            self
        } else {
            Self::make(self.value(), flag, Origin::Leaf)
        }
    }

    /// Whether gradients flow into this var (`tensor.requires_grad`).
    pub fn needs_grad(&self) -> bool {
        self.inner.requires_grad.load(Ordering::Relaxed)
    }

    /// Whether this var was made by a constructor rather than by a tracked op
    /// (`tensor.is_leaf`). Constants and parameters are leaves.
    pub fn is_leaf(&self) -> bool {
        matches!(*lock(&self.inner.origin), Origin::Leaf)
    }

    /// The name of the op that made this var, like `tensor.grad_fn`; `None` for leaves.
    /// The name stays after a backward has freed the node.
    pub fn op_name(&self) -> Option<&'static str> {
        match &*lock(&self.inner.origin) {
            Origin::Leaf => None,
            Origin::Op(node) => Some(node.op),
            Origin::Freed(op) => Some(op),
        }
    }

    /// A unique id for this var's node, stable for its lifetime.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The value: a cheap handle sharing storage with the var's tensor. Later in-place
    /// updates of the var do not show through it (storage is copy-on-write).
    pub fn value(&self) -> Tensor<T> {
        self.inner
            .value
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The shape of the value.
    pub fn shape(&self) -> &[usize] {
        &self.inner.shape
    }

    /// The number of dimensions.
    pub fn ndim(&self) -> usize {
        self.inner.shape.len()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.inner.shape.iter().product()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }

    /// The value of a one-element var.
    ///
    /// # Errors
    /// [`TensorError::NotScalar`](strata_tensor::TensorError::NotScalar) for more elements.
    pub fn item(&self) -> Result<T> {
        Ok(self.value().item()?)
    }

    /// The values in row-major order.
    pub fn to_vec(&self) -> Vec<T> {
        self.value().to_vec()
    }

    /// The accumulated gradient, like `tensor.grad`: `None` before any backward reached
    /// this var or after [`zero_grad`](Var::zero_grad).
    pub fn grad(&self) -> Option<Tensor<T>> {
        lock(&self.inner.grad).clone()
    }

    /// Clears the gradient (to `None`, like PyTorch's default `set_to_none=True`), and
    /// the differentiable one of [`grad_var`](Var::grad_var).
    pub fn zero_grad(&self) {
        *lock(&self.inner.grad) = None;
        *lock(&self.inner.grad_var) = None;
    }

    /// The gradient accumulated by [`backward_create_graph`](Var::backward_create_graph)
    /// as a var with a graph of its own (PyTorch's `.grad` after
    /// `backward(create_graph=True)`), to differentiate again; `None` before one.
    pub fn grad_var(&self) -> Option<Var<T>> {
        lock(&self.inner.grad_var).clone()
    }

    /// Replaces the gradient, e.g. after clipping or all-reducing it.
    ///
    /// # Errors
    /// [`AutogradError::Invalid`] when the gradient's shape is not the var's.
    pub fn set_grad(&self, grad: Option<Tensor<T>>) -> Result<()> {
        if let Some(g) = &grad
            && g.shape() != self.shape()
        {
            return Err(AutogradError::Invalid {
                op: "set_grad",
                msg: format!(
                    "gradient shape {:?} does not match the var's shape {:?}",
                    g.shape(),
                    self.shape()
                ),
            });
        }
        *lock(&self.inner.grad) = grad;
        Ok(())
    }

    /// Takes the gradient out, leaving `None`.
    pub fn take_grad(&self) -> Option<Tensor<T>> {
        lock(&self.inner.grad).take()
    }

    /// Keeps the gradient of this non-leaf var after backward (`tensor.retain_grad()`);
    /// a no-op on leaves, which keep theirs anyway.
    pub fn retain_grad(&self) {
        self.inner.retains_grad.store(true, Ordering::Relaxed);
    }

    pub(crate) fn retains_grad(&self) -> bool {
        self.inner.retains_grad.load(Ordering::Relaxed)
    }

    /// A new constant leaf sharing this var's value, cut out of the graph
    /// (`tensor.detach()`).
    pub fn detach(&self) -> Var<T> {
        Var::new(self.value())
    }

    /// Replaces the value, keeping the node, the flag and the gradient.
    ///
    /// # Errors
    /// [`AutogradError::Invalid`] when the shape differs.
    pub fn set_value(&self, value: Tensor<T>) -> Result<()> {
        if value.shape() != self.shape() {
            return Err(AutogradError::Invalid {
                op: "set_value",
                msg: format!(
                    "new value has shape {:?}, the var has shape {:?}",
                    value.shape(),
                    self.shape()
                ),
            });
        }
        *self
            .inner
            .value
            .write()
            .unwrap_or_else(PoisonError::into_inner) = value;
        Ok(())
    }

    /// Updates the value in place, like `with torch.no_grad(): p -= lr * p.grad`. Graphs
    /// recorded earlier keep the old value (storage is copy-on-write), so a later backward
    /// through them stays correct.
    ///
    /// ```
    /// use strata_autograd::Var;
    /// use strata_tensor::Tensor;
    ///
    /// let p = Var::parameter(Tensor::from_vec(vec![1.0f32, 2.0], &[2])?);
    /// p.square().sum_all().backward()?;
    /// let g = p.grad().unwrap();
    /// p.update_value(|v| v.axpy_(-0.1, &g))?;
    /// assert_eq!(p.to_vec(), vec![0.8, 1.6]);
    /// # Ok::<(), strata_autograd::AutogradError>(())
    /// ```
    ///
    /// # Errors
    /// Whatever `f` returns, and [`AutogradError::Invalid`] if `f` changes the shape (the
    /// value is then left as `f` made it).
    pub fn update_value<R, E>(&self, f: impl FnOnce(&mut Tensor<T>) -> Result<R, E>) -> Result<R>
    where
        AutogradError: From<E>,
    {
        let mut guard = self
            .inner
            .value
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let r = f(&mut guard)?;
        if guard.shape() != self.inner.shape.as_slice() {
            return Err(AutogradError::Invalid {
                op: "update_value",
                msg: format!(
                    "the update changed the shape from {:?} to {:?}",
                    self.inner.shape,
                    guard.shape()
                ),
            });
        }
        Ok(r)
    }

    /// Records a custom op, like a `torch.autograd.Function`: `value` is the op's output
    /// (computed by the caller), `inputs` its inputs, and `backward` maps the output's
    /// gradient and a per-input "needs grad" flag to one gradient per input (`None` for
    /// inputs whose flag is false). Fused kernels of higher crates use this.
    ///
    /// When no input requires grad, or grad mode is off, nothing is recorded and the
    /// closure is dropped at once.
    ///
    /// ```
    /// use strata_autograd::Var;
    /// use strata_tensor::Tensor;
    ///
    /// // y = 3x, with its backward written by hand.
    /// let x = Var::parameter(Tensor::from_vec(vec![1.0f64, 2.0], &[2])?);
    /// let y = Var::from_op("triple", x.value().mul_scalar(3.0), &[&x], |g, _| {
    ///     Ok(vec![Some(g.mul_scalar(3.0))])
    /// });
    /// y.sum_all().backward()?;
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![3.0, 3.0]);
    /// # Ok::<(), strata_autograd::AutogradError>(())
    /// ```
    pub fn from_op<F>(op: &'static str, value: Tensor<T>, inputs: &[&Var<T>], backward: F) -> Self
    where
        F: Fn(&Tensor<T>, Needs<'_>) -> Result<InputGrads<T>> + Send + Sync + 'static,
    {
        if !is_grad_enabled() || !inputs.iter().any(|v| v.needs_grad()) {
            return Var::new(value);
        }
        let tracked = |v: &Var<T>| v.needs_grad().then(|| v.clone());
        let inputs = match inputs {
            [a] => Inputs::One([tracked(a)]),
            [a, b] => Inputs::Two([tracked(a), tracked(b)]),
            _ => Inputs::Many(inputs.iter().map(|v| tracked(v)).collect()),
        };
        Self::with_node(op, value, inputs, Box::new(backward))
    }

    /// [`from_op`](Var::from_op) for an op with optional inputs (a bias, a weight): each
    /// input keeps its position whether or not it is given, so the backward reads
    /// `needs[i]` (false for an absent input) and returns one entry per position, without
    /// remapping indices by hand.
    ///
    /// ```
    /// use strata_autograd::Var;
    /// use strata_tensor::Tensor;
    ///
    /// // y = x + b, with b optional.
    /// let x = Var::parameter(Tensor::from_vec(vec![1.0f64, 2.0], &[2])?);
    /// let b: Option<&Var<f64>> = None;
    /// let y = Var::from_op_with("add_bias", x.value(), &[Some(&x), b], |g, needs| {
    ///     Ok(vec![needs.grad(0, || Ok::<_, strata_autograd::AutogradError>(g.clone()))?, None])
    /// });
    /// y.sum_all().backward()?;
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![1.0, 1.0]);
    /// # Ok::<(), strata_autograd::AutogradError>(())
    /// ```
    pub fn from_op_with<F>(
        op: &'static str,
        value: Tensor<T>,
        inputs: &[Option<&Var<T>>],
        backward: F,
    ) -> Self
    where
        F: Fn(&Tensor<T>, Needs<'_>) -> Result<InputGrads<T>> + Send + Sync + 'static,
    {
        let tracked = |v: &Option<&Var<T>>| v.filter(|v| v.needs_grad()).cloned();
        if !is_grad_enabled() || !inputs.iter().any(|v| tracked(v).is_some()) {
            return Var::new(value);
        }
        let inputs = Inputs::Many(inputs.iter().map(tracked).collect());
        Self::with_node(op, value, inputs, Box::new(backward))
    }

    /// Gives the op that made this var a differentiable backward (`f(g, inputs, needs)`
    /// written with ops on vars), so that walks with `create_graph` can go through it and
    /// its gradients can be differentiated again, like a `torch.autograd.Function` whose
    /// backward is itself differentiable. `inputs` are the op's inputs that require grad
    /// (`None` for the others), to differentiate through. A no-op on untracked vars.
    ///
    /// ```
    /// use strata_autograd::{GradOptions, Var, grad};
    /// use strata_tensor::Tensor;
    ///
    /// // y = x³ with a hand-written first and second derivative.
    /// let x = Var::parameter(Tensor::from_vec(vec![2.0f64], &[1])?);
    /// let x3 = x.value().pow_scalar(3.0);
    /// let saved = x.value();
    /// let y = Var::from_op("cube", x3, &[&x], move |g, _| Ok(vec![Some(g.mul(&saved.square().mul_scalar(3.0))?)]))
    ///     .double_backward(|g, inputs, _| {
    ///         let x = inputs[0].as_ref().expect("x is tracked");
    ///         Ok(vec![Some(g.mul(&x.square().mul_scalar(3.0))?)])
    ///     });
    /// let opts = GradOptions { create_graph: true, ..GradOptions::default() };
    /// let dy = grad(&[y], &[x.clone()], None, opts)?[0].clone().unwrap(); // 3x² = 12
    /// let d2y = grad(&[dy.sum_all()], &[x], None, GradOptions::default())?[0].clone().unwrap();
    /// assert_eq!(d2y.to_vec(), vec![12.0]); // 6x
    /// # Ok::<(), strata_autograd::AutogradError>(())
    /// ```
    pub fn double_backward<F>(self, f: F) -> Self
    where
        F: Fn(&Var<T>, &[Option<Var<T>>], Needs<'_>) -> Result<Vec<Option<Var<T>>>>
            + Send
            + Sync
            + 'static,
    {
        let mut this = self;
        let set = |origin: &mut Origin<T>| {
            if let Origin::Op(node) = origin {
                node.graph = Some(Box::new(f));
            }
        };
        // An op's result is usually not shared yet: then no lock is needed.
        match Arc::get_mut(&mut this.inner) {
            Some(inner) => set(inner
                .origin
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)),
            None => set(&mut lock(&this.inner.origin)),
        }
        this
    }

    fn with_node(
        op: &'static str,
        value: Tensor<T>,
        inputs: Inputs<T>,
        backward: BackwardFn<T>,
    ) -> Self {
        let node = Node {
            op,
            inputs,
            backward,
            graph: None,
            trace: crate::anomaly::trace(),
        };
        let var = Self::make(value, true, Origin::Op(node));
        if crate::taps::any_open()
            && let Origin::Op(node) = &*lock(&var.inner.origin)
        {
            crate::taps::note_uses(op, var.id(), &node.inputs);
        }
        var
    }

    /// Whether an op on these inputs would record a node.
    pub(crate) fn tracking(inputs: &[&Var<T>]) -> bool {
        is_grad_enabled() && inputs.iter().any(|v| v.needs_grad())
    }
}

impl<T: Element> fmt::Display for Var<T> {
    /// Prints like PyTorch: the tensor, then `requires_grad=True` for leaves that require
    /// grad or `grad_fn=<op>` for results of tracked ops.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.value().to_string();
        let extra = match self.op_name() {
            Some(op) => format!("grad_fn=<{op}>"),
            None if self.needs_grad() => "requires_grad=True".to_string(),
            None => return f.write_str(&s),
        };
        match s.strip_suffix(')') {
            Some(body) => write!(f, "{body}, {extra})"),
            None => write!(f, "{s}, {extra}"),
        }
    }
}

impl<T: Element> fmt::Debug for Var<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Var")
            .field("id", &self.id())
            .field("value", &self.value())
            .field("requires_grad", &self.needs_grad())
            .field("op", &self.op_name())
            .field("grad", &self.grad())
            .finish()
    }
}
