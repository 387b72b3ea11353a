//! Fuzz targets for every reader and loader of strata-models: IDX, CIFAR-10, CSV and text
//! files (plain and gzipped), provenance records, and whole checkpoint folders (weights,
//! optimizer state, record) of a tabular, an image and a character model. Each input must
//! give a clear error or a value that passes its reader's own invariants; nothing may
//! panic, hang or read without bound. The budget is `strata_testing::fuzz::budget()`: a
//! few dozen inputs per target in `cargo test`, more in CI (`STRATA_FUZZ_CASES`).

use crate::common::{TempDir, cifar_bytes, gzip, idx_bytes};

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use strata_models::data::readers::{read_cifar10, read_csv, read_idx, read_text};
use strata_models::reference::{self, Model, TrainOptions};
use strata_testing::fuzz::{Verdict, fuzz, mutated, verdict};

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
    let dir = TempDir::new("fuzz-idx");
    let path = dir.join("input");
    let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
    let seeds = with_gzip(vec![
        idx_bytes(&[2, 3, 4], &pixels),
        idx_bytes(&[5], &[1, 2, 3, 4, 5]),
        idx_bytes(&[0, 28, 28], &[]),
    ]);
    fuzz("idx", mutated(seeds), |bytes| {
        let read = read_idx(&put(&path, &bytes));
        if let Ok(a) = &read {
            // The dimensions count exactly the bytes read: never more than the file held
            // (a gzipped file at most 100 times its size).
            prop_assert!(!a.dims.is_empty());
            prop_assert_eq!(strata_tensor::checked_numel(&a.dims), Some(a.data.len()));
            prop_assert!(a.data.len() <= bytes.len().max(1) * 100);
        }
        verdict(&read)
    });
}

#[test]
fn fuzz_cifar() {
    let dir = TempDir::new("fuzz-cifar");
    let path = dir.join("input");
    let seeds = with_gzip(vec![cifar_bytes(&[3, 9], 0), cifar_bytes(&[0], 5)]);
    fuzz("cifar", mutated(seeds), |bytes| {
        let read = read_cifar10(&put(&path, &bytes));
        if let Ok(b) = &read {
            prop_assert!(!b.labels.is_empty());
            prop_assert_eq!(b.pixels.len(), b.labels.len() * 3072);
            prop_assert!(b.labels.iter().all(|&l| l <= 9));
        }
        verdict(&read)
    });
}

#[test]
fn fuzz_csv() {
    let dir = TempDir::new("fuzz-csv");
    let path = dir.join("input");
    let seeds = with_gzip(vec![
        b"a,b,c\n1,2,3\n4.5,-6e3,7\n".to_vec(),
        b"\xef\xbb\xbf1 2\n3 4\n\n5 6\n".to_vec(),
        b"569,30,malignant,benign\n1.0,2.0,0\n".to_vec(),
    ]);
    fuzz("csv", mutated(seeds), |bytes| {
        let path = put(&path, &bytes);
        let mut verdicts = Vec::new();
        for (header, delimiter) in [(true, Some(',')), (false, Some(',')), (false, None)] {
            let read = read_csv(&path, header, delimiter);
            if let Ok(t) = &read {
                prop_assert!(!t.rows.is_empty());
                let width = t.rows[0].len();
                prop_assert!(width > 0);
                for row in &t.rows {
                    prop_assert_eq!(row.len(), width);
                    prop_assert!(row.iter().all(|v| v.is_finite()), "{row:?}");
                }
            }
            verdicts.push(verdict(&read)?);
        }
        Ok(Verdict::any(verdicts))
    });
}

#[test]
fn fuzz_text() {
    let dir = TempDir::new("fuzz-text");
    let path = dir.join("input");
    let seeds = with_gzip(vec![
        "Call me Ishmael. Some years ago—never mind how long precisely—\n".into(),
        "\u{feff}ünïcödé\r\n\t€𝄞".as_bytes().to_vec(),
    ]);
    fuzz("text", mutated(seeds), |bytes| {
        let read = read_text(&put(&path, &bytes));
        if let Ok((text, vocab)) = &read {
            prop_assert!(!text.is_empty());
            prop_assert!(
                !text.starts_with('\u{feff}'),
                "the byte-order mark was kept"
            );
            prop_assert!(vocab.encode(text).is_some());
        }
        verdict(&read)
    });
}

/// A reference model trained for a moment, and how its checkpoint is read besides
/// `info` and `eval`.
struct Trained {
    name: &'static str,
    checkpoint: PathBuf,
    /// The input `predict` reads (`None`: a model that does not predict from files; a
    /// character model generates instead, the PINN is only evaluated).
    input: Option<PathBuf>,
}

