//! Parameter taps: while a function runs under [`tap_parameters`], every op that consumes
//! one of the given vars (a model's parameters) is reported, with what per-sample gradient
//! engines need to know about the call. This is what strata-privacy builds per-sample
//! gradients on, at the level of ops rather than modules, so it sees every use of a
//! parameter, also inside custom modules and functional code, and misses none.
//!
//! Two kinds of report come back in [`Taps`]:
//!
//! - a [`Tap`] for each call of an op that knows how its parameters act on each sample
//!   (linear, convolution, embedding, layer norm, the recurrent sequence kernels,
//!   elementwise add/sub/mul with a broadcast parameter, and views of a parameter —
//!   narrow and reshape — whose results are watched in turn): the op and its saved
//!   operands ([`TapOp`]), its parameter inputs, and its output, whose gradient the engine
//!   captures during backward;
//! - a [`ParamUse`] for every recorded node with a watched input, tapped or not, so an
//!   engine can refuse a parameter used by an op it knows nothing about
//!   ([`Taps::untapped`]) instead of computing a wrong per-sample gradient.
//!
//! Reports are made only for ops that record a node (grad mode on, an input requiring
//! grad). A session belongs to the thread that opened it; ops of another element type are
//! not reported.
//!
//! ```
//! use strata_autograd::{TapOp, Var, tap_parameters};
//! use strata_tensor::Tensor;
//!
//! let w = Var::parameter(Tensor::<f64>::ones(&[3, 2]));
//! let x = Var::new(Tensor::ones(&[4, 2]));
//! let (y, taps) = tap_parameters(std::slice::from_ref(&w), || x.linear(&w, None))?;
//! let y = y?;
//! assert_eq!(taps.taps.len(), 1);
//! assert!(matches!(taps.taps[0].op, TapOp::Linear { .. }));
//! assert_eq!(taps.taps[0].output.id(), y.id());
//! assert_eq!(taps.untapped().count(), 0);
//! # Ok::<(), strata_autograd::AutogradError>(())
//! ```

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use strata_tensor::{
    Conv1dParams, Conv2dParams, Element, IndexTensor, RecurrentMode, RecurrentSaved, Tensor,
};

use crate::{AutogradError, Result, Var};

/// What a tapped op did, with the operands a per-sample gradient needs (the parameters
/// themselves are in [`Tap::params`]).
#[derive(Clone, Debug)]
pub enum TapOp<T: Element> {
    /// `y = x·Wᵀ + b` ([`Var::linear`]); params `[weight, bias]`.
    Linear {
        /// `x`, `[*, in]`.
        input: Tensor<T>,
    },
    /// 2-d convolution ([`Var::conv2d`]); params `[weight, bias]`. `input` is what the
    /// kernel saw (after the extra zero of odd `Same` padding) and `params` are explicit.
    Conv2d {
        /// `[N, C, H, W]` or `[C, H, W]`.
        input: Tensor<T>,
        /// The convolution's settings.
        params: Conv2dParams,
    },
    /// 1-d convolution ([`Var::conv1d`]); params `[weight, bias]`, as for `Conv2d`.
    Conv1d {
        /// `[N, C, L]` or `[C, L]`.
        input: Tensor<T>,
        /// The convolution's settings.
        params: Conv1dParams,
    },
    /// Rows of a table ([`Var::embedding`]); params `[weight]`.
    Embedding {
        /// The indices, any shape.
        indices: IndexTensor,
        /// The row that gets no gradient.
        padding_idx: Option<usize>,
    },
    /// Layer normalisation over the trailing `d` elements ([`Var::layer_norm`]); params
    /// `[weight, bias]`.
    LayerNorm {
        /// `x`, `[*, d]`.
        input: Tensor<T>,
        /// The number of normalised elements.
        d: usize,
        /// Added to the variance.
        eps: f64,
    },
    /// One layer and direction of a recurrent kernel over a sequence
    /// ([`Var::recurrent_sequence`]); params `[w_ih, w_hh, b_ih, b_hh]`. The output is
    /// the packed output (hidden states, plus `c_n` for the LSTM).
    Recurrent(Box<RecurrentTap<T>>),
    /// `y = p ⊙ other` (either order) with broadcasting; params `[p]`.
    Mul {
        /// The other operand.
        other: Tensor<T>,
    },
    /// `y = ±p + other` (add, or sub with `p` on either side) with broadcasting; params
    /// `[p]`; `sign` is −1 when `p` is subtracted.
    Add {
        /// +1 or −1.
        sign: f64,
    },
    /// `y = p.narrow(dim, start, length)`; params `[p]`. `y` is watched from now on.
    Narrow {
        /// The dimension (non-negative).
        dim: usize,
        /// The first element kept.
        start: usize,
        /// How many are kept.
        length: usize,
    },
    /// `y` is `p` with another shape (reshape, view, flatten, squeeze, unsqueeze); params
    /// `[p]`. `y` is watched from now on.
    Reshape,
}

