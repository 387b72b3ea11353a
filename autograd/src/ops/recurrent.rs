//! The differentiable recurrent sequence ops (fused RNN, LSTM and GRU layers).
//!
//! One layer and direction over a whole sequence is one node: the forward is
//! strata-tensor's fused kernel ([`Tensor::recurrent_sequence`]), the backward its
//! hand-written backward. The node saves the kernel's gate activations (and, for the
//! LSTM, the cell states), nothing when no input is tracked.

use strata_tensor::{Element, RecurrentGradNeeds, RecurrentMode, RecurrentWeights, Tensor};

use crate::ops::decomposed;
use crate::taps::{self, RecurrentTap, TapOp};
use crate::{Result, Var};

/// The parameters of one recurrent layer and direction, in PyTorch's layouts: `w_ih`
/// `[G·H, in]`, `w_hh` `[G·H, H]`, `b_ih` and `b_hh` `[G·H]` (`G` gates).
#[derive(Clone, Copy, Debug)]
pub struct RecurrentParams<'a, T: Element> {
    /// `weight_ih_l{k}`.
    pub w_ih: &'a Var<T>,
    /// `weight_hh_l{k}`.
    pub w_hh: &'a Var<T>,
    /// `bias_ih_l{k}`.
    pub b_ih: Option<&'a Var<T>>,
    /// `bias_hh_l{k}`.
    pub b_hh: Option<&'a Var<T>>,
}

impl<T: Element> Var<T> {
    /// One layer and direction of an RNN, LSTM or GRU over the whole sequence `self`
    /// `[L, N, in]`, from the initial states `h0` (and `c0` for the LSTM), `[N, H]` each
    /// and zeros when `None`; `reverse` walks time backwards. One fused op: see
    /// [`Tensor::recurrent_sequence`], which also describes the packed output: `[L, N, H]`
    /// hidden states in time order, plus `c_n` as an extra step `L` for the LSTM.
    ///
    /// ```
    /// use strata_autograd::{RecurrentParams, Var};
    /// use strata_tensor::{RecurrentMode, Tensor};
    ///
    /// let (l, n, input, h) = (5, 2, 3, 4);
    /// let x = Var::new(Tensor::<f64>::ones(&[l, n, input]));
    /// let w_ih = Var::parameter(Tensor::full(&[4 * h, input], 0.1));
    /// let w_hh = Var::parameter(Tensor::full(&[4 * h, h], -0.1));
    /// let params = RecurrentParams { w_ih: &w_ih, w_hh: &w_hh, b_ih: None, b_hh: None };
    /// let packed = x.recurrent_sequence(RecurrentMode::Lstm, params, None, None, false)?;
    /// assert_eq!(packed.shape(), &[l + 1, n, h]);
    /// let output = packed.narrow(0, 0, l)?;
    /// output.square().mean_all().backward()?;
    /// assert_eq!(w_hh.grad().unwrap().shape(), &[4 * h, h]);
    /// # Ok::<(), strata_autograd::AutogradError>(())
    /// ```
    ///
    /// # Errors
    /// As [`Tensor::recurrent_sequence`].
    pub fn recurrent_sequence(
        &self,
        mode: RecurrentMode,
        params: RecurrentParams<'_, T>,
        h0: Option<&Var<T>>,
        c0: Option<&Var<T>>,
        reverse: bool,
    ) -> Result<Var<T>> {
        let (w_ih, w_hh) = (params.w_ih.value(), params.w_hh.value());
        let (b_ih, b_hh) = (params.b_ih.map(Var::value), params.b_hh.map(Var::value));
        let (h0_t, c0_t) = (h0.map(Var::value), c0.map(Var::value));
        let inputs = [
            Some(self),
            Some(params.w_ih),
            Some(params.w_hh),
            params.b_ih,
            params.b_hh,
            h0,
            c0,
        ];
        let track = Var::tracking(&inputs.iter().flatten().copied().collect::<Vec<_>>());
        let weights = RecurrentWeights {
            w_ih: &w_ih,
            w_hh: &w_hh,
            b_ih: b_ih.as_ref(),
            b_hh: b_hh.as_ref(),
        };
        let (value, saved) = self.value().recurrent_sequence(
            mode,
            weights,
            h0_t.as_ref(),
            c0_t.as_ref(),
            reverse,
            track,
        )?;
        let values = [
            Some(self.value()),
            Some(w_ih.clone()),
            Some(w_hh.clone()),
            b_ih.clone(),
            b_hh.clone(),
            h0_t.clone(),
            c0_t.clone(),
        ];
        let x_tap = self.value();
        // Tensor handles: the tap shares the saved activations with the backward.
        let saved_tap = saved.clone();
        let y = Var::from_op_with(mode.name(), value, &inputs, move |g, n| {
            let saved = saved.as_ref().expect("saved when tracking");
            let needs = RecurrentGradNeeds {
                x: n.get(0),
                w_ih: n.get(1),
                w_hh: n.get(2),
                b_ih: n.get(3),
                b_hh: n.get(4),
                h0: n.get(5),
                c0: n.get(6),
                gates: false,
            };
            let grads = Tensor::recurrent_sequence_backward(g, saved, needs)?;
            Ok(vec![
                grads.x, grads.w_ih, grads.w_hh, grads.b_ih, grads.b_hh, grads.h0, grads.c0,
            ])
        })
        .double_backward(move |g, inputs, _| {
            decomposed(g, inputs, &values, |xs| unrolled(mode, xs, reverse))
        });
        let op = || {
            TapOp::Recurrent(Box::new(RecurrentTap {
                mode,
                input: x_tap,
                h0: h0_t,
                c0: c0_t,
                reverse,
                weights: [Some(w_ih), Some(w_hh), b_ih, b_hh],
                saved: saved_tap,
            }))
        };
        let params_in = [
            Some(params.w_ih),
            Some(params.w_hh),
            params.b_ih,
            params.b_hh,
        ];
        taps::record(op, &params_in, &y);
        Ok(y)
    }
}

