//! The recurrent layers: gradchecks over random configurations (f64), outputs, final
//! states and every gradient against PyTorch fixtures (`fixtures/generate_rnn.py`),
//! state-dict names both ways, train/eval dropout, and the errors.
//!
//! gradcheck differentiates with respect to its own vars, so each closure rebuilds the
//! layer around them: `RNN/LSTM/GRU::from_params`, or the public fields of a cell. The
//! closure returns the output, the final hidden state and (LSTM) the final cell state
//! flattened into one vector, which gradcheck projects on random weights: the gradient
//! of `Σ r₁ ⊙ out + Σ r₂ ⊙ h_n + Σ r₃ ⊙ c_n`.

use crate::common;

use std::path::PathBuf;

use common::*;
use proptest::prelude::*;
use strata_autograd::Var;
use strata_nn::*;
use strata_tensor::{Tensor, seeded_rng};

// ---------------------------------------------------------------------------------------
// The sequence layers behind one interface.
// ---------------------------------------------------------------------------------------

/// Which layer a case builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Rnn(RnnNonlinearity),
    Lstm,
    Gru,
}

impl Kind {
    fn gates(self) -> usize {
        match self {
            Kind::Rnn(_) => 1,
            Kind::Lstm => 4,
            Kind::Gru => 3,
        }
    }
}

/// `(output, h_n, c_n)` of any of the three layers.
type SeqOut = (Var<f64>, Var<f64>, Option<Var<f64>>);

/// A layer or cell run on `(x, h0, c0)`.
type RunFn<'a> = dyn Fn(&Var<f64>, Option<&Var<f64>>, Option<&Var<f64>>) -> Result<SeqOut> + 'a;

/// One of RNN, LSTM, GRU.
enum Layer {
    Rnn(RNN<f64>),
    Lstm(LSTM<f64>),
    Gru(GRU<f64>),
}

impl Layer {
    fn new(kind: Kind, config: RnnConfig) -> Layer {
        let rng = &mut seeded_rng(0);
        match kind {
            Kind::Rnn(nl) => Layer::Rnn(RNN::new(config, nl, rng).unwrap()),
            Kind::Lstm => Layer::Lstm(LSTM::new(config, rng).unwrap()),
            Kind::Gru => Layer::Gru(GRU::new(config, rng).unwrap()),
        }
    }

    fn from_params(kind: Kind, config: RnnConfig, params: Vec<RnnParams<f64>>) -> Result<Layer> {
        Ok(match kind {
            Kind::Rnn(nl) => Layer::Rnn(RNN::from_params(config, nl, params)?),
            Kind::Lstm => Layer::Lstm(LSTM::from_params(config, params)?),
            Kind::Gru => Layer::Gru(GRU::from_params(config, params)?),
        })
    }

    fn module(&self) -> &dyn Module<f64> {
        match self {
            Layer::Rnn(l) => l,
            Layer::Lstm(l) => l,
            Layer::Gru(l) => l,
        }
    }

    fn module_mut(&mut self) -> &mut dyn Module<f64> {
        match self {
            Layer::Rnn(l) => l,
            Layer::Lstm(l) => l,
            Layer::Gru(l) => l,
        }
    }

    fn forward(
        &self,
        x: &Var<f64>,
        h0: Option<&Var<f64>>,
        c0: Option<&Var<f64>>,
    ) -> Result<SeqOut> {
        Ok(match self {
            Layer::Rnn(l) => {
                let (y, h) = l.forward(x, h0)?;
                (y, h, None)
            }
            Layer::Gru(l) => {
                let (y, h) = l.forward(x, h0)?;
                (y, h, None)
            }
            Layer::Lstm(l) => {
                let state = match (h0, c0) {
                    (Some(h), Some(c)) => Some((h, c)),
                    _ => None,
                };
                let (y, (h, c)) = l.forward(x, state)?;
                (y, h, Some(c))
            }
        })
    }
}

/// The parameters of a stack in state-dict order, grouped per layer and direction.
fn group_params(vars: &[Var<f64>], bias: bool) -> Vec<RnnParams<f64>> {
    vars.chunks(if bias { 4 } else { 2 })
        .map(|p| RnnParams {
            weight_ih: p[0].clone(),
            weight_hh: p[1].clone(),
            bias_ih: p.get(2).cloned(),
            bias_hh: p.get(3).cloned(),
        })
        .collect()
}

/// Uniform in [-1, 1]: weights and states.
fn unit(n: usize) -> BoxedStrategy<Vec<f64>> {
    within(n, -1.0, 1.0)
}

/// Everything in one flat vector, for gradcheck's projection.
fn flat(parts: &[&Var<f64>]) -> strata_nn::Result<Var<f64>> {
    let flat: Vec<Var<f64>> = parts
        .iter()
        .map(|v| v.reshape([-1]))
        .collect::<std::result::Result<_, _>>()?;
    Ok(Var::cat(&flat, 0)?)
}

// ---------------------------------------------------------------------------------------
// Gradchecks of the sequence layers.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct SeqCase {
    kind: Kind,
    config: RnnConfig,
    x: Tensor<f64>,
    h0: Option<Tensor<f64>>,
    c0: Option<Tensor<f64>>,
    params: Vec<Tensor<f64>>,
}

