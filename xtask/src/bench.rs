//! `cargo xtask bench [FILTER] [--vs torch] [--threads N]`.
//!
//! # Naming convention (shared with the criterion benches and `bench/torch_bench.py`)
//!
//! A criterion benchmark id is `<group>/<impl>/<param>`:
//! - group = `<WORKLOAD>_<name>`, e.g. `W1_matmul`, `W2_conv2d`, `W7_elementwise`,
//!   `W8_autograd`, `W9_softmax`; the workload id is the part before the first `_`;
//! - impl (criterion's function id) = `strata`, `faer`, `memcpy`, `candle`, ... (`torch` is
//!   reserved for the PyTorch script);
//! - param (criterion's parameter) = the variant, e.g. `n=256`, `fwd`, `add`, `linreg`.
//!
//! A result row is `{workload, variant, impl, median_s, throughput, unit}` with
//! variant = `<name> <param>`, e.g. `W1_matmul/strata/n=256` → workload `W1`, variant
//! `matmul n=256`, impl `strata`. The rows today:
//!
//! | group            | params                                          | throughput     |
//! |------------------|-------------------------------------------------|----------------|
//! | `W1_matmul`      | `n=256`, `n=512`, `n=1024`, `n=2048`            | FLOPs → GFLOP/s |
//! | `W1_gemm`        | `fwd_128x512x784t`, …: the products training runs | FLOPs → GFLOP/s |
//! | `W1_peak` (impls `fma`, `kernel`) | `threads=N`: register-only FMAs, the machine's peak; the GEMM's tile loop on packed operands in cache, its ceiling | FLOPs → GFLOP/s |
//! | `W2_conv2d`      | `fwd`, `fwd+bwd`                                | FLOPs → GFLOP/s |
//! | `W3_cnn`         | `train_step_b32`                                | steps → us/step |
//! | `W4_mlp`, `W4_adamw` | `adam_step_b128`; `update_10M`              | steps → us/step; bytes → GB/s |
//! | `W5_lstm`        | `fwd+bwd`                                       | none → ms      |
//! | `W6_transformer` | `adamw_step`                                    | none → ms      |
//! | `W7_elementwise` | `add`, `add_inplace`, `gelu`, `copy` (memcpy)   | bytes → GB/s   |
//! | `W8_autograd`    | `linreg`, `small_op`                            | steps → us/step |
//! | `W8_backward`    | `OP-fwd`, `OP-fwd+bwd` for large-input ops       | none → ms      |
//! | `W9_softmax`     | `4096x1024`                                     | bytes → GB/s   |
//! | `W9_layer_norm`  | `4096x1024`                                     | bytes → GB/s   |
//! | `W10_cnn`, `W10_mlp` | `sgd_b32 1x2`, `sgd_b32 2x1`; `adam_b128 …` (processes × threads) | us/step |
//! | `W10_overlap`    | `cnn 2x1`, `mlp 2x1`: all-reduce time hidden behind the backward | %       |
//! | `W10_allreduce` (impl `mpi`) | `cnn_grads 2x1`, `mlp_grads 2x1`: MPI all-reduce of the gradients | GB/s |
//! | `W11_cnn`, `W11_lstm` | `step_b32`, `dp_step_b32`; `step`, `dp_step`: W3's CNN and W5's LSTM, one plain and one DP-SGD step (torch: with Opacus when installed) | us/step |
//!
//! W10 (data-parallel steps) is timed by its own harness across processes, not by
//! criterion: see [`ddp`].
//! Criterion's `Throughput::Elements` is interpreted per workload (see [`units`]);
//! `Throughput::Bytes` is always GB/s.
//!
//! # FILTER
//!
//! A bare workload id (`W1`) selects exactly that workload (criterion regex `^W1_`, so W10..W12
//! are not picked up); anything else is a literal substring of the benchmark id
//! (regex-escaped before criterion sees it). The torch script applies the same rule.

mod criterion;
mod ddp;
pub mod units;

use crate::report::Record;
use crate::{load, meta, report, torch};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Options of `cargo xtask bench`.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchOptions {
    /// Workload id or id substring; `None` runs everything.
    pub filter: Option<String>,
    /// Also run and compare against PyTorch.
    pub vs_torch: bool,
    /// `RAYON_NUM_THREADS` for the benches and `torch.set_num_threads` for PyTorch.
    pub threads: usize,
    /// Interleaved rounds of strata's and PyTorch's benches (1: one of each).
    pub rounds: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            filter: None,
            vs_torch: false,
            threads: 2,
            rounds: 1,
        }
    }
}

