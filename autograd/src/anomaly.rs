//! Anomaly mode, like `torch.autograd.detect_anomaly()`: while it is on, every op records
//! where its forward was called (a backtrace), and a backward that produces a NaN or an
//! infinity in some op's input gradients fails with [`AutogradError::Anomaly`] naming
//! that op and showing where it was recorded, instead of letting the NaN spread silently
//! into every parameter.
//!
//! Recording backtraces is slow; anomaly mode is for debugging, off by default, per
//! thread.

use std::backtrace::Backtrace;
use std::cell::Cell;
use std::sync::Arc;

use strata_tensor::{Element, Tensor};

use crate::{AutogradError, Result};

thread_local! {
    static ANOMALY: Cell<bool> = const { Cell::new(false) };
}

/// Whether anomaly mode is on for this thread.
pub fn is_anomaly_enabled() -> bool {
    ANOMALY.with(Cell::get)
}

/// Runs `f` with anomaly mode on (ops record where they were called; backward checks
/// every gradient an op produces for NaN and infinity), restoring the previous mode after,
/// also on panic.
///
/// ```
/// use strata_autograd::{AutogradError, Var, detect_anomaly};
/// use strata_tensor::Tensor;
///
/// let x = Var::parameter(Tensor::from_vec(vec![0.0f64, 4.0], &[2])?);
/// let err = detect_anomaly(|| x.sqrt().sum_all().backward()).unwrap_err();
/// // d sqrt(x)/dx = 1/(2 sqrt x) is infinite at 0: the error names sqrt.
/// assert!(matches!(err, AutogradError::Anomaly { op: "sqrt", .. }));
/// # Ok::<(), AutogradError>(())
/// ```
pub fn detect_anomaly<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ANOMALY.with(|a| a.set(self.0));
        }
    }
    let _restore = Restore(ANOMALY.with(|a| a.replace(true)));
    f()
}

/// Where an op was recorded, when anomaly mode was on.
pub(crate) fn trace() -> Option<Arc<Backtrace>> {
    is_anomaly_enabled().then(|| Arc::new(Backtrace::force_capture()))
}

/// Fails when `grad` (input `input`'s gradient from `op`'s backward) holds a NaN or an
/// infinity.
pub(crate) fn check<T: Element>(
    op: &'static str,
    input: usize,
    grad: &Tensor<T>,
    recorded: Option<&Arc<Backtrace>>,
) -> Result<()> {
    let bad = grad.to_vec().into_iter().find(|v| !v.is_finite());
    match bad {
        None => Ok(()),
        Some(value) => Err(AutogradError::Anomaly {
            op,
            input,
            value: value.to_f64(),
            recorded: recorded.map_or_else(
                || "(not recorded: the op ran before anomaly mode was on)".to_string(),
                |b| b.to_string(),
            ),
        }),
    }
}
