//! `RNN`, `LSTM` and `GRU` as ONNX's `RNN`, `LSTM` and `GRU` operators, one node per layer.
//!
//! The weights are PyTorch's, re-stacked for ONNX: ONNX wants `W` `[D, G·H, I]`, `R`
//! `[D, G·H, H]` and `B` `[D, 2·G·H]` (`Wb` then `Rb`) per layer, with the gates in its own
//! order. PyTorch's LSTM gates are `i, f, g, o`, ONNX's `i, o, f, c` (`c` is PyTorch's
//! `g`); PyTorch's GRU gates are `r, z, n`, ONNX's `z, r, h`, and PyTorch applies the
//! reset gate after the hidden-to-hidden product, which is ONNX's `linear_before_reset =
//! 1`. The plain RNN has one gate.

use strata_nn::{GRU, LSTM, RNN, RnnConfig, RnnNonlinearity, RnnParams};
use strata_tensor::Tensor;

use super::{Export, run};
use crate::error::{OnnxError, Result, unsupported};
use crate::graph::{Attr, Graph, Value};

/// Which recurrent operator.
#[derive(Clone, Copy)]
enum Cell {
    Rnn(RnnNonlinearity),
    Lstm,
    Gru,
}

impl Cell {
    fn name(self) -> &'static str {
        match self {
            Cell::Rnn(_) => "RNN",
            Cell::Lstm => "LSTM",
            Cell::Gru => "GRU",
        }
    }

    /// For each ONNX gate block, the PyTorch block it comes from.
    fn order(self) -> &'static [usize] {
        match self {
            Cell::Rnn(_) => &[0],
            Cell::Lstm => &[0, 3, 1, 2],
            Cell::Gru => &[1, 0, 2],
        }
    }
}

/// The gate blocks of `t` (`[G·H, *]` or `[G·H]`) re-ordered for ONNX.
fn reorder(t: &Tensor<f32>, cell: Cell, hidden: usize) -> Result<Tensor<f32>> {
    let blocks: Vec<Tensor<f32>> = cell
        .order()
        .iter()
        .map(|&b| t.narrow(0, b * hidden, hidden))
        .collect::<std::result::Result<_, _>>()?;
    Ok(Tensor::cat(&blocks, 0)?)
}

/// ONNX's `W`, `R` and (when the layer has biases) `B` of one layer.
type LayerWeights = (Tensor<f32>, Tensor<f32>, Option<Tensor<f32>>);

/// `W`, `R` and (when the layer has biases) `B` of one layer, stacked over directions.
fn layer_weights(params: &[&RnnParams<f32>], cell: Cell, hidden: usize) -> Result<LayerWeights> {
    let mut w = Vec::new();
    let mut r = Vec::new();
    let mut b = Vec::new();
    for p in params {
        w.push(reorder(&p.weight_ih.value(), cell, hidden)?.unsqueeze(0)?);
        r.push(reorder(&p.weight_hh.value(), cell, hidden)?.unsqueeze(0)?);
        if let (Some(bi), Some(bh)) = (&p.bias_ih, &p.bias_hh) {
            let wb = reorder(&bi.value(), cell, hidden)?;
            let rb = reorder(&bh.value(), cell, hidden)?;
            b.push(Tensor::cat(&[wb, rb], 0)?.unsqueeze(0)?);
        }
    }
    let bias = if b.is_empty() {
        None
    } else {
        Some(Tensor::cat(&b, 0)?)
    };
    Ok((Tensor::cat(&w, 0)?, Tensor::cat(&r, 0)?, bias))
}