/// Runs the benches, collects and writes the results, and prints the table.
pub fn run(options: &BenchOptions) -> Result<(), String> {
    let root = crate::workspace_root();
    // Benches run with the package directory as their working directory, so relative
    // CARGO_TARGET_DIR / CRITERION_HOME would resolve differently there: pass them absolute.
    let target_env = absolute_env("CARGO_TARGET_DIR")?;
    let criterion_home_env = absolute_env("CRITERION_HOME")?;
    let target = match &target_env {
        Some(dir) => dir.clone(),
        None => target_dir_from_metadata(&root),
    };
    let criterion_dir = criterion_home_env
        .clone()
        .unwrap_or_else(|| target.join("criterion"));

    let mut rounds: Vec<Round> = Vec::with_capacity(options.rounds);
    let mut bench_status = std::process::ExitStatus::default();
    let mut torch_version = None;
    for round in 1..=options.rounds {
        if options.rounds > 1 {
            eprintln!("xtask bench: round {round} of {}", options.rounds);
        }
        let probe = load::start();
        let start = start_time();
        let mut command = crate::cargo();
        command
            .current_dir(&root)
            .args(["bench", "--workspace", "--benches"]);
        if let Some(filter) = &options.filter {
            command.args(["--", &criterion_filter(filter)]);
        }
        command.env("RAYON_NUM_THREADS", options.threads.to_string());
        if let Some(dir) = &target_env {
            command.env("CARGO_TARGET_DIR", dir);
        }
        if let Some(dir) = &criterion_home_env {
            command.env("CRITERION_HOME", dir);
        }
        eprintln!(
            "xtask bench: RAYON_NUM_THREADS={} cargo {}",
            options.threads,
            command
                .get_args()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        // `W10` alone has no criterion bench.
        let criterion_wanted = options.filter.as_deref() != Some("W10");
        let status = if criterion_wanted {
            command
                .status()
                .map_err(|e| format!("could not start cargo: {e}"))?
        } else {
            std::process::ExitStatus::default()
        };
        if !status.success() {
            bench_status = status;
        }

        let mut records = criterion::collect(&criterion_dir, start);
        if ddp::selected(options.filter.as_deref()) {
            records.extend(ddp::run(&root, &target, options));
        }
        let strata_load = probe.as_ref().and_then(load::others);
        if records.is_empty() {
            eprintln!(
                "xtask bench: no benchmark results newer than the start of this run under {}",
                criterion_dir.display()
            );
        }

        let probe = load::start();
        let torch_run = if options.vs_torch {
            torch::run(&root, options.threads, options.filter.as_deref())
        } else {
            None
        };
        let torch_load = probe.as_ref().and_then(load::others);
        if let Some(run) = torch_run {
            torch_version = Some(run.version.clone());
            records.extend(run.records);
        }
        report::sort(&mut records);
        rounds.push(Round {
            records,
            strata_load,
            torch_load: options.vs_torch.then_some(torch_load).flatten(),
        });
    }
    let last = rounds.last().ok_or("no round ran")?;

    let meta = meta::Meta::gather(&root, options, torch_version);
    let out_dir = target.join("bench");
    report::write(&out_dir, &last.records, &meta)?;
    report::print_table(&meta, &last.records, options.vs_torch);
    println!(
        "machine while strata's benches ran: {}{}",
        load::describe(last.strata_load),
        if options.vs_torch {
            format!("; while PyTorch's ran: {}", load::describe(last.torch_load))
        } else {
            String::new()
        }
    );
    if rounds.len() > 1 {
        print_rounds(&rounds);
    }
    eprintln!(
        "xtask bench: wrote {}",
        out_dir.join("results.json").display()
    );

    if bench_status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo bench` failed ({bench_status}); the table shows what did run"
        ))
    }
}

/// One round of `--rounds`: its rows and how busy the machine was during each side.
struct Round {
    records: Vec<Record>,
    strata_load: Option<f64>,
    torch_load: Option<f64>,
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// Each strata row's ratio against PyTorch in every round, their median and spread, and
/// the machine's load during each round.
fn print_rounds(rounds: &[Round]) {
    println!("\nstrata ÷ torch per round (> 1: strata is faster), the median, and the spread:");
    for line in round_lines(rounds) {
        println!("{line}");
    }
}

/// The lines of [`print_rounds`]: one per strata row of the last round that has a ratio in
/// some round, then one per round with its load.
fn round_lines(rounds: &[Round]) -> Vec<String> {
    let mut lines = Vec::new();
    let Some(last) = rounds.last() else {
        return lines;
    };
    for row in last.records.iter().filter(|r| r.impl_name == "strata") {
        // A round without the row (PyTorch's run failed, or it lacks the workload) shows
        // as `–` and is left out of the median.
        let per_round: Vec<Option<f64>> = rounds
            .iter()
            .map(|round| {
                let find = |imp: &str| {
                    round.records.iter().find(|r| {
                        r.impl_name == imp && r.workload == row.workload && r.variant == row.variant
                    })
                };
                report::ratio(find("strata")?, find("torch")?)
            })
            .collect();
        let mut ratios: Vec<f64> = per_round.iter().flatten().copied().collect();
        if ratios.is_empty() {
            continue;
        }
        let shown: Vec<String> = per_round
            .iter()
            .map(|x| x.map_or("–".to_string(), |x| format!("{x:.2}")))
            .collect();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        let counted = if ratios.len() < rounds.len() {
            format!(", {} of {} rounds", ratios.len(), rounds.len())
        } else {
            String::new()
        };
        let mid = median(&mut ratios).unwrap_or(f64::NAN);
        lines.push(format!(
            "  {:<4} {:<28} {}  median {mid:.2}×  (spread {lo:.2}–{hi:.2}{counted})",
            row.workload,
            row.variant,
            shown.join(" ")
        ));
    }
    for (i, round) in rounds.iter().enumerate() {
        lines.push(format!(
            "  round {}: strata {}; torch {}",
            i + 1,
            load::describe(round.strata_load),
            load::describe(round.torch_load)
        ));
    }
    lines
}

/// Turns a user FILTER into criterion's regex: a bare workload id `W<digits>` becomes
/// `^W<digits>_`; anything else is escaped so it matches as a literal substring.
pub fn criterion_filter(filter: &str) -> String {
    if is_workload_id(filter) {
        return format!("^{filter}_");
    }
    let mut regex = String::with_capacity(filter.len() * 2);
    for c in filter.chars() {
        // The characters the `regex` crate treats as meta (what `regex::escape` escapes).
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            regex.push('\\');
        }
        regex.push(c);
    }
    regex
}

/// Whether `s` is a bare workload id such as `W1` or `W12`.
pub fn is_workload_id(s: &str) -> bool {
    s.len() > 1 && s.starts_with('W') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

/// The value of environment variable `name`, made absolute against the current directory.
fn absolute_env(name: &str) -> Result<Option<PathBuf>, String> {
    match std::env::var_os(name) {
        Some(value) if !value.is_empty() => std::path::absolute(PathBuf::from(&value))
            .map(Some)
            .map_err(|e| format!("cannot resolve {name}={}: {e}", value.to_string_lossy())),
        _ => Ok(None),
    }
}

/// The workspace's target directory per `cargo metadata` (which also honours
/// `build.target-dir`), falling back to `<root>/target`.
fn target_dir_from_metadata(root: &Path) -> PathBuf {
    let output = crate::cargo()
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output();
    let from_metadata = output.ok().filter(|o| o.status.success()).and_then(|o| {
        let json: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        json.get("target_directory")?.as_str().map(PathBuf::from)
    });
    from_metadata.unwrap_or_else(|| root.join("target"))
}

/// The start of the run, rounded down to a whole second so that file systems with coarse
/// modification times do not make fresh results look stale.
fn start_time() -> SystemTime {
    let now = SystemTime::now();
    match now.duration_since(UNIX_EPOCH) {
        Ok(since_epoch) => UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs()),
        Err(_) => now,
    }
}

/// Runs `git` in `root` and returns its trimmed stdout, or `None` if it failed.
pub fn git(root: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    fn record(impl_name: &str, variant: &str, throughput: f64) -> Record {
        Record {
            workload: "W1".into(),
            variant: variant.into(),
            impl_name: impl_name.into(),
            median_s: 1.0 / throughput,
            throughput,
            unit: "GFLOP/s".into(),
        }
    }

    #[test]
    fn a_round_without_pytorch_is_shown_and_left_out_of_the_median() {
        let round = |torch: Option<f64>| Round {
            records: [record("strata", "matmul n=256", 300.0)]
                .into_iter()
                .chain(torch.map(|t| record("torch", "matmul n=256", t)))
                .collect(),
            strata_load: Some(0.0),
            torch_load: torch.map(|_| 0.0),
        };
        let lines = round_lines(&[round(Some(250.0)), round(None), round(Some(300.0))]);
        assert_eq!(
            lines[0],
            "  W1   matmul n=256                 1.20 – 1.00  median 1.10×  (spread 1.00–1.20, 2 of 3 rounds)"
        );
        assert_eq!(lines.len(), 4);
        let all = round_lines(&[round(Some(250.0)), round(Some(300.0))]);
        assert!(
            all[0].ends_with("median 1.10×  (spread 1.00–1.20)"),
            "{}",
            all[0]
        );
        assert!(
            round_lines(&[round(None)])
                .iter()
                .all(|l| l.starts_with("  round"))
        );
    }

    #[test]
    fn workload_filters_are_anchored_and_others_escaped() {
        assert_eq!(criterion_filter("W1"), "^W1_");
        assert_eq!(criterion_filter("W12"), "^W12_");
        assert_eq!(criterion_filter("matmul"), "matmul");
        assert_eq!(
            criterion_filter("W1_matmul/strata/n=256"),
            "W1_matmul/strata/n=256"
        );
        assert_eq!(criterion_filter("4096x1024"), "4096x1024");
        assert_eq!(criterion_filter("a.b*(c)"), r"a\.b\*\(c\)");
        assert_eq!(criterion_filter("w1"), "w1");
        assert!(!is_workload_id("W"));
        assert!(!is_workload_id("W1_"));
        assert!(!is_workload_id("Wé"));
    }
}
