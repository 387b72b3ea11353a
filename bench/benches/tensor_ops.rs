//! Workloads W1 (matmul, and the machine's FMA peak), W2 (conv2d), W7 (elementwise) and W9 (softmax), f32.
//!
//! Run through `cargo xtask bench [W1|W2|W7|W9] [--vs torch]`, which fixes the thread count
//! and collects the medians into `target/bench/results.json`. Ids follow
//! `<WORKLOAD>_<name>/<impl>/<variant>` (see `xtask/src/bench.rs`).
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use strata_tensor::{Conv2dParams, Tensor, seeded_rng};

fn w1_matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("W1_matmul");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for n in [256usize, 512, 1024, 2048] {
        let mut rng = seeded_rng(n as u64);
        let a = Tensor::<f32>::randn(&[n, n], &mut rng);
        let b = Tensor::<f32>::randn(&[n, n], &mut rng);
        group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        let id = format!("n={n}");
        group.bench_function(BenchmarkId::new("strata", &id), |bench| {
            bench.iter(|| black_box(a.matmul(&b).unwrap()))
        });
        // faer's own product on the same matrices (column-major copies, preallocated output).
        let fa = faer::Mat::<f32>::from_fn(n, n, |i, j| a.get(&[i, j]).unwrap());
        let fb = faer::Mat::<f32>::from_fn(n, n, |i, j| b.get(&[i, j]).unwrap());
        let mut fc = faer::Mat::<f32>::zeros(n, n);
        group.bench_function(BenchmarkId::new("faer", &id), |bench| {
            bench.iter(|| {
                faer::linalg::matmul::matmul(
                    fc.as_mut(),
                    faer::Accum::Replace,
                    fa.as_ref(),
                    fb.as_ref(),
                    1.0,
                    faer::Par::rayon(0),
                );
                black_box(&fc);
            })
        });
    }
    group.finish();
}

/// The products training runs, named `<where>_<m>x<n>x<k>` (`t` marks a transposed
/// operand, a view with swapped strides as autograd makes them; `b128` a batch of 128
/// products): an MLP's Linear 784→512 at batch 128 (forward `x·Wᵀ`, input gradient `g·W`,
/// weight gradient `gᵀ·x`), the same forward at batch 32, the fused QKV projection of W6's
/// transformer layer, the weight gradient of its feed-forward, and its per-head attention
/// scores `Q·Kᵀ`. Shared with `bench/torch_bench.py`.
const GEMM_SHAPES: &[(&str, [usize; 4], bool, bool)] = &[
    // (param, [batch, m, n, k], a transposed, b transposed)
    ("fwd_128x512x784t", [1, 128, 512, 784], false, true),
    ("dgrad_128x784x512", [1, 128, 784, 512], false, false),
    ("wgrad_512tx784x128", [1, 512, 784, 128], true, false),
    ("fwd_32x512x784t", [1, 32, 512, 784], false, true),
    ("qkv_2048x768x256t", [1, 2048, 768, 256], false, true),
    ("wgrad_1024tx256x2048", [1, 1024, 256, 2048], true, false),
    ("scores_b128_128x128x32t", [128, 128, 128, 32], false, true),
];

fn w1_gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("W1_gemm");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for &(param, [batch, m, n, k], ta, tb) in GEMM_SHAPES {
        let mut rng = seeded_rng(m as u64);
        let operand = |rows: usize, cols: usize, transposed: bool, rng: &mut _| {
            if transposed {
                Tensor::<f32>::randn(&[batch, cols, rows], rng)
                    .transpose(1, 2)
                    .unwrap()
            } else {
                Tensor::<f32>::randn(&[batch, rows, cols], rng)
            }
        };
        let a = operand(m, k, ta, &mut rng);
        let b = operand(k, n, tb, &mut rng);
        let (a, b) = if batch == 1 {
            (a.squeeze(0).unwrap(), b.squeeze(0).unwrap())
        } else {
            (a, b)
        };
        group.throughput(Throughput::Elements(2 * (batch * m * n * k) as u64));
        group.bench_function(BenchmarkId::new("strata", param), |bench| {
            bench.iter(|| black_box(a.matmul(&b).unwrap()))
        });
    }
    group.finish();
}

/// Linear layers' forwards with their epilogue, named `<what>_<rows>x<out>x<in>`: W4's first
/// layer with its bias (`F.linear(x, w, b)`), and W6's feed-forward hidden layer with its
/// bias and ReLU (`relu(F.linear(x, w, b))`), which strata applies as the product stores
/// its result. Shared with `bench/torch_bench.py`.
const LINEAR_SHAPES: &[(&str, [usize; 3], bool)] = &[
    // (param, [rows, out, in], relu)
    ("linear_bias_128x512x784", [128, 512, 784], false),
    ("linear_relu_2048x1024x256", [2048, 1024, 256], true),
];

