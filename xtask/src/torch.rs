//! `--vs torch`: runs `bench/torch_bench.py` and reads its results.
//!
//! The Python is `$STRATA_TORCH_PYTHON` if set, else `python3`. If it cannot import torch,
//! or the script fails, a warning is printed and the run continues without torch figures.

use crate::report::{self, Record};
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

/// The script, relative to the workspace root.
pub const SCRIPT: &str = "bench/torch_bench.py";

/// glibc malloc settings for the PyTorch side (see [`run`]): buffers up to 64 MiB come
/// from the heap, which is trimmed only above 128 MiB free.
const GLIBC_STEADY_STATE: [(&str, &str); 2] = [
    ("MALLOC_MMAP_THRESHOLD_", "67108864"),
    ("MALLOC_TRIM_THRESHOLD_", "134217728"),
];

/// What a successful torch run produced.
pub struct TorchRun {
    /// `torch.__version__`.
    pub version: String,
    /// Rows with impl `torch`.
    pub records: Vec<Record>,
}

/// Runs the torch script with `threads` and `filter`; `None` (after a warning) if torch is
/// unavailable or the script fails.
pub fn run(root: &Path, threads: usize, filter: Option<&str>) -> Option<TorchRun> {
    let python = match std::env::var_os("STRATA_TORCH_PYTHON") {
        Some(p) if !p.is_empty() => p,
        _ => OsString::from("python3"),
    };
    let shown = python.to_string_lossy().into_owned();
    let warn = |why: &str| {
        eprintln!("warning: --vs torch: {why}; continuing without torch");
    };

    let check = Command::new(&python)
        .args(["-c", "import torch; print(torch.__version__)"])
        .stdin(Stdio::null())
        .output();
    let version = match check {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(_) => {
            warn(&format!(
                "`{shown} -c \"import torch\"` failed (set STRATA_TORCH_PYTHON to a Python with torch)"
            ));
            return None;
        }
        Err(e) => {
            warn(&format!(
                "cannot run `{shown}`: {e} (set STRATA_TORCH_PYTHON to a Python with torch)"
            ));
            return None;
        }
    };

    let mut command = Command::new(&python);
    command
        .current_dir(root)
        .arg(root.join(SCRIPT))
        .args(["--threads", &threads.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(filter) = filter {
        command.args(["--filter", filter]);
    }
    // glibc serves a buffer above its mmap threshold (128 KiB until a large buffer has been
    // freed, which raises it) with mmap and unmaps it on free, so a PyTorch op whose
    // multi-MB output is allocated per call page-faults on every call (W2's conv forward
    // alone: 2.9 ms instead of 0.49 ms), depending on what ran before in the process.
    // strata reuses its own buffers; PyTorch's steady state is measured with the
    // threshold held high, unless the caller set it.
    for (name, value) in GLIBC_STEADY_STATE {
        if std::env::var_os(name).is_none() {
            command.env(name, value);
        }
    }
    eprintln!(
        "xtask bench: {shown} {SCRIPT} --threads {threads}{}",
        match filter {
            Some(f) => format!(" --filter {f}"),
            None => String::new(),
        }
    );
    let output = match command.output() {
        Ok(output) => output,
        Err(e) => {
            warn(&format!("cannot run {SCRIPT}: {e}"));
            return None;
        }
    };
    if !output.status.success() {
        warn(&format!("{SCRIPT} failed ({})", output.status));
        return None;
    }
    match report::parse_records(&String::from_utf8_lossy(&output.stdout)) {
        Ok(records) => Some(TorchRun { version, records }),
        Err(e) => {
            warn(&format!("cannot read the output of {SCRIPT}: {e}"));
            None
        }
    }
}