impl SeqCase {
    fn inputs(&self) -> Vec<Tensor<f64>> {
        let mut t = vec![self.x.clone()];
        t.extend(self.h0.clone());
        t.extend(self.c0.clone());
        t.extend(self.params.iter().cloned());
        t
    }

    /// The layer around `v` (laid out as [`inputs`](SeqCase::inputs)), run on it.
    fn run(&self, v: &[Var<f64>]) -> strata_nn::Result<SeqOut> {
        let states = usize::from(self.h0.is_some()) + usize::from(self.c0.is_some());
        let params = group_params(&v[1 + states..], self.config.bias);
        let layer = Layer::from_params(self.kind, self.config.clone(), params)?;
        let h0 = self.h0.as_ref().map(|_| &v[1]);
        let c0 = self.c0.as_ref().map(|_| &v[2]);
        layer.forward(&v[0], h0, c0)
    }
}

/// L ≤ 3, N ≤ 2, in and H ≤ 3, 1 or 2 layers; bidirectional or not, batch-first or not,
/// batched or not, with or without initial states and biases; values in [-1, 1] (x in
/// [-2, 2]).
fn seq_case(kind: Kind, max_layers: usize) -> impl Strategy<Value = SeqCase> {
    (
        (1..=3usize, 1..=2usize, 1..=3usize, 1..=3usize),
        1..=max_layers,
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (any::<bool>(), any::<bool>()),
    )
        .prop_flat_map(
            move |(
                (l, n, input, h),
                layers,
                (bidirectional, batch_first, batched),
                (states, bias),
            )| {
                let config = RnnConfig::new(input, h)
                    .num_layers(layers)
                    .bidirectional(bidirectional)
                    .batch_first(batch_first)
                    .bias(bias);
                let dirs = config.num_directions();
                let x_shape = match (batched, batch_first) {
                    (false, _) => vec![l, input],
                    (true, false) => vec![l, n, input],
                    (true, true) => vec![n, l, input],
                };
                let state_shape = if batched {
                    vec![layers * dirs, n, h]
                } else {
                    vec![layers * dirs, h]
                };
                let gh = kind.gates() * h;
                let mut shapes = Vec::new();
                for k in 0..layers {
                    let in_k = if k == 0 { input } else { dirs * h };
                    for _ in 0..dirs {
                        shapes.push(vec![gh, in_k]);
                        shapes.push(vec![gh, h]);
                        if bias {
                            shapes.push(vec![gh]);
                            shapes.push(vec![gh]);
                        }
                    }
                }
                let params: Vec<_> = shapes.into_iter().map(|s| filled(s, unit)).collect();
                (
                    Just(config),
                    filled(x_shape, smooth),
                    optional(states, state_shape.clone(), unit),
                    optional(states && kind == Kind::Lstm, state_shape, unit),
                    params,
                )
            },
        )
        .prop_map(move |(config, x, h0, c0, params)| SeqCase {
            kind,
            config,
            x,
            h0,
            c0,
            params,
        })
}

fn check_seq(c: &SeqCase) -> TestResult {
    check(
        |v| {
            let (y, h, cell) = c.run(v)?;
            let mut parts = vec![&y, &h];
            parts.extend(cell.as_ref());
            flat(&parts)
        },
        &c.inputs(),
    )
}

/// The smallest |pre-activation| of a one-layer ReLU RNN case, from its own outputs:
/// `a_t = W_ih x_t + b_ih + W_hh h_{t±1} + b_hh` per direction.
fn relu_margin(c: &SeqCase) -> f64 {
    let v: Vec<Var<f64>> = c.inputs().into_iter().map(Var::new).collect();
    let (y, _, _) = c.run(&v).expect("valid case");
    let cfg = &c.config;
    let (h, dirs) = (cfg.hidden_size, cfg.num_directions());
    // Time-major views of x [L, N, in] and y [L, N, D·H].
    let tm = |t: &Tensor<f64>| -> Tensor<f64> {
        match (t.ndim(), cfg.batch_first) {
            (2, _) => t.unsqueeze(1).unwrap(),
            (_, true) => t.transpose(0, 1).unwrap().contiguous(),
            _ => t.clone(),
        }
    };
    let (x, y) = (tm(&c.x), tm(&y.value()));
    let (l, n) = (x.shape()[0], x.shape()[1]);
    let stride = if c.config.bias { 4 } else { 2 };
    let mut margin = f64::INFINITY;
    for d in 0..dirs {
        let p = &c.params[d * stride..];
        let h0 = c.h0.as_ref().map(|h0| {
            let h0 = if h0.ndim() == 2 {
                h0.unsqueeze(1).unwrap()
            } else {
                h0.clone()
            };
            h0.select(0, d as isize).unwrap()
        });
        for t in 0..l {
            let prev = if d == 0 {
                t.checked_sub(1)
            } else {
                (t + 1 < l).then_some(t + 1)
            };
            let h_prev = match prev {
                Some(tp) => y
                    .select(0, tp as isize)
                    .unwrap()
                    .narrow(1, d * h, h)
                    .unwrap(),
                None => h0.clone().unwrap_or_else(|| Tensor::zeros(&[n, h])),
            };
            let xt = x.select(0, t as isize).unwrap();
            let mut a = xt.matmul(&p[0].t().unwrap()).unwrap();
            a = a.add(&h_prev.matmul(&p[1].t().unwrap()).unwrap()).unwrap();
            if c.config.bias {
                a = a.add(&p[2]).unwrap().add(&p[3]).unwrap();
            }
            margin = a.to_vec().iter().fold(margin, |m, v| m.min(v.abs()));
        }
    }
    margin
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The tanh RNN in its input, initial state and every parameter.
    #[test]
    fn rnn_tanh(c in seq_case(Kind::Rnn(RnnNonlinearity::Tanh), 2)) {
        check_seq(&c)?;
    }

    /// The ReLU RNN (one layer, so that the kinks can be kept away from: every
    /// pre-activation at least 1e-3 from zero).
    #[test]
    fn rnn_relu(c in seq_case(Kind::Rnn(RnnNonlinearity::Relu), 1)) {
        prop_assume!(relu_margin(&c) > 1e-3);
        check_seq(&c)?;
    }

    /// The LSTM in its input, (h0, c0) and every parameter, through output, h_n and c_n.
    #[test]
    fn lstm(c in seq_case(Kind::Lstm, 2)) {
        check_seq(&c)?;
    }

    /// The GRU in its input, initial state and every parameter.
    #[test]
    fn gru(c in seq_case(Kind::Gru, 2)) {
        check_seq(&c)?;
    }
}

