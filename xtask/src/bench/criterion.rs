//! Reads the results criterion 0.8 leaves on disk.
//!
//! For every benchmark, criterion (`analysis::common` in criterion-0.8.2) writes
//! `<criterion dir>/<group>/<function>/<value>/new/` containing `estimates.json`
//! (`median.point_estimate`: nanoseconds per iteration), `benchmark.json` (the serialized
//! `BenchmarkId`: `group_id`, `function_id`, `value_str`, `throughput`), `sample.json` and
//! `tukey.json`. Path components are made file-name safe (`/`, `:` ... become `_`), so ids are
//! read from `benchmark.json`, never from the path. `base/` and `change/` folders hold older
//! runs and are skipped, as is any `new/` whose `estimates.json` predates this run.

use super::units::{self, Throughput};
use crate::report::Record;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::time::SystemTime;

/// Deepest folder visited below the criterion dir (`group/function/value/new` is 4).
const MAX_DEPTH: usize = 6;

/// Every benchmark whose `new/estimates.json` was modified at or after `since`. Unreadable
/// entries are reported on stderr and skipped; a missing criterion dir yields nothing.
pub fn collect(criterion_dir: &Path, since: SystemTime) -> Vec<Record> {
    let mut records = Vec::new();
    walk(criterion_dir, 0, since, &mut records);
    records
}

/// Visits `dir` recursively, reading every `new/` folder found on the way.
fn walk(dir: &Path, depth: usize, since: SystemTime, records: &mut Vec<Record>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // `DirEntry::file_type` does not follow symlinks, so a link cannot make us loop.
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !is_dir {
            continue;
        }
        let path = entry.path();
        if entry.file_name() == "new" {
            match read_new_dir(&path, since) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => {}
                Err(message) => eprintln!("warning: skipping {}: {message}", path.display()),
            }
        } else if depth < MAX_DEPTH {
            walk(&path, depth + 1, since, records);
        }
    }
}

/// Reads one `new/` folder; `Ok(None)` if it is stale or not a complete criterion result.
fn read_new_dir(new_dir: &Path, since: SystemTime) -> Result<Option<Record>, String> {
    let estimates_path = new_dir.join("estimates.json");
    let benchmark_path = new_dir.join("benchmark.json");
    let Ok(metadata) = fs::metadata(&estimates_path) else {
        return Ok(None);
    };
    let fresh = metadata.modified().map(|m| m >= since).unwrap_or(false);
    if !fresh || !benchmark_path.is_file() {
        return Ok(None);
    }
    let read = |path: &Path| {
        let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str::<Value>(&text).map_err(|e| format!("{}: {e}", path.display()))
    };
    record_from_json(&read(&benchmark_path)?, &read(&estimates_path)?).map(Some)
}

/// Builds a result row from parsed `benchmark.json` and `estimates.json`.
pub fn record_from_json(benchmark: &Value, estimates: &Value) -> Result<Record, String> {
    let group = benchmark
        .get("group_id")
        .and_then(Value::as_str)
        .ok_or("benchmark.json has no group_id")?;
    let mut function = benchmark.get("function_id").and_then(Value::as_str);
    let mut param = benchmark.get("value_str").and_then(Value::as_str);
    // `group.bench_function("strata/n=256", ..)` gives the same full id as
    // `BenchmarkId::new("strata", "n=256")` but stores no value_str: split it ourselves.
    let split = match (function, param) {
        (Some(id), None) => id.split_once('/'),
        _ => None,
    };
    if let Some((impl_name, value)) = split {
        (function, param) = (Some(impl_name), Some(value));
    }
    let median_ns = estimates
        .pointer("/median/point_estimate")
        .and_then(Value::as_f64)
        .ok_or("estimates.json has no median.point_estimate")?;
    if !(median_ns.is_finite() && median_ns > 0.0) {
        return Err(format!("median {median_ns} ns is not a positive time"));
    }
    let median_s = median_ns * 1e-9;

    let (workload, name) = group.split_once('_').unwrap_or((group, ""));
    let variant = match (name, param) {
        ("", Some(param)) => param.to_owned(),
        (name, Some(param)) => format!("{name} {param}"),
        (name, None) => name.to_owned(),
    };
    let tp = benchmark.get("throughput").and_then(parse_throughput);
    let (throughput, unit) = units::throughput(workload, tp, median_s);
    Ok(Record {
        workload: workload.to_owned(),
        variant,
        impl_name: function.unwrap_or("unknown").to_owned(),
        median_s,
        throughput,
        unit: unit.to_owned(),
    })
}

