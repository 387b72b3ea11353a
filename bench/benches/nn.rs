//! strata-nn workloads: W2 conv2d forward + backward, W9 layer_norm, W3 a training step
//! of the reference CNN.
#![forbid(unsafe_code)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata_autograd::Var;
use strata_nn::{Conv2d, Conv2dParams, Forward, LayerNorm};
use strata_tensor::{Tensor, seeded_rng};

fn w2_conv2d_backward(c: &mut Criterion) {
    let mut group = c.benchmark_group("W2_conv2d");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    let mut rng = seeded_rng(2);
    let conv = Conv2d::<f32>::with_params(
        3,
        32,
        [3, 3],
        Conv2dParams::default().padding(1),
        true,
        &mut rng,
    )
    .unwrap();
    let x = Var::parameter(Tensor::<f32>::randn(&[32, 3, 32, 32], &mut rng));
    let ones = Tensor::<f32>::ones(&[32, 32, 32, 32]);
    // forward + backward: 3 convolutions' worth of multiply-adds.
    let flops = 3 * 2 * 32 * 32 * 32 * 32 * 3 * 9;
    group.throughput(Throughput::Elements(flops as u64));
    group.bench_function("strata/fwd+bwd", |b| {
        b.iter(|| {
            let y = conv.forward(&x).unwrap();
            y.backward_with(&ones).unwrap();
            conv.weight.zero_grad();
            x.zero_grad();
        });
    });
    group.finish();
}

fn w9_layer_norm(c: &mut Criterion) {
    let mut group = c.benchmark_group("W9_layer_norm");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    let mut rng = seeded_rng(9);
    let x = Var::new(Tensor::<f32>::randn(&[4096, 1024], &mut rng));
    let ln = LayerNorm::<f32>::new(&[1024]);
    group.throughput(Throughput::Bytes((2 * 4096 * 1024 * 4) as u64));
    group.bench_function("strata/4096x1024", |b| b.iter(|| ln.forward(&x).unwrap()));
    group.finish();
}

criterion_group!(benches, w2_conv2d_backward, w9_layer_norm);
criterion_main!(benches);