/// The stack of layers on `x`, sequence-first inside (`[L, N, F]`), batch-first outside
/// when the layer is.
fn export_stack(
    g: &mut Graph,
    x: &Value,
    config: &RnnConfig,
    params: &[RnnParams<f32>],
    cell: Cell,
    training: bool,
    y: strata_autograd::Var<f32>,
) -> Result<Value> {
    let layer = cell.name();
    if training && config.dropout > 0.0 && config.num_layers > 1 {
        return Err(unsupported(
            layer,
            "dropout between layers is in train mode (random); call eval() before exporting",
        ));
    }
    let batch_axis = usize::from(!config.batch_first);
    if x.ndim() != 3 || x.batch_axis() != Some(batch_axis) {
        return Err(OnnxError::Input {
            shape: x.shape().to_vec(),
            why: format!(
                "{layer} exports batched sequences {} with the batch dynamic",
                if config.batch_first {
                    "[N, L, F]"
                } else {
                    "[L, N, F]"
                }
            ),
        });
    }
    let dirs = config.num_directions();
    let hidden = config.hidden_size;
    let mut h = if config.batch_first {
        g.transpose(x.name(), &[1, 0, 2])
    } else {
        x.name().to_string()
    };
    // The initial state, zeros [D, N, H], made from the input's (dynamic) batch size: ONNX
    // makes the same zeros when initial_h is absent, but tract then needs a fixed batch.
    let shape = g.op("Shape", &[&h], vec![]);
    let one = g.ints("batch_index", &[1]);
    let n = g.op("Gather", &[&shape, &one], vec![("axis", Attr::Int(0))]);
    let d = g.ints("directions", &[dirs as i64]);
    let hs = g.ints("hidden_size", &[hidden as i64]);
    let state_shape = g.op("Concat", &[&d, &n, &hs], vec![("axis", Attr::Int(0))]);
    let zero = Attr::Tensor(Tensor::zeros(&[1]));
    let zeros = g.op("ConstantOfShape", &[&state_shape], vec![("value", zero)]);
    for l in 0..config.num_layers {
        let own: Vec<&RnnParams<f32>> = params[l * dirs..(l + 1) * dirs].iter().collect();
        let (w, r, b) = layer_weights(&own, cell, hidden)?;
        let w = g.constant(&format!("W_l{l}"), &w);
        let r = g.constant(&format!("R_l{l}"), &r);
        let b = b.map(|b| g.constant(&format!("B_l{l}"), &b));
        // X, W, R, B, sequence_lens (none), initial_h (and initial_c).
        let mut inputs = vec![
            h.as_str(),
            w.as_str(),
            r.as_str(),
            b.as_deref().unwrap_or(""),
        ];
        inputs.extend(["", zeros.as_str()]);
        if matches!(cell, Cell::Lstm) {
            inputs.push(zeros.as_str());
        }
        let direction = if dirs == 2 {
            "bidirectional"
        } else {
            "forward"
        };
        let mut attrs = vec![
            ("hidden_size", Attr::Int(hidden as i64)),
            ("direction", Attr::Str(direction.into())),
        ];
        match cell {
            Cell::Rnn(nonlinearity) => {
                let act = match nonlinearity {
                    RnnNonlinearity::Tanh => "Tanh",
                    RnnNonlinearity::Relu => "Relu",
                };
                attrs.push(("activations", Attr::Strs(vec![act.into(); dirs])));
            }
            Cell::Gru => attrs.push(("linear_before_reset", Attr::Int(1))),
            Cell::Lstm => {}
        }
        // Y: [L, D, N, H] → [L, N, D, H] → [L, N, D·H], the next layer's input.
        let seq = g.op(cell.name(), &inputs, attrs);
        let seq = g.transpose(&seq, &[0, 2, 1, 3]);
        h = g.reshape(&seq, &[0, 0, -1]);
    }
    if config.batch_first {
        h = g.transpose(&h, &[1, 0, 2]);
    }
    Ok(x.with(h, y))
}

impl Export for RNN<f32> {
    /// The output sequence (the final state is not an output of the export).
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(self.forward(&x.float("RNN")?, None)?.0))?;
        let cell = Cell::Rnn(self.nonlinearity());
        export_stack(
            g,
            x,
            self.config(),
            self.params(),
            cell,
            self.is_training(),
            y,
        )
    }
}

impl Export for LSTM<f32> {
    /// The output sequence (the final states are not outputs of the export).
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(self.forward(&x.float("LSTM")?, None)?.0))?;
        export_stack(
            g,
            x,
            self.config(),
            self.params(),
            Cell::Lstm,
            self.is_training(),
            y,
        )
    }
}

impl Export for GRU<f32> {
    /// The output sequence (the final state is not an output of the export).
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(self.forward(&x.float("GRU")?, None)?.0))?;
        export_stack(
            g,
            x,
            self.config(),
            self.params(),
            Cell::Gru,
            self.is_training(),
            y,
        )
    }
}
