//! Fine-tuning from PyTorch weights: an MLP trained in PyTorch on the digits 0–4
//! (`assets/digits_mlp.pt`, written by `torch.save(model.state_dict(), …)`) is loaded
//! into the same model built in strata — whose outputs then match PyTorch's — and
//! fine-tuned on all ten digits.
//!
//! `cargo run --release -p strata-examples --example finetune_pytorch`

use std::path::Path;

use strata_autograd::{Var, no_grad};
use strata_models::data::{DataLoader, Dataset, InMemoryDataset, bundled};
use strata_nn::loss::{ClassLossOptions, cross_entropy};
use strata_nn::{Forward, Linear, Module, ReLU, Sequential, load_pytorch};
use strata_optim::{Adam, AdamConfig, Optimizer};
use strata_tensor::io::TensorFile;
use strata_tensor::{Tensor, seeded_rng};

/// The digits `[N, 1, 8, 8]` as the MLP's rows `[N, 64]`.
fn flat(x: &Tensor<f32>) -> Result<Tensor<f32>, Box<dyn std::error::Error>> {
    Ok(x.reshape(&[x.shape()[0], 64][..])?)
}

/// The accuracy of `model` on `data`, over the samples whose class `keep` accepts.
fn accuracy(
    model: &Sequential,
    data: &InMemoryDataset,
    keep: impl Fn(i64) -> bool,
) -> Result<f64, Box<dyn std::error::Error>> {
    let batch = DataLoader::new(data, data.len())
        .epoch(0)
        .next()
        .ok_or("no data")?;
    let rows = Var::new(flat(&batch.x)?);
    let logits = no_grad(|| model.forward(&rows))?;
    let predicted = logits.value().argmax(Some(-1), false)?.to_vec();
    let labels = batch.classes.ok_or("digits have classes")?.to_vec();
    let (mut right, mut seen) = (0, 0);
    for (p, l) in predicted.iter().zip(&labels) {
        if keep(*l) {
            seen += 1;
            right += usize::from(p == l);
        }
    }
    Ok(right as f64 / seen.max(1) as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = strata_examples::quick();
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let mut rng = seeded_rng(0);

    // The same architecture as PyTorch's nn.Sequential(Linear(64, 64), ReLU(), Linear(64,
    // 10)): strata's Sequential names its children 0, 1, 2 as PyTorch does, so the keys
    // "0.weight", "2.bias", … of the file fit, strictly.
    let mut model = Sequential::new()
        .push(Linear::new(64, 64, true, &mut rng))
        .push(ReLU)
        .push(Linear::new(64, 10, true, &mut rng));
    let state = load_pytorch::<f32>(&assets.join("digits_mlp.pt"))?;
    model.load_state_dict(&state, true)?;
    println!("loaded {} tensors from PyTorch", state.len());

    // The weights moved unchanged: the logits of PyTorch's own check rows are reproduced.
    let io = TensorFile::<f32>::read(&assets.join("digits_mlp_io.safetensors"))?;
    let x = io.get("x").ok_or("no x")?.tensor.clone();
    let theirs = io.get("logits").ok_or("no logits")?.tensor.to_vec();
    model.eval();
    let ours = no_grad(|| model.forward(&Var::new(x)))?.value().to_vec();
    let diff = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!("largest difference from PyTorch's logits: {diff:.2e}");
    if diff > 1e-4 {
        return Err(format!("strata's logits differ from PyTorch's by {diff}").into());
    }

    // Fine-tune on all ten digits (the last 20 % held out, as PyTorch held them out).
    let all = bundled::digits(&bundled::data_dir())?;
    let cut = all.len() * 8 / 10;
    let train = all.subset(&(0..cut).collect::<Vec<_>>());
    let test = all.subset(&(cut..all.len()).collect::<Vec<_>>());
    let before = (
        accuracy(&model, &test, |c| c < 5)?,
        accuracy(&model, &test, |c| c >= 5)?,
    );
    println!(
        "before: {:.1} % on digits 0-4, {:.1} % on 5-9",
        100.0 * before.0,
        100.0 * before.1
    );

    let mut opt = Adam::new(
        model.parameters(),
        AdamConfig {
            lr: 3e-3,
            ..AdamConfig::default()
        },
    )?;
    let epochs = if quick { 3 } else { 20 };
    model.train();
    for epoch in 0..epochs {
        for batch in DataLoader::new(&train, 32).shuffle(1).epoch(epoch) {
            let labels = batch.classes.ok_or("digits have classes")?;
            let logits = model.forward(&Var::new(flat(&batch.x)?))?;
            let loss = cross_entropy(&logits, &labels, &ClassLossOptions::default())?;
            opt.zero_grad();
            loss.backward()?;
            opt.step()?;
        }
    }
    model.eval();
    let after = (
        accuracy(&model, &test, |c| c < 5)?,
        accuracy(&model, &test, |c| c >= 5)?,
    );
    println!(
        "after {epochs} epochs: {:.1} % on digits 0-4, {:.1} % on 5-9",
        100.0 * after.0,
        100.0 * after.1
    );
    if after.1 <= before.1 {
        return Err("fine-tuning did not learn the new classes".into());
    }
    Ok(())
}
