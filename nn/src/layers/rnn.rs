//! Recurrent layers: RNN, LSTM, GRU and their cells, with PyTorch's parameter names.
//!
//! Each layer and direction runs as one fused op over the whole sequence
//! ([`Var::recurrent_sequence`]): one GEMM for the input projection of every step, the
//! recurrence in one kernel, and a hand-written backward. The cells run the same kernels
//! on a sequence of length one.

use std::sync::Mutex;

use strata_autograd::{RecurrentParams, Var};
use strata_tensor::rand::Rng;
use strata_tensor::rand::rngs::StdRng;
use strata_tensor::{Element, RecurrentMode, seeded_rng};

use crate::error::{config_error, input_error};
use crate::init::uniform_parameter;
use crate::{Module, Result, StateKind};

mod cell;

pub use cell::{GRUCell, LSTMCell, RNNCell};

/// The nonlinearity of an Elman [`RNN`] or [`RNNCell`] (`nonlinearity='tanh'` or
/// `'relu'`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RnnNonlinearity {
    /// `tanh` (PyTorch's default).
    #[default]
    Tanh,
    /// `relu`.
    Relu,
}

impl RnnNonlinearity {
    /// The kernel that runs this nonlinearity.
    fn mode(self) -> RecurrentMode {
        match self {
            RnnNonlinearity::Tanh => RecurrentMode::RnnTanh,
            RnnNonlinearity::Relu => RecurrentMode::RnnRelu,
        }
    }

    /// The nonlinearity of an RNN kernel.
    fn of(mode: RecurrentMode) -> Self {
        match mode {
            RecurrentMode::RnnRelu => RnnNonlinearity::Relu,
            _ => RnnNonlinearity::Tanh,
        }
    }
}

/// The settings of [`RNN`], [`LSTM`] and [`GRU`]; [`new`](RnnConfig::new) gives
/// PyTorch's defaults (one layer, with biases, time-major, no dropout, one direction).
///
/// ```
/// use strata_nn::RnnConfig;
/// let c = RnnConfig::new(10, 20).num_layers(2).bidirectional(true).dropout(0.1);
/// assert_eq!((c.num_layers, c.bidirectional, c.batch_first), (2, true, false));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RnnConfig {
    /// Features of each input step.
    pub input_size: usize,
    /// Features of the hidden state.
    pub hidden_size: usize,
    /// Stacked layers; layer `k > 0` reads layer `k − 1`'s output.
    pub num_layers: usize,
    /// Whether the layers have `bias_ih` and `bias_hh`.
    pub bias: bool,
    /// Input and output as `[N, L, features]` instead of `[L, N, features]` (the states
    /// stay `[layers·D, N, H]`, as in PyTorch).
    pub batch_first: bool,
    /// Dropout probability on every layer's output but the last, in train mode.
    pub dropout: f64,
    /// Whether each layer also runs backwards in time (`D = 2`).
    pub bidirectional: bool,
    /// Seed of the dropout RNG.
    pub seed: u64,
}

impl RnnConfig {
    /// `input_size` and `hidden_size` with PyTorch's defaults for the rest.
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        RnnConfig {
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            bidirectional: false,
            seed: 0,
        }
    }
    /// The number of stacked layers.
    pub fn num_layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }
    /// With or without biases.
    pub fn bias(mut self, b: bool) -> Self {
        self.bias = b;
        self
    }
    /// Batch-first input and output.
    pub fn batch_first(mut self, b: bool) -> Self {
        self.batch_first = b;
        self
    }
    /// The dropout probability between layers.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }
    /// One or two directions.
    pub fn bidirectional(mut self, b: bool) -> Self {
        self.bidirectional = b;
        self
    }
    /// The dropout RNG's seed.
    pub fn seed(mut self, s: u64) -> Self {
        self.seed = s;
        self
    }

    /// `D`: 2 when bidirectional, else 1.
    pub fn num_directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }
}

/// The parameters of one layer and direction (or of a cell), named as in PyTorch:
/// `weight_ih` `[G·H, in]`, `weight_hh` `[G·H, H]`, `bias_ih` and `bias_hh` `[G·H]`, with
/// `G` gates (1 for RNN, 4 for LSTM in the order i, f, g, o, 3 for GRU in the order
/// r, z, n).
pub struct RnnParams<T: Element = f32> {
    /// `weight_ih_l{k}` (`[G·H, in]`).
    pub weight_ih: Var<T>,
    /// `weight_hh_l{k}` (`[G·H, H]`).
    pub weight_hh: Var<T>,
    /// `bias_ih_l{k}` (`[G·H]`), when the layer has biases.
    pub bias_ih: Option<Var<T>>,
    /// `bias_hh_l{k}` (`[G·H]`), when the layer has biases.
    pub bias_hh: Option<Var<T>>,
}

