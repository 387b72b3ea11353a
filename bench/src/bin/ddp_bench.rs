//! W10: data-parallel training steps, timed across ranks (criterion times one process, so
//! this is a plain timed harness; `cargo xtask bench W10` builds and launches it).
//!
//! - W10a, `cnn sgd_b32`: W3's step (the reference CNN on 3×32×32, cross-entropy, SGD lr
//!   0.01) at a global batch of 32;
//! - W10b, `mlp adam_b128`: W4's step (MLP 784→512→256→10, Adam lr 1e-3) at a global batch
//!   of 128;
//! - `deep adam_b128`, a companion that shows what the overlap can do when the model lets
//!   it: an MLP of four 1024×1024 layers (1024→1024×4→10, Adam lr 1e-3, batch 128) with
//!   buckets of 4 MiB, one per layer. In W10a and W10b most of the gradient bytes belong to
//!   the first layer, whose gradient is final only at the very end of the backward, so no
//!   bucketing can hide their all-reduce behind it.
//!
//! Run alone it is one process (with `RAYON_NUM_THREADS` threads) training plainly, the
//! baseline; under `mpirun -np N` every rank takes `batch / N` samples through a
//! `DistributedDataParallel` model (PyTorch's bucket caps), and rank 0 also reports:
//!
//! - the overlap: the share of the all-reduce time the backward hides,
//!   `1 − exposed / all-reduce`, where `exposed` is the time the backward waited after
//!   launching its last bucket (measured by the reducer over the timed steps) and
//!   `all-reduce` the time the same buckets take when all-reduced on their own, one after
//!   the other, with nothing else running;
//! - the raw all-reduce bandwidth at the gradient sizes (bytes of a rank's gradients per
//!   second of that all-reduce: the limit the training step meets).
//!
//! ```sh
//! cargo build --release -p strata-bench --features mpi --bin ddp_bench
//! RAYON_NUM_THREADS=2 target/release/ddp_bench                      # 1 process × 2 threads
//! RAYON_NUM_THREADS=1 mpirun -np 2 target/release/ddp_bench         # 2 ranks × 1 thread
//! ```
//!
//! Output: the rows of `bench/torch_bench.py`'s format (a JSON list) on stdout, from rank 0;
//! details on stderr. Options: `--steps N` (timed steps, default 60), `--warmup N` (10),
//! `--only cnn|mlp`.

use std::time::Instant;

use strata_autograd::Var;
use strata_distributed::{Communicator, DdpConfig, ReduceOp, Reducer, World};
use strata_models::models::{Cnn, CnnConfig, Mlp};
use strata_nn::Forward;
use strata_nn::loss::{ClassLossOptions, cross_entropy};
use strata_optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use strata_tensor::{IndexTensor, Tensor, seeded_rng};

type Error = Box<dyn std::error::Error>;

/// One workload: its row name, global batch, input shape (without the batch), the model
/// and its optimizer.
struct Workload {
    group: &'static str,
    param: &'static str,
    batch: usize,
    sample: &'static [usize],
    build: fn() -> Result<Built, Error>,
    /// Bucket caps in MiB (bucket, first bucket): PyTorch's defaults but for `deep`.
    buckets: (f64, f64),
}

/// A model and how to build its optimizer.
type Built = (Box<dyn Forward>, BuildOpt);

type BuildOpt = fn(Vec<Var>) -> Result<Box<dyn Optimizer>, Error>;

fn cnn() -> Result<Built, Error> {
    let model = Cnn::new(CnnConfig::CIFAR10, &mut seeded_rng(3))?;
    let opt: BuildOpt = |p| {
        Ok(Box::new(Sgd::new(
            p,
            SgdConfig {
                lr: 0.01,
                ..SgdConfig::default()
            },
        )?))
    };
    Ok((Box::new(model), opt))
}

fn mlp() -> Result<Built, Error> {
    let model = Mlp::new(&[784, 512, 256, 10], &mut seeded_rng(4))?;
    let opt: BuildOpt = |p| {
        Ok(Box::new(Adam::new(
            p,
            AdamConfig {
                lr: 1e-3,
                ..AdamConfig::default()
            },
        )?))
    };
    Ok((Box::new(model), opt))
}

fn deep() -> Result<Built, Error> {
    let model = Mlp::new(&[1024, 1024, 1024, 1024, 1024, 10], &mut seeded_rng(5))?;
    let opt: BuildOpt = |p| {
        Ok(Box::new(Adam::new(
            p,
            AdamConfig {
                lr: 1e-3,
                ..AdamConfig::default()
            },
        )?))
    };
    Ok((Box::new(model), opt))
}

const WORKLOADS: &[Workload] = &[
    Workload {
        group: "cnn",
        param: "sgd_b32",
        batch: 32,
        sample: &[3, 32, 32],
        build: cnn,
        buckets: (25.0, 1.0),
    },
    Workload {
        group: "mlp",
        param: "adam_b128",
        batch: 128,
        sample: &[784],
        build: mlp,
        buckets: (25.0, 1.0),
    },
    Workload {
        group: "deep",
        param: "adam_b128",
        batch: 128,
        sample: &[1024],
        build: deep,
        buckets: (4.0, 4.0),
    },
];

struct Options {
    steps: usize,
    warmup: usize,
    only: Option<String>,
}

