//! `RNNCell`, `LSTMCell` and `GRUCell`: one step of the fused recurrent kernels (a
//! sequence of length one).

use strata_autograd::Var;
use strata_tensor::rand::Rng;
use strata_tensor::{Element, RecurrentMode};

use super::{RnnNonlinearity, RnnParams};
use crate::error::{config_error, input_error};
use crate::{Module, Result, StateKind};

/// What a cell knows besides its parameters.
#[derive(Clone, Copy, Debug)]
struct Spec {
    layer: &'static str,
    mode: RecurrentMode,
    input_size: usize,
    hidden_size: usize,
}

impl Spec {
    /// A cell's spec and PyTorch-initialised parameters.
    fn init<T: Element, R: Rng + ?Sized>(
        self,
        bias: bool,
        rng: &mut R,
    ) -> Result<(Self, RnnParams<T>)> {
        if self.hidden_size == 0 {
            return Err(config_error(
                self.layer,
                "hidden_size must be greater than zero",
            ));
        }
        let gates = self.mode.gates();
        let params = RnnParams::init(gates, self.input_size, self.hidden_size, bias, rng);
        Ok((self, params))
    }

    /// Checks a state against an input of batch `n` (`None` for unbatched); returns it
    /// as `[N, H]`.
    fn check_state<T: Element>(&self, which: &str, s: &Var<T>, n: Option<usize>) -> Result<Var<T>> {
        let h = self.hidden_size;
        let got = s.shape();
        let fail = |msg: String| Err(input_error(self.layer, msg));
        match n {
            None if got != [h] => fail(format!(
                "for an unbatched 1-D input, {which} should be [{h}], got {got:?}"
            )),
            Some(n) if got.len() == 2 && got[1] == h && got[0] != n => fail(format!(
                "input batch size {n} doesn't match {which} batch size {}",
                got[0]
            )),
            Some(n) if got != [n, h] => {
                fail(format!("expected {which} of shape [{n}, {h}], got {got:?}"))
            }
            None => Ok(s.unsqueeze(0)?),
            Some(_) => Ok(s.clone()),
        }
    }

    /// One step from `(h, c)`: row `i` of the packed output (`[N, H]`, or `[H]` for an
    /// unbatched input) for each `i` in `rows`.
    fn step<T: Element, const K: usize>(
        &self,
        params: &RnnParams<T>,
        x: &Var<T>,
        (h, c): (Option<&Var<T>>, Option<&Var<T>>),
        rows: [isize; K],
    ) -> Result<[Var<T>; K]> {
        let s = x.shape();
        let fail = |msg: String| Err(input_error(self.layer, msg));
        if s.len() != 1 && s.len() != 2 {
            return fail(format!(
                "expected input to be 1-D [{in}] or 2-D [N, {in}], got {s:?}",
                in = self.input_size
            ));
        }
        if s[s.len() - 1] != self.input_size {
            return fail(format!(
                "input has inconsistent input_size: got {}, expected {} (input {s:?})",
                s[s.len() - 1],
                self.input_size
            ));
        }
        let batched = s.len() == 2;
        let n = batched.then(|| s[0]);
        let h = h.map(|h| self.check_state("hx", h, n)).transpose()?;
        let c = c.map(|c| self.check_state("cx", c, n)).transpose()?;
        let x = if batched {
            x.unsqueeze(0)?
        } else {
            x.reshape([1, 1, self.input_size as isize])?
        };
        // A sequence of one step: the packed output is [1, N, H] ([2, N, H] with c).
        let packed =
            x.recurrent_sequence(self.mode, params.as_op(), h.as_ref(), c.as_ref(), false)?;
        let mut out = Vec::with_capacity(K);
        for i in rows {
            let v = packed.select(0, i)?;
            out.push(if batched { v } else { v.squeeze(0)? });
        }
        Ok(out
            .try_into()
            .unwrap_or_else(|_| unreachable!("K rows taken")))
    }
}

