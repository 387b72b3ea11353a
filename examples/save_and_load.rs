//! Saving, loading and exporting: a model's state dict as safetensors (PyTorch's
//! `save_file` format, written atomically), loaded strictly into a freshly built model
//! whose outputs are then the same bit for bit; the optimizer's state saved beside it so
//! that training resumes exactly where it stopped; and the model exported to ONNX (any
//! batch size) for other runtimes.
//!
//! `cargo run --release -p strata-examples --example save_and_load`

use strata_autograd::{Var, no_grad};
use strata_nn::loss::{ClassLossOptions, cross_entropy};
use strata_nn::{Forward, Linear, Module, ReLU, Sequential, StateDict};
use strata_onnx::{ExportOptions, export};
use strata_optim::{Adam, AdamConfig, Optimizer, OptimizerState};
use strata_tensor::{IndexTensor, Tensor, seeded_rng};

fn mlp(seed: u64) -> Sequential {
    let mut rng = seeded_rng(seed);
    Sequential::new()
        .push(Linear::new(8, 16, true, &mut rng))
        .push(ReLU)
        .push(Linear::new(16, 3, true, &mut rng))
}

/// One Adam step of `model` on `(x, y)`; returns the loss.
fn step(
    model: &Sequential,
    opt: &mut Adam,
    x: &Tensor<f32>,
    y: &IndexTensor,
) -> Result<f32, Box<dyn std::error::Error>> {
    let loss = cross_entropy(
        &model.forward(&Var::new(x.clone()))?,
        y,
        &ClassLossOptions::default(),
    )?;
    opt.zero_grad();
    loss.backward()?;
    opt.step()?;
    Ok(loss.item()?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("strata-save-and-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rng = seeded_rng(1);
    let x = Tensor::<f32>::randn(&[32, 8], &mut rng);
    let y = IndexTensor::from_vec((0..32).map(|i| i % 3).collect(), &[32])?;

    // Train a little, then save the weights and the optimizer's state.
    let model = mlp(0);
    let mut opt = Adam::new(model.parameters(), AdamConfig::default())?;
    for _ in 0..5 {
        step(&model, &mut opt, &x, &y)?;
    }
    model
        .state_dict()
        .save_safetensors(&dir.join("model.safetensors"))?;
    opt.state_dict().save(&dir.join("optimizer.safetensors"))?;

    // A fresh model (other initial weights) loads them strictly: same keys, same shapes.
    let restored = mlp(42);
    restored.load_state_dict(
        &StateDict::load_safetensors(&dir.join("model.safetensors"))?,
        true,
    )?;
    let a = no_grad(|| model.forward(&Var::new(x.clone())))?
        .value()
        .to_vec();
    let b = no_grad(|| restored.forward(&Var::new(x.clone())))?
        .value()
        .to_vec();
    assert_eq!(a, b, "the restored model computes the same outputs");
    println!("restored model: identical outputs on {} values", a.len());

    // The optimizer resumes: one more step of each gives the same loss and weights.
    let mut opt2 = Adam::new(restored.parameters(), AdamConfig::default())?;
    opt2.load_state_dict(&OptimizerState::load(&dir.join("optimizer.safetensors"))?)?;
    let (l1, l2) = (
        step(&model, &mut opt, &x, &y)?,
        step(&restored, &mut opt2, &x, &y)?,
    );
    assert_eq!(l1, l2);
    assert_eq!(
        model.state_dict().get("2.weight").map(Tensor::to_vec),
        restored.state_dict().get("2.weight").map(Tensor::to_vec)
    );
    println!("resumed optimizer: the next step matches (loss {l1:.5})");

    // ONNX: a trace of the forward on an example batch; the file's batch is dynamic.
    let exported = export(&model, x.clone(), &ExportOptions::default())?;
    exported.save(&dir.join("model.onnx"))?;
    let size = std::fs::metadata(dir.join("model.onnx"))?.len();
    println!("exported model.onnx ({size} bytes, opset 17, dynamic batch)");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
