//! Module hooks, as PyTorch's `register_forward_pre_hook`, `register_forward_hook` and
//! `register_full_backward_hook`: [`Hooked`] wraps any single-input module and calls them
//! around its forward, so a layer's activations and output gradients can be observed (what
//! Opacus builds per-sample gradients on) without changing the layer. Its state-dict keys
//! are the inner module's.
//!
//! Order, per call: the forward-pre hooks (each may replace the input), the inner forward,
//! the forward hooks (each may replace the output). During a backward through that output,
//! the backward hooks run once the gradient with respect to the module's input is known
//! (`grad_input`, `None` when the input does not require grad), with the gradient of the
//! output (`grad_output`); each may replace `grad_input`. Every kind runs in registration
//! order, and a [`HookHandle`] removes its hook.

use std::sync::{Arc, Mutex};

use strata_autograd::{HookHandle, Var};
use strata_tensor::{Element, Tensor};

use crate::{Forward, Module, Result, StateKind};

type PreHook<T> = Arc<dyn Fn(&Var<T>) -> Option<Var<T>> + Send + Sync>;
type PostHook<T> = Arc<dyn Fn(&Var<T>, &Var<T>) -> Option<Var<T>> + Send + Sync>;
type BackwardHook<T> =
    Arc<dyn Fn(Option<&Tensor<T>>, &Tensor<T>) -> Option<Tensor<T>> + Send + Sync>;

/// A registry of hooks of one kind, shared with the handles that remove them.
struct Registry<H> {
    next: u64,
    hooks: Vec<(u64, H)>,
}

type Shared<H> = Arc<Mutex<Registry<H>>>;

fn shared<H>() -> Shared<H> {
    Arc::new(Mutex::new(Registry {
        next: 0,
        hooks: Vec::new(),
    }))
}

fn lock<H>(r: &Shared<H>) -> std::sync::MutexGuard<'_, Registry<H>> {
    r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn add<H: Send + Sync + 'static>(r: &Shared<H>, hook: H) -> HookHandle {
    let id = {
        let mut reg = lock(r);
        let id = reg.next;
        reg.next += 1;
        reg.hooks.push((id, hook));
        id
    };
    let r = Arc::downgrade(r);
    HookHandle::new(move || {
        if let Some(r) = r.upgrade() {
            lock(&r).hooks.retain(|(k, _)| *k != id);
        }
    })
}

fn snapshot<H: Clone>(r: &Shared<H>) -> Vec<H> {
    lock(r).hooks.iter().map(|(_, h)| h.clone()).collect()
}

/// A module with hooks around its forward (see the module docs).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use strata_autograd::Var;
/// use strata_nn::{Forward, Hooked, Linear, Module};
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let layer = Hooked::new(Linear::<f64>::new(3, 2, true, &mut seeded_rng(0)));
/// let activations = Arc::new(Mutex::new(Vec::new()));
/// let log = activations.clone();
/// let _h = layer.register_forward_hook(move |input, _output| {
///     log.lock().unwrap().push(input.shape().to_vec());
///     None
/// });
/// let grads = Arc::new(Mutex::new(Vec::new()));
/// let glog = grads.clone();
/// let _b = layer.register_full_backward_hook(move |_grad_input, grad_output| {
///     glog.lock().unwrap().push(grad_output.shape().to_vec());
///     None
/// });
/// let y = layer.forward(&Var::new(Tensor::ones(&[4, 3])))?;
/// y.sum_all().backward()?;
/// assert_eq!(*activations.lock().unwrap(), vec![vec![4, 3]]);
/// assert_eq!(*grads.lock().unwrap(), vec![vec![4, 2]]);
/// assert_eq!(layer.state_dict().keys().collect::<Vec<_>>(), ["weight", "bias"]);
/// # Ok::<(), strata_nn::NnError>(())
/// ```
pub struct Hooked<M, T: Element = f32> {
    inner: M,
    pre: Shared<PreHook<T>>,
    post: Shared<PostHook<T>>,
    backward: Shared<BackwardHook<T>>,
}