fn w1_linear(c: &mut Criterion) {
    let mut group = c.benchmark_group("W1_gemm");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for &(param, [rows, out, inf], relu) in LINEAR_SHAPES {
        let mut rng = seeded_rng(rows as u64);
        let x = Tensor::<f32>::randn(&[rows, inf], &mut rng);
        let w = Tensor::<f32>::randn(&[out, inf], &mut rng);
        let b = Tensor::<f32>::randn(&[out], &mut rng);
        group.throughput(Throughput::Elements(2 * (rows * out * inf) as u64));
        group.bench_function(BenchmarkId::new("strata", param), |bench| {
            if relu {
                bench.iter(|| black_box(x.linear_relu(&w, Some(&b)).unwrap()))
            } else {
                bench.iter(|| black_box(x.linear(&w, Some(&b)).unwrap()))
            }
        });
    }
    group.finish();
}

/// The machine's f32 peak (register-only FMAs on every thread), the yardstick of W1, and
/// the ceiling of strata's GEMM (its tile loop on packed operands in cache: what a product
/// could reach without packing, cache misses and fork-join).
fn w1_peak(c: &mut Criterion) {
    const STEPS: usize = 1 << 20;
    const REPS: usize = 1 << 9;
    let (Some(flops), Some(kernel_flops)) = (
        strata_tensor::fma_peak_probe(1),
        strata_tensor::gemm_kernel_probe(1),
    ) else {
        return;
    };
    let mut group = c.benchmark_group("W1_peak");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(flops * STEPS as u64));
    let id = format!("threads={}", rayon::current_num_threads());
    group.bench_function(BenchmarkId::new("fma", &id), |bench| {
        bench.iter(|| black_box(strata_tensor::fma_peak_probe(STEPS)))
    });
    group.throughput(Throughput::Elements(kernel_flops * REPS as u64));
    group.bench_function(BenchmarkId::new("kernel", &id), |bench| {
        bench.iter(|| black_box(strata_tensor::gemm_kernel_probe(REPS)))
    });
    group.finish();
}

fn w2_conv2d(c: &mut Criterion) {
    let mut group = c.benchmark_group("W2_conv2d");
    let mut rng = seeded_rng(2);
    let x = Tensor::<f32>::randn(&[32, 3, 32, 32], &mut rng);
    let w = Tensor::<f32>::randn(&[32, 3, 3, 3], &mut rng);
    let p = Conv2dParams::default().padding(1);
    // 2 · N · O · Ho · Wo · C · kh · kw
    group.throughput(Throughput::Elements(2 * 32 * 32 * 32 * 32 * 3 * 3 * 3));
    group.bench_function(BenchmarkId::new("strata", "fwd"), |bench| {
        bench.iter(|| black_box(x.conv2d(&w, None, p).unwrap()))
    });
    group.finish();
}

fn w7_elementwise(c: &mut Criterion) {
    const N: usize = 16_777_216;
    let mut group = c.benchmark_group("W7_elementwise");
    group.sample_size(20);
    let mut rng = seeded_rng(7);
    let a = Tensor::<f32>::randn(&[N], &mut rng);
    let b = Tensor::<f32>::randn(&[N], &mut rng);
    let bytes = (N * size_of::<f32>()) as u64;

    group.throughput(Throughput::Bytes(3 * bytes));
    group.bench_function(BenchmarkId::new("strata", "add"), |bench| {
        bench.iter(|| black_box(&a + &b))
    });
    let mut acc = a.clone().contiguous();
    acc.add_(&Tensor::scalar(0.0)).unwrap(); // own the buffer before timing
    group.bench_function(BenchmarkId::new("strata", "add_inplace"), |bench| {
        bench.iter(|| {
            acc.add_(&b).unwrap();
            black_box(&acc);
        })
    });

    group.throughput(Throughput::Bytes(2 * bytes));
    group.bench_function(BenchmarkId::new("strata", "gelu"), |bench| {
        bench.iter(|| black_box(a.gelu()))
    });
    let src = a.to_vec();
    let mut dst = vec![0.0f32; N];
    group.bench_function(BenchmarkId::new("memcpy", "copy"), |bench| {
        bench.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        })
    });
    group.finish();
}

fn w9_softmax(c: &mut Criterion) {
    let mut group = c.benchmark_group("W9_softmax");
    let x = Tensor::<f32>::randn(&[4096, 1024], &mut seeded_rng(9));
    group.throughput(Throughput::Bytes(2 * (x.numel() * size_of::<f32>()) as u64));
    group.bench_function(BenchmarkId::new("strata", "4096x1024"), |bench| {
        bench.iter(|| black_box(x.softmax(-1).unwrap()))
    });
    group.finish();
}

criterion_group!(
    benches,
    w1_peak,
    w1_matmul,
    w1_gemm,
    w1_linear,
    w2_conv2d,
    w7_elementwise,
    w9_softmax
);
criterion_main!(benches);