impl<T: Element> RnnParams<T> {
    /// Every tensor uniform in `±1/√hidden_size`, as PyTorch initialises recurrent layers.
    fn init<R: Rng + ?Sized>(
        gates: usize,
        input: usize,
        hidden: usize,
        bias: bool,
        rng: &mut R,
    ) -> Self {
        let b = T::from_f64(1.0 / (hidden as f64).sqrt());
        let mut u = |shape: &[usize]| uniform_parameter(shape, b, rng);
        let weight_ih = u(&[gates * hidden, input]);
        let weight_hh = u(&[gates * hidden, hidden]);
        let bias_ih = bias.then(|| u(&[gates * hidden]));
        let bias_hh = bias.then(|| u(&[gates * hidden]));
        RnnParams {
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
        }
    }

    /// Checks the shapes: `[G·H, input]`, `[G·H, H]`, and biases `[G·H]` iff `bias`.
    fn check(
        &self,
        layer: &'static str,
        gates: usize,
        input: usize,
        hidden: usize,
        bias: bool,
    ) -> Result<()> {
        let gh = gates * hidden;
        let shape = |v: &Option<Var<T>>| v.as_ref().map(|v| v.shape().to_vec());
        let ok = self.weight_ih.shape() == [gh, input]
            && self.weight_hh.shape() == [gh, hidden]
            && [&self.bias_ih, &self.bias_hh]
                .iter()
                .all(|b| shape(b) == bias.then(|| vec![gh]));
        if ok {
            return Ok(());
        }
        Err(config_error(
            layer,
            format!(
                "expected weight_ih [{gh}, {input}], weight_hh [{gh}, {hidden}] and {}, got \
                 {:?}, {:?}, {:?} and {:?}",
                if bias {
                    format!("biases [{gh}]")
                } else {
                    "no biases".into()
                },
                self.weight_ih.shape(),
                self.weight_hh.shape(),
                shape(&self.bias_ih),
                shape(&self.bias_hh),
            ),
        ))
    }

    fn as_op(&self) -> RecurrentParams<'_, T> {
        RecurrentParams {
            w_ih: &self.weight_ih,
            w_hh: &self.weight_hh,
            b_ih: self.bias_ih.as_ref(),
            b_hh: self.bias_hh.as_ref(),
        }
    }

    /// Visits the four tensors as `weight_ih{suffix}`, ... in PyTorch's order.
    fn visit(&self, suffix: &str, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        f(
            &format!("weight_ih{suffix}"),
            &self.weight_ih,
            StateKind::Parameter,
        );
        f(
            &format!("weight_hh{suffix}"),
            &self.weight_hh,
            StateKind::Parameter,
        );
        if let Some(b) = &self.bias_ih {
            f(&format!("bias_ih{suffix}"), b, StateKind::Parameter);
        }
        if let Some(b) = &self.bias_hh {
            f(&format!("bias_hh{suffix}"), b, StateKind::Parameter);
        }
    }
}

/// Validates the settings of a stack, as `nn.RNNBase.__init__` does.
fn check_config(layer: &'static str, config: &RnnConfig) -> Result<()> {
    let fail = |msg: String| Err(config_error(layer, msg));
    if config.hidden_size == 0 {
        return fail("hidden_size must be greater than zero".into());
    }
    if config.num_layers == 0 {
        return fail("num_layers must be greater than zero".into());
    }
    // Shapes are [G·H, D·H] with up to four gates and two directions, and there are
    // L·D sets of parameters: sizes from a record must not wrap these products.
    let dirs = config.num_directions();
    if config.hidden_size.checked_mul(4 * dirs).is_none() {
        return fail(format!("hidden_size {} is too large", config.hidden_size));
    }
    if config.num_layers.checked_mul(dirs).is_none() {
        return fail(format!("num_layers {} is too large", config.num_layers));
    }
    if !(0.0..=1.0).contains(&config.dropout) {
        return fail(format!(
            "dropout should be a number in range [0, 1] representing the probability of an \
             element being zeroed, got {}",
            config.dropout
        ));
    }
    Ok(())
}

