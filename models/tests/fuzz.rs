//! Fuzz targets for every reader and loader of strata-models: IDX, CIFAR-10, CSV and text
//! files (plain and gzipped), provenance records, and whole checkpoint folders. Each input
//! must give a clear error or a value that passes its reader's own invariants; nothing may
//! panic, hang or read without bound. The budget is `strata_testing::fuzz::budget()`: a few
//! dozen inputs per target in `cargo test`, a fixed time in CI (`STRATA_FUZZ_SECONDS`).

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{cifar_bytes, gzip, idx_bytes};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use strata_models::data::readers::{read_cifar10, read_csv, read_idx, read_text};
use strata_models::reference::{self, Model, TrainOptions};
use strata_testing::fuzz::{fuzz, mutated, scratch};

/// Writes `bytes` to `path`, returning the path.
fn put(path: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::write(path, bytes).expect("write a fuzz input");
    path.to_path_buf()
}

/// Valid inputs and their gzipped forms.
fn with_gzip(seeds: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let zipped: Vec<Vec<u8>> = seeds.iter().map(|s| gzip(s)).collect();
    seeds.into_iter().chain(zipped).collect()
}

#[test]
fn fuzz_idx() {
    let dir = scratch("idx");
    let path = dir.join("input");
    let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
    let seeds = with_gzip(vec![
        idx_bytes(&[2, 3, 4], &pixels),
        idx_bytes(&[5], &[1, 2, 3, 4, 5]),
        idx_bytes(&[0, 28, 28], &[]),
    ]);
    fuzz("idx", mutated(seeds), |bytes| {
        if let Ok(a) = read_idx(&put(&path, &bytes)) {
            prop_assert_eq!(strata_tensor::checked_numel(&a.dims), Some(a.data.len()));
            prop_assert!(!a.dims.is_empty());
        }
        Ok(())
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn fuzz_cifar() {
    let dir = scratch("cifar");
    let path = dir.join("input");
    let seeds = with_gzip(vec![cifar_bytes(&[3, 9], 0), cifar_bytes(&[0], 5)]);
    fuzz("cifar", mutated(seeds), |bytes| {
        if let Ok(b) = read_cifar10(&put(&path, &bytes)) {
            prop_assert_eq!(b.pixels.len(), b.labels.len() * 3072);
            prop_assert!(b.labels.iter().all(|&l| l <= 9));
        }
        Ok(())
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn fuzz_csv() {
    let dir = scratch("csv");
    let path = dir.join("input");
    let seeds = with_gzip(vec![
        b"a,b,c\n1,2,3\n4.5,-6e3,7\n".to_vec(),
        b"\xef\xbb\xbf1 2\n3 4\n\n5 6\n".to_vec(),
        b"569,30,malignant,benign\n1.0,2.0,0\n".to_vec(),
    ]);
    fuzz("csv", mutated(seeds), |bytes| {
        let path = put(&path, &bytes);
        for (header, delimiter) in [(true, Some(',')), (false, Some(',')), (false, None)] {
            if let Ok(t) = read_csv(&path, header, delimiter) {
                prop_assert!(!t.rows.is_empty());
                let width = t.rows[0].len();
                prop_assert!(width > 0);
                for row in &t.rows {
                    prop_assert_eq!(row.len(), width);
                    prop_assert!(row.iter().all(|v| v.is_finite()));
                }
            }
        }
        Ok(())
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn fuzz_text() {
    let dir = scratch("text");
    let path = dir.join("input");
    let seeds = with_gzip(vec![
        "Call me Ishmael. Some years ago—never mind how long precisely—\n".into(),
        "\u{feff}ünïcödé\r\n\t€𝄞".as_bytes().to_vec(),
    ]);
    fuzz("text", mutated(seeds), |bytes| {
        if let Ok((text, vocab)) = read_text(&put(&path, &bytes)) {
            prop_assert!(!text.is_empty());
            prop_assert!(
                !text.starts_with('\u{feff}'),
                "the byte-order mark was kept"
            );
            prop_assert!(vocab.encode(&text).is_some());
        }
        Ok(())
    });
    std::fs::remove_dir_all(dir).unwrap();
}

/// A small trained logreg run (its checkpoint folder), made once per test binary.
fn trained() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let out = scratch("trained-logreg").join("run");
        reference::train(&TrainOptions {
            epochs: Some(1),
            limit: Some(64),
            progress: false,
            ..TrainOptions::new(Model::named("logreg").unwrap(), &out)
        })
        .expect("train a small logreg");
        out.join("checkpoint")
    })
}

/// Copies the checkpoint folder `from` into `to` (replacing it).
fn copy_checkpoint(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Every way of reading a checkpoint: info, eval, predict. An `Ok` evaluation must be
/// made of finite numbers.
fn read_every_way(ck: &Path, input: &Path) -> Result<(), TestCaseError> {
    let _ = reference::info(ck);
    if let Ok(e) = reference::eval(ck) {
        prop_assert!(e.loss.is_finite(), "eval gave loss {}", e.loss);
        prop_assert!(e.accuracy.is_none_or(|a| (0.0..=1.0).contains(&a)));
    }
    if let Ok(lines) = reference::predict(ck, input) {
        prop_assert_eq!(lines.len(), 1);
    }
    Ok(())
}

/// A JSON value with one leaf replaced: numbers by extreme numbers, strings by other
/// strings, anything by null — the edits of a hand-edited provenance record.
#[derive(Clone, Debug)]
enum JsonEdit {
    Number(prop::sample::Index, f64),
    Integer(prop::sample::Index, i128),
    Text(prop::sample::Index, String),
    Null(prop::sample::Index),
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    let at = any::<prop::sample::Index>;
    prop_oneof![
        (
            at(),
            prop_oneof![
                Just(1e300),
                Just(-1.0),
                Just(0.0),
                Just(0.5),
                Just(f64::MAX),
                Just(1e-300)
            ]
        )
            .prop_map(|(i, v)| JsonEdit::Number(i, v)),
        (
            at(),
            prop_oneof![
                Just(0i128),
                Just(-1),
                Just(1 << 40),
                Just(u64::MAX as i128),
                Just(1 << 62),
                Just(31)
            ]
        )
            .prop_map(|(i, v)| JsonEdit::Integer(i, v)),
        (
            at(),
            prop_oneof![
                Just(String::new()),
                Just("cnn".to_string()),
                Just("/dev/zero".to_string()),
                Just("x".repeat(1000))
            ]
        )
            .prop_map(|(i, v)| JsonEdit::Text(i, v)),
        at().prop_map(JsonEdit::Null),
    ]
}

/// The leaves of `v` as JSON pointers.
fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| leaves(v, format!("{at}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(v, format!("{at}/{i}"), out)),
        _ => out.push(at),
    }
}

fn apply_json(v: &mut Value, e: &JsonEdit) {
    let mut paths = Vec::new();
    leaves(v, String::new(), &mut paths);
    if paths.is_empty() {
        return;
    }
    let (i, new) = match e {
        JsonEdit::Number(i, x) => (i, serde_json::json!(x)),
        JsonEdit::Integer(i, n) => (
            i,
            serde_json::from_str(&n.to_string()).unwrap_or(Value::Null),
        ),
        JsonEdit::Text(i, s) => (i, Value::String(s.clone())),
        JsonEdit::Null(i) => (i, Value::Null),
    };
    if let Some(slot) = v.pointer_mut(&paths[i.index(paths.len())]) {
        *slot = new;
    }
}

/// Hand-edited provenance records: values replaced by extreme ones (sizes of 2^62, a
/// standardiser of 0, a data file of /dev/zero, another model's name), and the record's
/// bytes mutated.
#[test]
fn fuzz_provenance() {
    let base = trained();
    let dir = scratch("provenance");
    let ck = dir.join("checkpoint");
    copy_checkpoint(base, &ck);
    let input = put(
        &dir.join("row.csv"),
        &[b"1,".repeat(29), b"1\n".to_vec()].concat(),
    );
    let record: Value =
        serde_json::from_slice(&std::fs::read(base.join("provenance.json")).unwrap()).unwrap();
    let strategy = prop::collection::vec(json_edit(), 1..4);
    fuzz("provenance-values", strategy, |edits| {
        let mut r = record.clone();
        for e in &edits {
            apply_json(&mut r, e);
        }
        put(&ck.join("provenance.json"), r.to_string().as_bytes());
        read_every_way(&ck, &input)
    });
    let text = std::fs::read(base.join("provenance.json")).unwrap();
    fuzz("provenance-bytes", mutated(vec![text]), |bytes| {
        put(&ck.join("provenance.json"), &bytes);
        read_every_way(&ck, &input)
    });
    std::fs::remove_dir_all(dir).unwrap();
}

/// Whole checkpoint folders with one of their files mutated (weights, optimizer state,
/// record) — and the optimizer state given to `--resume`.
#[test]
fn fuzz_checkpoint_folder() {
    let base = trained();
    let dir = scratch("checkpoint");
    let ck = dir.join("checkpoint");
    let input = put(
        &dir.join("row.csv"),
        &[b"1,".repeat(29), b"1\n".to_vec()].concat(),
    );
    let files = [
        "model.safetensors",
        "optimizer.safetensors",
        "provenance.json",
    ];
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(base.join(f)).unwrap())
        .collect();
    let strategy = (0..files.len(), prop::collection::vec(any::<u8>(), 0..1))
        .prop_flat_map(move |(k, _)| (Just(k), mutated(vec![seeds[k].clone()])));
    fuzz("checkpoint-folder", strategy, |(k, bytes)| {
        copy_checkpoint(base, &ck);
        put(&ck.join(files[k]), &bytes);
        read_every_way(&ck, &input)?;
        let _ = strata_optim::OptimizerState::<f32>::load(&ck.join("optimizer.safetensors"));
        Ok(())
    });
    std::fs::remove_dir_all(dir).unwrap();
}