// ---------------------------------------------------------------------------------------
// Gradchecks of the cells.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct CellCase {
    kind: Kind,
    input: usize,
    hidden: usize,
    x: Tensor<f64>,
    h: Option<Tensor<f64>>,
    c: Option<Tensor<f64>>,
    params: Vec<Tensor<f64>>,
}

impl CellCase {
    fn inputs(&self) -> Vec<Tensor<f64>> {
        let mut t = vec![self.x.clone()];
        t.extend(self.h.clone());
        t.extend(self.c.clone());
        t.extend(self.params.iter().cloned());
        t
    }

    /// `(h', c')` of the cell around `v`.
    fn run(&self, v: &[Var<f64>]) -> strata_nn::Result<(Var<f64>, Option<Var<f64>>)> {
        let states = usize::from(self.h.is_some()) + usize::from(self.c.is_some());
        let p = &v[1 + states..];
        let bias = p.len() == 4;
        let h = self.h.as_ref().map(|_| &v[1]);
        let rng = &mut seeded_rng(0);
        let (i, hs) = (self.input, self.hidden);
        macro_rules! with_params {
            ($cell:expr) => {{
                let mut cell = $cell;
                cell.weight_ih = p[0].clone();
                cell.weight_hh = p[1].clone();
                cell.bias_ih = p.get(2).cloned();
                cell.bias_hh = p.get(3).cloned();
                cell
            }};
        }
        Ok(match self.kind {
            Kind::Rnn(nl) => {
                let cell = with_params!(RNNCell::new(i, hs, bias, nl, rng)?);
                (cell.forward(&v[0], h)?, None)
            }
            Kind::Gru => {
                let cell = with_params!(GRUCell::new(i, hs, bias, rng)?);
                (cell.forward(&v[0], h)?, None)
            }
            Kind::Lstm => {
                let cell = with_params!(LSTMCell::new(i, hs, bias, rng)?);
                let state = h.map(|h| (h, &v[2]));
                let (h, c) = cell.forward(&v[0], state)?;
                (h, Some(c))
            }
        })
    }

    /// The smallest |pre-activation| `W_ih x + b_ih + W_hh h + b_hh` (ReLU cells).
    fn margin(&self) -> f64 {
        let x = if self.x.ndim() == 1 {
            self.x.unsqueeze(0).unwrap()
        } else {
            self.x.clone()
        };
        let mut a = x.matmul(&self.params[0].t().unwrap()).unwrap();
        if let Some(h) = &self.h {
            a = a
                .add(&h.matmul(&self.params[1].t().unwrap()).unwrap())
                .unwrap();
        }
        if self.params.len() == 4 {
            a = a
                .add(&self.params[2])
                .unwrap()
                .add(&self.params[3])
                .unwrap();
        }
        a.to_vec().iter().fold(f64::INFINITY, |m, v| m.min(v.abs()))
    }
}