/// What a tapped recurrent call saw.
#[derive(Clone, Debug)]
pub struct RecurrentTap<T: Element> {
    /// RNN, LSTM or GRU.
    pub mode: RecurrentMode,
    /// `x`, `[L, N, in]`.
    pub input: Tensor<T>,
    /// `h0`, `[N, H]`, when given.
    pub h0: Option<Tensor<T>>,
    /// `c0`, `[N, H]`, when given.
    pub c0: Option<Tensor<T>>,
    /// Whether the kernel walked time backwards.
    pub reverse: bool,
    /// The values of `w_ih`, `w_hh`, `b_ih`, `b_hh` (to replay the recurrence).
    pub weights: [Option<Tensor<T>>; 4],
    /// What the kernel's forward kept for its backward (shared, not copied), so that a
    /// per-sample engine can run the backward without replaying the forward.
    pub saved: Option<RecurrentSaved<T>>,
}

/// One tapped call of an op.
#[derive(Clone, Debug)]
pub struct Tap<T: Element> {
    /// What the op did.
    pub op: TapOp<T>,
    /// The op's parameter inputs in the order [`TapOp`] lists for it, `None` where absent
    /// or not watched.
    pub params: Vec<Option<Var<T>>>,
    /// The op's output; its gradient is what the op's parameters' gradients are made of.
    pub output: Var<T>,
}

/// A recorded node with a watched input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamUse {
    /// The op's name.
    pub op: &'static str,
    /// The id of the node's output var.
    pub output: u64,
    /// The id of the watched input.
    pub param: u64,
}

/// A call of an op that mixed the samples of a batch (batch normalisation by the batch's
/// statistics), reported by [`note_sample_mixing`]: an output sample then depends on the
/// other samples, so no per-sample gradient exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleMixing {
    /// The op's name (`"batch_norm"`).
    pub op: &'static str,
    /// The ids of its parameter inputs (the affine weight and bias), to name the layer by.
    pub params: Vec<u64>,
    /// The shape of its input.
    pub input_shape: Vec<usize>,
}

/// What a [`tap_parameters`] session saw.
#[derive(Clone, Debug)]
pub struct Taps<T: Element> {
    /// The tapped calls, in the order they ran.
    pub taps: Vec<Tap<T>>,
    /// Every node with a watched input, in the order they were made.
    pub uses: Vec<ParamUse>,
    /// The calls of ops that mixed the samples of the batch, in the order they ran.
    pub mixing: Vec<SampleMixing>,
}

impl<T: Element> Taps<T> {
    /// The uses of watched vars by ops that were not tapped.
    pub fn untapped(&self) -> impl Iterator<Item = &ParamUse> + '_ {
        let tapped: HashSet<u64> = self.taps.iter().map(|t| t.output.id()).collect();
        self.uses
            .iter()
            .filter(move |u| !tapped.contains(&u.output))
    }
}

struct Session<T: Element> {
    watched: HashSet<u64>,
    taps: Vec<Tap<T>>,
    uses: Vec<ParamUse>,
    mixing: Vec<SampleMixing>,
}

