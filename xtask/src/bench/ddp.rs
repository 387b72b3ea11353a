//! W10, data-parallel training steps: built and launched here rather than through
//! criterion, which times one process.
//!
//! The harness (`bench/src/bin/ddp_bench.rs`) is built in release with the `mpi` feature
//! when an MPI library is installed (without it, only the one-process rows are produced),
//! then run twice: alone with `RAYON_NUM_THREADS=<threads>` (one process × N threads, the
//! baseline), and under `mpirun -np 2` with one thread per rank. Its rows (the torch
//! script's JSON format) join the others. The ranks talk over TCP on the loopback interface
//! by default, as PyTorch's gloo does (`STRATA_MPIRUN_ARGS` replaces the transport flags,
//! `STRATA_MPIRUN` the launcher).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::bench::{BenchOptions, is_workload_id};
use crate::report::{self, Record};

/// The W10 benchmark ids, `<group>/<impl>/<param>` as the other workloads'.
const IDS: &[&str] = &[
    "W10_cnn/strata/sgd_b32",
    "W10_mlp/strata/adam_b128",
    "W10_deep/strata/adam_b128",
    "W10_overlap/strata/cnn",
    "W10_overlap/strata/mlp",
    "W10_overlap/strata/deep",
    "W10_allreduce/mpi/cnn_grads",
    "W10_allreduce/mpi/mlp_grads",
    "W10_allreduce/mpi/deep_grads",
];

/// Whether `filter` selects W10 (the same rule as for the criterion benches).
pub fn selected(filter: Option<&str>) -> bool {
    match filter {
        None => true,
        Some(f) if is_workload_id(f) => f == "W10",
        Some(f) => IDS.iter().any(|id| id.contains(f)),
    }
}

/// Whether a row of the harness passes `filter`.
fn keep(filter: Option<&str>, r: &Record) -> bool {
    match filter {
        None => true,
        Some(f) if is_workload_id(f) => true,
        Some(f) => {
            let mut words = r.variant.splitn(2, ' ');
            let (group, param) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            format!("{}_{group}/{}/{param}", r.workload, r.impl_name).contains(f)
        }
    }
}

/// Builds and runs the harness; its rows, or none (after a warning) if it cannot run.
pub fn run(root: &Path, target: &Path, options: &BenchOptions) -> Vec<Record> {
    let filter = options.filter.as_deref();
    let build = |features: &[&str]| {
        let mut command = crate::cargo();
        command
            .current_dir(root)
            .args([
                "build",
                "--release",
                "-p",
                "strata-bench",
                "--bin",
                "ddp_bench",
            ])
            .args(features);
        eprintln!(
            "xtask bench: cargo {}",
            command
                .get_args()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        command.status().is_ok_and(|s| s.success())
    };
    let launcher = std::env::var("STRATA_MPIRUN").unwrap_or_else(|_| "mpirun".into());
    let have_mpirun = Command::new(&launcher)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let with_mpi = have_mpirun && build(&["--features", "mpi"]);
    if !with_mpi {
        eprintln!(
            "warning: W10: no MPI (`{launcher}` or the mpi feature's build failed): only the \
             one-process rows; see the README, \"Many processes, many machines\""
        );
        if !build(&[]) {
            eprintln!("warning: W10: the harness does not build; skipping W10");
            return Vec::new();
        }
    }
    let binary = target.join("release").join("ddp_bench");
    let mut rows = Vec::new();
    let mut alone = Command::new(&binary);
    alone.env("RAYON_NUM_THREADS", options.threads.to_string());
    rows.extend(collect(alone, "one process"));
    if with_mpi {
        let mut ranks = Command::new(&launcher);
        ranks.env("RAYON_NUM_THREADS", "1");
        let open_mpi = Command::new(&launcher)
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Open MPI"));
        let transport = std::env::var("STRATA_MPIRUN_ARGS").unwrap_or_else(|_| {
            if open_mpi {
                "--oversubscribe --bind-to none --mca btl self,tcp --mca btl_tcp_if_include lo"
                    .into()
            } else {
                String::new()
            }
        });
        if open_mpi && running_as_root() {
            ranks
                .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
        }
        ranks
            .args(["-np", "2"])
            .args(transport.split_whitespace())
            .arg(&binary);
        rows.extend(collect(ranks, "two ranks"));
    }
    rows.retain(|r| keep(filter, r));
    rows
}

/// Runs one harness command and reads its rows.
fn collect(mut command: Command, what: &str) -> Vec<Record> {
    eprintln!(
        "xtask bench: W10 ({what}): {}",
        std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = match command.stderr(Stdio::inherit()).output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!("warning: W10 ({what}) failed ({})", o.status);
            return Vec::new();
        }
        Err(e) => {
            eprintln!("warning: W10 ({what}) did not start: {e}");
            return Vec::new();
        }
    };
    report::parse_records(&String::from_utf8_lossy(&output.stdout)).unwrap_or_else(|e| {
        eprintln!("warning: W10 ({what}): cannot read its rows: {e}");
        Vec::new()
    })
}

/// Open MPI refuses to start as root unless told it may.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next())
            == Some("0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_select_w10_as_the_other_workloads() {
        assert!(selected(None));
        assert!(selected(Some("W10")));
        assert!(!selected(Some("W1")));
        assert!(selected(Some("overlap")));
        assert!(selected(Some("W10_cnn")));
        assert!(!selected(Some("matmul")));
        let r = Record {
            workload: "W10".into(),
            variant: "cnn sgd_b32 2x1".into(),
            impl_name: "strata".into(),
            median_s: 1.0,
            throughput: 1.0,
            unit: "us/step".into(),
        };
        assert!(keep(Some("W10_cnn/strata/sgd_b32 2x1"), &r));
        assert!(!keep(Some("W10_mlp"), &r));
    }
}