/// N ≤ 2 (or unbatched), in and H ≤ 3, with or without state and biases.
fn cell_case(kind: Kind) -> impl Strategy<Value = CellCase> {
    (
        (1..=2usize, 1..=3usize, 1..=3usize),
        (any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_flat_map(move |((n, input, hidden), (batched, state, bias))| {
            let lead: Vec<usize> = if batched { vec![n] } else { vec![] };
            let with = |last: usize| {
                let mut s = lead.clone();
                s.push(last);
                s
            };
            let gh = kind.gates() * hidden;
            let mut shapes = vec![vec![gh, input], vec![gh, hidden]];
            if bias {
                shapes.push(vec![gh]);
                shapes.push(vec![gh]);
            }
            let params: Vec<_> = shapes.into_iter().map(|s| filled(s, unit)).collect();
            (
                Just((input, hidden)),
                filled(with(input), smooth),
                optional(state, with(hidden), unit),
                optional(state && kind == Kind::Lstm, with(hidden), unit),
                params,
            )
        })
        .prop_map(move |((input, hidden), x, h, c, params)| CellCase {
            kind,
            input,
            hidden,
            x,
            h,
            c,
            params,
        })
}

fn check_cell(c: &CellCase) -> TestResult {
    check(
        |v| {
            let (h, cell) = c.run(v)?;
            let mut parts = vec![&h];
            parts.extend(cell.as_ref());
            flat(&parts)
        },
        &c.inputs(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// RNNCell (tanh, and ReLU away from its kink).
    #[test]
    fn rnn_cell(c in cell_case(Kind::Rnn(RnnNonlinearity::Tanh))) {
        check_cell(&c)?;
        let relu = CellCase { kind: Kind::Rnn(RnnNonlinearity::Relu), ..c };
        if relu.margin() > 1e-3 {
            check_cell(&relu)?;
        }
    }

    /// LSTMCell through both h' and c'.
    #[test]
    fn lstm_cell(c in cell_case(Kind::Lstm)) {
        check_cell(&c)?;
    }

    /// GRUCell.
    #[test]
    fn gru_cell(c in cell_case(Kind::Gru)) {
        check_cell(&c)?;
    }
}

// ---------------------------------------------------------------------------------------
// PyTorch fixtures.
// ---------------------------------------------------------------------------------------

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.safetensors"))
}

/// A fixture's tensors and its metadata entry `key`.
fn load(name: &str) -> (StateDict<f64>, impl Fn(&str) -> String) {
    let path = fixture_path(name);
    let sd = StateDict::load_safetensors(&path).unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap_or_default();
    (sd, move |key: &str| {
        meta.get(key)
            .unwrap_or_else(|| panic!("{name}: no metadata {key}"))
            .clone()
    })
}

fn get(sd: &StateDict<f64>, key: &str) -> Tensor<f64> {
    sd.get(key)
        .unwrap_or_else(|| panic!("fixture lacks {key}"))
        .clone()
}

#[track_caller]
fn assert_near(got: &Tensor<f64>, want: &Tensor<f64>, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (g, w)) in got.to_vec().iter().zip(want.to_vec()).enumerate() {
        assert!(
            (g - w).abs() <= 1e-10 + 1e-8 * w.abs(),
            "{what}[{i}]: strata {g}, PyTorch {w}"
        );
    }
}

/// Loads the fixture's parameters into `module` (after checking that its state-dict keys
/// are PyTorch's, in PyTorch's order), runs `run(x, h0, c0)` on the fixture's input and
/// states, and compares the outputs and the gradients of the projected loss.
fn check_fixture(name: &str, module: &dyn Module<f64>, run: &RunFn<'_>, has_output: bool) {
    let (sd, meta) = load(name);
    let keys: Vec<String> = module.state_dict().keys().map(String::from).collect();
    assert_eq!(keys.join(","), meta("keys"), "{name}: state-dict keys");
    let mut params = StateDict::new();
    for (k, t) in sd.iter() {
        if let Some(key) = k.strip_prefix("p.") {
            params.insert(key, t.clone());
        }
    }
    module.load_state_dict(&params, true).unwrap();
    let x = Var::parameter(get(&sd, "x"));
    let h0 = sd.get("h0").map(|t| Var::parameter(t.clone()));
    let c0 = sd.get("c0").map(|t| Var::parameter(t.clone()));
    let (y, h_n, c_n) = run(&x, h0.as_ref(), c0.as_ref()).unwrap();
    let mut loss = h_n.mul(&Var::new(get(&sd, "proj_h"))).unwrap().sum_all();
    assert_near(&h_n.value(), &get(&sd, "h_n"), &format!("{name} h_n"));
    if has_output {
        assert_near(&y.value(), &get(&sd, "y"), &format!("{name} output"));
        let term = y.mul(&Var::new(get(&sd, "proj_y"))).unwrap().sum_all();
        loss = loss.add(&term).unwrap();
    }
    if let Some(c_n) = &c_n {
        assert_near(&c_n.value(), &get(&sd, "c_n"), &format!("{name} c_n"));
        let term = c_n.mul(&Var::new(get(&sd, "proj_c"))).unwrap().sum_all();
        loss = loss.add(&term).unwrap();
    }
    loss.backward().unwrap();
    let grad = |v: &Var<f64>, key: &str| {
        assert_near(&v.grad().unwrap(), &get(&sd, key), &format!("{name} {key}"));
    };
    grad(&x, "grad_x");
    if let Some(h0) = &h0 {
        grad(h0, "grad_h0");
    }
    if let Some(c0) = &c0 {
        grad(c0, "grad_c0");
    }
    for (key, p) in module.named_parameters() {
        grad(&p, &format!("g.{key}"));
    }
}

/// Runs a sequence-layer fixture on `layer`.
fn check_layer_fixture(name: &str, layer: &Layer) {
    check_fixture(
        name,
        layer.module(),
        &|x, h0, c0| layer.forward(x, h0, c0),
        true,
    );
}

// Each fixture comes from `generate_rnn.py`; the line above each call is the module
// PyTorch built (stored in the fixture's metadata as `module`).

#[test]
fn rnn_matches_pytorch() {
    // nn.RNN(3, 4), x [5, 2, 3], h0 [1, 2, 4]
    check_layer_fixture(
        "rnn_tanh",
        &Layer::new(Kind::Rnn(RnnNonlinearity::Tanh), RnnConfig::new(3, 4)),
    );
    // nn.RNN(3, 4, num_layers=2, nonlinearity='relu', bias=False), x [5, 2, 3]
    check_layer_fixture(
        "rnn_relu",
        &Layer::new(
            Kind::Rnn(RnnNonlinearity::Relu),
            RnnConfig::new(3, 4).num_layers(2).bias(false),
        ),
    );
    // nn.RNN(3, 4, nonlinearity='relu', bidirectional=True, batch_first=True),
    // x [2, 5, 3], h0 [2, 2, 4]
    check_layer_fixture(
        "rnn_relu_bidirectional_batch_first",
        &Layer::new(
            Kind::Rnn(RnnNonlinearity::Relu),
            RnnConfig::new(3, 4).bidirectional(true).batch_first(true),
        ),
    );
}

#[test]
fn lstm_matches_pytorch() {
    // nn.LSTM(3, 4), x [5, 2, 3]
    check_layer_fixture("lstm", &Layer::new(Kind::Lstm, RnnConfig::new(3, 4)));
    // nn.LSTM(3, 4, bidirectional=True), x [5, 2, 3], (h0, c0) [2, 2, 4]
    check_layer_fixture(
        "lstm_bidirectional",
        &Layer::new(Kind::Lstm, RnnConfig::new(3, 4).bidirectional(true)),
    );
    // nn.LSTM(3, 4, num_layers=2, dropout=0.3).eval(), x [6, 3, 3]
    let mut two = Layer::new(Kind::Lstm, RnnConfig::new(3, 4).num_layers(2).dropout(0.3));
    two.module_mut().eval();
    check_layer_fixture("lstm_2layer", &two);
    // nn.LSTM(3, 4, batch_first=True), x [2, 5, 3], (h0, c0) [1, 2, 4]
    check_layer_fixture(
        "lstm_batch_first",
        &Layer::new(Kind::Lstm, RnnConfig::new(3, 4).batch_first(true)),
    );
    // nn.LSTM(3, 4, bias=False), unbatched x [5, 3], (h0, c0) [1, 4]
    check_layer_fixture(
        "lstm_unbatched_nobias",
        &Layer::new(Kind::Lstm, RnnConfig::new(3, 4).bias(false)),
    );
}

#[test]
fn gru_matches_pytorch() {
    // nn.GRU(3, 4), x [5, 2, 3]
    check_layer_fixture("gru", &Layer::new(Kind::Gru, RnnConfig::new(3, 4)));
    // nn.GRU(3, 4, num_layers=2, bidirectional=True), x [5, 2, 3], h0 [4, 2, 4]
    check_layer_fixture(
        "gru_bidirectional_2layer",
        &Layer::new(
            Kind::Gru,
            RnnConfig::new(3, 4).num_layers(2).bidirectional(true),
        ),
    );
}

#[test]
fn cells_match_pytorch() {
    let rng = &mut seeded_rng(0);
    // nn.RNNCell(3, 4), x [2, 3], h [2, 4]
    let cell = RNNCell::<f64>::new(3, 4, true, RnnNonlinearity::Tanh, rng).unwrap();
    let run = |x: &Var<f64>, h: Option<&Var<f64>>, _: Option<&Var<f64>>| {
        let h = cell.forward(x, h)?;
        Ok((h.clone(), h, None))
    };
    check_fixture("rnn_cell", &cell, &run, false);
    // nn.RNNCell(3, 4, nonlinearity='relu'), unbatched x [3], no state
    let cell = RNNCell::<f64>::new(3, 4, true, RnnNonlinearity::Relu, rng).unwrap();
    let run = |x: &Var<f64>, h: Option<&Var<f64>>, _: Option<&Var<f64>>| {
        let h = cell.forward(x, h)?;
        Ok((h.clone(), h, None))
    };
    check_fixture("rnn_cell_relu_unbatched", &cell, &run, false);
    // nn.LSTMCell(3, 4), x [2, 3], (h, c) [2, 4]; nn.LSTMCell(3, 4, bias=False), no state
    for (name, bias) in [("lstm_cell", true), ("lstm_cell_nostate", false)] {
        let cell = LSTMCell::<f64>::new(3, 4, bias, rng).unwrap();
        let run = |x: &Var<f64>, h: Option<&Var<f64>>, c: Option<&Var<f64>>| {
            let (h, c) = cell.forward(x, h.zip(c))?;
            Ok((h.clone(), h, Some(c)))
        };
        check_fixture(name, &cell, &run, false);
    }
    // nn.GRUCell(3, 4), x [2, 3], h [2, 4]
    let cell = GRUCell::<f64>::new(3, 4, true, rng).unwrap();
    let run = |x: &Var<f64>, h: Option<&Var<f64>>, _: Option<&Var<f64>>| {
        let h = cell.forward(x, h)?;
        Ok((h.clone(), h, None))
    };
    check_fixture("gru_cell", &cell, &run, false);
}

/// Deterministic inputs that do not depend on an RNG implementation.
fn formula(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i * 7 % 11) as f64 - 5.0) / 4.0).collect()
}

