//! Writes exported models for `tests/fixtures/check_onnxruntime.py`: for each case,
//! `NAME.onnx`, the module's state dict `NAME.safetensors` (PyTorch's keys, so the script
//! builds the same PyTorch module) and `NAME.json` (the example input and strata's output).
//!
//! `cargo run -p strata-onnx --example export_fixtures -- DIR`

use std::fmt::Write as _;
use std::path::Path;

use strata_autograd::{ConvTransposeParams, Var};
use strata_nn::{
    AvgPool3d, BagMode, BatchNorm1d, Conv2d, Conv2dParams, Conv3d, Conv3dParams, ConvTranspose2d,
    Embedding, EmbeddingBag, Flatten, Forward, GELU, GRU, InstanceNorm1d, InstanceNorm2d,
    InstanceNormConfig, InterpolateMode, LSTM, LayerNorm, Linear, LogSoftmax, MaxPool2d, MaxPool3d,
    MhaConfig, Module, MultiheadAttention, PixelShuffle, Pool3dParams, RMSNorm, RNN, ReLU, Resize,
    RnnConfig, RnnNonlinearity, Sequential, TransformerDecoderLayer, TransformerEncoderLayer,
    TransformerEncoderLayerConfig, Unflatten, Upsample,
};
use strata_onnx::{
    DecoderInputs, Example, Export, ExportOptions, Graph, GraphInput, Value, export,
    export_decoder_layer, export_with_inputs,
};
use strata_tensor::{IndexTensor, Tensor, seeded_rng};

fn json_list<T: std::fmt::Debug>(v: &[T]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
    format!("[{}]", items.join(", "))
}

fn write_case<M: Export + Module>(
    dir: &Path,
    name: &str,
    module: &M,
    input: Example,
) -> Result<(), Box<dyn std::error::Error>> {
    let exported = export(module, input.clone(), &ExportOptions::default())?;
    exported.save(&dir.join(format!("{name}.onnx")))?;
    module.save_safetensors(&dir.join(format!("{name}.safetensors")))?;
    let mut json = String::from("{");
    match &input {
        Example::Float(t) | Example::Bool(t) => {
            let _ = write!(
                json,
                "\"indices\": false, \"input\": {}, ",
                json_list(&t.to_vec())
            );
        }
        Example::Index(t) => {
            let _ = write!(
                json,
                "\"indices\": true, \"input\": {}, ",
                json_list(&t.to_vec())
            );
        }
    }
    let _ = write!(
        json,
        "\"input_shape\": {}, \"output\": {}, \"output_shape\": {}}}",
        json_list(input.shape()),
        json_list(&exported.output.to_vec()),
        json_list(exported.output.shape())
    );
    std::fs::write(dir.join(format!("{name}.json")), json)?;
    println!(
        "{name}: {:?} -> {:?}",
        input.shape(),
        exported.output.shape()
    );
    Ok(())
}

