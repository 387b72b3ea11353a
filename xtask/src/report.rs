//! Result rows, `results.json` / `meta.json`, and the printed comparison table.
//!
//! Ratios are always "strata ÷ other" in the direction of the unit, so > 1 means strata is
//! better: for rates (GFLOP/s, GB/s) strata's throughput over the other's, for times
//! (us/step, ms) the other's over strata's.

use crate::bench::units;
use crate::meta::Meta;
use serde_json::Value;
use std::fs;
use std::path::Path;

/// One benchmark result, as written to `results.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Workload id, e.g. `W1`.
    pub workload: String,
    /// `<name> <param>`, e.g. `matmul n=256`.
    pub variant: String,
    /// Implementation, e.g. `strata`, `faer`, `memcpy`, `torch` (`impl` in JSON).
    pub impl_name: String,
    /// Median seconds per iteration.
    pub median_s: f64,
    /// Throughput (or time) in `unit`.
    pub throughput: f64,
    /// Unit of `throughput`; see [`units`].
    pub unit: String,
}

impl Record {
    /// The group name within the workload: the first word of the variant (`matmul`).
    pub fn group(&self) -> &str {
        self.variant.split(' ').next().unwrap_or("")
    }

    /// The JSON object, keys in a fixed, readable order.
    fn to_json(&self) -> String {
        format!(
            r#"{{"workload": {}, "variant": {}, "impl": {}, "median_s": {}, "throughput": {}, "unit": {}}}"#,
            Value::from(self.workload.as_str()),
            Value::from(self.variant.as_str()),
            Value::from(self.impl_name.as_str()),
            Value::from(self.median_s),
            Value::from(self.throughput),
            Value::from(self.unit.as_str()),
        )
    }

    /// Parses one object of `results.json` (or of the torch script's output).
    pub fn from_json(value: &Value) -> Result<Record, String> {
        let text = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(format!("no `{key}`"))
        };
        let number = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_f64)
                .ok_or(format!("no `{key}`"))
        };
        Ok(Record {
            workload: text("workload")?,
            variant: text("variant")?,
            impl_name: text("impl")?,
            median_s: number("median_s")?,
            throughput: number("throughput")?,
            unit: text("unit")?,
        })
    }
}

/// Parses a JSON list of records.
pub fn parse_records(json_text: &str) -> Result<Vec<Record>, String> {
    let value: Value = serde_json::from_str(json_text).map_err(|e| format!("not JSON: {e}"))?;
    let list = value.as_array().ok_or("expected a JSON list")?;
    list.iter()
        .enumerate()
        .map(|(i, item)| Record::from_json(item).map_err(|e| format!("item {i}: {e}")))
        .collect()
}

/// Sorts by workload number, group, variant, then impl (strata first, torch last).
pub fn sort(records: &mut [Record]) {
    let workload_number = |w: &str| {
        w.strip_prefix('W')
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    };
    let impl_rank = |i: &str| match i {
        "strata" => 0,
        "torch" => 2,
        _ => 1,
    };
    records.sort_by(|a, b| {
        (
            workload_number(&a.workload),
            &a.workload,
            a.group(),
            natural_key(&a.variant),
        )
            .cmp(&(
                workload_number(&b.workload),
                &b.workload,
                b.group(),
                natural_key(&b.variant),
            ))
            .then_with(|| {
                (impl_rank(&a.impl_name), &a.impl_name)
                    .cmp(&(impl_rank(&b.impl_name), &b.impl_name))
            })
    });
}

/// A sort key that orders digit runs numerically (`n=512` before `n=1024`).
fn natural_key(s: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits > 0 {
            key.push((rest[..digits].parse().unwrap_or(u64::MAX), String::new()));
            rest = &rest[digits..];
        } else {
            let text = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            key.push((0, rest[..text].to_owned()));
            rest = &rest[text..];
        }
    }
    key
}

/// How strata compares with `other`: > 1 means strata is better. `None` if the units
/// differ or a figure is not a positive number.
pub fn ratio(strata: &Record, other: &Record) -> Option<f64> {
    let (s, o) = (strata.throughput, other.throughput);
    if strata.unit != other.unit || !(s > 0.0 && o > 0.0 && s.is_finite() && o.is_finite()) {
        return None;
    }
    Some(if units::higher_is_better(&strata.unit) {
        s / o
    } else {
        o / s
    })
}

