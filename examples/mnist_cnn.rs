//! The CNN on MNIST with a hand-written training loop: a model built from layers, the
//! bundled data through a `DataLoader`, Adam, cross-entropy, and an evaluation in eval
//! mode without a graph.
//!
//! `cargo run --release -p strata-examples --example mnist_cnn`

use strata_autograd::{Var, no_grad};
use strata_models::data::{DataLoader, Dataset, bundled};
use strata_nn::loss::{ClassLossOptions, cross_entropy};
use strata_nn::{
    Conv2d, Conv2dParams, Flatten, Forward, Linear, MaxPool2d, Module, ReLU, Sequential,
};
use strata_optim::{Adam, AdamConfig, Optimizer};
use strata_tensor::seeded_rng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = strata_examples::quick();
    let mut rng = seeded_rng(0);
    // The bundled MNIST (60 000 + 10 000 images, normalised with MNIST's mean and
    // deviation); `--quick` trains on its first 2000 images.
    let (mut train, test) = bundled::mnist(&bundled::data_dir().join("mnist"))?;
    if quick {
        train = train.subset(&(0..2000).collect::<Vec<_>>());
    }

    // conv 3×3 (32) → ReLU → max-pool 2 → flatten → 128 → ReLU → 10.
    let mut model = Sequential::new()
        .push(Conv2d::with_params(
            1,
            32,
            [3, 3],
            Conv2dParams::default().padding(1),
            true,
            &mut rng,
        )?)
        .push(ReLU)
        .push(MaxPool2d::new(2))
        .push(Flatten::default())
        .push(Linear::new(32 * 14 * 14, 128, true, &mut rng))
        .push(ReLU)
        .push(Linear::new(128, 10, true, &mut rng));
    let mut opt = Adam::new(
        model.parameters(),
        AdamConfig {
            lr: 1e-3,
            ..AdamConfig::default()
        },
    )?;

    let loader = DataLoader::new(&train, 64).shuffle(0);
    model.train();
    for (i, batch) in loader.epoch(0).enumerate() {
        let logits = model.forward(&Var::new(batch.x))?;
        let labels = batch.classes.ok_or("MNIST has class labels")?;
        let loss = cross_entropy(&logits, &labels, &ClassLossOptions::default())?;
        opt.zero_grad();
        loss.backward()?;
        opt.step()?;
        if i % 100 == 0 {
            println!("step {i:>4}: loss {:.4}", loss.item()?);
        }
    }

    // Evaluation: eval mode, no graph.
    model.eval();
    let (mut right, mut seen) = (0usize, 0usize);
    for batch in DataLoader::new(&test, 1000).epoch(0) {
        let logits = no_grad(|| model.forward(&Var::new(batch.x.clone())))?;
        let predicted = logits.value().argmax(Some(-1), false)?.to_vec();
        let labels = batch.classes.ok_or("MNIST has class labels")?.to_vec();
        right += predicted
            .iter()
            .zip(&labels)
            .filter(|(p, l)| p == l)
            .count();
        seen += labels.len();
    }
    let accuracy = right as f64 / seen as f64;
    println!("test accuracy {:.2} % on {seen} images", 100.0 * accuracy);
    let floor = if quick { 0.8 } else { 0.97 };
    if accuracy < floor {
        return Err(format!("accuracy {accuracy} below {floor}").into());
    }
    let _ = test.len();
    Ok(())
}