macro_rules! cell_layer {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name<T: Element = f32> {
            /// `weight_ih` `[G·H, input_size]`.
            pub weight_ih: Var<T>,
            /// `weight_hh` `[G·H, hidden_size]`.
            pub weight_hh: Var<T>,
            /// `bias_ih` `[G·H]`, when the cell has biases.
            pub bias_ih: Option<Var<T>>,
            /// `bias_hh` `[G·H]`, when the cell has biases.
            pub bias_hh: Option<Var<T>>,
            spec: Spec,
        }

        impl<T: Element> $name<T> {
            fn from_parts((spec, p): (Spec, RnnParams<T>)) -> Self {
                $name {
                    weight_ih: p.weight_ih,
                    weight_hh: p.weight_hh,
                    bias_ih: p.bias_ih,
                    bias_hh: p.bias_hh,
                    spec,
                }
            }

            /// The parameters as the kernel takes them (cheap handle clones).
            fn params(&self) -> RnnParams<T> {
                RnnParams {
                    weight_ih: self.weight_ih.clone(),
                    weight_hh: self.weight_hh.clone(),
                    bias_ih: self.bias_ih.clone(),
                    bias_hh: self.bias_hh.clone(),
                }
            }

            /// `input_size`.
            pub fn input_size(&self) -> usize {
                self.spec.input_size
            }

            /// `hidden_size`.
            pub fn hidden_size(&self) -> usize {
                self.spec.hidden_size
            }
        }

        impl<T: Element> Module<T> for $name<T> {
            fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
                f("weight_ih", &self.weight_ih, StateKind::Parameter);
                f("weight_hh", &self.weight_hh, StateKind::Parameter);
                if let Some(b) = &self.bias_ih {
                    f("bias_ih", b, StateKind::Parameter);
                }
                if let Some(b) = &self.bias_hh {
                    f("bias_hh", b, StateKind::Parameter);
                }
            }
        }
    };
}

cell_layer! {
    /// One step of an Elman RNN, like `nn.RNNCell(input_size, hidden_size, bias,
    /// nonlinearity)`: `h' = act(W_ih x + b_ih + W_hh h + b_hh)`. The parameters are
    /// public fields (PyTorch's names and layouts) and initialised uniform in
    /// `±1/√hidden_size`.
    ///
    /// ```
    /// use strata_nn::{RNNCell, RnnNonlinearity};
    /// use strata_autograd::Var;
    /// use strata_tensor::{Tensor, seeded_rng};
    ///
    /// let cell = RNNCell::<f32>::new(10, 20, true, RnnNonlinearity::Tanh, &mut seeded_rng(0))?;
    /// let h = cell.forward(&Var::new(Tensor::ones(&[3, 10])), None)?;
    /// assert_eq!(h.shape(), &[3, 20]);
    /// # Ok::<(), strata_nn::NnError>(())
    /// ```
    RNNCell
}

cell_layer! {
    /// One step of an LSTM, like `nn.LSTMCell(input_size, hidden_size, bias)`, gates
    /// i, f, g, o.
    ///
    /// ```
    /// use strata_nn::LSTMCell;
    /// use strata_autograd::Var;
    /// use strata_tensor::{Tensor, seeded_rng};
    ///
    /// let cell = LSTMCell::<f32>::new(10, 20, true, &mut seeded_rng(0))?;
    /// let (h, c) = cell.forward(&Var::new(Tensor::ones(&[3, 10])), None)?;
    /// let (h, c) = cell.forward(&Var::new(Tensor::ones(&[3, 10])), Some((&h, &c)))?;
    /// assert_eq!((h.shape(), c.shape()), (&[3, 20][..], &[3, 20][..]));
    /// # Ok::<(), strata_nn::NnError>(())
    /// ```
    LSTMCell
}

