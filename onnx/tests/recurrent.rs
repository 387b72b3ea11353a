//! RNN, LSTM and GRU as ONNX's recurrent operators: gate order mapped, biases split into
//! Wb/Rb, multi-layer and bidirectional, batch-first and sequence-first.

use strata_nn::{GRU, LSTM, Module, RNN, RnnConfig, RnnNonlinearity};
use strata_onnx::{Example, Export, ExportOptions, export};
use strata_tensor::{Tensor, seeded_rng};

use crate::common::{check_batches, float, floats};

/// Checks a recurrent layer; `forward` is the layer's output sequence.
fn check<M: Export>(
    what: &str,
    layer: &M,
    config: &RnnConfig,
    forward: impl Fn(&Example) -> Tensor<f32>,
) {
    let (len, features) = (5, config.input_size);
    if config.batch_first {
        check_batches(
            what,
            layer,
            |b| floats(b, &[len, features]),
            forward,
            &ExportOptions::default(),
        );
    } else {
        let options = ExportOptions {
            batch_axis: 1,
            ..ExportOptions::default()
        };
        let make = |b: usize| {
            let mut rng = seeded_rng(200 + b as u64);
            Example::Float(Tensor::randn(&[len, b, features], &mut rng))
        };
        check_batches(what, layer, make, forward, &options);
    }
}

#[test]
fn lstm_gates_map_to_onnx_order_in_every_layout() {
    let mut rng = seeded_rng(10);
    for (layers, bidirectional, batch_first) in [
        (1, false, true),
        (2, false, true),
        (2, true, true),
        (1, true, false),
        (2, false, false),
    ] {
        let config = RnnConfig::new(3, 4)
            .num_layers(layers)
            .bidirectional(bidirectional)
            .batch_first(batch_first)
            .dropout(0.3);
        let mut lstm = LSTM::new(config.clone(), &mut rng).unwrap();
        lstm.eval();
        let what =
            format!("LSTM layers {layers} bidirectional {bidirectional} batch_first {batch_first}");
        check(&what, &lstm, &config, |x| {
            lstm.forward(&float(x), None).unwrap().0.value()
        });
    }
}

#[test]
fn gru_uses_linear_before_reset() {
    let mut rng = seeded_rng(11);
    for (layers, bidirectional, batch_first) in
        [(1, false, true), (2, true, true), (2, false, false)]
    {
        let config = RnnConfig::new(3, 5)
            .num_layers(layers)
            .bidirectional(bidirectional)
            .batch_first(batch_first);
        let gru = GRU::new(config.clone(), &mut rng).unwrap();
        let what =
            format!("GRU layers {layers} bidirectional {bidirectional} batch_first {batch_first}");
        check(&what, &gru, &config, |x| {
            gru.forward(&float(x), None).unwrap().0.value()
        });
    }
}

#[test]
fn rnn_with_tanh_and_without_bias() {
    let mut rng = seeded_rng(12);
    for (bias, bidirectional) in [(true, false), (true, true), (false, false)] {
        let config = RnnConfig::new(3, 4)
            .num_layers(2)
            .bias(bias)
            .bidirectional(bidirectional)
            .batch_first(true);
        let rnn = RNN::new(config.clone(), RnnNonlinearity::Tanh, &mut rng).unwrap();
        let what = format!("RNN bias {bias} bidirectional {bidirectional}");
        check(&what, &rnn, &config, |x| {
            rnn.forward(&float(x), None).unwrap().0.value()
        });
    }
}

#[test]
fn rnn_with_relu_names_its_activation() {
    // tract 0.22 runs every ONNX RNN with tanh whatever `activations` says, so the ReLU
    // RNN is checked against onnxruntime by the fixture script; here, that the file says
    // ReLU for each direction.
    let mut rng = seeded_rng(13);
    let config = RnnConfig::new(3, 4).bidirectional(true).batch_first(true);
    let rnn = RNN::new(config, RnnNonlinearity::Relu, &mut rng).unwrap();
    let exported = export(&rnn, Tensor::ones(&[2, 5, 3]), &ExportOptions::default()).unwrap();
    let graph = exported.model.graph.unwrap();
    let node = graph
        .node
        .iter()
        .find(|n| n.op_type == "RNN")
        .expect("an RNN node");
    let activations = node
        .attribute
        .iter()
        .find(|a| a.name == "activations")
        .unwrap();
    assert_eq!(activations.strings, [b"Relu".to_vec(), b"Relu".to_vec()]);
    let direction = node
        .attribute
        .iter()
        .find(|a| a.name == "direction")
        .unwrap();
    assert_eq!(direction.s, b"bidirectional");
}
