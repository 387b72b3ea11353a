//! Per-sample gradients of the recurrent kernels, from the fused kernel's gate gradients.
//!
//! A recurrent layer (one direction of one layer of an RNN, LSTM or GRU, or a cell) is one
//! fused op. Its weights enter only through two products per step, `gᵢ = x_t·W_ihᵀ + b_ih`
//! and `gₕ = h_{t−1}·W_hhᵀ + b_hh`, so the per-sample gradients are
//! `Σ_t ∂gᵢ(t)ᵀ·x_t` and `Σ_t ∂gₕ(t)ᵀ·h_{t−1}` (and the sums of the `∂g` for the biases):
//! two Linear rules over the time steps. The `∂g` are what the kernel's backward computes
//! chunk by chunk anyway; asked for them (`RecurrentGradNeeds::gates`), it returns them for
//! every step instead of folding them into the weight gradients, from what the model's own
//! forward kept for its backward (shared through the tap, so the forward runs once).
//! Nothing loops over samples, and the recurrence is walked once each way, fused, for the
//! whole batch.

use strata_autograd::{RecurrentTap, Tap, TapOp};
use strata_tensor::{Element, RecurrentGradNeeds, RecurrentMode, RecurrentWeights, Tensor};

use super::rules::{GramCache, Rule};
use super::to_front;
use crate::{PrivacyError, Result};

/// The two Linear rules (input products, hidden products) of a tapped recurrent call whose
/// packed output received the gradient `g`.
pub(super) fn rules<T: Element>(tap: &Tap<T>, g: &Tensor<T>, batch: usize) -> Result<[Rule<T>; 2]> {
    let TapOp::Recurrent(r) = &tap.op else {
        unreachable!("called for recurrent taps only")
    };
    let RecurrentTap {
        mode,
        input,
        h0,
        c0,
        reverse,
        weights,
        saved,
    } = r.as_ref();
    let (mode, reverse) = (*mode, *reverse);
    let &[l, n, _] = input.shape() else {
        return Err(PrivacyError::Batch(format!(
            "a recurrent input must be [L, N, in], got {:?}",
            input.shape()
        )));
    };
    if n != batch {
        return Err(PrivacyError::Batch(format!(
            "the recurrent layer's input {:?} has {n} sequences, the batch has {batch} samples",
            input.shape()
        )));
    }
    let [Some(w_ih), Some(w_hh), b_ih, b_hh] = weights else {
        unreachable!("the recurrent kernel always has both weights")
    };
    let hidden = w_hh.shape()[1];
    let weights = RecurrentWeights {
        w_ih,
        w_hh,
        b_ih: b_ih.as_ref(),
        b_hh: b_hh.as_ref(),
    };
    // What the model's forward kept for the kernel's backward (or, when the tap has none,
    // the fused kernel again, keeping it), and its backward asked for the gate gradients
    // of every step instead of the weight gradients.
    let (out, saved) = match saved {
        Some(saved) => (tap.output.value(), saved.clone()),
        None => {
            let (out, saved) =
                input.recurrent_sequence(mode, weights, h0.as_ref(), c0.as_ref(), reverse, true)?;
            let saved = saved.ok_or_else(|| {
                PrivacyError::Batch("the recurrent kernel kept nothing for its backward".into())
            })?;
            (out, saved)
        }
    };
    if out.shape() != g.shape() {
        return Err(PrivacyError::Batch(format!(
            "the recurrent output {:?} does not match its gradient {:?}",
            out.shape(),
            g.shape()
        )));
    }
    let needs = RecurrentGradNeeds {
        gates: true,
        ..RecurrentGradNeeds::default()
    };
    let grads = Tensor::recurrent_sequence_backward(g, &saved, needs)?;
    let (Some(dgi), Some(dgh)) = (grads.gates_ih, grads.gates_hh) else {
        unreachable!("the gates were asked for")
    };
    // The state before each step: h0 (or zeros) for the first step the kernel took, the
    // neighbouring output for the others.
    let hs = out.narrow(0, 0, l)?;
    let init = match h0 {
        Some(h) => h.unsqueeze(0)?,
        None => Tensor::zeros(&[1, n, hidden]),
    };
    let hprev = match (l, reverse) {
        (1, _) => init,
        (_, false) => Tensor::cat(&[init, hs.narrow(0, 0, l - 1)?], 0)?,
        (_, true) => Tensor::cat(&[hs.narrow(0, 1, l - 1)?, init], 0)?,
    };
    // Samples first: [N, L, ·] (views of the time-first tensors). Both products of the
    // RNN and the LSTM have the same gate gradients, so their ghost norms share one Gram
    // of them; the GRU's differ in the n gate.
    let gram = GramCache::default();
    let (dgh, hh_gram) = if mode == RecurrentMode::Gru {
        (dgh, GramCache::default())
    } else {
        (dgi.clone(), gram.clone())
    };
    let ih = Rule::Linear {
        a: to_front(input, 1)?,
        g: to_front(&dgi, 1)?,
        gram,
    };
    let hh = Rule::Linear {
        a: to_front(&hprev, 1)?,
        g: to_front(&dgh, 1)?,
        gram: hh_gram,
    };
    Ok([ih, hh])
}