/// The rows strata's `row` is compared with inside the run: for each other impl (not strata,
/// not torch) in the same group, its row with the same variant; failing that, its only row
/// in the group (a reference such as `memcpy` `elementwise copy`). Returns (label, ratio).
pub fn in_run_ratios(row: &Record, records: &[Record]) -> Vec<(String, f64)> {
    let same_group = |r: &&Record| {
        r.workload == row.workload
            && r.group() == row.group()
            && r.impl_name != "strata"
            && r.impl_name != "torch"
    };
    let mut impls: Vec<&str> = Vec::new();
    for r in records.iter().filter(same_group) {
        if !impls.contains(&&*r.impl_name) {
            impls.push(&r.impl_name);
        }
    }
    let mut out = Vec::new();
    for name in impls {
        let rows: Vec<&Record> = records
            .iter()
            .filter(same_group)
            .filter(|r| r.impl_name == name)
            .collect();
        let (label, other) = match rows.iter().find(|r| r.variant == row.variant) {
            Some(other) => (name.to_owned(), *other),
            None if rows.len() == 1 => {
                let param = rows[0]
                    .variant
                    .strip_prefix(row.group())
                    .unwrap_or(&rows[0].variant);
                (format!("{name}[{}]", param.trim()), rows[0])
            }
            None => continue,
        };
        if let Some(r) = ratio(row, other) {
            out.push((label, r));
        }
    }
    out
}

/// Writes `results.json` (a list of records) and `meta.json` into `out_dir`.
pub fn write(out_dir: &Path, records: &[Record], meta: &Meta) -> Result<(), String> {
    fs::create_dir_all(out_dir).map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let rows: Vec<String> = records
        .iter()
        .map(|r| format!("  {}", r.to_json()))
        .collect();
    let results = if rows.is_empty() {
        "[]\n".to_owned()
    } else {
        format!("[\n{}\n]\n", rows.join(",\n"))
    };
    let meta_text = serde_json::to_string_pretty(&meta.to_json()).unwrap_or_default() + "\n";
    for (name, text) in [("results.json", results), ("meta.json", meta_text)] {
        let path = out_dir.join(name);
        fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Prints the machine line and the results table to stdout.
pub fn print_table(meta: &Meta, records: &[Record], vs_torch: bool) {
    let commit = if meta.dirty {
        format!("{}+dirty", meta.commit)
    } else {
        meta.commit.clone()
    };
    println!(
        "\n{} ({} cpus) | threads {} | profile {} | commit {} | {} | {}{}",
        meta.cpu,
        meta.cores,
        meta.threads,
        meta.profile,
        commit,
        meta.date,
        meta.rustc,
        meta.torch
            .as_ref()
            .map(|v| format!(" | torch {v}"))
            .unwrap_or_default()
    );
    // Without torch rows (torch missing or filtered out) the column would stay empty.
    let vs_torch = vs_torch && records.iter().any(|r| r.impl_name == "torch");
    let mut header = vec!["workload", "variant", "impl", "median", "throughput"];
    if vs_torch {
        header.push("vs torch");
    }
    header.push("vs others");
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(records.len());
    for r in records {
        let mut row = vec![
            r.workload.clone(),
            r.variant.clone(),
            r.impl_name.clone(),
            format_seconds(r.median_s),
            format!("{} {}", format_number(r.throughput), r.unit),
        ];
        let is_strata = r.impl_name == "strata";
        if vs_torch {
            let torch = records.iter().find(|t| {
                t.impl_name == "torch" && t.workload == r.workload && t.variant == r.variant
            });
            let cell = match (is_strata, torch.and_then(|t| ratio(r, t))) {
                (true, Some(x)) => format!("{x:.2}×"),
                _ => String::new(),
            };
            row.push(cell);
        }
        let others = if is_strata {
            in_run_ratios(r, records)
        } else {
            Vec::new()
        };
        let others: Vec<String> = others.iter().map(|(l, x)| format!("{l} {x:.2}×")).collect();
        row.push(others.join(", "));
        rows.push(row);
    }
    let header: Vec<String> = header.into_iter().map(String::from).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, &w))| {
                let pad = " ".repeat(w - c.chars().count());
                // median and throughput are right-aligned, everything else left-aligned.
                if i == 3 || i == 4 {
                    format!("{pad}{c}")
                } else {
                    format!("{c}{pad}")
                }
            })
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(&header);
    line(&widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>());
    for row in &rows {
        line(row);
    }
    if records.is_empty() {
        println!("(no results)");
    }
    println!("ratios: strata ÷ other in the unit's direction; > 1 means strata is better");
}

