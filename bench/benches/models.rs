//! W3: one training step of the reference CNN (3×32×32, batch 32, cross-entropy, plain SGD
//! with lr 0.01). W4: one Adam (lr 1e-3) step of an MLP 784→512→256→10 at batch 128.
#![forbid(unsafe_code)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata_autograd::Var;
use strata_models::models::{Cnn, CnnConfig, Mlp};
use strata_nn::loss::{ClassLossOptions, cross_entropy};
use strata_nn::{Forward, Module};
use strata_optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use strata_tensor::{IndexTensor, Tensor, seeded_rng};

fn step(model: &dyn Forward, opt: &mut dyn Optimizer, x: &Var, y: &IndexTensor) {
    opt.zero_grad();
    let loss = cross_entropy(&model.forward(x).unwrap(), y, &ClassLossOptions::default()).unwrap();
    loss.backward().unwrap();
    opt.step().unwrap();
}

fn w3_cnn_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("W3_cnn");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    let mut rng = seeded_rng(3);
    let model = Cnn::new(CnnConfig::CIFAR10, &mut rng).unwrap();
    let mut opt = Sgd::new(
        model.parameters(),
        SgdConfig {
            lr: 0.01,
            ..SgdConfig::default()
        },
    )
    .unwrap();
    let x = Var::new(Tensor::<f32>::randn(&[32, 3, 32, 32], &mut rng));
    let y = IndexTensor::from_vec((0..32).map(|i| i % 10).collect(), &[32]).unwrap();
    group.throughput(Throughput::Elements(1));
    group.bench_function("strata/train_step_b32", |b| {
        b.iter(|| step(&model, &mut opt, &x, &y))
    });
    group.finish();
}

fn w4_mlp_adam_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("W4_mlp");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    let mut rng = seeded_rng(4);
    let model = Mlp::new(&[784, 512, 256, 10], &mut rng).unwrap();
    let mut opt = Adam::new(
        model.parameters(),
        AdamConfig {
            lr: 1e-3,
            ..AdamConfig::default()
        },
    )
    .unwrap();
    let x = Var::new(Tensor::<f32>::randn(&[128, 784], &mut rng));
    let y = IndexTensor::from_vec((0..128).map(|i| i % 10).collect(), &[128]).unwrap();
    group.throughput(Throughput::Elements(1));
    group.bench_function("strata/adam_step_b128", |b| {
        b.iter(|| step(&model, &mut opt, &x, &y))
    });
    group.finish();
}

criterion_group!(benches, w3_cnn_step, w4_mlp_adam_step);
criterion_main!(benches);