/// Parses criterion's serde form of `Throughput`: `{"Bytes": 4096}`, `{"Elements": 1000}`,
/// `{"ElementsAndBytes": {"elements": 1, "bytes": 4}}`, ...; `null` or unknown → `None`.
fn parse_throughput(value: &Value) -> Option<Throughput> {
    let (kind, count) = value.as_object()?.iter().next()?;
    match kind.as_str() {
        "Bytes" | "BytesDecimal" => count.as_u64().map(Throughput::Bytes),
        "Bits" => count.as_u64().map(Throughput::Bits),
        "Elements" => count.as_u64().map(Throughput::Elements),
        "ElementsAndBytes" => Some(Throughput::ElementsAndBytes {
            elements: count.get("elements")?.as_u64()?,
            bytes: count.get("bytes")?.as_u64()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::path::PathBuf;
    use std::time::{Duration, UNIX_EPOCH};

    /// A fresh, empty temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let dir = std::env::temp_dir().join(format!(
                "xtask-{tag}-{}-{}",
                std::process::id(),
                nanos.as_nanos()
            ));
            fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Writes `<root>/<dir>/{benchmark,estimates}.json` the way criterion 0.8 does.
    fn fake_bench(root: &Path, dir: &str, id: (&str, &str, &str), tp: &str, median_ns: f64) {
        let new_dir = root.join(dir);
        fs::create_dir_all(&new_dir).expect("create bench dir");
        let (group, function, value) = id;
        let benchmark = format!(
            r#"{{"group_id":"{group}","function_id":"{function}","value_str":"{value}",
            "throughput":{tp},"full_id":"{group}/{function}/{value}",
            "directory_name":"x","title":"{group}/{function}/{value}"}}"#
        );
        let estimate = |v: f64| {
            format!(
                r#"{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":{v},
                "upper_bound":{v}}},"point_estimate":{v},"standard_error":1.0}}"#
            )
        };
        let e = estimate(median_ns);
        let estimates = format!(
            r#"{{"mean":{e},"median":{e},"median_abs_dev":{e},"slope":null,"std_dev":{e}}}"#
        );
        fs::write(new_dir.join("benchmark.json"), benchmark).expect("write benchmark.json");
        fs::write(new_dir.join("estimates.json"), estimates).expect("write estimates.json");
        fs::write(new_dir.join("sample.json"), "{}").expect("write sample.json");
    }

    fn make_stale(path: &Path) {
        let file = File::options().write(true).open(path).expect("open");
        file.set_modified(UNIX_EPOCH + Duration::from_secs(1_000_000))
            .expect("set mtime");
    }

    #[test]
    fn collects_only_fresh_results_from_a_criterion_tree() {
        let tmp = TempDir::new("collect");
        let root = tmp.0.join("criterion");
        let since = SystemTime::now() - Duration::from_secs(60);
        let matmul = ("W1_matmul", "strata", "n=256");
        fake_bench(
            &root,
            "W1_matmul/strata/n=256/new",
            matmul,
            r#"{"Elements":33554432}"#,
            1e6,
        );
        // Criterion's copy of an older run, and the same benchmark's baseline: both ignored.
        fake_bench(
            &root,
            "W1_matmul/strata/n=256/base",
            matmul,
            r#"{"Elements":1}"#,
            5.0,
        );
        let copy = ("W7_elementwise", "memcpy", "copy");
        fake_bench(
            &root,
            "W7_elementwise/memcpy/copy/new",
            copy,
            r#"{"Bytes":2000}"#,
            1e3,
        );
        let step = ("W8_autograd", "strata", "linreg");
        fake_bench(
            &root,
            "W8_autograd/strata/linreg/new",
            step,
            r#"{"Elements":1000}"#,
            4e6,
        );
        let plain = ("W9_softmax", "strata", "4096x1024");
        fake_bench(
            &root,
            "W9_softmax/strata/4096x1024/new",
            plain,
            "null",
            2.5e6,
        );
        let stale = ("W2_conv2d", "strata", "fwd");
        fake_bench(
            &root,
            "W2_conv2d/strata/fwd/new",
            stale,
            r#"{"Elements":1}"#,
            1.0,
        );
        make_stale(&root.join("W2_conv2d/strata/fwd/new/estimates.json"));
        fs::create_dir_all(root.join("report")).expect("report dir");

        let mut records = collect(&root, since);
        crate::report::sort(&mut records);
        let rows: Vec<(&str, &str, &str, &str)> = records
            .iter()
            .map(|r| (&*r.workload, &*r.variant, &*r.impl_name, &*r.unit))
            .collect();
        assert_eq!(
            rows,
            [
                ("W1", "matmul n=256", "strata", "GFLOP/s"),
                ("W7", "elementwise copy", "memcpy", "GB/s"),
                ("W8", "autograd linreg", "strata", "us/step"),
                ("W9", "softmax 4096x1024", "strata", "ms"),
            ]
        );
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b;
        assert!(close(records[0].median_s, 1e-3));
        assert!(close(records[0].throughput, 33.554432));
        assert!(close(records[1].throughput, 2.0));
        assert!(close(records[2].throughput, 4.0));
        assert!(close(records[3].throughput, 2.5));

        assert!(collect(&tmp.0.join("missing"), since).is_empty());
    }

    #[test]
    fn malformed_results_are_errors() {
        let bench = |tp: &str| -> Value {
            serde_json::from_str(&format!(
                r#"{{"group_id":"W5","function_id":null,"value_str":"x","throughput":{tp}}}"#
            ))
            .expect("valid json")
        };
        let estimates = |ns: &str| -> Value {
            serde_json::from_str(&format!(r#"{{"median":{{"point_estimate":{ns}}}}}"#))
                .expect("valid json")
        };
        let r = record_from_json(&bench("null"), &estimates("2e6")).expect("parses");
        assert_eq!(
            (&*r.workload, &*r.variant, &*r.impl_name),
            ("W5", "x", "unknown")
        );
        assert!(record_from_json(&bench("null"), &estimates("0")).is_err());
        assert!(record_from_json(&bench("null"), &serde_json::json!({})).is_err());
        assert!(record_from_json(&serde_json::json!([]), &estimates("1")).is_err());
        let slash: Value = serde_json::from_str(
            r#"{"group_id":"W1_matmul","function_id":"strata/n=256","value_str":null}"#,
        )
        .expect("valid json");
        let r = record_from_json(&slash, &estimates("1e6")).expect("parses");
        assert_eq!((&*r.variant, &*r.impl_name), ("matmul n=256", "strata"));
        let odd = record_from_json(&bench(r#"{"Furlongs":3}"#), &estimates("1e6")).expect("ok");
        assert_eq!(odd.unit, "ms");
    }
}
