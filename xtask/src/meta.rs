//! `meta.json`: the machine, settings and revision a benchmark run belongs to.

use crate::bench::{self, BenchOptions};
use serde_json::{Value, json};
use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where and how the results were measured (`meta.json`).
#[derive(Clone, Debug)]
pub struct Meta {
    /// CPU model from /proc/cpuinfo.
    pub cpu: String,
    /// Logical CPUs.
    pub cores: usize,
    /// Threads the benches were told to use.
    pub threads: usize,
    /// Cargo profile of the benches.
    pub profile: &'static str,
    /// `git rev-parse --short HEAD`, or `unknown`.
    pub commit: String,
    /// Whether the work tree had uncommitted changes.
    pub dirty: bool,
    /// UTC date and time, ISO 8601.
    pub date: String,
    /// `rustc --version`.
    pub rustc: String,
    /// The FILTER given, if any.
    pub filter: Option<String>,
    /// PyTorch version, when torch results are included.
    pub torch: Option<String>,
}

impl Meta {
    /// Collects the machine description and run settings.
    pub fn gather(root: &Path, options: &BenchOptions, torch: Option<String>) -> Meta {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
            .map(|(_, model)| model.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let listed = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let cores = if listed > 0 {
            listed
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        };
        let rustc = std::process::Command::new(std::env::var_os("RUSTC").unwrap_or("rustc".into()))
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        Meta {
            cpu,
            cores,
            threads: options.threads,
            profile: "bench",
            commit: bench::git(root, &["rev-parse", "--short", "HEAD"])
                .unwrap_or_else(|| "unknown".into()),
            dirty: bench::git(root, &["status", "--porcelain"]).is_some_and(|s| !s.is_empty()),
            date: utc_now(),
            rustc,
            filter: options.filter.clone(),
            torch,
        }
    }

    /// The JSON object written to `meta.json`.
    pub fn to_json(&self) -> Value {
        json!({
            "machine": { "cpu": self.cpu, "cores": self.cores, "os": std::env::consts::OS,
                         "arch": std::env::consts::ARCH },
            "threads": self.threads,
            "profile": self.profile,
            "commit": self.commit,
            "dirty": self.dirty,
            "date": self.date,
            "rustc": self.rustc,
            "filter": self.filter,
            "torch": self.torch,
        })
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`, without a date crate.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc_from_unix(secs)
}

/// Civil date from Unix seconds (Howard Hinnant's `civil_from_days`).
fn utc_from_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_from_unix(1_767_225_599), "2025-12-31T23:59:59Z");
    }
}
