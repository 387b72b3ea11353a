//! Per-sample gradients of the recurrent kernels by a batched replay.
//!
//! A recurrent layer (one direction of one layer of an RNN, LSTM or GRU, or a cell) is one
//! fused op whose backward keeps the gate gradients to itself. Its weights enter only
//! through two products per step, `gᵢ = x_t·W_ihᵀ + b_ih` and `gₕ = h_{t−1}·W_hhᵀ + b_hh`,
//! so the per-sample gradients are `Σ_t ∂gᵢ(t)ᵀ·x_t` and `Σ_t ∂gₕ(t)ᵀ·h_{t−1}` (and the
//! sums of the `∂g` for the biases) — two Linear rules over the time steps. To get the
//! `∂g`, the recurrence is replayed once, for the whole batch, with the ops the fused
//! kernel's own differentiable backward is checked against, from the recorded input and
//! initial states; a zero "probe" leaf added to each product makes its gradient a leaf
//! gradient, and one functional backward with the output gradient captured during the
//! model's backward gives them all. Nothing loops over samples.

use strata_autograd::{GradOptions, RecurrentTap, Tap, TapOp, Var, enable_grad, grad};
use strata_tensor::{Element, RecurrentMode, Tensor};

use super::rules::Rule;
use super::to_front;
use crate::{PrivacyError, Result};

/// The two Linear rules (input products, hidden products) of a tapped recurrent call whose
/// packed output received the gradient `g`.
pub(super) fn replay<T: Element>(
    tap: &Tap<T>,
    g: &Tensor<T>,
    batch: usize,
) -> Result<[Rule<T>; 2]> {
    let TapOp::Recurrent(r) = &tap.op else {
        unreachable!("replay is called for recurrent taps only")
    };
    let RecurrentTap {
        mode,
        input,
        h0,
        c0,
        reverse,
        weights,
    } = r.as_ref();
    let (mode, reverse) = (*mode, *reverse);
    let &[l, n, features] = input.shape() else {
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
    let (gates, hidden) = (w_hh.shape()[0], w_hh.shape()[1]);
    let x2 = input.reshape([(l * n) as isize, features as isize])?;
    let mut gi = x2.matmul(&w_ih.t()?)?;
    if let Some(b) = b_ih {
        gi = gi.add(b)?;
    }
    let gi = gi.reshape([l, n, gates])?;
    let (dgi, dgh, hprev) = enable_grad(|| -> Result<_> {
        let probe_i = Var::parameter(gi);
        let probe_h = Var::parameter(Tensor::zeros(&[l, n, gates]));
        let w_hh_t = Var::new(w_hh.t()?.contiguous());
        let b_hh = b_hh.as_ref().map(|b| Var::new(b.clone()));
        let zeros = || Var::new(Tensor::zeros(&[n, hidden]));
        let mut h = h0.clone().map(Var::new).unwrap_or_else(zeros);
        let mut c = c0.clone().map(Var::new).unwrap_or_else(zeros);
        let mut outputs: Vec<Option<Var<T>>> = vec![None; l];
        let mut hprev: Vec<Option<Tensor<T>>> = vec![None; l];
        for s in 0..l {
            let t = if reverse { l - 1 - s } else { s };
            hprev[t] = Some(h.value());
            let gi_t = probe_i.select(0, t as isize)?;
            let mut gh_t = h.matmul(&w_hh_t)?;
            if let Some(b) = &b_hh {
                gh_t = gh_t.add(b)?;
            }
            let gh_t = gh_t.add(&probe_h.select(0, t as isize)?)?;
            let gate = |v: &Var<T>, k: usize| v.narrow(1, k * hidden, hidden);
            h = match mode {
                RecurrentMode::RnnTanh => gi_t.add(&gh_t)?.tanh(),
                RecurrentMode::RnnRelu => gi_t.add(&gh_t)?.relu(),
                RecurrentMode::Lstm => {
                    let a = gi_t.add(&gh_t)?;
                    let (i, f) = (gate(&a, 0)?.sigmoid(), gate(&a, 1)?.sigmoid());
                    let (gg, o) = (gate(&a, 2)?.tanh(), gate(&a, 3)?.sigmoid());
                    c = f.mul(&c)?.add(&i.mul(&gg)?)?;
                    o.mul(&c.tanh())?
                }
                RecurrentMode::Gru => {
                    let r = gate(&gi_t, 0)?.add(&gate(&gh_t, 0)?)?.sigmoid();
                    let z = gate(&gi_t, 1)?.add(&gate(&gh_t, 1)?)?.sigmoid();
                    let cand = gate(&gi_t, 2)?.add(&r.mul(&gate(&gh_t, 2)?)?)?.tanh();
                    z.rsub_scalar(T::one()).mul(&cand)?.add(&z.mul(&h)?)?
                }
            };
            outputs[t] = Some(h.clone());
        }
        let mut steps: Vec<Var<T>> = outputs.into_iter().flatten().collect();
        if mode == RecurrentMode::Lstm {
            steps.push(c);
        }
        let packed = Var::stack(&steps, 0)?;
        if packed.shape() != g.shape() {
            return Err(PrivacyError::Batch(format!(
                "the replayed recurrent output {:?} does not match its gradient {:?}",
                packed.shape(),
                g.shape()
            )));
        }
        let options = GradOptions {
            allow_unused: true,
            ..GradOptions::default()
        };
        let seed = Var::new(g.clone());
        let grads = grad(
            &[packed],
            &[probe_i, probe_h],
            Some(std::slice::from_ref(&seed)),
            options,
        )?;
        let take = |k: usize| {
            grads[k]
                .as_ref()
                .map(Var::value)
                .unwrap_or_else(|| Tensor::zeros(&[l, n, gates]))
        };
        let hprev: Vec<Tensor<T>> = hprev.into_iter().flatten().collect();
        Ok((take(0), take(1), Tensor::stack(&hprev, 0)?))
    })?;
    // Samples first: [N, L, ·].
    let ih = Rule::Linear {
        a: to_front(input, 1)?,
        g: to_front(&dgi, 1)?,
    };
    let hh = Rule::Linear {
        a: to_front(&hprev, 1)?,
        g: to_front(&dgh, 1)?,
    };
    Ok([ih, hh])
}
