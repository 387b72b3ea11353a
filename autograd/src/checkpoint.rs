//! Gradient checkpointing, like `torch.utils.checkpoint.checkpoint`: run a piece of the
//! forward without saving its intermediates and recompute them during backward, trading
//! compute for memory.
//!
//! Randomness replays exactly: while a checkpointed function runs its first (no-grad)
//! pass, every random draw made through [`replayable`] (strata-nn's dropout does) is
//! recorded, and the recomputation during backward replays the same values instead of
//! drawing again. So a checkpointed model trains bit for bit like the plain one, and the
//! caller's RNG advances exactly as without checkpointing.
//!
//! The recomputation runs a backward of its own through the recomputed graph, which also
//! accumulates the gradients of the parameters the function uses (as PyTorch's reentrant
//! checkpoint does). A checkpoint has no differentiable backward: `create_graph` through it
//! is an error ([`AutogradError::NoDoubleBackward`](crate::AutogradError::NoDoubleBackward)),
//! as in PyTorch's reentrant variant.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

use strata_tensor::{Element, Tensor};

use crate::grad_mode::{enable_grad, no_grad};
use crate::{Result, Var};

/// A function a checkpoint recomputes: from the inputs to one output.
pub type CheckpointFn<T> = Arc<dyn Fn(&[Var<T>]) -> Result<Var<T>> + Send + Sync>;

type Draw = Arc<dyn Any + Send + Sync>;

enum Tape {
    Record(Vec<Draw>),
    Replay(VecDeque<Draw>),
}

thread_local! {
    static TAPES: RefCell<Vec<Tape>> = const { RefCell::new(Vec::new()) };
}

/// Makes a random draw replayable by checkpointing: inside a checkpointed function's first
/// pass the result of `draw` is recorded, in its recomputation the recorded value is
/// returned instead of drawing again; elsewhere `draw` just runs. Code that draws random
/// tensors for the forward (dropout masks) goes through this.
///
/// ```
/// use strata_autograd::replayable;
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let mut rng = seeded_rng(0);
/// let mask: Tensor<f32> = replayable(|| Tensor::bernoulli(&[4], 0.5, &mut rng))?;
/// assert_eq!(mask.shape(), &[4]);
/// # Ok::<(), strata_tensor::TensorError>(())
/// ```
pub fn replayable<R: Clone + Send + Sync + 'static>(draw: impl FnOnce() -> R) -> R {
    // The innermost replay tape (a recomputation in progress) supplies the value; every
    // record tape above it (checkpoints nested inside, running their first pass) records
    // it too.
    let replayed: Option<Option<Draw>> = TAPES.with(|t| {
        let mut tapes = t.borrow_mut();
        tapes.iter_mut().rev().find_map(|tape| match tape {
            Tape::Replay(queue) => Some(queue.pop_front()),
            Tape::Record(_) => None,
        })
    });
    let value = match replayed.flatten().map(|v| v.downcast_ref::<R>().cloned()) {
        Some(Some(v)) => v,
        // Nothing recorded, or a different draw than the first pass made (the function is
        // not deterministic apart from its draws): draw afresh rather than replay a wrong
        // value.
        _ => draw(),
    };
    TAPES.with(|t| {
        for tape in t.borrow_mut().iter_mut().rev() {
            match tape {
                Tape::Record(list) => list.push(Arc::new(value.clone())),
                Tape::Replay(_) => break,
            }
        }
    });
    value
}

/// Runs `f` with `tape` on top of this thread's tapes; returns what it recorded.
fn with_tape<R>(tape: Tape, f: impl FnOnce() -> R) -> (R, Tape) {
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            TAPES.with(|t| {
                t.borrow_mut().pop();
            });
        }
    }
    TAPES.with(|t| t.borrow_mut().push(tape));
    let pop = Pop;
    let r = f();
    let tape = TAPES.with(|t| t.borrow_mut().pop()).expect("pushed above");
    std::mem::forget(pop);
    (r, tape)
}