impl<M: Forward<T>, T: Element> Hooked<M, T> {
    /// `module` with no hooks yet.
    pub fn new(module: M) -> Self {
        Hooked {
            inner: module,
            pre: shared(),
            post: shared(),
            backward: shared(),
        }
    }

    /// The wrapped module.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The wrapped module, mutably.
    pub fn inner_mut(&mut self) -> &mut M {
        &mut self.inner
    }

    /// Unwraps the module, dropping its hooks.
    pub fn into_inner(self) -> M {
        self.inner
    }

    /// Registers `hook(input)`, run before the forward; `Some(x)` replaces the input
    /// (`register_forward_pre_hook`).
    pub fn register_forward_pre_hook(
        &self,
        hook: impl Fn(&Var<T>) -> Option<Var<T>> + Send + Sync + 'static,
    ) -> HookHandle {
        add(&self.pre, Arc::new(hook) as PreHook<T>)
    }

    /// Registers `hook(input, output)`, run after the forward; `Some(y)` replaces the
    /// output (`register_forward_hook`).
    pub fn register_forward_hook(
        &self,
        hook: impl Fn(&Var<T>, &Var<T>) -> Option<Var<T>> + Send + Sync + 'static,
    ) -> HookHandle {
        add(&self.post, Arc::new(hook) as PostHook<T>)
    }

    /// Registers `hook(grad_input, grad_output)`, run during backward once the gradient
    /// with respect to the module's input is known (`None` when the input does not
    /// require grad); `Some(g)` replaces `grad_input` (`register_full_backward_hook`).
    pub fn register_full_backward_hook(
        &self,
        hook: impl Fn(Option<&Tensor<T>>, &Tensor<T>) -> Option<Tensor<T>> + Send + Sync + 'static,
    ) -> HookHandle {
        add(&self.backward, Arc::new(hook) as BackwardHook<T>)
    }
}

impl<M: Module<T>, T: Element> Module<T> for Hooked<M, T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        self.inner.visit_state(f);
    }

    fn set_training(&mut self, training: bool) {
        self.inner.set_training(training);
    }
}

/// A var equal to `x` that is a node of its own (so hooks on it see only this call's
/// gradient), or `x` itself when nothing is tracked.
fn identity<T: Element>(x: &Var<T>) -> Var<T> {
    Var::from_op("backward_hook", x.value(), &[x], |g, _| {
        Ok(vec![Some(g.clone())])
    })
}

impl<M: Forward<T>, T: Element> Forward<T> for Hooked<M, T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let mut input = x.clone();
        for hook in snapshot(&self.pre) {
            if let Some(replaced) = hook(&input) {
                input = replaced;
            }
        }
        let backward = snapshot(&self.backward);
        let tracked_input = !backward.is_empty() && input.needs_grad();
        let input_for_inner = if tracked_input {
            identity(&input)
        } else {
            input.clone()
        };
        let mut output = self.inner.forward(&input_for_inner)?;
        for hook in snapshot(&self.post) {
            if let Some(replaced) = hook(&input, &output) {
                output = replaced;
            }
        }
        if backward.is_empty() || !output.needs_grad() {
            return Ok(output);
        }
        // The output's gradient is captured by a hook on a fresh node after the output;
        // the backward hooks run on the input node's gradient (or at once, when the input
        // gets none).
        let output = identity(&output);
        let grad_output: Arc<Mutex<Option<Tensor<T>>>> = Arc::new(Mutex::new(None));
        let stash = grad_output.clone();
        let run_now = backward.clone();
        let _ = output.register_hook(move |g| {
            if tracked_input {
                *stash
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(g.clone());
            } else {
                for hook in &run_now {
                    let _ = hook(None, g);
                }
            }
            None
        });
        if tracked_input {
            let _ = input_for_inner.register_hook(move |g| {
                let go = grad_output
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()?;
                let mut grad_input = g.clone();
                let mut replaced = false;
                for hook in &backward {
                    if let Some(r) = hook(Some(&grad_input), &go) {
                        grad_input = r;
                        replaced = true;
                    }
                }
                replaced.then_some(grad_input)
            });
        }
        Ok(output)
    }
}
