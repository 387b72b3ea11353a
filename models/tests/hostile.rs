//! strata-models as a hostile user and a failing machine would meet it: saves that fail
//! half-way or are interrupted between their renames, symbolic links planted in a run
//! folder, output folders that hold another run, trainings stopped and resumed, reports
//! that fail after training, impossible or silently wrong inputs, extreme arguments,
//! special files and gzip bombs, data errors that must name their place. Each test names
//! the class of issue #17 it covers.

use crate::common::{TempDir, gzip, idx_bytes};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use strata_models::checkpoint::{self, FileWriter};
use strata_models::data::readers::{read_cifar10, read_csv, read_idx, read_text};
use strata_models::data::{InMemoryDataset, Labels, bundled};
use strata_models::models::LinearRegression;
use strata_models::reference::{self, Model, ResumeOptions, TrainOptions};
use strata_models::{ModelsError, Result};
use strata_tensor::Tensor;

/// Quick options for `model` into `out`: no progress bars.
fn quick(model: &str, out: &Path) -> TrainOptions {
    TrainOptions {
        progress: false,
        ..TrainOptions::new(Model::named(model).unwrap(), out)
    }
}

/// Logistic regression for `epochs` epochs on 64 samples.
fn logreg(out: &Path, epochs: usize) -> TrainOptions {
    TrainOptions {
        epochs: Some(epochs),
        limit: Some(64),
        ..quick("logreg", out)
    }
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[track_caller]
fn error_containing<T: std::fmt::Debug>(result: Result<T>, needle: &str) -> String {
    let message = result.expect_err(needle).to_string();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    message
}

/// A file writer for `write_unit` that writes `text`.
fn writes(text: &'static str) -> impl Fn(&Path) -> Result<()> {
    move |p: &Path| {
        std::fs::write(p, text).map_err(|e| ModelsError::Config(e.to_string()))?;
        Ok(())
    }
}

/// Class 2: a save that fails half-way (the disk is full when the second file is
/// written) leaves the previous checkpoint byte for byte, and nothing beside it.
#[test]
fn a_failed_save_leaves_the_previous_checkpoint_whole() {
    let dir = TempDir::new("hostile-failed-save");
    let ck = dir.join("checkpoint");
    let (model, record) = (writes("old weights"), writes("{\"old\": true}"));
    let first: [FileWriter<'_>; 2] = [("model.safetensors", &model), ("provenance.json", &record)];
    checkpoint::write_unit(&ck, &first).unwrap();
    let new_model = writes("new weights");
    let full_disk = |p: &Path| -> Result<()> {
        std::fs::write(p, "half a rec").unwrap();
        Err(ModelsError::Config(
            "No space left on device (os error 28)".into(),
        ))
    };
    let second: [FileWriter<'_>; 2] = [
        ("model.safetensors", &new_model),
        ("provenance.json", &full_disk),
    ];
    let err = error_containing(
        checkpoint::write_unit(&ck, &second),
        "cannot write provenance.json",
    );
    assert!(err.contains("No space left"), "{err}");
    assert_eq!(bytes(&ck.join("model.safetensors")), b"old weights");
    assert_eq!(bytes(&ck.join("provenance.json")), b"{\"old\": true}");
    assert_eq!(
        names(dir.path()),
        ["checkpoint"],
        "a staged folder was left behind"
    );
    // The next save goes through and replaces both files.
    let new_record = writes("{\"new\": true}");
    let third: [FileWriter<'_>; 2] = [
        ("model.safetensors", &new_model),
        ("provenance.json", &new_record),
    ];
    checkpoint::write_unit(&ck, &third).unwrap();
    assert_eq!(bytes(&ck.join("model.safetensors")), b"new weights");
    assert_eq!(names(dir.path()), ["checkpoint"]);
}

/// Class 2: a crash between the two renames of a save leaves the new copy (and the
/// previous one) under hidden names and no checkpoint; the next read finishes the save.
/// Without a complete new copy, the previous one comes back.
#[test]
fn an_interrupted_swap_is_finished_by_the_next_read() {
    let dir = TempDir::new("hostile-interrupted");
    let ck = dir.join("checkpoint");
    let write = |at: &Path, weights: &str, record: &str| {
        std::fs::create_dir_all(at).unwrap();
        std::fs::write(at.join("model.safetensors"), weights).unwrap();
        std::fs::write(at.join("provenance.json"), record).unwrap();
    };
    write(&dir.join(".checkpoint.old-1-0"), "old", "{\"epoch\": 1}");
    write(&dir.join(".checkpoint.new-1-1"), "new", "{\"epoch\": 2}");
    assert_eq!(checkpoint::read_record(&ck).unwrap()["epoch"], 2);
    assert_eq!(bytes(&ck.join("model.safetensors")), b"new");
    assert_eq!(names(dir.path()), ["checkpoint"]);

    // Interrupted while the new copy was still being written: it lacks its record.
    std::fs::rename(&ck, dir.join(".checkpoint.old-1-2")).unwrap();
    std::fs::create_dir_all(dir.join(".checkpoint.new-1-3")).unwrap();
    std::fs::write(dir.join(".checkpoint.new-1-3/model.safetensors"), "partial").unwrap();
    checkpoint::recover(&ck).unwrap();
    assert_eq!(bytes(&ck.join("model.safetensors")), b"new");
    assert_eq!(names(dir.path()), ["checkpoint"]);
}

/// Class 2: symbolic links planted where a run writes — the checkpoint folder, a file in
/// it, the metrics — are replaced, never written through: the files they point at keep
/// their bytes.
#[cfg(unix)]
#[test]
fn runs_never_write_through_symbolic_links() {
    use std::os::unix::fs::symlink;
    let dir = TempDir::new("hostile-symlinks");
    let victim = dir.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    for f in [
        "model.safetensors",
        "provenance.json",
        "metrics.json",
        "curves.svg",
    ] {
        std::fs::write(victim.join(f), "precious").unwrap();
    }
    // A run folder whose files are links into the victim folder.
    let out = dir.join("run");
    std::fs::create_dir_all(&out).unwrap();
    symlink(&victim, out.join("checkpoint")).unwrap();
    symlink(victim.join("metrics.json"), out.join("metrics.json")).unwrap();
    symlink(victim.join("curves.svg"), out.join("curves.svg")).unwrap();
    // Another run's links are a run: refused without --force.
    error_containing(reference::train(&logreg(&out, 1)), "holds another run");
    reference::train(&TrainOptions {
        force: true,
        ..logreg(&out, 1)
    })
    .unwrap();
    for f in names(&victim) {
        assert_eq!(
            bytes(&victim.join(&f)),
            b"precious",
            "{f} was written through a link"
        );
    }
    assert!(
        std::fs::symlink_metadata(out.join("checkpoint"))
            .unwrap()
            .is_dir()
    );
    reference::eval(&out.join("checkpoint")).unwrap();

    // A save over a checkpoint folder whose model file is a link to a victim file.
    let ck = out.join("checkpoint");
    std::fs::remove_file(ck.join("model.safetensors")).unwrap();
    symlink(
        victim.join("model.safetensors"),
        ck.join("model.safetensors"),
    )
    .unwrap();
    let (model, record) = (writes("weights"), writes("{}"));
    let files: [FileWriter<'_>; 2] = [("model.safetensors", &model), ("provenance.json", &record)];
    checkpoint::write_unit(&ck, &files).unwrap();
    assert_eq!(bytes(&victim.join("model.safetensors")), b"precious");
    assert!(
        !std::fs::symlink_metadata(ck.join("model.safetensors"))
            .unwrap()
            .is_symlink()
    );
}

/// Class 2: --out is checked before any data is read or any epoch trained: a file, a
/// folder holding another run (unless --force, which replaces it), and nothing is left
/// behind by a training that failed before writing.
#[test]
fn the_output_folder_is_checked_before_training() {
    let dir = TempDir::new("hostile-out");
    let file = dir.write("a-file", b"not a folder");
    // The data would fail too; --out is reported, so it was checked first.
    let bad_data = TrainOptions {
        data: Some(dir.join("missing-data")),
        ..quick("char-rnn", &file)
    };
    error_containing(reference::train(&bad_data), "is a file, not a folder");
    let out = dir.join("run");
    reference::train(&logreg(&out, 1)).unwrap();
    let before = bytes(&out.join("checkpoint/model.safetensors"));
    error_containing(reference::train(&logreg(&out, 2)), "holds another run");
    assert_eq!(bytes(&out.join("checkpoint/model.safetensors")), before);
    let replaced = reference::train(&TrainOptions {
        force: true,
        seed: 1,
        ..logreg(&out, 2)
    })
    .unwrap();
    assert_eq!(replaced["epochs"], 2, "{replaced}");
    assert_ne!(bytes(&out.join("checkpoint/model.safetensors")), before);
    // A training refused before it wrote anything leaves no folder behind.
    let fresh = dir.join("never");
    let none = TrainOptions {
        limit: Some(0),
        ..logreg(&fresh, 1)
    };
    error_containing(reference::train(&none), "no training samples");
    assert!(!fresh.exists());
}

/// Classes 3 and 7: a training stopped after 2 of 5 epochs and resumed ends with the same
/// bytes as one run straight through (weights, optimizer state, metrics but the timings);
/// every checkpoint file has one mode; identical runs write identical optimizer files.
#[test]
fn resume_continues_bit_for_bit() {
    let dir = TempDir::new("hostile-resume");
    let straight = dir.join("straight");
    let a = reference::train(&logreg(&straight, 5)).unwrap();
    let stopped = dir.join("stopped");
    let s = reference::train(&TrainOptions {
        stop_after: Some(2),
        ..logreg(&stopped, 5)
    })
    .unwrap();
    assert_eq!(s["stopped_after"], 2, "{s}");
    let how = ResumeOptions::default();
    // A run of two ranks resumes only with two: each rank's data share depends on it.
    let two = dir.join("two-ranks");
    std::fs::create_dir_all(two.join("checkpoint")).unwrap();
    for f in names(&stopped.join("checkpoint")) {
        std::fs::copy(
            stopped.join("checkpoint").join(&f),
            two.join("checkpoint").join(&f),
        )
        .unwrap();
    }
    let record_path = two.join("checkpoint/provenance.json");
    let mut record: Value = serde_json::from_slice(&bytes(&record_path)).unwrap();
    record["world_size"] = 2.into();
    std::fs::write(&record_path, record.to_string()).unwrap();
    error_containing(
        reference::resume(&two, &how),
        "was trained by 2 process(es)",
    );
    let b = reference::resume(&stopped, &how).unwrap();
    for f in ["model.safetensors", "optimizer.safetensors"] {
        assert!(
            bytes(&straight.join("checkpoint").join(f))
                == bytes(&stopped.join("checkpoint").join(f)),
            "{f} differs after --resume"
        );
    }
    for key in ["epochs", "train_loss", "test_loss", "test_accuracy"] {
        assert_eq!(a[key], b[key], "{key}");
    }
    // Nothing is left to resume.
    assert!(reference::resume(&stopped, &how).is_err());

    let again = dir.join("again");
    reference::train(&logreg(&again, 5)).unwrap();
    assert!(
        bytes(&again.join("checkpoint/optimizer.safetensors"))
            == bytes(&straight.join("checkpoint/optimizer.safetensors")),
        "identical runs wrote different optimizer states"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| {
            std::fs::metadata(straight.join("checkpoint").join(f))
                .unwrap()
                .permissions()
                .mode()
        };
        assert_eq!(mode("model.safetensors"), mode("provenance.json"));
        assert_eq!(mode("optimizer.safetensors"), mode("provenance.json"));
    }
}

/// Class 3 under an average of the weights (`--ema`): the checkpoint's model is the
/// average, evaluated and reported; the weights training continues from are saved beside
/// it, so a stopped run resumes bit for bit; a checkpoint missing them, or a decay
/// outside [0, 1), is refused.
#[test]
fn an_averaged_run_saves_the_average_and_resumes_bit_for_bit() {
    let dir = TempDir::new("hostile-ema");
    // The whole training set (455 samples): `strata eval` evaluates on the whole test
    // split, as the run's last evaluation then did.
    let averaged = |out: &Path| TrainOptions {
        ema: Some(0.9),
        limit: None,
        ..logreg(out, 5)
    };
    let plain = dir.join("plain");
    reference::train(&TrainOptions {
        limit: None,
        ..logreg(&plain, 5)
    })
    .unwrap();
    let straight = dir.join("straight");
    let a = reference::train(&averaged(&straight)).unwrap();
    assert_ne!(
        bytes(&plain.join("checkpoint/model.safetensors")),
        bytes(&straight.join("checkpoint/model.safetensors")),
        "the average is not the trained weights"
    );
    let record = checkpoint::read_record(&straight.join("checkpoint")).unwrap();
    assert_eq!(record["hyperparameters"]["ema"], 0.9, "{record}");
    // What the run reported is the saved model's (the average's) evaluation.
    let e = reference::eval(&straight.join("checkpoint")).unwrap();
    assert_eq!(Some(a["test_accuracy"].as_f64().unwrap()), e.accuracy);
    let stopped = dir.join("stopped");
    reference::train(&TrainOptions {
        stop_after: Some(2),
        ..averaged(&stopped)
    })
    .unwrap();
    let lost = dir.join("lost");
    std::fs::create_dir_all(lost.join("checkpoint")).unwrap();
    for f in names(&stopped.join("checkpoint")) {
        if f != "ema.safetensors" {
            std::fs::copy(
                stopped.join("checkpoint").join(&f),
                lost.join("checkpoint").join(&f),
            )
            .unwrap();
        }
    }
    let how = ResumeOptions::default();
    error_containing(reference::resume(&lost, &how), "ema.safetensors");
    let b = reference::resume(&stopped, &how).unwrap();
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "ema.safetensors",
    ] {
        assert!(
            bytes(&straight.join("checkpoint").join(f))
                == bytes(&stopped.join("checkpoint").join(f)),
            "{f} differs after --resume"
        );
    }
    for key in ["epochs", "train_loss", "test_loss", "test_accuracy"] {
        assert_eq!(a[key], b[key], "{key}");
    }
    for bad in [1.0, 1.5, -0.1, f64::NAN] {
        let out = dir.join("bad");
        let opts = TrainOptions {
            ema: Some(bad),
            ..logreg(&out, 1)
        };
        error_containing(reference::train(&opts), "must be in [0, 1)");
        assert!(!out.exists());
    }
}

/// Class 3: what can fail after training (linear regression's closed form on fewer
/// samples than coefficients; the metrics' text sample of a text without a newline)
/// fails after the checkpoint is saved, and is reported beside it.
#[test]
fn work_is_saved_before_reports_that_can_fail() {
    let dir = TempDir::new("hostile-reports");
    let out = dir.join("linreg");
    let metrics = reference::train(&TrainOptions {
        epochs: Some(3),
        limit: Some(8),
        ..quick("linreg", &out)
    })
    .unwrap();
    let errors = metrics["report_errors"].as_array().expect("report_errors");
    assert!(
        errors[0].as_str().unwrap().contains("cannot determine"),
        "{errors:?}"
    );
    reference::eval(&out.join("checkpoint")).unwrap();

    let text = dir.write(
        "one-line.txt",
        "abcdefghij klmnopqrst uvwxyz ".repeat(40).as_bytes(),
    );
    let out = dir.join("char");
    reference::train(&TrainOptions {
        steps: Some(2),
        data: Some(text),
        ..quick("char-rnn", &out)
    })
    .unwrap();
    let sample = reference::generate(&out.join("checkpoint"), "abc", 10, 0.0, 0).unwrap();
    assert_eq!(sample.chars().count(), 13);
    // Class 6: a length that would run until memory ran out is refused up front.
    error_containing(
        reference::generate(&out.join("checkpoint"), "abc", usize::MAX, 0.0, 0),
        "more than the 1000000 that one call generates",
    );
}

/// Class 4: inputs that used to give a silently wrong answer are errors: no training
/// samples, NaN weights, images of another shape with the same pixel count, a least-
/// squares problem without a unique solution; and the record keeps --limit.
#[test]
fn silent_wrong_results_are_errors() {
    let dir = TempDir::new("hostile-silent");
    let out = dir.join("run");
    error_containing(
        reference::train(&TrainOptions {
            limit: Some(0),
            ..logreg(&out, 1)
        }),
        "there are no training samples",
    );
    let cnn = dir.join("cnn");
    reference::train(&TrainOptions {
        epochs: Some(1),
        limit: Some(32),
        dataset: Some("digits".into()),
        ..quick("cnn", &cnn)
    })
    .unwrap();
    let ck = cnn.join("checkpoint");
    let record: Value = serde_json::from_str(&reference::info(&ck).unwrap()).unwrap();
    assert_eq!(record["hyperparameters"]["limit"], 32);
    // 8×8 images predict; 4×16 images have as many pixels and are refused.
    let good = dir.write("good.idx", &idx_bytes(&[1, 8, 8], &[3; 64]));
    assert_eq!(reference::predict(&ck, &good).unwrap().len(), 1);
    let wide = dir.write("wide.idx", &idx_bytes(&[1, 4, 16], &[3; 64]));
    error_containing(
        reference::predict(&ck, &wide),
        "do not fit the model's input",
    );
    // A NaN planted in the weights: eval and predict refuse the checkpoint.
    let weights = ck.join("model.safetensors");
    let mut file = strata_tensor::io::TensorFile::<f32>::read(&weights).unwrap();
    let entry = file
        .tensors
        .iter_mut()
        .find(|t| t.name == "fc2.bias")
        .unwrap();
    let mut values = entry.tensor.to_vec();
    values[3] = f32::NAN;
    entry.tensor = Tensor::from_vec(values, &[10]).unwrap();
    file.write(&weights).unwrap();
    error_containing(
        reference::eval(&ck),
        "its weights are not finite: fc2.bias[3] = NaN",
    );
    error_containing(reference::predict(&ck, &good), "not finite");
    // A constant feature: no unique least-squares solution, and no "difference 0.0".
    let x = Tensor::from_vec(vec![1.0f32, 5.0, 2.0, 5.0, 3.0, 5.0, 4.0, 5.0], &[4, 2]).unwrap();
    let y = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[4]).unwrap();
    error_containing(LinearRegression::closed_form(&x, &y), "rank-deficient");
}

/// Class 5: extreme arguments run or are refused, never a panic: 10^18 epochs (stopped
/// after one), 2^64 − 1 epochs of 4 batches (too many steps to count), a batch larger than the data, samples without features, a
/// record asking for a network of terabytes.
#[test]
fn extreme_arguments_are_taken_or_refused() {
    let dir = TempDir::new("hostile-extreme");
    let out = dir.join("epochs");
    let m = reference::train(&TrainOptions {
        epochs: Some(1_000_000_000_000_000_000),
        stop_after: Some(1),
        ..logreg(&out, 1)
    })
    .unwrap();
    assert_eq!(m["stopped_after"], 1, "{m}");
    let too_many = TrainOptions {
        epochs: Some(usize::MAX),
        batch_size: Some(16),
        ..logreg(&dir.join("too-many"), 1)
    };
    error_containing(
        reference::train(&too_many),
        "more optimizer steps than can be counted",
    );
    let out = dir.join("batch");
    reference::train(&TrainOptions {
        batch_size: Some(1_000_000_000),
        ..logreg(&out, 1)
    })
    .unwrap();
    // Samples without features.
    let empty = InMemoryDataset::new(Vec::new(), &[0], Labels::Values(vec![1.0, 2.0]));
    error_containing(empty, "hold no features");
    let rows = dir.write("empty-rows.csv", b"\n\n\n");
    let ck = dir.join("batch/checkpoint");
    assert!(reference::predict(&ck, &rows).is_err());
    // A record asking for 2^40 × 30 weights is refused before anything is allocated.
    let record_path = ck.join("provenance.json");
    let mut record: Value = serde_json::from_slice(&bytes(&record_path)).unwrap();
    record["architecture"]["features"] = (1u64 << 40).into();
    std::fs::write(&record_path, record.to_string()).unwrap();
    error_containing(
        reference::eval(&ck),
        "asks for more memory than its weights file",
    );
}

/// Reads `path` with `read` on another thread, failing the test if it takes longer than
/// ten seconds (a FIFO with no writer blocks `open` forever).
fn within_ten_seconds<T: Send + 'static>(path: PathBuf, read: fn(&Path) -> Result<T>) -> Result<T> {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(read(&path));
    });
    receive
        .recv_timeout(Duration::from_secs(10))
        .expect("the read did not return within ten seconds")
}