/// A case of several inputs: `NAME.json` lists them (`"inputs"`: name, kind, shape,
/// values) with strata's output.
fn write_inputs_case<M: Module>(
    dir: &Path,
    name: &str,
    module: &M,
    inputs: Vec<GraphInput>,
    build: impl FnOnce(&mut Graph, &[Value]) -> strata_onnx::Result<Value>,
) -> Result<(), Box<dyn std::error::Error>> {
    let exported = export_with_inputs(inputs.clone(), &ExportOptions::default(), build)?;
    exported.save(&dir.join(format!("{name}.onnx")))?;
    module.save_safetensors(&dir.join(format!("{name}.safetensors")))?;
    let items: Vec<String> = inputs
        .iter()
        .map(|i| {
            let (kind, values) = match &i.example {
                Example::Float(t) => ("float", json_list(&t.to_vec())),
                Example::Bool(t) => ("bool", json_list(&t.to_vec())),
                Example::Index(t) => ("int64", json_list(&t.to_vec())),
            };
            format!(
                "{{\"name\": {:?}, \"kind\": \"{kind}\", \"shape\": {}, \"values\": {values}}}",
                i.name,
                json_list(i.example.shape())
            )
        })
        .collect();
    let json = format!(
        "{{\"inputs\": [{}], \"output\": {}, \"output_shape\": {}}}",
        items.join(", "),
        json_list(&exported.output.to_vec()),
        json_list(exported.output.shape())
    );
    std::fs::write(dir.join(format!("{name}.json")), json)?;
    println!(
        "{name}: {} inputs -> {:?}",
        inputs.len(),
        exported.output.shape()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: export_fixtures DIR")?;
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    let mut rng = seeded_rng(7);
    let x = |shape: &[usize], rng: &mut _| Example::Float(Tensor::randn(shape, rng));

    let cnn = Sequential::new()
        .push(Conv2d::with_params(
            1,
            4,
            [3, 3],
            Conv2dParams::default().padding(1),
            true,
            &mut rng,
        )?)
        .push(ReLU)
        .push(MaxPool2d::new(2))
        .push(Flatten::default())
        .push(Linear::new(4 * 4 * 4, 10, true, &mut rng));
    write_case(dir, "cnn", &cnn, x(&[3, 1, 8, 8], &mut rng))?;

    let p = Conv2dParams::default()
        .stride(2)
        .padding(2)
        .dilation(2)
        .groups(2);
    let conv = Sequential::new().push(Conv2d::with_params(4, 6, [3, 2], p, true, &mut rng)?);
    write_case(dir, "conv_groups", &conv, x(&[3, 4, 9, 8], &mut rng))?;

    let config = RnnConfig::new(3, 4)
        .num_layers(2)
        .bidirectional(true)
        .batch_first(true);
    let lstm = LSTM::new(config.clone(), &mut rng)?;
    write_case(dir, "lstm", &lstm, x(&[3, 5, 3], &mut rng))?;
    let gru = GRU::new(config.clone(), &mut rng)?;
    write_case(dir, "gru", &gru, x(&[3, 5, 3], &mut rng))?;
    let rnn = RNN::new(config, RnnNonlinearity::Relu, &mut rng)?;
    write_case(dir, "rnn_relu", &rnn, x(&[3, 5, 3], &mut rng))?;

    let mha = MultiheadAttention::new(MhaConfig::new(8, 2).batch_first(true), &mut rng)?;
    mha.in_proj_bias
        .as_ref()
        .ok_or("a bias")?
        .set_value(Tensor::randn(&[24], &mut rng))?;
    write_case(dir, "mha", &mha, x(&[3, 5, 8], &mut rng))?;

    let layer = TransformerEncoderLayerConfig::new(8, 2)
        .dim_feedforward(16)
        .dropout(0.0)
        .batch_first(true);
    let encoder_layer = TransformerEncoderLayer::new(layer, &mut rng)?;
    write_case(
        dir,
        "encoder_layer",
        &encoder_layer,
        x(&[3, 5, 8], &mut rng),
    )?;

    let mut norms = Sequential::new()
        .push(BatchNorm1d::new(5))
        .push(LayerNorm::new(&[5]));
    norms.forward(&Var::new(Tensor::randn(&[16, 5], &mut rng)))?;
    norms.eval();
    write_case(dir, "norms", &norms, x(&[3, 5], &mut rng))?;

    let mlp = Sequential::new()
        .push(Linear::new(6, 5, true, &mut rng))
        .push(GELU { tanh: true })
        .push(Linear::new(5, 4, true, &mut rng))
        .push(LogSoftmax { dim: -1 });
    write_case(dir, "gelu_mlp", &mlp, x(&[3, 6], &mut rng))?;

    let embedding = Embedding::new(11, 4, None, &mut rng)?;
    let ids = IndexTensor::from_vec((0..15).map(|i| (i * 7) % 11).collect(), &[3, 5])?;
    write_case(dir, "embedding", &embedding, Example::Index(ids))?;

    let p = ConvTransposeParams {
        stride: [2, 3],
        padding: [1, 2],
        output_padding: [1, 2],
        dilation: [2, 1],
        groups: 2,
    };
    let up = Sequential::new().push(ConvTranspose2d::new(4, 6, [3, 4], p, true, &mut rng)?);
    write_case(dir, "conv_transpose", &up, x(&[3, 4, 5, 6], &mut rng))?;

    // The dilated max pool is checked here: tract ignores MaxPool's dilations.
    let c3 = Conv3dParams {
        padding: [1; 3],
        ..Conv3dParams::default()
    };
    let volume = Sequential::new()
        .push(Conv3d::new(2, 4, [2, 3, 3], c3, true, &mut rng)?)
        .push(MaxPool3d {
            params: Pool3dParams {
                kernel: [3, 2, 3],
                stride: [2, 1, 2],
                padding: [1; 3],
                dilation: [1, 2, 1],
                count_include_pad: true,
            },
        })
        .push(AvgPool3d {
            params: Pool3dParams {
                padding: [1; 3],
                count_include_pad: false,
                ..Pool3dParams::new(2)
            },
        });
    write_case(dir, "volume", &volume, x(&[3, 2, 4, 6, 7], &mut rng))?;

    let rms = RMSNorm::new(&[6]);
    rms.weight
        .as_ref()
        .ok_or("a weight")?
        .set_value(Tensor::randn(&[6], &mut rng))?;
    write_case(
        dir,
        "rms_norm",
        &Sequential::new().push(rms),
        x(&[3, 4, 6], &mut rng),
    )?;
    let affine = InstanceNormConfig {
        affine: true,
        ..InstanceNormConfig::default()
    };
    let inorm = InstanceNorm2d::with_config(3, affine);
    inorm
        .weight()
        .ok_or("a weight")?
        .set_value(Tensor::randn(&[3], &mut rng))?;
    inorm
        .bias()
        .ok_or("a bias")?
        .set_value(Tensor::randn(&[3], &mut rng))?;
    write_case(
        dir,
        "instance_norm",
        &Sequential::new().push(inorm),
        x(&[3, 3, 4, 5], &mut rng),
    )?;
    let tracked = InstanceNormConfig {
        affine: true,
        track_running_stats: true,
        ..InstanceNormConfig::default()
    };
    let mut running = Sequential::new().push(InstanceNorm1d::with_config(3, tracked));
    running.forward(&Var::new(Tensor::randn(&[8, 3, 6], &mut rng)))?;
    running.eval();
    write_case(
        dir,
        "instance_norm_running",
        &running,
        x(&[3, 3, 6], &mut rng),
    )?;

    let upsamples = [
        (
            "upsample_nearest",
            Resize::Scale(vec![2.0]),
            InterpolateMode::Nearest,
        ),
        (
            "upsample_bilinear",
            Resize::Size(vec![7, 9]),
            InterpolateMode::Linear {
                align_corners: false,
            },
        ),
        (
            "upsample_corners",
            Resize::Scale(vec![2.0]),
            InterpolateMode::Linear {
                align_corners: true,
            },
        ),
    ];
    for (name, resize, mode) in upsamples {
        let layer = Sequential::new().push(Upsample { resize, mode });
        write_case(dir, name, &layer, x(&[3, 2, 4, 5], &mut rng))?;
    }
    let shuffle = Sequential::new()
        .push(PixelShuffle::new(2)?)
        .push(Unflatten::new(1, &[1, 2])?);
    write_case(dir, "pixel_shuffle", &shuffle, x(&[3, 8, 3, 4], &mut rng))?;

    let bag = EmbeddingBag::new(11, 4, BagMode::Mean, Some(2), &mut rng)?;
    let ids = IndexTensor::from_vec((0..12).map(|i| (i * 5) % 11).collect(), &[3, 4])?;
    write_case(dir, "embedding_bag", &bag, Example::Index(ids))?;

    // The decoder layer: target, memory and a boolean memory padding mask as inputs, the
    // causal mask built in the graph; the script runs it at other lengths too.
    let config = TransformerEncoderLayerConfig::new(8, 2)
        .dim_feedforward(16)
        .dropout(0.0)
        .batch_first(true);
    let decoder = TransformerDecoderLayer::new(config, &mut rng)?;
    let pad: Vec<f32> = (0..15)
        .map(|i| f32::from(u8::from(i % 5 >= 3 + i / 10)))
        .collect();
    let inputs = vec![
        GraphInput::new("tgt", Tensor::randn(&[3, 4, 8], &mut rng)).dynamic(1, "tgt_len"),
        GraphInput::new("memory", Tensor::randn(&[3, 5, 8], &mut rng)).dynamic(1, "src_len"),
        GraphInput::new(
            "memory_key_padding_mask",
            Example::Bool(Tensor::from_vec(pad, &[3, 5])?),
        )
        .dynamic(1, "src_len"),
    ];
    write_inputs_case(dir, "decoder_layer", &decoder, inputs, |g, xs| {
        let inputs = DecoderInputs {
            memory_key_padding: Some(&xs[2]),
            ..DecoderInputs::causal(&xs[1])
        };
        export_decoder_layer(&decoder, g, &xs[0], &inputs)
    })?;
    Ok(())
}
