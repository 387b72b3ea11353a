//! Project chores for strata, run as `cargo xtask <command>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! - `bench`: runs the criterion benches, collects their medians into
//!   `<target>/bench/results.json` (+ `meta.json`), optionally runs the PyTorch side
//!   (`bench/torch_bench.py`) and prints a comparison table. See [`bench`](mod@bench) for the naming
//!   convention the benches follow.
//! - `ci`: what CI runs (fmt, clippy and docs with warnings as errors, the tests, the fuzz
//!   targets), stopping at the first failure.
//!
//! Deliberately dependency-light: std and serde_json only, arguments parsed by hand.
#![forbid(unsafe_code)]

mod bench;
mod load;
mod meta;
mod report;
mod torch;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// Usage text printed by `cargo xtask help` and when no command is given.
const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  bench [FILTER] [--vs torch] [--threads N] [--rounds N]
      Run the criterion benches (`cargo bench --workspace --benches`) with
      RAYON_NUM_THREADS=N (default 2), write <target>/bench/results.json and
      <target>/bench/meta.json, and print a table with in-run ratios.
      FILTER: a workload id such as `W1` (exactly that workload, not W10..W12) or any
      substring of a benchmark id `<group>/<impl>/<param>`, e.g. `matmul/strata`.
      --vs torch: also run bench/torch_bench.py with the Python named by
      STRATA_TORCH_PYTHON (default `python3`) and compare against it.
      --rounds N: run strata's benches and PyTorch's N times, interleaved, and report
      each row's ratio per round and their median, with how busy the machine was
      (CPU time of other processes) during every run.
      W10 (data-parallel steps: one process x N threads, and 2 ranks x 1 thread under
      mpirun, over TCP loopback) runs its own harness, bench/src/bin/ddp_bench.rs; with
      --vs torch, PyTorch DDP over gloo.
  ci
      Run what CI runs: cargo fmt --all --check; cargo clippy --workspace --all-targets
      -- -D warnings; cargo doc (warnings denied); cargo test --workspace; the tensor
      and autograd tests again with STRATA_PORTABLE=1 (the portable kernels); the fuzz
      targets with 500 inputs each (STRATA_FUZZ_CASES=500), under a 1 GiB address-space
      limit where `sh` has `ulimit -v`. Stops at the first failure.
  help
      Print this message.
";

/// A parsed command line.
#[derive(Debug, PartialEq)]
enum Cli {
    /// `help`, `-h`, `--help`, or no arguments.
    Help,
    /// `ci`.
    Ci,
    /// `bench` with its options.
    Bench(bench::BenchOptions),
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let cli = match parse_args(&args) {
        Ok(cli) => cli,
        Err(message) => {
            eprintln!("error: {message} (see `cargo xtask help`)");
            return ExitCode::from(2);
        }
    };
    let result = match cli {
        Cli::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Cli::Ci => ci(),
        Cli::Bench(options) => bench::run(&options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the arguments after `cargo xtask`. Errors are one-line messages.
fn parse_args(args: &[OsString]) -> Result<Cli, String> {
    let mut strings = Vec::with_capacity(args.len());
    for arg in args {
        match arg.to_str() {
            Some(s) => strings.push(s.to_owned()),
            None => return Err(format!("argument {arg:?} is not valid UTF-8")),
        }
    }
    let Some((command, rest)) = strings.split_first() else {
        return Ok(Cli::Help);
    };
    match command.as_str() {
        "help" | "-h" | "--help" => Ok(Cli::Help),
        "ci" => match rest.first() {
            None => Ok(Cli::Ci),
            Some(extra) => Err(format!("`ci` takes no arguments, got `{extra}`")),
        },
        "bench" => parse_bench_args(rest).map(Cli::Bench),
        other if other.starts_with('-') => Err(format!("unknown flag `{other}`")),
        other => Err(format!("unknown command `{other}`")),
    }
}

/// Parses `bench [FILTER] [--vs torch] [--threads N] [--rounds N]`; `--flag=value` is
/// accepted too.
fn parse_bench_args(args: &[String]) -> Result<bench::BenchOptions, String> {
    let mut options = bench::BenchOptions::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline_value
                .clone()
                .or_else(|| iter.next().cloned())
                .ok_or_else(|| format!("`{name}` needs a value"))
        };
        match flag {
            "--vs" => {
                let against = value("--vs")?;
                if against != "torch" {
                    return Err(format!("`--vs` only supports `torch`, got `{against}`"));
                }
                options.vs_torch = true;
            }
            "--threads" => {
                let text = value("--threads")?;
                options.threads = match text.parse::<usize>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        return Err(format!(
                            "`--threads` needs a positive integer, got `{text}`"
                        ));
                    }
                };
            }
            "--rounds" => {
                let text = value("--rounds")?;
                options.rounds = match text.parse::<usize>() {
                    Ok(n) if (1..=100).contains(&n) => n,
                    _ => {
                        return Err(format!(
                            "`--rounds` needs an integer from 1 to 100, got `{text}`"
                        ));
                    }
                };
            }
            "-h" | "--help" => return Err("`bench` has no --help; see `cargo xtask help`".into()),
            flag if flag.starts_with('-') => return Err(format!("unknown flag `{flag}`")),
            filter => {
                if let Some(previous) = &options.filter {
                    return Err(format!(
                        "only one FILTER is allowed, got `{previous}` and `{filter}`"
                    ));
                }
                if filter.is_empty() {
                    return Err("FILTER must not be empty".into());
                }
                options.filter = Some(filter.to_owned());
            }
        }
    }
    Ok(options)
}