/// The input features of layer `k`: `input_size`, then the previous layer's `D·H`.
fn layer_input_size(config: &RnnConfig, k: usize) -> usize {
    if k == 0 {
        config.input_size
    } else {
        config.num_directions() * config.hidden_size
    }
}

/// `(output, h_n, c_n)`, `c_n` for the LSTM only.
type StackOutput<T> = (Var<T>, Var<T>, Option<Var<T>>);

/// What RNN, LSTM and GRU share: the mode, the config, train/eval and the dropout RNG.
struct Stack<T: Element> {
    layer: &'static str,
    mode: RecurrentMode,
    config: RnnConfig,
    params: Vec<RnnParams<T>>,
    training: bool,
    rng: Mutex<StdRng>,
}

impl<T: Element> Stack<T> {
    fn new<R: Rng + ?Sized>(
        layer: &'static str,
        mode: RecurrentMode,
        config: RnnConfig,
        rng: &mut R,
    ) -> Result<Self> {
        check_config(layer, &config)?;
        let (h, dirs) = (config.hidden_size, config.num_directions());
        // Pushed one by one, not collected: a range's exact size would reserve room for
        // `num_layers` sets up front, before any tensor allocation (which an allocation
        // limit can refuse) has been made — terabytes for a hostile record's 2^40 layers.
        let mut params = Vec::new();
        for i in 0..config.num_layers * dirs {
            let input = layer_input_size(&config, i / dirs);
            params.push(RnnParams::init(mode.gates(), input, h, config.bias, rng));
        }
        Self::from_params(layer, mode, config, params)
    }

