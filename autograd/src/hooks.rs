//! Hooks on vars, with PyTorch's semantics: gradient hooks (`tensor.register_hook`) and
//! post-accumulate-grad hooks on leaves (`register_post_accumulate_grad_hook`).
//!
//! During a backward walk a var's gradient is complete when the walk reaches it (every
//! consumer comes later in topological order and has already added its share). Then, in
//! this order:
//!
//! 1. its gradient hooks run in registration order, each seeing the gradient the previous
//!    one returned (a hook returns `Some(replacement)` or `None` to keep it);
//! 2. a non-leaf passes the (possibly replaced) gradient to its op's backward, and stores
//!    it first if it retains its gradient; a leaf adds it to its `.grad`;
//! 3. a leaf's post-accumulate-grad hooks run in registration order, with `.grad` final
//!    for this backward (what data-parallel bucketing and per-sample clipping hang on).
//!
//! Hooks fire on every backward that reaches the var, also with `retain_graph`. A
//! [`HookHandle`] removes its hook; dropping the handle keeps it (as in PyTorch).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use strata_tensor::{Element, Tensor};

use crate::var::{Inner, lock};
use crate::{AutogradError, Result, Var};

/// A gradient hook: the gradient in, `Some(replacement)` or `None` out.
type GradHook<T> = Arc<dyn Fn(&Tensor<T>) -> Option<Tensor<T>> + Send + Sync>;
/// A post-accumulate-grad hook: the leaf whose `.grad` is final.
type PostHook<T> = Arc<dyn Fn(&Var<T>) + Send + Sync>;

/// The hooks of one var. `any` lets the backward walk skip the locks of the (many) vars
/// without hooks.
pub(crate) struct Hooks<T: Element> {
    any: AtomicBool,
    grad: Mutex<Vec<(u64, GradHook<T>)>>,
    post: Mutex<Vec<(u64, PostHook<T>)>>,
}

impl<T: Element> Default for Hooks<T> {
    fn default() -> Self {
        Hooks {
            any: AtomicBool::new(false),
            grad: Mutex::new(Vec::new()),
            post: Mutex::new(Vec::new()),
        }
    }
}

fn next_hook_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Removes the hook it was returned for ([`Var::register_hook`],
/// [`Var::register_post_accumulate_grad_hook`], module hooks), like PyTorch's
/// `RemovableHandle`. Dropping it leaves the hook in place.
#[must_use = "dropping a handle keeps the hook; call remove() to take it off"]
pub struct HookHandle {
    remove: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl HookHandle {
    /// A handle that runs `remove` once when [`remove`](HookHandle::remove) is called (for
    /// hooks kept elsewhere, e.g. on modules).
    pub fn new(remove: impl FnOnce() + Send + Sync + 'static) -> Self {
        HookHandle {
            remove: Some(Box::new(remove)),
        }
    }

    /// Takes the hook off. Later backward walks do not call it.
    pub fn remove(mut self) {
        if let Some(f) = self.remove.take() {
            f();
        }
    }
}

impl std::fmt::Debug for HookHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookHandle")
    }
}

fn handle<T: Element>(inner: &Arc<Inner<T>>, id: u64, post: bool) -> HookHandle {
    let weak: Weak<Inner<T>> = Arc::downgrade(inner);
    HookHandle::new(move || {
        if let Some(inner) = weak.upgrade() {
            if post {
                lock(&inner.hooks.post).retain(|(k, _)| *k != id);
            } else {
                lock(&inner.hooks.grad).retain(|(k, _)| *k != id);
            }
        }
    })
}