fn options() -> Result<Options, Error> {
    let mut o = Options {
        steps: 60,
        warmup: 10,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--steps" => o.steps = value()?.parse()?,
            "--warmup" => o.warmup = value()?.parse()?,
            "--only" => o.only = Some(value()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(o)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn row(variant: String, impl_name: &str, median_s: f64, throughput: f64, unit: &str) -> String {
    format!(
        r#"{{"workload": "W10", "variant": "{variant}", "impl": "{impl_name}", "median_s": {median_s:e}, "throughput": {throughput:e}, "unit": "{unit}"}}"#
    )
}

/// Times one workload; returns its rows (on every rank; rank 0 prints them).
fn run(w: &Workload, comm: &Communicator, o: &Options) -> Result<Vec<String>, Error> {
    let (rank, size) = (comm.rank(), comm.size());
    let threads = rayon::current_num_threads();
    let mode = format!("{size}x{threads}");
    if !w.batch.is_multiple_of(size) {
        return Err(format!("batch {} does not divide among {size} ranks", w.batch).into());
    }
    let local = w.batch / size;
    let mut shape = vec![w.batch];
    shape.extend_from_slice(w.sample);
    let x = Tensor::<f32>::randn(&shape, &mut seeded_rng(10))
        .narrow(0, rank * local, local)?
        .contiguous();
    let x = Var::new(x);
    let y = IndexTensor::from_vec(
        (0..local)
            .map(|i| ((rank * local + i) % 10) as i64)
            .collect(),
        &[local],
    )?;
    let (model, make_opt) = (w.build)()?;
    // Data-parallel: rank 0's weights everywhere, gradients averaged in buckets during the
    // backward (what DistributedDataParallel does, without owning the model).
    let reducer = if size > 1 {
        let config = DdpConfig {
            bucket_cap_mb: w.buckets.0,
            first_bucket_cap_mb: w.buckets.1,
            ..DdpConfig::default()
        };
        Some(Reducer::new(&*model, comm, &config)?)
    } else {
        None
    };
    let mut opt = make_opt(model.parameters())?;
    let mut step = || -> Result<f64, Error> {
        let t = Instant::now();
        opt.zero_grad();
        let loss = cross_entropy(&model.forward(&x)?, &y, &ClassLossOptions::default())?;
        loss.backward()?;
        opt.step()?;
        Ok(t.elapsed().as_secs_f64())
    };
    for _ in 0..o.warmup {
        step()?;
    }
    comm.barrier()?;
    if let Some(r) = &reducer {
        r.reset_stats();
    }
    let times = (0..o.steps)
        .map(|_| step())
        .collect::<Result<Vec<f64>, Error>>()?;
    let step_s = median(times);
    let variant = |what: &str| format!("{} {what} {mode}", w.group);
    let mut rows = vec![row(
        variant(w.param),
        "strata",
        step_s,
        step_s * 1e6,
        "us/step",
    )];
    eprintln!(
        "ddp_bench rank {rank}: {} {} {mode}: median step {:.3} ms",
        w.group,
        w.param,
        step_s * 1e3
    );
    let Some(reducer) = reducer else {
        return Ok(rows);
    };
    // The same buckets all-reduced alone, one after the other, with nothing else running.
    let stats = reducer.stats();
    let sizes: Vec<usize> = reducer
        .buckets()
        .iter()
        .map(|names| {
            names
                .iter()
                .map(|n| {
                    model
                        .named_parameters()
                        .iter()
                        .find(|(k, _)| k == n)
                        .map_or(0, |(_, p)| p.numel())
                })
                .sum()
        })
        .collect();
    let mut buffers: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![1.0; n]).collect();
    for b in &mut buffers {
        comm.all_reduce(b, ReduceOp::Sum)?;
    }
    let mut raw = Vec::with_capacity(o.steps);
    for _ in 0..o.steps {
        comm.barrier()?;
        let t = Instant::now();
        for b in &mut buffers {
            comm.all_reduce(b, ReduceOp::Sum)?;
        }
        raw.push(t.elapsed().as_secs_f64());
    }
    let raw_s = median(raw);
    let steps = stats.steps.max(1) as f64;
    let exposed_s = stats.exposed_seconds / steps;
    let engine_s = stats.comm_seconds / steps;
    let hidden = (1.0 - exposed_s / raw_s).clamp(0.0, 1.0);
    let bytes = sizes.iter().sum::<usize>() * 4;
    eprintln!(
        "ddp_bench rank {rank}: {} {mode}: {} bucket(s) of {:?} gradients ({:.2} MB); all-reduce alone {:.3} ms \
         ({:.2} GB/s); in the step the backward waited {:.3} ms after its last bucket (the \
         communication thread spent {:.3} ms per step on buckets): {:.1} % hidden",
        w.group,
        sizes.len(),
        sizes,
        bytes as f64 / 1e6,
        raw_s * 1e3,
        bytes as f64 / raw_s / 1e9,
        exposed_s * 1e3,
        engine_s * 1e3,
        hidden * 100.0
    );
    rows.push(row(
        format!("overlap {} {mode}", w.group),
        "strata",
        exposed_s,
        hidden * 100.0,
        "% hidden",
    ));
    rows.push(row(
        format!("allreduce {}_grads {mode}", w.group),
        "mpi",
        raw_s,
        bytes as f64 / raw_s / 1e9,
        "GB/s",
    ));
    Ok(rows)
}

fn main() {
    let world = match World::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    world.abort_on_panic();
    let result = options().and_then(|o| {
        let mut rows = Vec::new();
        for w in WORKLOADS {
            if o.only.as_deref().is_none_or(|only| only == w.group) {
                rows.extend(run(w, world.comm(), &o)?);
            }
        }
        Ok(rows)
    });
    match result {
        Ok(rows) => {
            if world.rank() == 0 {
                println!("[\n{}\n]", rows.join(",\n"));
            }
        }
        Err(e) => world.fail(&e, 1),
    }
}