    /// A stack around given parameters, checked against the config.
    fn from_params(
        layer: &'static str,
        mode: RecurrentMode,
        config: RnnConfig,
        params: Vec<RnnParams<T>>,
    ) -> Result<Self> {
        check_config(layer, &config)?;
        let (h, dirs) = (config.hidden_size, config.num_directions());
        let want = config.num_layers * dirs;
        if params.len() != want {
            return Err(config_error(
                layer,
                format!(
                    "expected {want} sets of parameters (num_layers * num_directions), got {}",
                    params.len()
                ),
            ));
        }
        for (i, p) in params.iter().enumerate() {
            let input = layer_input_size(&config, i / dirs);
            p.check(layer, mode.gates(), input, h, config.bias)?;
        }
        Ok(Stack {
            layer,
            mode,
            rng: Mutex::new(seeded_rng(config.seed)),
            config,
            params,
            training: true,
        })
    }

    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        let dirs = self.config.num_directions();
        for (i, p) in self.params.iter().enumerate() {
            let reverse = if i % dirs == 1 { "_reverse" } else { "" };
            p.visit(&format!("_l{}{reverse}", i / dirs), f);
        }
    }

    /// Checks an initial state against the input: `[layers·D, N, H]`, or `[layers·D, H]`
    /// for an unbatched input. Returns it batched.
    fn check_state(&self, which: &str, s: &Var<T>, n: usize, batched: bool) -> Result<Var<T>> {
        let c = &self.config;
        let rows = c.num_layers * c.num_directions();
        let want = if batched {
            vec![rows, n, c.hidden_size]
        } else {
            vec![rows, c.hidden_size]
        };
        let got = s.shape();
        let fail = |msg: String| Err(input_error(self.layer, msg));
        if got.len() != want.len() {
            return fail(format!(
                "for {} input, {which} should be {}-D [num_layers * num_directions, {}H], got \
                 {got:?}",
                if batched {
                    "batched 3-D"
                } else {
                    "unbatched 2-D"
                },
                want.len(),
                if batched { "N, " } else { "" }
            ));
        }
        if batched && got[1] != n && got[0] == rows && got[2] == c.hidden_size {
            return fail(format!(
                "input batch size {n} doesn't match {which} batch size {} ({which} {got:?})",
                got[1]
            ));
        }
        if got != want.as_slice() {
            return fail(format!("expected {which} of shape {want:?}, got {got:?}"));
        }
        Ok(if batched { s.clone() } else { s.unsqueeze(1)? })
    }

    /// The whole stack over `x`: `(output, h_n, c_n)` (`c_n` for the LSTM).
    fn forward(
        &self,
        x: &Var<T>,
        h0: Option<&Var<T>>,
        c0: Option<&Var<T>>,
    ) -> Result<StackOutput<T>> {
        let c = &self.config;
        let fail = |msg: String| Err(input_error(self.layer, msg));
        let s = x.shape();
        if s.len() != 2 && s.len() != 3 {
            return fail(format!(
                "expected input to be 2-D [L, {in}] or 3-D [{}, {in}], got {s:?}",
                if c.batch_first { "N, L" } else { "L, N" },
                in = c.input_size
            ));
        }
        if s[s.len() - 1] != c.input_size {
            return fail(format!(
                "input.size(-1) must be equal to input_size. Expected {}, got {} (input {s:?})",
                c.input_size,
                s[s.len() - 1]
            ));
        }
        let batched = s.len() == 3;
        let x = match (batched, c.batch_first) {
            (false, _) => x.unsqueeze(1)?,
            (true, true) => x.transpose(0, 1)?,
            (true, false) => x.clone(),
        };
        let (l, n) = (x.shape()[0], x.shape()[1]);
        if l == 0 {
            return fail(format!(
                "expected a sequence length larger than 0, got input {s:?}"
            ));
        }
        let h0 = h0
            .map(|h| self.check_state("h0", h, n, batched))
            .transpose()?;
        let c0 = c0
            .map(|s| self.check_state("c0", s, n, batched))
            .transpose()?;

        let lstm = self.mode == RecurrentMode::Lstm;
        let dirs = c.num_directions();
        let mut input = x;
        let (mut h_n, mut c_n) = (Vec::new(), Vec::new());
        for k in 0..c.num_layers {
            let mut outs = Vec::with_capacity(dirs);
            for dir in 0..dirs {
                let i = k * dirs + dir;
                let h0 = h0.as_ref().map(|h| h.select(0, i as isize)).transpose()?;
                let c0 = c0.as_ref().map(|s| s.select(0, i as isize)).transpose()?;
                let reverse = dir == 1;
                let packed = input.recurrent_sequence(
                    self.mode,
                    self.params[i].as_op(),
                    h0.as_ref(),
                    c0.as_ref(),
                    reverse,
                )?;
                // The packed output is [L, N, H] (LSTM: [L + 1, N, H] with c_n last); the
                // final state is the last step taken: step L − 1, or 0 in reverse.
                h_n.push(packed.narrow(0, if reverse { 0 } else { l - 1 }, 1)?);
                if lstm {
                    c_n.push(packed.narrow(0, l, 1)?);
                    outs.push(packed.narrow(0, 0, l)?);
                } else {
                    outs.push(packed);
                }
            }
            input = if dirs == 1 {
                outs.pop().expect("one direction")
            } else {
                Var::cat(&outs, 2)?
            };
            if k + 1 < c.num_layers && c.dropout > 0.0 && self.training {
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                input = crate::functional::dropout(&input, c.dropout, true, &mut *rng)?;
            }
        }
        let join = |mut parts: Vec<Var<T>>| -> Result<Var<T>> {
            let v = if parts.len() == 1 {
                parts.pop().expect("one part")
            } else {
                Var::cat(&parts, 0)?
            };
            Ok(if batched { v } else { v.squeeze(1)? })
        };
        let output = match (batched, c.batch_first) {
            (false, _) => input.squeeze(1)?,
            (true, true) => input.transpose(0, 1)?,
            (true, false) => input,
        };
        let c_n = if lstm { Some(join(c_n)?) } else { None };
        Ok((output, join(h_n)?, c_n))
    }
}

macro_rules! stack_layer {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name<T: Element = f32> {
            stack: Stack<T>,
        }

        impl<T: Element> $name<T> {
            /// The config.
            pub fn config(&self) -> &RnnConfig {
                &self.stack.config
            }

            /// The parameters, one entry per layer and direction in state-dict order
            /// (index `layer · D + direction`, the reverse direction second).
            pub fn params(&self) -> &[RnnParams<T>] {
                &self.stack.params
            }

            /// The parameters of `layer`, in `reverse` direction or not (like PyTorch's
            /// `weight_ih_l{layer}` and `weight_ih_l{layer}_reverse`), `None` out of range.
            pub fn layer_params(&self, layer: usize, reverse: bool) -> Option<&RnnParams<T>> {
                let dirs = self.stack.config.num_directions();
                if reverse && dirs == 1 {
                    return None;
                }
                self.stack.params.get(layer * dirs + usize::from(reverse))
            }

            /// Whether the layer is in train mode (dropout between layers applies).
            pub fn is_training(&self) -> bool {
                self.stack.training
            }
        }

        impl<T: Element> Module<T> for $name<T> {
            fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
                self.stack.visit_state(f);
            }

            fn set_training(&mut self, training: bool) {
                self.stack.training = training;
            }
        }
    };
}