/// Trains `model` briefly into `dir/run` and writes an input for its `predict`.
fn train(dir: &TempDir, model: &'static str) -> Trained {
    let out = dir.join("run");
    let base = TrainOptions::new(Model::named(model).unwrap(), &out);
    let opts = match model {
        "logreg" => TrainOptions {
            epochs: Some(1),
            limit: Some(64),
            ..base
        },
        "mlp" => TrainOptions {
            epochs: Some(1),
            limit: Some(64),
            dataset: Some("digits".into()),
            ..base
        },
        "cnn" => TrainOptions {
            epochs: Some(1),
            limit: Some(32),
            dataset: Some("digits".into()),
            ..base
        },
        "forecast" => TrainOptions {
            epochs: Some(1),
            dataset: Some("airline".into()),
            ..base
        },
        "seq-classifier" => TrainOptions {
            epochs: Some(1),
            limit: Some(32),
            dataset: Some("digits".into()),
            ..base
        },
        "char-rnn" | "char-transformer" => TrainOptions {
            steps: Some(2),
            limit: Some(4000),
            ..base
        },
        "pinn" => TrainOptions {
            steps: Some(2),
            ..base
        },
        "seq2seq" => TrainOptions {
            epochs: Some(1),
            limit: Some(32),
            batch_size: Some(16),
            ..base
        },
        other => panic!("no fuzz setup for {other}"),
    };
    reference::train(&TrainOptions {
        progress: false,
        ..opts
    })
    .unwrap_or_else(|e| panic!("train a small {model}: {e}"));
    let input = match model {
        "logreg" => Some(dir.write("row.csv", &[b"1,".repeat(29), b"1\n".to_vec()].concat())),
        "mlp" | "cnn" | "seq-classifier" => {
            Some(dir.write("images.idx", &idx_bytes(&[2, 8, 8], &[7; 128])))
        }
        "forecast" => Some(dir.write(
            "series.txt",
            "112\n118\n132\n129\n121\n135\n148\n148\n136\n119\n104\n118\n115\n".as_bytes(),
        )),
        "seq2seq" => Some(dir.write("dates.txt", b"Dec 5 2026\n05.12.2026\n")),
        _ => None,
    };
    Trained {
        name: model,
        checkpoint: out.join("checkpoint"),
        input,
    }
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

/// Every way of reading the checkpoint `ck` of `model`: info, eval, and predict (or
/// generate). What is read must be sane: an evaluation of finite numbers, one class per
/// sample, text of the length asked for.
fn read_every_way(model: &Trained, ck: &Path) -> Result<Verdict, TestCaseError> {
    let info = reference::info(ck);
    let eval = reference::eval(ck);
    if let Ok(e) = &eval {
        prop_assert!(e.loss.is_finite(), "eval gave loss {}", e.loss);
        if let Some(a) = e.accuracy {
            prop_assert!((0.0..=1.0).contains(&a), "accuracy {a}");
        }
    }
    let last = match &model.input {
        Some(input) => {
            let predict = reference::predict(ck, input);
            if let Ok(lines) = &predict {
                match model.name {
                    // Two forecasts: the 13 values hold two windows of 12.
                    "forecast" => {
                        prop_assert_eq!(lines.len(), 2);
                        for l in lines {
                            let v: f64 = l.parse().map_err(|_| TestCaseError::fail(l.clone()))?;
                            prop_assert!(v.is_finite(), "forecast {v}");
                        }
                    }
                    // Two translations of at most eleven characters (the longest output
                    // without its end token) of the vocabulary.
                    "seq2seq" => {
                        prop_assert_eq!(lines.len(), 2);
                        prop_assert!(
                            lines.iter().all(|l| l.chars().count() <= 11
                                && l.chars().all(|c| c.is_ascii_graphic() || c == ' ')),
                            "{lines:?}"
                        );
                    }
                    name => {
                        let classes: &[&str] = if name == "logreg" {
                            &["0", "1"]
                        } else {
                            &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
                        };
                        let samples = if name == "logreg" { 1 } else { 2 };
                        prop_assert_eq!(lines.len(), samples);
                        prop_assert!(
                            lines.iter().all(|l| classes.contains(&l.as_str())),
                            "{lines:?}"
                        );
                    }
                }
            }
            verdict(&predict)?
        }
        None => {
            let text = reference::generate(ck, "", 20, 0.8, 0);
            if let Ok(t) = &text {
                prop_assert_eq!(t.chars().count(), 20);
            }
            verdict(&text)?
        }
    };
    // `info` prints the record as it is, whatever it says: it is checked for clear errors
    // but does not count as reading the checkpoint.
    verdict(&info)?;
    Ok(Verdict::any([verdict(&eval)?, last]))
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
                Just("char-transformer".to_string()),
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

/// The value `e` puts in place, and the index of the leaf it replaces.
fn edit_value(e: &JsonEdit) -> (&prop::sample::Index, Value) {
    match e {
        JsonEdit::Number(i, x) => (i, serde_json::json!(x)),
        JsonEdit::Integer(i, n) => (
            i,
            serde_json::from_str(&n.to_string()).unwrap_or(Value::Null),
        ),
        JsonEdit::Text(i, s) => (i, Value::String(s.clone())),
        JsonEdit::Null(i) => (i, Value::Null),
    }
}

fn apply_json(v: &mut Value, e: &JsonEdit) {
    let mut paths = Vec::new();
    leaves(v, String::new(), &mut paths);
    if paths.is_empty() {
        return;
    }
    let (i, new) = edit_value(e);
    if let Some(slot) = v.pointer_mut(&paths[i.index(paths.len())]) {
        *slot = new;
    }
}

/// The record's text with one of its top-level members given twice: first with the
/// edit's value, then as it was (a JSON parser that keeps the last would read the
/// original, a reader of the file sees the first).
fn duplicate_member(record: &Value, e: &JsonEdit) -> String {
    let Value::Object(members) = record else {
        return record.to_string();
    };
    let (i, new) = edit_value(e);
    let keys: Vec<&String> = members.keys().collect();
    let key = keys[i.index(keys.len())];
    let text = record.to_string();
    format!("{{{}:{new},{}", Value::String(key.clone()), &text[1..])
}

/// Hand-edited provenance records of `model` (values replaced by extreme ones: sizes of
/// 2^62, a standardiser of 0, a data file of /dev/zero, another model's name; members
/// given twice), the record's bytes mutated, and each file of the checkpoint mutated
/// (weights, optimizer state, record), with the optimizer state also read on its own.
fn fuzz_checkpoint_of(model: &'static str) {
    let dir = TempDir::new(&format!("fuzz-{model}"));
    let trained = train(&dir, model);
    let base = trained.checkpoint.clone();
    let ck = dir.join("checkpoint");
    copy_checkpoint(&base, &ck);
    let record_bytes = std::fs::read(base.join("provenance.json")).unwrap();
    let record: Value = serde_json::from_slice(&record_bytes).unwrap();

    let edits = prop::collection::vec(json_edit(), 1..4);
    fuzz(&format!("{model}-provenance-values"), edits, |edits| {
        let mut r = record.clone();
        for e in &edits {
            apply_json(&mut r, e);
        }
        put(&ck.join("provenance.json"), r.to_string().as_bytes());
        read_every_way(&trained, &ck)
    });
    fuzz(
        &format!("{model}-provenance-duplicates"),
        json_edit(),
        |e| {
            put(
                &ck.join("provenance.json"),
                duplicate_member(&record, &e).as_bytes(),
            );
            let verdict = read_every_way(&trained, &ck)?;
            prop_assert_eq!(
                verdict,
                Verdict::Refused,
                "a record with a member given twice"
            );
            Ok(verdict)
        },
    );
    fuzz(
        &format!("{model}-provenance-bytes"),
        mutated(vec![record_bytes]),
        |bytes| {
            put(&ck.join("provenance.json"), &bytes);
            read_every_way(&trained, &ck)
        },
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
    let strategy =
        (0..files.len()).prop_flat_map(move |k| (Just(k), mutated(vec![seeds[k].clone()])));
    fuzz(
        &format!("{model}-checkpoint-files"),
        strategy,
        |(k, bytes)| {
            copy_checkpoint(&base, &ck);
            put(&ck.join(files[k]), &bytes);
            let every_way = read_every_way(&trained, &ck)?;
            if files[k] != "optimizer.safetensors" {
                return Ok(every_way);
            }
            // Only `--resume` reads the optimizer state: eval and predict never need it.
            prop_assert_eq!(every_way, Verdict::Accepted);
            let state = strata_optim::OptimizerState::<f32>::load(&ck.join(files[k]));
            if let Ok(state) = &state {
                prop_assert!(state.hyper.values().all(|v| v.is_finite()));
            }
            verdict(&state)
        },
    );
}

#[test]
fn fuzz_logreg_checkpoint() {
    fuzz_checkpoint_of("logreg");
}

#[test]
fn fuzz_mlp_checkpoint() {
    fuzz_checkpoint_of("mlp");
}

#[test]
fn fuzz_cnn_checkpoint() {
    fuzz_checkpoint_of("cnn");
}

#[test]
fn fuzz_forecast_checkpoint() {
    fuzz_checkpoint_of("forecast");
}

#[test]
fn fuzz_seq_classifier_checkpoint() {
    fuzz_checkpoint_of("seq-classifier");
}

#[test]
fn fuzz_char_rnn_checkpoint() {
    fuzz_checkpoint_of("char-rnn");
}

#[test]
fn fuzz_char_transformer_checkpoint() {
    fuzz_checkpoint_of("char-transformer");
}

#[test]
fn fuzz_pinn_checkpoint() {
    fuzz_checkpoint_of("pinn");
}

#[test]
fn fuzz_seq2seq_checkpoint() {
    fuzz_checkpoint_of("seq2seq");
}