/// A duration with a readable unit: `812.3 ns`, `45.21 us`, `1.234 ms`, `2.500 s`.
fn format_seconds(s: f64) -> String {
    match s {
        s if s < 1e-6 => format!("{:.1} ns", s * 1e9),
        s if s < 1e-3 => format!("{:.2} us", s * 1e6),
        s if s < 1.0 => format!("{:.3} ms", s * 1e3),
        s => format!("{s:.3} s"),
    }
}

/// About four significant digits without an exponent for everyday magnitudes.
fn format_number(v: f64) -> String {
    match v.abs() {
        a if !a.is_finite() => format!("{v}"),
        a if a >= 1000.0 => format!("{v:.0}"),
        a if a >= 100.0 => format!("{v:.1}"),
        a if a >= 10.0 => format!("{v:.2}"),
        a if a >= 0.01 || a == 0.0 => format!("{v:.3}"),
        _ => format!("{v:.3e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(workload: &str, variant: &str, impl_name: &str, throughput: f64, unit: &str) -> Record {
        Record {
            workload: workload.into(),
            variant: variant.into(),
            impl_name: impl_name.into(),
            median_s: 1e-3,
            throughput,
            unit: unit.into(),
        }
    }

    #[test]
    fn ratios_follow_the_unit_direction() {
        let s = rec("W1", "matmul n=256", "strata", 60.0, "GFLOP/s");
        assert_eq!(
            ratio(&s, &rec("W1", "matmul n=256", "torch", 40.0, "GFLOP/s")),
            Some(1.5)
        );
        let s = rec("W8", "autograd linreg", "strata", 2.0, "us/step");
        assert_eq!(
            ratio(&s, &rec("W8", "autograd linreg", "torch", 30.0, "us/step")),
            Some(15.0)
        );
        assert_eq!(
            ratio(&s, &rec("W8", "autograd linreg", "torch", 30.0, "ms")),
            None
        );
        assert_eq!(
            ratio(&s, &rec("W8", "autograd linreg", "torch", 0.0, "us/step")),
            None
        );
    }

    #[test]
    fn in_run_ratios_match_variants_or_fall_back_to_the_reference_row() {
        let records = vec![
            rec("W1", "matmul n=256", "strata", 50.0, "GFLOP/s"),
            rec("W1", "matmul n=256", "faer", 100.0, "GFLOP/s"),
            rec("W1", "matmul n=512", "faer", 120.0, "GFLOP/s"),
            rec("W1", "matmul n=256", "torch", 10.0, "GFLOP/s"),
            rec("W7", "elementwise add", "strata", 8.0, "GB/s"),
            rec("W7", "elementwise copy", "memcpy", 10.0, "GB/s"),
        ];
        assert_eq!(
            in_run_ratios(&records[0], &records),
            [("faer".to_owned(), 0.5)]
        );
        assert_eq!(
            in_run_ratios(&records[4], &records),
            [("memcpy[copy]".to_owned(), 0.8)]
        );
    }

    #[test]
    fn json_round_trip_and_sorting() {
        let mut records = vec![
            rec("W10", "x y", "strata", 1.0, "ms"),
            rec("W1", "matmul n=1024", "strata", 1.0, "GFLOP/s"),
            rec("W1", "matmul n=256", "torch", 1.0, "GFLOP/s"),
            rec("W1", "matmul n=256", "faer", 1.0, "GFLOP/s"),
            rec("W1", "matmul n=256", "strata", 1.0, "GFLOP/s"),
            rec("W2", "conv2d fwd", "strata", 1.0, "GFLOP/s"),
        ];
        sort(&mut records);
        let order: Vec<(&str, &str, &str)> = records
            .iter()
            .map(|r| (&*r.workload, &*r.variant, &*r.impl_name))
            .collect();
        assert_eq!(
            order,
            [
                ("W1", "matmul n=256", "strata"),
                ("W1", "matmul n=256", "faer"),
                ("W1", "matmul n=256", "torch"),
                ("W1", "matmul n=1024", "strata"),
                ("W2", "conv2d fwd", "strata"),
                ("W10", "x y", "strata"),
            ]
        );
        let text = format!(
            "[{}]",
            records
                .iter()
                .map(Record::to_json)
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(parse_records(&text), Ok(records));
        assert!(parse_records("{}").is_err());
        assert!(parse_records(r#"[{"workload": "W1"}]"#).is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(format_seconds(1.5e-3), "1.500 ms");
        assert_eq!(format_seconds(2.5e-6), "2.50 us");
        assert_eq!(format_number(27.349), "27.35");
        assert_eq!(format_number(1234.4), "1234");
    }
}