/// The strata → PyTorch direction: the state dict of a 2-layer bidirectional LSTM and the
/// output it gives are the committed fixtures (byte for byte), which generate_rnn.py loads
/// into `nn.LSTM(3, 5, num_layers=2, bidirectional=True)` with strict=True and checks.
/// `STRATA_WRITE_FIXTURES=1` rewrites them instead.
#[test]
fn strata_state_dict_loads_into_pytorch() {
    let lstm = LSTM::<f64>::new(
        RnnConfig::new(3, 5).num_layers(2).bidirectional(true),
        &mut seeded_rng(11),
    )
    .unwrap();
    let x = Tensor::from_vec(formula(4 * 2 * 3), &[4, 2, 3]).unwrap();
    let (y, (h_n, c_n)) = lstm.forward(&Var::new(x.clone()), None).unwrap();
    let mut io = StateDict::new();
    io.insert("x", x);
    io.insert("y", y.value().contiguous());
    io.insert("h_n", h_n.value().contiguous());
    io.insert("c_n", c_n.value().contiguous());
    let dir = if std::env::var_os("STRATA_WRITE_FIXTURES").is_some() {
        fixture_path("").parent().unwrap().to_path_buf()
    } else {
        let d = std::env::temp_dir().join(format!("strata-rnn-export-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let files = [
        "lstm_strata_export.safetensors",
        "lstm_strata_export_io.safetensors",
    ];
    lstm.save_safetensors(&dir.join(files[0])).unwrap();
    io.save_safetensors(&dir.join(files[1])).unwrap();
    for name in files {
        let written = std::fs::read(dir.join(name)).unwrap();
        let committed =
            std::fs::read(fixture_path(name.trim_end_matches(".safetensors"))).unwrap_or_default();
        assert!(
            written == committed,
            "{name} differs from the committed fixture (rewrite it with STRATA_WRITE_FIXTURES=1 \
             and check it with generate_rnn.py)"
        );
    }
    // And back: the file loads into a fresh strata LSTM.
    let other = LSTM::<f64>::new(
        RnnConfig::new(3, 5).num_layers(2).bidirectional(true),
        &mut seeded_rng(12),
    )
    .unwrap();
    other.load_safetensors(&dir.join(files[0]), true).unwrap();
    assert_eq!(other.state_dict().keys().count(), 16);
    for ((_, a), (_, b)) in lstm.named_parameters().iter().zip(other.named_parameters()) {
        assert_eq!(a.to_vec(), b.to_vec());
    }
    if std::env::var_os("STRATA_WRITE_FIXTURES").is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn state_dict_names_follow_pytorch() {
    // list(nn.GRU(2, 3, num_layers=2, bidirectional=True, bias=False).state_dict())
    let gru = GRU::<f32>::new(
        RnnConfig::new(2, 3)
            .num_layers(2)
            .bidirectional(true)
            .bias(false),
        &mut seeded_rng(0),
    )
    .unwrap();
    let keys: Vec<(String, Vec<usize>)> = gru
        .named_parameters()
        .into_iter()
        .map(|(k, v)| (k, v.shape().to_vec()))
        .collect();
    let want = [
        ("weight_ih_l0", [9, 2]),
        ("weight_hh_l0", [9, 3]),
        ("weight_ih_l0_reverse", [9, 2]),
        ("weight_hh_l0_reverse", [9, 3]),
        ("weight_ih_l1", [9, 6]),
        ("weight_hh_l1", [9, 3]),
        ("weight_ih_l1_reverse", [9, 6]),
        ("weight_hh_l1_reverse", [9, 3]),
    ];
    assert_eq!(keys.len(), want.len());
    for ((k, s), (wk, ws)) in keys.iter().zip(want) {
        assert_eq!((k.as_str(), s.as_slice()), (wk, &ws[..]));
    }
    let cell = LSTMCell::<f32>::new(2, 3, true, &mut seeded_rng(0)).unwrap();
    let keys: Vec<String> = cell.state_dict().keys().map(String::from).collect();
    assert_eq!(keys, ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]);
    assert_eq!(cell.bias_hh.as_ref().unwrap().shape(), &[12]);
}

#[test]
fn initialisation_is_uniform_in_one_over_sqrt_hidden() {
    // PyTorch: every parameter ~ U(-1/√H, 1/√H).
    let lstm = LSTM::<f64>::new(RnnConfig::new(30, 64), &mut seeded_rng(3)).unwrap();
    let bound = 1.0 / 8.0;
    for (name, p) in lstm.named_parameters() {
        let v = p.to_vec();
        assert!(v.iter().all(|x| x.abs() <= bound), "{name} out of bounds");
        let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(
            max > 0.9 * bound,
            "{name} does not fill its range: max {max}"
        );
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.1 * bound, "{name} mean {mean}");
    }
    let cell = GRUCell::<f64>::new(5, 16, true, &mut seeded_rng(4)).unwrap();
    assert!(cell.weight_hh.to_vec().iter().all(|x| x.abs() <= 0.25));
}

// ---------------------------------------------------------------------------------------
// Dropout, training, f32.
// ---------------------------------------------------------------------------------------

#[test]
fn dropout_acts_between_layers_in_train_mode_only() {
    let x = Var::new(Tensor::<f64>::randn(&[4, 3, 2], &mut seeded_rng(1)));
    let config = RnnConfig::new(2, 8).num_layers(2).dropout(0.5).seed(7);
    let run = |lstm: &LSTM<f64>| lstm.forward(&x, None).unwrap().0.to_vec();
    let mut a = LSTM::<f64>::new(config.clone(), &mut seeded_rng(2)).unwrap();
    let b = LSTM::<f64>::new(config.clone(), &mut seeded_rng(2)).unwrap();
    let train = run(&a);
    // The same seed drops the same elements.
    assert_eq!(train, run(&b));
    a.eval();
    let eval = run(&a);
    assert_ne!(train, eval);
    // Dropout 0 in train mode, or no second layer, is the eval-mode result.
    let no_drop = LSTM::<f64>::new(config.clone().dropout(0.0), &mut seeded_rng(2)).unwrap();
    assert_eq!(run(&no_drop), eval);
    let one = RnnConfig::new(2, 8).dropout(0.9);
    let mut single = GRU::<f64>::new(one.clone(), &mut seeded_rng(3)).unwrap();
    let train = single.forward(&x, None).unwrap().0.to_vec();
    single.eval();
    assert_eq!(train, single.forward(&x, None).unwrap().0.to_vec());
}

#[test]
fn a_training_step_reaches_every_parameter() {
    let mut rng = seeded_rng(5);
    let config = RnnConfig::new(3, 4)
        .num_layers(2)
        .bidirectional(true)
        .batch_first(true);
    let x = Var::new(Tensor::<f32>::randn(&[2, 5, 3], &mut rng));
    let rnn = RNN::<f32>::new(config.clone(), RnnNonlinearity::Tanh, &mut rng).unwrap();
    let lstm = LSTM::<f32>::new(config.clone(), &mut rng).unwrap();
    let gru = GRU::<f32>::new(config, &mut rng).unwrap();
    let outs = [
        rnn.forward(&x, None).unwrap().0,
        lstm.forward(&x, None).unwrap().0,
        gru.forward(&x, None).unwrap().0,
    ];
    for (out, module) in outs.iter().zip([&rnn as &dyn Module<f32>, &lstm, &gru]) {
        assert_eq!(out.shape(), &[2, 5, 8]);
        out.square().mean_all().backward().unwrap();
        for (name, p) in module.named_parameters() {
            let g = p.grad().unwrap_or_else(|| panic!("{name} has no gradient"));
            assert!(g.to_vec().iter().all(|v| v.is_finite()), "{name}");
            assert!(
                g.to_vec().iter().any(|&v| v != 0.0),
                "{name} gradient is zero"
            );
        }
    }
}

#[test]
fn f32_agrees_with_f64() {
    let config = RnnConfig::new(4, 6).num_layers(2).bidirectional(true);
    let l64 = LSTM::<f64>::new(config.clone(), &mut seeded_rng(8)).unwrap();
    let l32 = LSTM::<f32>::new(config, &mut seeded_rng(8)).unwrap();
    for ((_, a), (_, b)) in l64.named_parameters().iter().zip(l32.named_parameters()) {
        b.set_value(a.value().cast()).unwrap();
    }
    let x = Tensor::<f64>::randn(&[7, 3, 4], &mut seeded_rng(9));
    let (y64, _) = l64.forward(&Var::new(x.clone()), None).unwrap();
    let (y32, _) = l32.forward(&Var::new(x.cast()), None).unwrap();
    for (a, b) in y64.to_vec().iter().zip(y32.to_vec()) {
        assert!((a - f64::from(b)).abs() < 1e-5, "{a} vs {b}");
    }
}

// ---------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------

fn input_err<T: std::fmt::Debug>(r: Result<T>, layer: &str) -> String {
    match r {
        Err(e @ NnError::Input { layer: l, .. }) if l == layer => e.to_string(),
        other => panic!("expected an input error of {layer}, got {other:?}"),
    }
}

fn config_err<T>(r: Result<T>, layer: &str) -> String {
    match r {
        Err(e @ NnError::Config { layer: l, .. }) if l == layer => e.to_string(),
        Err(other) => panic!("expected a config error of {layer}, got {other}"),
        Ok(_) => panic!("expected a config error of {layer}, got Ok"),
    }
}

#[test]
fn bad_configs_are_errors() {
    let rng = &mut seeded_rng(0);
    let msg = config_err(LSTM::<f32>::new(RnnConfig::new(3, 0), rng), "LSTM");
    assert!(msg.contains("hidden_size"), "{msg}");
    let msg = config_err(
        GRU::<f32>::new(RnnConfig::new(3, 4).num_layers(0), rng),
        "GRU",
    );
    assert!(msg.contains("num_layers"), "{msg}");
    for p in [-0.1, 1.5, f64::NAN] {
        let c = RnnConfig::new(3, 4).dropout(p);
        let msg = config_err(RNN::<f32>::new(c, RnnNonlinearity::Tanh, rng), "RNN");
        assert!(msg.contains("dropout"), "{msg}");
    }
    config_err(LSTMCell::<f32>::new(3, 0, true, rng), "LSTMCell");
    // from_params: wrong count, wrong shapes, biases that the config does not have.
    let lstm = LSTM::<f32>::new(RnnConfig::new(3, 4), rng).unwrap();
    let p = &lstm.params()[0];
    let clone = |p: &RnnParams<f32>| RnnParams {
        weight_ih: p.weight_ih.clone(),
        weight_hh: p.weight_hh.clone(),
        bias_ih: p.bias_ih.clone(),
        bias_hh: p.bias_hh.clone(),
    };
    let two = RnnConfig::new(3, 4).num_layers(2);
    config_err(LSTM::from_params(two, vec![clone(p)]), "LSTM");
    config_err(
        GRU::from_params(RnnConfig::new(3, 4), vec![clone(p)]),
        "GRU",
    );
    config_err(
        LSTM::from_params(RnnConfig::new(3, 4).bias(false), vec![clone(p)]),
        "LSTM",
    );
    assert!(LSTM::from_params(RnnConfig::new(3, 4), vec![clone(p)]).is_ok());
}

#[test]
fn bad_inputs_are_errors() {
    let rng = &mut seeded_rng(0);
    let lstm = LSTM::<f32>::new(RnnConfig::new(3, 4).num_layers(2), rng).unwrap();
    let v = |s: &[usize]| Var::new(Tensor::<f32>::zeros(s));
    // Wrong number of dimensions, wrong feature size, empty sequence.
    let msg = input_err(lstm.forward(&v(&[2, 5, 3, 1]), None), "LSTM");
    assert!(msg.contains("[2, 5, 3, 1]"), "{msg}");
    input_err(lstm.forward(&v(&[3]), None), "LSTM");
    let msg = input_err(lstm.forward(&v(&[5, 2, 4]), None), "LSTM");
    assert!(msg.contains("Expected 3, got 4"), "{msg}");
    input_err(lstm.forward(&v(&[0, 2, 3]), None), "LSTM");
    // Initial states: wrong shape, another batch size, unbatched vs batched.
    let x = v(&[5, 2, 3]);
    let (h, c) = (v(&[2, 2, 4]), v(&[2, 2, 4]));
    assert!(lstm.forward(&x, Some((&h, &c))).is_ok());
    let msg = input_err(lstm.forward(&x, Some((&v(&[1, 2, 4]), &c))), "LSTM");
    assert!(msg.contains("h0") && msg.contains("[1, 2, 4]"), "{msg}");
    let msg = input_err(lstm.forward(&x, Some((&h, &v(&[2, 3, 4])))), "LSTM");
    assert!(msg.contains("batch size 2") && msg.contains("c0"), "{msg}");
    let msg = input_err(lstm.forward(&x, Some((&v(&[2, 4]), &c))), "LSTM");
    assert!(msg.contains("3-D"), "{msg}");
    let unbatched = v(&[5, 3]);
    input_err(lstm.forward(&unbatched, Some((&h, &c))), "LSTM");
    assert!(
        lstm.forward(&unbatched, Some((&v(&[2, 4]), &v(&[2, 4]))))
            .is_ok()
    );
    // batch_first: the batch is dim 0 of x, dim 1 of the state.
    let gru = GRU::<f32>::new(RnnConfig::new(3, 4).batch_first(true), rng).unwrap();
    assert!(gru.forward(&v(&[2, 5, 3]), Some(&v(&[1, 2, 4]))).is_ok());
    let msg = input_err(gru.forward(&v(&[2, 5, 3]), Some(&v(&[1, 5, 4]))), "GRU");
    assert!(msg.contains("batch size 2"), "{msg}");
    let rnn = RNN::<f32>::new(RnnConfig::new(3, 4), RnnNonlinearity::Relu, rng).unwrap();
    input_err(rnn.forward(&v(&[5, 2, 2]), None), "RNN");
}

#[test]
fn bad_cell_inputs_are_errors() {
    let rng = &mut seeded_rng(0);
    let v = |s: &[usize]| Var::new(Tensor::<f32>::zeros(s));
    let cell = LSTMCell::<f32>::new(3, 4, true, rng).unwrap();
    let msg = input_err(cell.forward(&v(&[2, 5, 3]), None), "LSTMCell");
    assert!(msg.contains("1-D"), "{msg}");
    let msg = input_err(cell.forward(&v(&[2, 2]), None), "LSTMCell");
    assert!(msg.contains("input_size"), "{msg}");
    let msg = input_err(
        cell.forward(&v(&[2, 3]), Some((&v(&[3, 4]), &v(&[2, 4])))),
        "LSTMCell",
    );
    assert!(msg.contains("batch size"), "{msg}");
    input_err(
        cell.forward(&v(&[2, 3]), Some((&v(&[2, 4]), &v(&[2, 5])))),
        "LSTMCell",
    );
    // An unbatched input takes unbatched states.
    input_err(
        cell.forward(&v(&[3]), Some((&v(&[1, 4]), &v(&[1, 4])))),
        "LSTMCell",
    );
    assert!(cell.forward(&v(&[3]), Some((&v(&[4]), &v(&[4])))).is_ok());
    let gru = GRUCell::<f32>::new(3, 4, false, rng).unwrap();
    input_err(gru.forward(&v(&[2, 3]), Some(&v(&[2, 3]))), "GRUCell");
    let rnn = RNNCell::<f32>::new(3, 4, true, RnnNonlinearity::Tanh, rng).unwrap();
    input_err(rnn.forward(&v(&[4]), None), "RNNCell");
}