/// Class 6: special files are refused without being read (a FIFO would block forever,
/// /dev/zero never ends, a folder is no data), and a gzip bomb stops at its bound.
#[cfg(unix)]
#[test]
fn special_files_and_gzip_bombs_are_refused() {
    let dir = TempDir::new("hostile-special");
    let fifo = dir.join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    for path in [
        fifo.clone(),
        PathBuf::from("/dev/zero"),
        dir.path().to_path_buf(),
    ] {
        let e = within_ten_seconds(path.clone(), |p| read_csv(p, false, None)).unwrap_err();
        assert!(
            e.to_string().contains("not a regular file"),
            "{}: {e}",
            path.display()
        );
        let e = within_ten_seconds(path.clone(), read_idx).unwrap_err();
        assert!(
            e.to_string().contains("not a regular file"),
            "{}: {e}",
            path.display()
        );
        within_ten_seconds(path.clone(), read_text).unwrap_err();
        within_ten_seconds(path, read_cifar10).unwrap_err();
    }
    // A checkpoint whose weights file is a FIFO, and one whose record is /dev/zero.
    let out = dir.join("run");
    reference::train(&logreg(&out, 1)).unwrap();
    let ck = out.join("checkpoint");
    std::fs::remove_file(ck.join("model.safetensors")).unwrap();
    std::fs::rename(&fifo, ck.join("model.safetensors")).unwrap();
    let e = within_ten_seconds(ck.clone(), reference::eval).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    std::fs::remove_file(ck.join("provenance.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", ck.join("provenance.json")).unwrap();
    let e = within_ten_seconds(ck, reference::info).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");

    // 80 MB of zeros gzipped to about 80 kB: it inflates a thousand times, past the
    // 100× bound (and the 64 MiB floor).
    let bomb = dir.write("bomb.csv.gz", &gzip(&vec![b'0'; 80 << 20]));
    assert!(std::fs::metadata(&bomb).unwrap().len() < 1 << 20);
    error_containing(read_csv(&bomb, false, None), "gzip bomb");
    // An IDX header promising 2^31 bytes that a small file does not hold: an error
    // once the bytes run out, after reading no more than the file has.
    let liar = dir.write("liar.idx.gz", &gzip(&idx_bytes(&[1 << 31], &[1; 1000])));
    error_containing(read_idx(&liar), "");
}

/// Class 7: data errors are found before training and name the file, line and column;
/// a byte-order mark is skipped; options a model does not take are errors; gzipped
/// CIFAR-10 batches are found.
#[test]
fn data_errors_name_their_place() {
    let dir = TempDir::new("hostile-data");
    let nan = dir.write("nan.csv", b"a,b\n1,2\n3,NaN\n");
    let e = error_containing(read_csv(&nan, true, Some(',')), "line 3, column 2");
    assert!(e.contains("nan.csv"), "{e}");
    let inf = dir.write("inf.csv", b"1 2\n3 -inf\n");
    error_containing(read_csv(&inf, false, None), "line 2, column 2");
    // A finite f64 beyond f32, given to a model that computes in f32.
    let out = dir.join("lr");
    reference::train(&logreg(&out, 1)).unwrap();
    let mut rows = [b"1,".repeat(29), b"1\n\n".to_vec()].concat();
    rows.extend([b"2,".repeat(29), b"1e39\n".to_vec()].concat());
    let wide = dir.write("wide.csv", &rows);
    error_containing(
        reference::predict(&out.join("checkpoint"), &wide),
        "line 3, column 30: 1e39 is beyond the range of f32",
    );
    let bom = dir.write("bom.csv", b"\xef\xbb\xbfx,y\n1,2\n");
    let t = read_csv(&bom, true, Some(',')).unwrap();
    assert_eq!(t.rows, vec![vec![1.0, 2.0]]);

    error_containing(
        reference::train(&TrainOptions {
            steps: Some(5),
            ..logreg(&dir.join("steps"), 1)
        }),
        "--steps",
    );
    error_containing(
        reference::train(&TrainOptions {
            cell: Some(strata_models::models::RecurrentKind::Gru),
            ..logreg(&dir.join("cell"), 1)
        }),
        "--cell",
    );
    // A folder of gzipped CIFAR-10 batches.
    let cifar = dir.join("cifar");
    std::fs::create_dir_all(&cifar).unwrap();
    let batch = crate::common::cifar_bytes(&[1, 2, 3], 0);
    for name in ["data_batch_1.bin", "test_batch.bin"] {
        std::fs::write(cifar.join(format!("{name}.gz")), gzip(&batch)).unwrap();
    }
    let found = bundled::find(&cifar, "data_batch_1.bin").unwrap();
    assert_eq!(read_cifar10(&found).unwrap().labels, [1, 2, 3]);
}

/// Classes 5 and 6 through the binary: a closed stdout ends `strata info` and
/// `strata predict` quietly with success (as `| head` expects of Unix tools); a million
/// threads are refused.
#[test]
fn the_cli_meets_closed_pipes_and_thread_bombs() {
    let dir = TempDir::new("hostile-cli");
    let out = dir.join("run");
    reference::train(&logreg(&out, 1)).unwrap();
    // 50,000 predictions are 100 kB, more than a pipe holds: the write must fail.
    let row = [b"1,".repeat(29), b"1\n".to_vec()].concat();
    let rows = dir.write("rows.csv", &row.repeat(50_000));
    for args in [vec!["info"], vec!["predict"]] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
        command.args(&args).arg(out.join("checkpoint"));
        if args[0] == "predict" {
            command.arg(&rows);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let done = child.wait_with_output().unwrap();
        assert!(done.status.success(), "{args:?}: {:?}", done.status);
        assert!(
            done.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
    }

    let refused = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "train",
            "logreg",
            "--quiet",
            "--threads",
            "1000000",
            "--out",
        ])
        .arg(dir.join("threads"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.starts_with("error: --threads 1000000: give between 1 and"),
        "{stderr}"
    );
    assert!(!dir.join("threads").exists());
}
