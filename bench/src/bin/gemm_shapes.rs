//! `gemm_shapes [B]xMxNxK[:ta][:tb] ...`: the machine's f32 peak and strata's matrix-product
//! speed at the shapes given, for tuning the GEMM kernel between criterion runs.
//!
//! A leading `B` (as in `128x128x128x32`) times a batch of `B` products (`matmul` of 3-D
//! tensors, as attention runs them).
//! `:ta` / `:tb` make `A` / `B` a transposed view (as autograd's backward products are).
//! Each shape is timed in 5 rounds of repeated products; the median and best rounds are
//! printed in GFLOP/s, beside the fraction of the peak (register-only FMAs on every thread
//! of the pool, [`strata_tensor::fma_peak_probe`]), and the ceiling of the GEMM's tile loop
//! on packed operands in cache ([`strata_tensor::gemm_kernel_probe`]). `STRATA_GEMM=faer` times faer's kernel
//! instead, `RAYON_NUM_THREADS` sets the threads.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Instant;

use strata_tensor::{Tensor, seeded_rng};

/// One product to time: `[batch, m, k] · [batch, k, n]`, either operand possibly
/// transposed.
struct Shape {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
}

fn parse(arg: &str) -> Result<Shape, String> {
    let mut parts = arg.split(':');
    let dims: Vec<usize> = parts
        .next()
        .unwrap_or("")
        .split('x')
        .map(|d| {
            d.parse()
                .map_err(|_| format!("`{arg}`: `{d}` is not a size"))
        })
        .collect::<Result<_, _>>()?;
    let (batch, m, n, k) = match dims[..] {
        [m, n, k] => (1, m, n, k),
        [batch, m, n, k] => (batch, m, n, k),
        _ => return Err(format!("`{arg}`: expected MxNxK or BxMxNxK")),
    };
    let (mut ta, mut tb) = (false, false);
    for flag in parts {
        match flag {
            "ta" => ta = true,
            "tb" => tb = true,
            other => return Err(format!("`{arg}`: unknown flag `{other}` (ta, tb)")),
        }
    }
    let volume = [m, n, k]
        .iter()
        .try_fold(batch, |acc, &d| acc.checked_mul(d));
    if batch == 0 || m == 0 || n == 0 || k == 0 || volume.is_none() {
        return Err(format!(
            "`{arg}`: sizes must be positive and their product finite"
        ));
    }
    Ok(Shape {
        batch,
        m,
        n,
        k,
        ta,
        tb,
    })
}

/// GFLOP/s of `rounds` rounds of `reps` calls, sorted.
fn rounds(flops: f64, reps: usize, mut call: impl FnMut()) -> Vec<f64> {
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                call();
            }
            flops * reps as f64 / start.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates
}

fn main() -> ExitCode {
    let shapes: Result<Vec<Shape>, String> = std::env::args().skip(1).map(|a| parse(&a)).collect();
    let shapes = match shapes {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => {
            eprintln!("usage: gemm_shapes [B]xMxNxK[:ta][:tb] ...");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("gemm_shapes: {e}");
            return ExitCode::FAILURE;
        }
    };
    let steps = 1 << 22;
    let peak = strata_tensor::fma_peak_probe(1).map(|per_step| {
        rounds((per_step * steps as u64) as f64, 1, || {
            std::hint::black_box(strata_tensor::fma_peak_probe(steps));
        })[2]
    });
    match peak {
        Some(p) => println!(
            "peak {p:.1} GFLOP/s ({} threads)",
            rayon::current_num_threads()
        ),
        None => println!("peak: not measured (no AVX-512, or STRATA_PORTABLE set)"),
    }
    let reps = 1 << 10;
    let kernel = strata_tensor::gemm_kernel_probe(1).map(|per_rep| {
        rounds((per_rep * reps as u64) as f64, 1, || {
            std::hint::black_box(strata_tensor::gemm_kernel_probe(reps));
        })[2]
    });
    if let (Some(p), Some(k)) = (peak, kernel) {
        println!(
            "tile loop on packed operands in cache {k:.1} GFLOP/s ({:.0} % of peak)",
            100.0 * k / p
        );
    }
    let mut rng = seeded_rng(1);
    for Shape {
        batch,
        m,
        n,
        k,
        ta,
        tb,
    } in shapes
    {
        let mut operand = |rows: usize, cols: usize, transposed: bool| {
            let dims = |r: usize, c: usize| {
                if batch == 1 {
                    vec![r, c]
                } else {
                    vec![batch, r, c]
                }
            };
            if transposed {
                let t = Tensor::<f32>::randn(&dims(cols, rows), &mut rng);
                if batch == 1 { t.t() } else { t.transpose(1, 2) }
            } else {
                Ok(Tensor::<f32>::randn(&dims(rows, cols), &mut rng))
            }
        };
        let (a, b) = match (operand(m, k, ta), operand(k, n, tb)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("gemm_shapes: {e}");
                return ExitCode::FAILURE;
            }
        };
        let flops = 2.0 * (batch * m * n * k) as f64;
        let reps = ((2e10 / flops) as usize).clamp(1, 2000);
        let rates = rounds(flops, reps, || {
            std::hint::black_box(a.matmul(&b).expect("shapes agree"));
        });
        let of_peak = peak.map_or(String::new(), |p| {
            format!("  ({:.0} % of peak)", 100.0 * rates[2] / p)
        });
        let batch = if batch == 1 {
            String::new()
        } else {
            format!("{batch}x")
        };
        println!(
            "{batch}{m}x{n}x{k}{}{}: median {:.1} GFLOP/s, best {:.1}{of_peak}",
            if ta { ":ta" } else { "" },
            if tb { ":tb" } else { "" },
            rates[2],
            rates[4],
        );
    }
    ExitCode::SUCCESS
}