cell_layer! {
    /// One step of a GRU, like `nn.GRUCell(input_size, hidden_size, bias)`, gates r, z, n.
    ///
    /// ```
    /// use strata_nn::GRUCell;
    /// use strata_autograd::Var;
    /// use strata_tensor::{Tensor, seeded_rng};
    ///
    /// let cell = GRUCell::<f32>::new(10, 20, true, &mut seeded_rng(0))?;
    /// let h = cell.forward(&Var::new(Tensor::ones(&[10])), None)?; // unbatched
    /// assert_eq!(h.shape(), &[20]);
    /// # Ok::<(), strata_nn::NnError>(())
    /// ```
    GRUCell
}

impl<T: Element> RNNCell<T> {
    /// A cell with PyTorch's initialisation drawn from `rng`.
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) for a zero `hidden_size`.
    pub fn new<R: Rng + ?Sized>(
        input_size: usize,
        hidden_size: usize,
        bias: bool,
        nonlinearity: RnnNonlinearity,
        rng: &mut R,
    ) -> Result<Self> {
        let spec = Spec {
            layer: "RNNCell",
            mode: nonlinearity.mode(),
            input_size,
            hidden_size,
        };
        Ok(Self::from_parts(spec.init(bias, rng)?))
    }

    /// The nonlinearity.
    pub fn nonlinearity(&self) -> RnnNonlinearity {
        RnnNonlinearity::of(self.spec.mode)
    }

    /// The next hidden state from `x` and `h` (zeros when `None`).
    ///
    /// # Shapes
    /// `x` `[N, input_size]` or `[input_size]`; `h` and the result `[N, hidden_size]` or
    /// `[hidden_size]`.
    ///
    /// # Errors
    /// [`NnError::Input`](crate::NnError::Input) when `x` is not 1-d or 2-d, its last
    /// dimension is not `input_size`, or `h` does not fit it.
    pub fn forward(&self, x: &Var<T>, h: Option<&Var<T>>) -> Result<Var<T>> {
        let [h] = self.spec.step(&self.params(), x, (h, None), [0])?;
        Ok(h)
    }
}

impl<T: Element> LSTMCell<T> {
    /// A cell with PyTorch's initialisation drawn from `rng`.
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) for a zero `hidden_size`.
    pub fn new<R: Rng + ?Sized>(
        input_size: usize,
        hidden_size: usize,
        bias: bool,
        rng: &mut R,
    ) -> Result<Self> {
        let spec = Spec {
            layer: "LSTMCell",
            mode: RecurrentMode::Lstm,
            input_size,
            hidden_size,
        };
        Ok(Self::from_parts(spec.init(bias, rng)?))
    }

    /// The next `(h, c)` from `x` and `state` (zeros when `None`). Shapes as
    /// [`RNNCell::forward`], `c` like `h`.
    ///
    /// # Errors
    /// As [`RNNCell::forward`], for both states.
    pub fn forward(
        &self,
        x: &Var<T>,
        state: Option<(&Var<T>, &Var<T>)>,
    ) -> Result<(Var<T>, Var<T>)> {
        let [h, c] = self.spec.step(&self.params(), x, state.unzip(), [0, 1])?;
        Ok((h, c))
    }
}

impl<T: Element> GRUCell<T> {
    /// A cell with PyTorch's initialisation drawn from `rng`.
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) for a zero `hidden_size`.
    pub fn new<R: Rng + ?Sized>(
        input_size: usize,
        hidden_size: usize,
        bias: bool,
        rng: &mut R,
    ) -> Result<Self> {
        let spec = Spec {
            layer: "GRUCell",
            mode: RecurrentMode::Gru,
            input_size,
            hidden_size,
        };
        Ok(Self::from_parts(spec.init(bias, rng)?))
    }

    /// The next hidden state from `x` and `h` (zeros when `None`). Shapes as
    /// [`RNNCell::forward`].
    ///
    /// # Errors
    /// As [`RNNCell::forward`].
    pub fn forward(&self, x: &Var<T>, h: Option<&Var<T>>) -> Result<Var<T>> {
        let [h] = self.spec.step(&self.params(), x, (h, None), [0])?;
        Ok(h)
    }
}
