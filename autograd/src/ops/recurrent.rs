//! The differentiable recurrent sequence ops (fused RNN, LSTM and GRU layers).
//!
//! One layer and direction over a whole sequence is one node: the forward is
//! strata-tensor's fused kernel ([`Tensor::recurrent_sequence`]), the backward its
//! hand-written backward. The node saves the kernel's gate activations (and, for the
//! LSTM, the cell states), nothing when no input is tracked.

use strata_tensor::{Element, RecurrentGradNeeds, RecurrentMode, RecurrentWeights, Tensor};

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
        Ok(Var::from_op_with(
            mode.name(),
            value,
            &inputs,
            move |g, n| {
                let saved = saved.as_ref().expect("saved when tracking");
                let needs = RecurrentGradNeeds {
                    x: n.get(0),
                    w_ih: n.get(1),
                    w_hh: n.get(2),
                    b_ih: n.get(3),
                    b_hh: n.get(4),
                    h0: n.get(5),
                    c0: n.get(6),
                };
                let grads = Tensor::recurrent_sequence_backward(g, saved, needs)?;
                Ok(vec![
                    grads.x, grads.w_ih, grads.w_hh, grads.b_ih, grads.b_hh, grads.h0, grads.c0,
                ])
            },
        ))
    }
}