stack_layer! {
    /// A multi-layer Elman RNN, like `nn.RNN(input_size, hidden_size, num_layers,
    /// nonlinearity, bias, batch_first, dropout, bidirectional)`:
    /// `h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`.
    ///
    /// ```
    /// use strata_nn::{RNN, RnnConfig, RnnNonlinearity};
    /// use strata_autograd::Var;
    /// use strata_tensor::{Tensor, seeded_rng};
    ///
    /// let rnn = RNN::<f32>::new(RnnConfig::new(10, 20).num_layers(2), RnnNonlinearity::Tanh,
    ///     &mut seeded_rng(0))?;
    /// let x = Var::new(Tensor::randn(&[5, 3, 10], &mut seeded_rng(1)));
    /// let (output, h_n) = rnn.forward(&x, None)?;
    /// assert_eq!((output.shape(), h_n.shape()), (&[5, 3, 20][..], &[2, 3, 20][..]));
    /// # Ok::<(), strata_nn::NnError>(())
    /// ```
    RNN
}

stack_layer! {
    /// A multi-layer LSTM, like `nn.LSTM(input_size, hidden_size, num_layers, bias,
    /// batch_first, dropout, bidirectional)`, gates in PyTorch's order i, f, g, o:
    /// `c_t = f ⊙ c_{t-1} + i ⊙ g`, `h_t = o ⊙ tanh(c_t)`.
    ///
    /// ```
    /// use strata_nn::{LSTM, Module, RnnConfig};
    /// use strata_autograd::Var;
    /// use strata_tensor::{Tensor, seeded_rng};
    ///
    /// let lstm = LSTM::<f32>::new(RnnConfig::new(10, 20).batch_first(true), &mut seeded_rng(0))?;
    /// let x = Var::new(Tensor::randn(&[3, 5, 10], &mut seeded_rng(1))); // [N, L, in]
    /// let (output, (h_n, c_n)) = lstm.forward(&x, None)?;
    /// assert_eq!(output.shape(), &[3, 5, 20]);
    /// assert_eq!((h_n.shape(), c_n.shape()), (&[1, 3, 20][..], &[1, 3, 20][..]));
    /// output.square().mean_all().backward()?;
    /// assert!(lstm.parameters().iter().all(|p| p.grad().is_some()));
    /// # Ok::<(), strata_nn::NnError>(())
    /// ```
    LSTM
}

stack_layer! {
    /// A multi-layer GRU, like `nn.GRU(input_size, hidden_size, num_layers, bias,
    /// batch_first, dropout, bidirectional)`, gates in PyTorch's order r, z, n:
    /// `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`, `h' = (1 − z) ⊙ n + z ⊙ h`.
    ///
    /// ```
    /// use strata_nn::{GRU, RnnConfig};
    /// use strata_autograd::Var;
    /// use strata_tensor::{Tensor, seeded_rng};
    ///
    /// let gru = GRU::<f32>::new(RnnConfig::new(10, 20).bidirectional(true), &mut seeded_rng(0))?;
    /// let x = Var::new(Tensor::randn(&[5, 10], &mut seeded_rng(1))); // unbatched [L, in]
    /// let (output, h_n) = gru.forward(&x, None)?;
    /// assert_eq!((output.shape(), h_n.shape()), (&[5, 40][..], &[2, 20][..]));
    /// # Ok::<(), strata_nn::NnError>(())
    /// ```
    GRU
}