/// The recurrence step by step with differentiable ops (the decomposition behind the fused
/// kernel's differentiable backward): `xs` are x `[L, N, in]`, `w_ih`, `w_hh`, and the
/// optional `b_ih`, `b_hh`, `h0`, `c0`; the result is the packed output
/// ([`Tensor::recurrent_sequence`]).
fn unrolled<T: Element>(
    mode: RecurrentMode,
    xs: &[Option<Var<T>>],
    reverse: bool,
) -> Result<Var<T>> {
    let given = |i: usize| xs[i].clone().expect("x and the weights are given");
    let (x, w_ih, w_hh) = (given(0), given(1).t()?, given(2).t()?);
    let (l, n) = (x.shape()[0], x.shape()[1]);
    let hidden = xs[2].as_ref().expect("given").shape()[1];
    let zeros = || Var::new(Tensor::zeros(&[n, hidden]));
    let mut h = xs[5].clone().unwrap_or_else(zeros);
    let mut c = xs[6].clone().unwrap_or_else(zeros);
    let mut outputs: Vec<Option<Var<T>>> = vec![None; l];
    let with_bias = |v: Var<T>, b: &Option<Var<T>>| match b {
        Some(b) => v.add(b),
        None => Ok(v),
    };
    for s in 0..l {
        let t = if reverse { l - 1 - s } else { s };
        let gi = with_bias(x.select(0, t as isize)?.matmul(&w_ih)?, &xs[3])?;
        let gh = with_bias(h.matmul(&w_hh)?, &xs[4])?;
        let gate = |v: &Var<T>, k: usize| v.narrow(1, k * hidden, hidden);
        h = match mode {
            RecurrentMode::RnnTanh => gi.add(&gh)?.tanh(),
            RecurrentMode::RnnRelu => gi.add(&gh)?.relu(),
            RecurrentMode::Lstm => {
                let a = gi.add(&gh)?;
                let (i, f) = (gate(&a, 0)?.sigmoid(), gate(&a, 1)?.sigmoid());
                let (gg, o) = (gate(&a, 2)?.tanh(), gate(&a, 3)?.sigmoid());
                c = f.mul(&c)?.add(&i.mul(&gg)?)?;
                o.mul(&c.tanh())?
            }
            RecurrentMode::Gru => {
                let r = gate(&gi, 0)?.add(&gate(&gh, 0)?)?.sigmoid();
                let z = gate(&gi, 1)?.add(&gate(&gh, 1)?)?.sigmoid();
                let cand = gate(&gi, 2)?.add(&r.mul(&gate(&gh, 2)?)?)?.tanh();
                // h' = (1 − z) ⊙ n + z ⊙ h
                z.rsub_scalar(T::one()).mul(&cand)?.add(&z.mul(&h)?)?
            }
        };
        outputs[t] = Some(h.clone());
    }
    let mut steps: Vec<Var<T>> = outputs
        .into_iter()
        .map(|o| o.expect("every step ran"))
        .collect();
    if mode == RecurrentMode::Lstm {
        steps.push(c);
    }
    Var::stack(&steps, 0)
}
