//! W11: the DP-SGD step (strata-privacy) of W3's CNN at batch 32 and of W5's LSTM, against
//! strata's own non-private step on the same model and batch: per-sample clipping (ghost
//! norms where cheaper), secure Gaussian noise, `.grad` written, one SGD step. PyTorch's
//! side (`bench/torch_bench.py`) runs the same steps plain and with Opacus when it is
//! installed. Run with `RAYON_NUM_THREADS=2`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata_autograd::Var;
use strata_models::models::{Cnn, CnnConfig};
use strata_nn::loss::{ClassLossOptions, cross_entropy};
use strata_nn::{Forward, LSTM, Module, RnnConfig};
use strata_optim::{Optimizer, Sgd, SgdConfig};
use strata_privacy::{DpSgd, DpSgdConfig, GaussianNoise};
use strata_tensor::{IndexTensor, Tensor, seeded_rng};

fn sgd(params: Vec<Var>) -> Sgd {
    Sgd::new(
        params,
        SgdConfig {
            lr: 0.01,
            ..SgdConfig::default()
        },
    )
    .unwrap()
}

/// σ = 1, C = 1, an expected batch of 32 (q = 0.01 of 3 200 samples), secure noise.
fn dp(model: &dyn Module) -> DpSgd {
    let config = DpSgdConfig::new(1.0, 1.0, 0.01, 32.0);
    DpSgd::new(model, config, GaussianNoise::secure().unwrap()).unwrap()
}

fn w11_cnn(c: &mut Criterion) {
    let mut group = c.benchmark_group("W11_cnn");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    let mut rng = seeded_rng(11);
    let model = Cnn::new(CnnConfig::CIFAR10, &mut rng).unwrap();
    let mut opt = sgd(model.parameters());
    let x = Var::new(Tensor::<f32>::randn(&[32, 3, 32, 32], &mut rng));
    let y = IndexTensor::from_vec((0..32).map(|i| i % 10).collect(), &[32]).unwrap();
    let loss = || cross_entropy(&model.forward(&x)?, &y, &ClassLossOptions::default());
    group.bench_function("strata/step_b32", |b| {
        b.iter(|| {
            opt.zero_grad();
            loss().unwrap().backward().unwrap();
            opt.step().unwrap();
        })
    });
    let mut private = dp(&model);
    group.bench_function("strata/dp_step_b32", |b| {
        b.iter(|| {
            private.step(32, loss).unwrap();
            opt.step().unwrap();
        })
    });
    group.finish();
}

fn w11_lstm(c: &mut Criterion) {
    let mut group = c.benchmark_group("W11_lstm");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    let mut rng = seeded_rng(5);
    let lstm = LSTM::<f32>::new(RnnConfig::new(64, 256), &mut rng).unwrap();
    let mut opt = sgd(lstm.parameters());
    let x = Var::new(Tensor::<f32>::randn(&[64, 32, 64], &mut rng));
    let loss = || -> strata_nn::Result<Var> { Ok(lstm.forward(&x, None)?.0.square().mean_all()) };
    group.bench_function("strata/step", |b| {
        b.iter(|| {
            opt.zero_grad();
            loss().unwrap().backward().unwrap();
            opt.step().unwrap();
        })
    });
    let mut private = dp(&lstm);
    group.bench_function("strata/dp_step", |b| {
        b.iter(|| {
            private.step(32, loss).unwrap();
            opt.step().unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, w11_cnn, w11_lstm);
criterion_main!(benches);