impl<T: Element> RNN<T> {
    /// A layer with PyTorch's initialisation (every parameter uniform in
    /// `±1/√hidden_size`) drawn from `rng`.
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) for a zero `hidden_size` or
    /// `num_layers`, sizes so large that the parameter shapes overflow, or `dropout`
    /// outside `[0, 1]`.
    pub fn new<R: Rng + ?Sized>(
        config: RnnConfig,
        nonlinearity: RnnNonlinearity,
        rng: &mut R,
    ) -> Result<Self> {
        Ok(RNN {
            stack: Stack::new("RNN", nonlinearity.mode(), config, rng)?,
        })
    }

    /// A layer around given parameters, one entry per layer and direction in the order of
    /// [`params`](RNN::params) (PyTorch's `_flat_weights`).
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) for a bad config, or parameters whose
    /// number or shapes do not fit it.
    pub fn from_params(
        config: RnnConfig,
        nonlinearity: RnnNonlinearity,
        params: Vec<RnnParams<T>>,
    ) -> Result<Self> {
        Ok(RNN {
            stack: Stack::from_params("RNN", nonlinearity.mode(), config, params)?,
        })
    }

    /// The nonlinearity.
    pub fn nonlinearity(&self) -> RnnNonlinearity {
        RnnNonlinearity::of(self.stack.mode)
    }

    /// Runs the sequence `x` from the initial state `h0` (zeros when `None`); returns
    /// `(output, h_n)`.
    ///
    /// # Shapes
    /// - `x`: `[L, N, input_size]`, `[N, L, input_size]` when `batch_first`, or unbatched
    ///   `[L, input_size]`.
    /// - `h0`, `h_n`: `[num_layers · D, N, hidden_size]` (never batch-first), unbatched
    ///   `[num_layers · D, hidden_size]`.
    /// - `output`: `[L, N, D · hidden_size]` (batch-first or unbatched like `x`), the last
    ///   layer's hidden state at every step; for `D = 2` the forward direction's features
    ///   come first.
    ///
    /// # Errors
    /// [`NnError::Input`](crate::NnError::Input) when `x` is not 2-d or 3-d, its last
    /// dimension is not `input_size`, the sequence is empty, or `h0` has the wrong shape
    /// (including another batch size).
    pub fn forward(&self, x: &Var<T>, h0: Option<&Var<T>>) -> Result<(Var<T>, Var<T>)> {
        let (output, h_n, _) = self.stack.forward(x, h0, None)?;
        Ok((output, h_n))
    }
}

impl<T: Element> LSTM<T> {
    /// A layer with PyTorch's initialisation (every parameter uniform in
    /// `±1/√hidden_size`) drawn from `rng`.
    ///
    /// # Errors
    /// As [`RNN::new`].
    pub fn new<R: Rng + ?Sized>(config: RnnConfig, rng: &mut R) -> Result<Self> {
        Ok(LSTM {
            stack: Stack::new("LSTM", RecurrentMode::Lstm, config, rng)?,
        })
    }

    /// A layer around given parameters (see [`RNN::from_params`]).
    ///
    /// # Errors
    /// As [`RNN::from_params`].
    pub fn from_params(config: RnnConfig, params: Vec<RnnParams<T>>) -> Result<Self> {
        Ok(LSTM {
            stack: Stack::from_params("LSTM", RecurrentMode::Lstm, config, params)?,
        })
    }

    /// Runs the sequence `x` from the initial state `(h0, c0)` (zeros when `None`);
    /// returns `(output, (h_n, c_n))`. Shapes as [`RNN::forward`], with `c0` and `c_n`
    /// shaped like `h0`.
    ///
    /// # Errors
    /// As [`RNN::forward`], for `h0` and `c0`.
    #[allow(clippy::type_complexity)]
    pub fn forward(
        &self,
        x: &Var<T>,
        state: Option<(&Var<T>, &Var<T>)>,
    ) -> Result<(Var<T>, (Var<T>, Var<T>))> {
        let (h0, c0) = state.unzip();
        let (output, h_n, c_n) = self.stack.forward(x, h0, c0)?;
        Ok((output, (h_n, c_n.expect("the LSTM returns c_n"))))
    }
}

impl<T: Element> GRU<T> {
    /// A layer with PyTorch's initialisation (every parameter uniform in
    /// `±1/√hidden_size`) drawn from `rng`.
    ///
    /// # Errors
    /// As [`RNN::new`].
    pub fn new<R: Rng + ?Sized>(config: RnnConfig, rng: &mut R) -> Result<Self> {
        Ok(GRU {
            stack: Stack::new("GRU", RecurrentMode::Gru, config, rng)?,
        })
    }

    /// A layer around given parameters (see [`RNN::from_params`]).
    ///
    /// # Errors
    /// As [`RNN::from_params`].
    pub fn from_params(config: RnnConfig, params: Vec<RnnParams<T>>) -> Result<Self> {
        Ok(GRU {
            stack: Stack::from_params("GRU", RecurrentMode::Gru, config, params)?,
        })
    }

    /// Runs the sequence `x` from the initial state `h0` (zeros when `None`); returns
    /// `(output, h_n)`. Shapes as [`RNN::forward`].
    ///
    /// # Errors
    /// As [`RNN::forward`].
    pub fn forward(&self, x: &Var<T>, h0: Option<&Var<T>>) -> Result<(Var<T>, Var<T>)> {
        let (output, h_n, _) = self.stack.forward(x, h0, None)?;
        Ok((output, h_n))
    }
}