impl<T: Element> Var<T> {
    /// Registers a hook called with the gradient flowing into this var during every
    /// backward that reaches it, like `tensor.register_hook`; returning `Some(g)` replaces
    /// the gradient (for this var's consumers upstream and its `.grad`), `None` keeps it.
    ///
    /// ```
    /// use strata_autograd::Var;
    /// use strata_tensor::Tensor;
    ///
    /// let x = Var::parameter(Tensor::from_vec(vec![1.0f64, 2.0], &[2])?);
    /// let y = x.square();
    /// // Double the gradient that reaches y (2·1 per element) before it goes on to x.
    /// let handle = y.register_hook(|g| Some(g.mul_scalar(2.0)));
    /// y.sum_all().backward()?;
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![4.0, 8.0]);
    /// handle.remove();
    /// # Ok::<(), strata_autograd::AutogradError>(())
    /// ```
    pub fn register_hook(
        &self,
        hook: impl Fn(&Tensor<T>) -> Option<Tensor<T>> + Send + Sync + 'static,
    ) -> HookHandle {
        let id = next_hook_id();
        lock(&self.inner.hooks.grad).push((id, Arc::new(hook)));
        self.inner.hooks.any.store(true, Ordering::Release);
        handle(&self.inner, id, false)
    }

    /// Registers a hook called once this leaf's `.grad` is final for a backward, like
    /// `tensor.register_post_accumulate_grad_hook`: after every contribution of the walk
    /// has been added. The hook receives the leaf (read its [`grad`](Var::grad)).
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use strata_autograd::Var;
    /// use strata_tensor::Tensor;
    ///
    /// let w = Var::parameter(Tensor::from_vec(vec![3.0f64], &[1])?);
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let _h = w.register_post_accumulate_grad_hook(move |p| {
    ///     log.lock().unwrap().push(p.grad().unwrap().to_vec()[0]);
    /// })?;
    /// // w is used twice; the hook sees the sum of both contributions, once.
    /// w.mul(&w)?.sum_all().backward()?;
    /// assert_eq!(*seen.lock().unwrap(), vec![6.0]);
    /// # Ok::<(), strata_autograd::AutogradError>(())
    /// ```
    ///
    /// # Errors
    /// [`AutogradError::Invalid`] on a var that is not a leaf requiring grad (only those
    /// accumulate a gradient).
    pub fn register_post_accumulate_grad_hook(
        &self,
        hook: impl Fn(&Var<T>) + Send + Sync + 'static,
    ) -> Result<HookHandle> {
        if !self.is_leaf() || !self.needs_grad() {
            return Err(AutogradError::Invalid {
                op: "register_post_accumulate_grad_hook",
                msg: "post-accumulate-grad hooks can only be registered on leaves that \
                      require grad"
                    .into(),
            });
        }
        let id = next_hook_id();
        lock(&self.inner.hooks.post).push((id, Arc::new(hook)));
        self.inner.hooks.any.store(true, Ordering::Release);
        Ok(handle(&self.inner, id, true))
    }

    /// Runs the gradient hooks on `grad` (step 1 of the module docs); the flag says
    /// whether one of them replaced it.
    pub(crate) fn run_grad_hooks(&self, grad: Tensor<T>) -> Result<(Tensor<T>, bool)> {
        if !self.inner.hooks.any.load(Ordering::Acquire) {
            return Ok((grad, false));
        }
        // Called outside the lock, so a hook may register or remove hooks.
        let hooks: Vec<GradHook<T>> = lock(&self.inner.hooks.grad)
            .iter()
            .map(|(_, h)| h.clone())
            .collect();
        let mut grad = grad;
        let mut replaced = false;
        for hook in hooks {
            if let Some(replacement) = hook(&grad) {
                if replacement.shape() != grad.shape() {
                    return Err(AutogradError::Invalid {
                        op: "register_hook",
                        msg: format!(
                            "a hook returned a gradient of shape {:?} for a var of shape {:?}",
                            replacement.shape(),
                            grad.shape()
                        ),
                    });
                }
                grad = replacement;
                replaced = true;
            }
        }
        Ok((grad, replaced))
    }

    /// Runs the post-accumulate-grad hooks (step 3 of the module docs).
    pub(crate) fn run_post_accumulate_hooks(&self) {
        if !self.inner.hooks.any.load(Ordering::Acquire) {
            return;
        }
        let hooks: Vec<PostHook<T>> = lock(&self.inner.hooks.post)
            .iter()
            .map(|(_, h)| h.clone())
            .collect();
        for hook in hooks {
            hook(self);
        }
    }
}