thread_local! {
    static SESSION: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// The number of open sessions on all threads: ops check this one relaxed load before
/// looking at their thread's session.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Closes the session when dropped, also on panic.
struct Close;

impl Drop for Close {
    fn drop(&mut self) {
        SESSION.with(|s| s.borrow_mut().take());
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `f` while reporting every op that consumes one of `params` (see the module docs).
///
/// # Errors
/// [`AutogradError::Invalid`] when a session is already open on this thread.
pub fn tap_parameters<T: Element, R>(
    params: &[Var<T>],
    f: impl FnOnce() -> R,
) -> Result<(R, Taps<T>)> {
    let open = SESSION.with(|s| s.borrow().is_some());
    if open {
        return Err(AutogradError::Invalid {
            op: "tap_parameters",
            msg: "a tap session is already open on this thread".into(),
        });
    }
    let session: Session<T> = Session {
        watched: params.iter().map(Var::id).collect(),
        taps: Vec::new(),
        uses: Vec::new(),
        mixing: Vec::new(),
    };
    SESSION.with(|s| *s.borrow_mut() = Some(Box::new(session)));
    OPEN.fetch_add(1, Ordering::Relaxed);
    let close = Close;
    let r = f();
    let session = SESSION.with(|s| s.borrow_mut().take());
    drop(close);
    let session = session
        .and_then(|b| b.downcast::<Session<T>>().ok())
        .expect("the session opened above is still there");
    Ok((
        r,
        Taps {
            taps: session.taps,
            uses: session.uses,
            mixing: session.mixing,
        },
    ))
}

/// Whether a session is open on any thread (one relaxed load).
pub(crate) fn any_open() -> bool {
    OPEN.load(Ordering::Relaxed) > 0
}

/// Runs `f` on this thread's session of element type `T`, if one is open.
fn with_session<T: Element>(f: impl FnOnce(&mut Session<T>)) {
    if OPEN.load(Ordering::Relaxed) == 0 {
        return;
    }
    SESSION.with(|s| {
        if let Ok(mut guard) = s.try_borrow_mut()
            && let Some(session) = guard.as_mut().and_then(|b| b.downcast_mut::<Session<T>>())
        {
            f(session);
        }
    });
}

/// Reports the watched inputs of a node just made (called for every recorded node).
pub(crate) fn note_uses<T: Element>(op: &'static str, output: u64, inputs: &[Option<Var<T>>]) {
    with_session::<T>(|s| {
        for input in inputs.iter().flatten() {
            if s.watched.contains(&input.id()) {
                s.uses.push(ParamUse {
                    op,
                    output,
                    param: input.id(),
                });
            }
        }
    });
}

/// Reports a tapped call: `op` is built only when a session is open and one of `params`
/// is watched. Views of a watched var make their output watched too.
pub(crate) fn record<T: Element>(
    op: impl FnOnce() -> TapOp<T>,
    params: &[Option<&Var<T>>],
    output: &Var<T>,
) {
    if OPEN.load(Ordering::Relaxed) == 0 || !output.needs_grad() || output.is_leaf() {
        return;
    }
    with_session::<T>(|s| {
        let watched: Vec<Option<Var<T>>> = params
            .iter()
            .map(|p| p.filter(|p| s.watched.contains(&p.id())).cloned())
            .collect();
        if watched.iter().all(Option::is_none) {
            return;
        }
        let op = op();
        if matches!(op, TapOp::Narrow { .. } | TapOp::Reshape) {
            s.watched.insert(output.id());
        }
        s.taps.push(Tap {
            op,
            params: watched,
            output: output.clone(),
        });
    });
}

/// Reports that `op` just computed statistics over the samples of its batch (BatchNorm in
/// training mode), with its parameter inputs and input shape, to this thread's session of
/// element type `T` if one is open: an engine computing per-sample gradients refuses the
/// computation ([`Taps::mixing`]). It does not depend on the op's parameters being watched
/// or on any state the layer keeps, so a batch norm without affine parameters or running
/// statistics, or called as a function, is seen too. Ops that mix samples call it; others
/// need not.
pub fn note_sample_mixing<T: Element>(
    op: &'static str,
    params: &[Option<&Var<T>>],
    input_shape: &[usize],
) {
    with_session::<T>(|s| {
        s.mixing.push(SampleMixing {
            op,
            params: params.iter().flatten().map(|p| p.id()).collect(),
            input_shape: input_shape.to_vec(),
        });
    });
}

/// Whether `v` is watched by this thread's session (for ops that tap only some calls).
pub(crate) fn is_watched<T: Element>(v: &Var<T>) -> bool {
    let mut watched = false;
    with_session::<T>(|s| watched = s.watched.contains(&v.id()));
    watched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_used_by_an_untapped_op_is_reported() {
        let w = Var::parameter(Tensor::<f64>::ones(&[2, 2]));
        let x = Var::new(Tensor::ones(&[3, 2]));
        let (y, taps) = tap_parameters(std::slice::from_ref(&w), || x.matmul(&w.t()?)).unwrap();
        y.unwrap();
        assert!(taps.taps.is_empty());
        let untapped: Vec<_> = taps.untapped().map(|u| u.op).collect();
        assert_eq!(untapped, ["t"]);
    }

    #[test]
    fn views_of_a_parameter_are_followed() {
        let p = Var::parameter(Tensor::<f64>::ones(&[6, 2]));
        let x = Var::new(Tensor::ones(&[4, 2]));
        let (y, taps) =
            tap_parameters(std::slice::from_ref(&p), || x.add(&p.narrow(0, 2, 4)?)).unwrap();
        y.unwrap();
        let ops: Vec<_> = taps.taps.iter().map(|t| format!("{:?}", t.op)).collect();
        assert!(ops[0].starts_with("Narrow"), "{ops:?}");
        assert!(ops[1].starts_with("Add"), "{ops:?}");
        assert_eq!(taps.untapped().count(), 0);
    }

    #[test]
    fn fused_ops_are_tapped_as_their_two_ops() {
        let w = Var::parameter(Tensor::<f64>::from_vec(vec![1.0, -1.0], &[2, 1, 1, 1]).unwrap());
        let b = Var::parameter(Tensor::<f64>::zeros(&[2]));
        let x = Var::new(Tensor::from_vec(vec![1.0, -2.0], &[1, 1, 1, 2]).unwrap());
        let params = [w.clone(), b.clone()];
        let conv = || x.conv2d_relu(&w, Some(&b), Conv2dParams::default());
        let (y, taps) = tap_parameters(&params, conv).unwrap();
        let y = y.unwrap();
        assert_eq!(y.value().to_vec(), vec![1.0, 0.0, 0.0, 2.0]);
        assert_eq!(taps.taps.len(), 1);
        assert!(matches!(taps.taps[0].op, TapOp::Conv2d { .. }));
        // The tap's output is the convolution's, before the clamp.
        assert_eq!(
            taps.taps[0].output.value().to_vec(),
            vec![1.0, -2.0, -1.0, 2.0]
        );
        assert_eq!(taps.untapped().count(), 0);
        let w = Var::parameter(Tensor::<f64>::from_vec(vec![1.0, -1.0], &[2, 1]).unwrap());
        let x = Var::new(Tensor::from_vec(vec![3.0], &[1, 1]).unwrap());
        let (y, taps) =
            tap_parameters(std::slice::from_ref(&w), || x.linear_relu(&w, None)).unwrap();
        assert_eq!(y.unwrap().value().to_vec(), vec![3.0, 0.0]);
        assert!(matches!(taps.taps[0].op, TapOp::Linear { .. }));
        assert_eq!(taps.taps[0].output.value().to_vec(), vec![3.0, -3.0]);
    }

    #[test]
    fn sessions_do_not_nest_and_close_after_a_panic() {
        let w = Var::parameter(Tensor::<f64>::ones(&[1]));
        let inner = tap_parameters(std::slice::from_ref(&w), || {
            tap_parameters(std::slice::from_ref(&w), || ()).is_err()
        });
        assert!(inner.unwrap().0);
        let caught = std::panic::catch_unwind(|| {
            let _ = tap_parameters(&[Var::parameter(Tensor::<f64>::ones(&[1]))], || {
                panic!("inside")
            });
        });
        assert!(caught.is_err());
        assert!(tap_parameters(&[w], || ()).is_ok());
    }
}
