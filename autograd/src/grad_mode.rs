//! Grad mode: whether ops record a graph, per thread, like `torch.no_grad()`.

use std::cell::Cell;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record graphs now.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(Cell::get)
}

/// Restores the previous grad mode when dropped, also on panic.
struct Restore(bool);

impl Drop for Restore {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.0));
    }
}

fn with_grad_mode<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(enabled)));
    f()
}

/// Runs `f` with graph recording off on this thread, like `with torch.no_grad():`. Ops
/// inside return constants; use it for parameter updates and evaluation.
///
/// ```
/// use strata_autograd::{Var, no_grad};
/// use strata_tensor::Tensor;
///
/// let w = Var::parameter(Tensor::<f32>::ones(&[3]));
/// let y = no_grad(|| w.mul_scalar(2.0));
/// assert!(!y.needs_grad());
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    with_grad_mode(false, f)
}

/// Runs `f` with graph recording on, even inside [`no_grad`] (`torch.enable_grad()`).
pub fn enable_grad<R>(f: impl FnOnce() -> R) -> R {
    with_grad_mode(true, f)
}
