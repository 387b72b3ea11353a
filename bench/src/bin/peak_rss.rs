//! Peak resident memory of one benchmark workload run alone in a process, to set beside
//! `python3 bench/torch_bench.py --filter W6 --peak-rss 10`:
//!
//! ```sh
//! cargo run --release -p strata-bench --bin peak_rss -- W6 10
//! ```
//!
//! Workloads: `W5` (LSTM forward + backward) and `W6` (one AdamW step of a transformer
//! encoder layer), set up exactly as their criterion benches; `stack` (forward + backward
//! of six such layers in a `Sequential`) and `stack-checkpoint` (the same through
//! `checkpoint_sequential` in six segments, which keeps only the segment boundaries'
//! activations and recomputes the rest during backward).
#![forbid(unsafe_code)]

use std::sync::Arc;
use strata_autograd::Var;
use strata_nn::{
    Forward, LSTM, Module, RnnConfig, Sequential, TransformerEncoderLayer,
    TransformerEncoderLayerConfig, checkpoint_sequential,
};
use strata_optim::{AdamW, AdamWConfig, Optimizer};
use strata_tensor::{Tensor, seeded_rng};

/// (current, peak) resident memory in MB, from /proc/self/status.
fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().map(String::as_str).unwrap_or("W6");
    let calls: usize = args.get(1).map_or(Ok(10), |s| s.parse())?;
    let (before, _) = rss_mb();
    let mut rng = seeded_rng(6);
    let mut call: Box<dyn FnMut() -> Result<(), Box<dyn std::error::Error>>> = match workload {
        "W5" => {
            let lstm = LSTM::<f32>::new(RnnConfig::new(64, 256), &mut rng)?;
            let x = Var::new(Tensor::randn(&[64, 32, 64], &mut rng));
            Box::new(move || {
                let (out, _) = lstm.forward(&x, None)?;
                out.square().mean_all().backward()?;
                lstm.zero_grad();
                Ok(())
            })
        }
        "W6" => {
            let layer = TransformerEncoderLayer::<f32>::new(
                TransformerEncoderLayerConfig::new(256, 8)
                    .dim_feedforward(1024)
                    .dropout(0.0)
                    .batch_first(true),
                &mut rng,
            )?;
            let mut opt = AdamW::new(
                layer.parameters(),
                AdamWConfig {
                    lr: 1e-4,
                    ..AdamWConfig::default()
                },
            )?;
            let x = Var::new(Tensor::randn(&[16, 128, 256], &mut rng));
            Box::new(move || {
                opt.zero_grad();
                layer.forward(&x)?.square().mean_all().backward()?;
                opt.step()?;
                Ok(())
            })
        }
        "stack" | "stack-checkpoint" => {
            let mut stack = Sequential::<f32>::new();
            for _ in 0..6 {
                stack = stack.push(TransformerEncoderLayer::<f32>::new(
                    TransformerEncoderLayerConfig::new(256, 8)
                        .dim_feedforward(1024)
                        .dropout(0.0)
                        .batch_first(true),
                    &mut rng,
                )?);
            }
            let stack = Arc::new(stack);
            let x = Var::new(Tensor::randn(&[16, 128, 256], &mut rng));
            let checkpointed = workload == "stack-checkpoint";
            Box::new(move || {
                stack.zero_grad();
                let y = if checkpointed {
                    checkpoint_sequential(&stack, 6, &x)?
                } else {
                    stack.forward(&x)?
                };
                y.square().mean_all().backward()?;
                Ok(())
            })
        }
        other => {
            return Err(
                format!("unknown workload {other:?} (W5, W6, stack, stack-checkpoint)").into(),
            );
        }
    };
    let (after_setup, _) = rss_mb();
    for _ in 0..calls {
        call()?;
    }
    let (_, peak) = rss_mb();
    println!(
        "strata {workload}: rss {before:.0} MB at start, {after_setup:.0} MB after setup, \
         peak {peak:.0} MB over {calls} calls"
    );
    Ok(())
}