/// Runs `f(inputs)` without keeping its intermediates, and recomputes them during
/// backward, like `torch.utils.checkpoint.checkpoint(f, *inputs)`: the output has the same
/// value and (bit for bit) the same gradients as `f(inputs)`, the parameters `f` uses get
/// their gradients during the recomputation, and random draws replay (see the module
/// docs). Without grad mode, or when no input requires grad and `f` uses no parameter, it
/// is just `f(inputs)`.
///
/// ```
/// use std::sync::Arc;
/// use strata_autograd::{Var, checkpoint};
/// use strata_tensor::Tensor;
///
/// let w = Var::parameter(Tensor::from_vec(vec![2.0f64], &[1])?);
/// let w2 = w.clone();
/// let x = Var::parameter(Tensor::from_vec(vec![3.0f64], &[1])?);
/// let f = Arc::new(move |xs: &[Var<f64>]| Ok(xs[0].mul(&w2)?.tanh()));
/// let y = checkpoint(f, &[x.clone()])?;
/// y.sum_all().backward()?;
/// let d = 1.0 - (6.0f64).tanh().powi(2); // d tanh(wx) = (1 − tanh²)·(x dw + w dx)
/// assert!((x.grad().unwrap().to_vec()[0] - 2.0 * d).abs() < 1e-12);
/// assert!((w.grad().unwrap().to_vec()[0] - 3.0 * d).abs() < 1e-12);
/// # Ok::<(), strata_autograd::AutogradError>(())
/// ```
///
/// # Errors
/// Whatever `f` returns.
pub fn checkpoint<T: Element>(f: CheckpointFn<T>, inputs: &[Var<T>]) -> Result<Var<T>> {
    if !crate::is_grad_enabled() {
        return f(inputs);
    }
    // The first pass: no graph, the draws recorded.
    let detached: Vec<Var<T>> = inputs.iter().map(Var::detach).collect();
    let (out, tape) = with_tape(Tape::Record(Vec::new()), || no_grad(|| f(&detached)));
    let out = out?;
    let Tape::Record(draws) = tape else {
        unreachable!("a record tape stays one")
    };
    let draws: Arc<Vec<Draw>> = Arc::new(draws);
    let values: Vec<Tensor<T>> = inputs.iter().map(Var::value).collect();
    let refs: Vec<&Var<T>> = inputs.iter().collect();
    // The node exists even when no input requires grad: f may use parameters.
    let recompute = move |g: &Tensor<T>, needs: crate::Needs<'_>| -> Result<crate::InputGrads<T>> {
        let xs: Vec<Var<T>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let leaf = Var::new(v.clone());
                if needs.get(i) {
                    leaf.requires_grad(true)
                } else {
                    leaf
                }
            })
            .collect();
        let replay: VecDeque<Draw> = draws.iter().cloned().collect();
        let (y, _) = with_tape(Tape::Replay(replay), || enable_grad(|| f(&xs)));
        let y = y?;
        if y.needs_grad() {
            y.backward_with(g)?;
        }
        Ok(xs
            .iter()
            .enumerate()
            .map(|(i, x)| {
                needs
                    .get(i)
                    .then(|| x.grad().unwrap_or_else(|| Tensor::zeros(x.shape())))
            })
            .collect())
    };
    Ok(checkpoint_node(out.value(), &refs, recompute))
}

/// The checkpoint's node: recorded whenever grad mode is on, tracked inputs or not
/// (parameters inside `f` need the walk to reach it). It keeps no differentiable backward.
fn checkpoint_node<T: Element>(
    value: Tensor<T>,
    inputs: &[&Var<T>],
    backward: impl Fn(&Tensor<T>, crate::Needs<'_>) -> Result<crate::InputGrads<T>>
    + Send
    + Sync
    + 'static,
) -> Var<T> {
    // A tracked anchor input makes sure the node is recorded even when no real input
    // requires grad; its gradient is dropped.
    let anchor = Var::parameter(Tensor::zeros(&[]));
    let mut all: Vec<&Var<T>> = inputs.to_vec();
    all.push(&anchor);
    let n = inputs.len();
    Var::from_op("checkpoint", value, &all, move |g, needs| {
        let mut grads = backward(g, needs)?;
        grads.truncate(n);
        grads.push(None);
        Ok(grads)
    })
}