/// The packages and test binary that hold the fuzz targets.
const FUZZ_TESTS: [&str; 8] = [
    "-p",
    "strata-nn",
    "-p",
    "strata-optim",
    "-p",
    "strata-models",
    "--test",
    "integration",
];

/// Runs fmt, clippy, the docs, the tests, the portable-kernel tests and the fuzz targets
/// in order (what `.ci/run` runs), stopping at the first failure.
fn ci() -> Result<(), String> {
    /// A cargo command line and an environment variable it needs.
    type Step<'a> = (&'a [&'a str], Option<(&'a str, &'a str)>);
    let steps: [Step; 5] = [
        (&["fmt", "--all", "--check"], None),
        (
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            None,
        ),
        (
            &["doc", "--workspace", "--no-deps"],
            Some(("RUSTDOCFLAGS", "-D warnings")),
        ),
        (&["test", "--workspace"], None),
        (
            &["test", "-p", "strata-tensor", "-p", "strata-autograd"],
            Some(("STRATA_PORTABLE", "1")),
        ),
    ];
    let root = workspace_root();
    for (step, env) in steps {
        eprintln!("xtask ci: cargo {}", step.join(" "));
        let mut command = cargo();
        if let Some((key, value)) = env {
            command.env(key, value);
        }
        let status = command
            .args(step)
            .current_dir(&root)
            .status()
            .map_err(|e| format!("could not start cargo: {e}"))?;
        if !status.success() {
            return Err(format!("`cargo {}` failed ({status})", step.join(" ")));
        }
    }
    fuzz(&root)?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}

/// The fuzz step of `.ci/run`: the targets built, then run with 500 inputs each under
/// `ulimit -v 1048576` (1 GiB of address space: an allocation that trusts a forged header
/// aborts the run) with glibc's arenas capped, through `sh`. Where no `sh` takes the
/// limit (not Unix), they run without it.
fn fuzz(root: &std::path::Path) -> Result<(), String> {
    let mut build = vec!["test"];
    build.extend(FUZZ_TESTS);
    build.push("--no-run");
    eprintln!("xtask ci: cargo {}", build.join(" "));
    let built = cargo()
        .args(&build)
        .current_dir(root)
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if !built.success() {
        return Err(format!("`cargo {}` failed ({built})", build.join(" ")));
    }
    let mut run = vec!["test"];
    run.extend(FUZZ_TESTS);
    run.extend(["fuzz", "--", "--nocapture"]);
    let limited = cfg!(unix)
        && Command::new("sh")
            .args(["-c", "ulimit -v 1048576"])
            .status()
            .is_ok_and(|s| s.success());
    let mut command = if limited {
        eprintln!("xtask ci: ulimit -v 1048576; cargo {}", run.join(" "));
        let mut sh = Command::new("sh");
        // "$0" is cargo and "$@" its arguments: nothing is quoted by hand.
        sh.args(["-c", "ulimit -v 1048576 && exec \"$0\" \"$@\""])
            .arg(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(&run);
        sh
    } else {
        eprintln!(
            "xtask ci: cargo {} (without an address-space limit)",
            run.join(" ")
        );
        let mut c = cargo();
        c.args(&run);
        c
    };
    let status = command
        .env("MALLOC_ARENA_MAX", "2")
        .env("STRATA_FUZZ_CASES", "500")
        .current_dir(root)
        .status()
        .map_err(|e| format!("could not start the fuzz targets: {e}"))?;
    if !status.success() {
        return Err(format!("the fuzz targets failed ({status})"));
    }
    Ok(())
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

/// A `cargo` command, using the same cargo that launched xtask when known (`$CARGO`).
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse_args(&args)
    }

    #[test]
    fn no_arguments_and_help_print_usage() {
        assert_eq!(parse(&[]), Ok(Cli::Help));
        assert_eq!(parse(&["help"]), Ok(Cli::Help));
        assert_eq!(parse(&["--help"]), Ok(Cli::Help));
        assert_eq!(parse(&["ci"]), Ok(Cli::Ci));
    }

    #[test]
    fn bench_defaults_and_options() {
        let Ok(Cli::Bench(o)) = parse(&["bench"]) else {
            panic!("bench did not parse")
        };
        assert_eq!(o, bench::BenchOptions::default());
        assert_eq!(o.threads, 2);
        let Ok(Cli::Bench(o)) = parse(&["bench", "W1", "--vs", "torch", "--threads", "4"]) else {
            panic!("bench options did not parse")
        };
        assert_eq!(o.filter.as_deref(), Some("W1"));
        assert!(o.vs_torch);
        assert_eq!(o.threads, 4);
        let Ok(Cli::Bench(o)) = parse(&["bench", "--threads=8", "--vs=torch"]) else {
            panic!("--flag=value did not parse")
        };
        assert_eq!((o.threads, o.vs_torch, o.filter), (8, true, None));
        let Ok(Cli::Bench(o)) = parse(&["bench", "W1", "--rounds", "3"]) else {
            panic!("--rounds parses");
        };
        assert_eq!(o.rounds, 3);
        assert!(parse(&["bench", "--rounds", "0"]).is_err());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for args in [
            &["bench", "--frobnicate"][..],
            &["bench", "--threads"],
            &["bench", "--threads", "0"],
            &["bench", "--threads", "two"],
            &["bench", "--vs", "candle"],
            &["bench", "W1", "W2"],
            &["bench", ""],
            &["ci", "--fast"],
            &["--verbose"],
            &["deploy"],
        ] {
            let result = parse(args);
            assert!(result.is_err(), "{args:?} parsed as {result:?}");
            assert!(!result.unwrap_err().contains('\n'));
        }
    }
}
