//! ONNX export of every reference model: the file runs in tract at two batch sizes and
//! gives strata's outputs; `strata export` writes it from a checkpoint.

use crate::common::TempDir;

use std::process::Command;

use strata_autograd::Var;
use strata_models::models::{
    CharRnn, CharRnnConfig, CharTransformer, CharTransformerConfig, Cnn, CnnConfig, DpCnn,
    DpScatterNet, Forecaster, LinearRegression, LogisticRegression, Mlp, PinnNet,
    PolynomialRegression, RecurrentKind, ScatterConfig, Seq2Seq, Seq2SeqConfig, SequenceClassifier,
    SequenceClassifierConfig,
};
use strata_nn::{Forward, Module};
use strata_onnx::{Example, Export, ExportOptions, export};
use strata_tensor::{IndexTensor, Tensor, seeded_rng};
use tract_onnx::prelude::*;

type Runnable = TypedRunnableModel<TypedModel>;

fn load(bytes: &[u8]) -> Runnable {
    tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(bytes))
        .expect("tract reads the model")
        .into_optimized()
        .expect("tract optimises the model")
        .into_runnable()
        .expect("tract plans the model")
}

fn run(model: &Runnable, input: &Example) -> (Vec<usize>, Vec<f32>) {
    let t: tract_onnx::prelude::Tensor = match input {
        Example::Float(t) => {
            tract_ndarray::ArrayD::from_shape_vec(t.shape(), t.contiguous().to_vec())
                .unwrap()
                .into()
        }
        Example::Index(t) => tract_ndarray::ArrayD::from_shape_vec(t.shape(), t.to_vec())
            .unwrap()
            .into(),
        Example::Bool(_) => unreachable!("no model here takes a mask"),
    };
    let out = model.run(tvec!(t.into())).expect("tract runs the model");
    let view = out[0].to_array_view::<f32>().unwrap();
    (view.shape().to_vec(), view.iter().copied().collect())
}

/// Exports `model` traced at batch 1, then compares tract's output with `forward` at
/// batches 3 and 5 (|a − e| ≤ 1e-5 + 1e-4·|e|).
fn check<M: Export + ?Sized>(
    what: &str,
    model: &M,
    make: impl Fn(usize) -> Example,
    forward: impl Fn(&Example) -> Tensor<f32>,
) {
    let exported =
        export(model, make(1), &ExportOptions::default()).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        exported.output.to_vec(),
        forward(&make(1)).to_vec(),
        "{what}: the trace"
    );
    let runnable = load(&exported.to_bytes());
    for batch in [3, 5] {
        let input = make(batch);
        let expected = forward(&input);
        let (shape, values) = run(&runnable, &input);
        assert_eq!(shape, expected.shape(), "{what}: batch {batch}");
        for (i, (a, e)) in values.iter().zip(expected.to_vec()).enumerate() {
            assert!(
                (a - e).abs() <= 1e-5 + 1e-4 * e.abs(),
                "{what}: batch {batch}, element {i}: tract {a}, strata {e}"
            );
        }
    }
}

fn floats(rest: &'static [usize]) -> impl Fn(usize) -> Example {
    move |b| {
        let mut shape = vec![b];
        shape.extend(rest);
        Example::Float(Tensor::randn(&shape, &mut seeded_rng(b as u64 + 40)))
    }
}

fn forward_of<M: Forward>(m: &M) -> impl Fn(&Example) -> Tensor<f32> + '_ {
    move |x| match x {
        Example::Float(t) => m.forward(&Var::new(t.clone())).unwrap().value(),
        _ => unreachable!(),
    }
}

#[test]
fn the_feed_forward_reference_models() {
    let mut rng = seeded_rng(1);
    let linreg = LinearRegression::new(5, &mut rng);
    check("linreg", &linreg, floats(&[5]), forward_of(&linreg));
    let polyreg = PolynomialRegression::new(3, &mut rng).unwrap();
    polyreg
        .fit_standardization(&Tensor::randn(&[50, 1], &mut rng))
        .unwrap();
    check("polyreg", &polyreg, floats(&[1]), forward_of(&polyreg));
    let binary = LogisticRegression::new(4, 2, &mut rng);
    check("logreg binary", &binary, floats(&[4]), forward_of(&binary));
    let multi = LogisticRegression::new(4, 3, &mut rng);
    check("logreg", &multi, floats(&[4]), forward_of(&multi));
    let mlp = Mlp::new(&[64, 16, 10], &mut rng).unwrap();
    check("mlp", &mlp, floats(&[1, 8, 8]), forward_of(&mlp));
    let cnn = Cnn::new(CnnConfig::DIGITS, &mut rng).unwrap();
    check("cnn", &cnn, floats(&[1, 8, 8]), forward_of(&cnn));
    let small = CnnConfig {
        in_channels: 1,
        image_size: [16, 16],
        classes: 10,
    };
    let dp_cnn = DpCnn::new(small, &mut rng).unwrap();
    check("dp-cnn", &dp_cnn, floats(&[1, 16, 16]), forward_of(&dp_cnn));
    let scatter = ScatterConfig {
        in_channels: 1,
        image_size: [16, 16],
        j: 2,
        l: 8,
        classes: 10,
    };
    let dp_scatter = DpScatterNet::new(scatter, &mut rng).unwrap();
    check(
        "dp-scatter",
        &dp_scatter,
        floats(&[81, 4, 4]),
        forward_of(&dp_scatter),
    );
    let pinn = PinnNet::new(8, 3, &mut rng).unwrap();
    check("pinn", &pinn, floats(&[2]), forward_of(&pinn));
}

#[test]
fn the_sequence_reference_models() {
    let mut rng = seeded_rng(2);
    for kind in [RecurrentKind::Lstm, RecurrentKind::Gru] {
        let mut forecaster = Forecaster::new(kind, 6, 2, &mut rng).unwrap();
        forecaster.eval();
        check(
            &format!("forecast {kind:?}"),
            &forecaster,
            floats(&[7, 1]),
            forward_of(&forecaster),
        );
    }
    let config = SequenceClassifierConfig {
        features: 8,
        length: 8,
        d_model: 16,
        heads: 4,
        layers: 2,
        feedforward: 32,
        classes: 10,
        dropout: 0.1,
    };
    let mut classifier = SequenceClassifier::new(config, &mut rng).unwrap();
    classifier.eval();
    check(
        "seq-classifier",
        &classifier,
        floats(&[8, 8]),
        forward_of(&classifier),
    );
}

fn ids(len: usize, vocab: usize) -> impl Fn(usize) -> Example {
    move |b| {
        let data = (0..b * len)
            .map(|i| ((i * 13 + b) % vocab) as i64)
            .collect();
        Example::Index(IndexTensor::from_vec(data, &[b, len]).unwrap())
    }
}

#[test]
fn the_character_models() {
    let mut rng = seeded_rng(3);
    for kind in [RecurrentKind::Lstm, RecurrentKind::Gru] {
        let config = CharRnnConfig {
            vocab: 20,
            embed_dim: 8,
            hidden: 12,
            layers: 2,
            kind,
            dropout: 0.2,
        };
        let mut model = CharRnn::new(config, &mut rng).unwrap();
        model.eval();
        let forward = |x: &Example| match x {
            Example::Index(t) => model.forward(t, None).unwrap().0.value(),
            _ => unreachable!(),
        };
        check(&format!("char-rnn {kind:?}"), &model, ids(10, 20), forward);
    }
    let config = CharTransformerConfig {
        vocab: 20,
        d_model: 16,
        heads: 2,
        layers: 2,
        feedforward: 32,
        context: 12,
        dropout: 0.0,
    };
    let model = CharTransformer::new(config, &mut rng).unwrap();
    let forward = |x: &Example| match x {
        Example::Index(t) => model.forward(t).unwrap().value(),
        _ => unreachable!(),
    };
    check("char-transformer", &model, ids(12, 20), forward);

    // As `strata export` writes it: the length symbolic, the causal mask built in the
    // graph, so one file runs on windows of any length up to the context.
    use strata_models::reference::ReferenceModel;
    let net = strata_models::language::CharModel::Transformer(model);
    let exported = strata_models::models::CharTransformerSpec
        .export(&net, &config)
        .unwrap();
    assert!(
        exported.signature().contains("seq_len"),
        "{}",
        exported.signature()
    );
    let runnable = load(&exported.to_bytes());
    let strata_models::language::CharModel::Transformer(model) = &net else {
        unreachable!()
    };
    for (batch, len) in [(2, 12), (3, 5), (1, 1)] {
        let Example::Index(x) = ids(len, 20)(batch) else {
            unreachable!()
        };
        let (shape, values) = run(&runnable, &Example::Index(x.clone()));
        let expected = model.forward(&x).unwrap().value();
        assert_eq!(shape, expected.shape(), "batch {batch}, length {len}");
        for (a, e) in values.iter().zip(expected.to_vec()) {
            assert!(
                (a - e).abs() <= 1e-5 + 1e-4 * e.abs(),
                "batch {batch}, length {len}: tract {a}, strata {e}"
            );
        }
    }
}

/// Source tokens `[n, s]` and decoder inputs `[n, t]` of the seq2seq vocabulary, the
/// sources padded (0) at the end by a different amount per row.
fn seq2seq_tokens(n: usize, s: usize, t: usize) -> (IndexTensor, IndexTensor) {
    use strata_models::models::dates::{BOS, PAD, VOCAB};
    let src: Vec<i64> = (0..n * s)
        .map(|i| {
            let (row, col) = (i / s, i % s);
            if col >= s - row % s.min(3) {
                PAD
            } else {
                3 + ((i * 7 + n) % (VOCAB - 3)) as i64
            }
        })
        .collect();
    let tgt: Vec<i64> = (0..n * t)
        .map(|i| {
            if i % t == 0 {
                BOS
            } else {
                3 + ((i * 5 + t) % (VOCAB - 3)) as i64
            }
        })
        .collect();
    (
        IndexTensor::from_vec(src, &[n, s]).unwrap(),
        IndexTensor::from_vec(tgt, &[n, t]).unwrap(),
    )
}

fn tract_tensor(ids: &IndexTensor) -> TValue {
    let t: tract_onnx::prelude::Tensor =
        tract_ndarray::ArrayD::from_shape_vec(ids.shape(), ids.to_vec())
            .unwrap()
            .into();
    t.into()
}

#[test]
fn the_seq2seq_model_as_its_teacher_forced_forward() {
    use strata_models::models::dates::{MAX_SOURCE, MAX_TARGET, VOCAB};
    let config = Seq2SeqConfig {
        vocab: VOCAB,
        d_model: 16,
        heads: 2,
        encoder_layers: 2,
        decoder_layers: 2,
        feedforward: 32,
        max_source: MAX_SOURCE,
        max_target: MAX_TARGET,
        dropout: 0.0,
    };
    let model = Seq2Seq::new(config, &mut seeded_rng(60)).unwrap();
    let (src, tgt) = seq2seq_tokens(2, 7, 5);
    let exported = model.export_onnx(&src, &tgt).unwrap();
    assert_eq!(
        exported.signature(),
        format!(
            "src int64 [batch, src_len], tgt_in int64 [batch, tgt_len] -> logits float \
             [batch, tgt_len, {VOCAB}]"
        )
    );
    assert!(exported.model.doc_string.contains("teacher-forced"));
    let runnable = load(&exported.to_bytes());
    // One file at other batch sizes and both lengths changed, the longest target included.
    for (n, s, t) in [(2, 7, 5), (3, 9, 1), (5, 4, MAX_TARGET)] {
        let (src, tgt) = seq2seq_tokens(n, s, t);
        let expected = model.forward(&src, &tgt).unwrap().value();
        let out = runnable
            .run(tvec![tract_tensor(&src), tract_tensor(&tgt)])
            .expect("tract runs the model");
        let view = out[0].to_array_view::<f32>().unwrap();
        assert_eq!(view.shape(), expected.shape(), "at {n}, {s}, {t}");
        for (a, e) in view.iter().zip(expected.to_vec()) {
            assert!(
                (a - e).abs() <= 1e-5 + 1e-4 * e.abs(),
                "at {n}, {s}, {t}: tract {a}, strata {e}"
            );
        }
    }
}

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env_remove("STRATA_DATA_DIR")
        .output()
        .expect("run the strata binary")
}

#[test]
fn strata_export_writes_a_checkpoint_as_onnx() {
    let dir = TempDir::new("cli-export");
    let run_dir = dir.join("run");
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let train = strata(&[
        "train",
        "cnn",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--limit",
        "200",
        "--quiet",
        "--out",
        &p(&run_dir),
    ]);
    assert!(
        train.status.success(),
        "{}",
        String::from_utf8_lossy(&train.stderr)
    );
    let ck = run_dir.join("checkpoint");
    let onnx = dir.join("cnn.onnx");
    let out = strata(&["export", &p(&ck), &p(&onnx)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cnn.onnx"));
    // The trained weights: tract on the file agrees with the checkpoint loaded in strata.
    let net = Cnn::new(CnnConfig::DIGITS, &mut seeded_rng(9)).unwrap();
    strata_models::checkpoint::load_model(&ck, &net).unwrap();
    let runnable = load(&std::fs::read(&onnx).unwrap());
    let input = floats(&[1, 8, 8])(4);
    let (shape, values) = run(&runnable, &input);
    let expected = forward_of(&net)(&input);
    assert_eq!(shape, [4, 10]);
    for (a, e) in values.iter().zip(expected.to_vec()) {
        assert!(
            (a - e).abs() <= 1e-5 + 1e-4 * e.abs(),
            "tract {a}, strata {e}"
        );
    }
    // A missing directory is a one-line error naming the path; nothing is written.
    let missing = dir.join("no").join("such").join("m.onnx");
    let out = strata(&["export", &p(&ck), &p(&missing)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error:") && stderr.contains("m.onnx"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!dir.join("no").exists());
    // Not a checkpoint.
    let out = strata(&["export", &p(&run_dir), &p(&onnx)]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn strata_export_writes_seq2seq_and_says_what_the_file_computes() {
    let dir = TempDir::new("cli-export-seq2seq");
    let run_dir = dir.join("run");
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let train = strata(&[
        "train",
        "seq2seq",
        "--epochs",
        "1",
        "--limit",
        "100",
        "--quiet",
        "--out",
        &p(&run_dir),
    ]);
    assert!(
        train.status.success(),
        "{}",
        String::from_utf8_lossy(&train.stderr)
    );
    let onnx = dir.join("seq2seq.onnx");
    let out = strata(&["export", &p(&run_dir.join("checkpoint")), &p(&onnx)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("src int64 [batch, src_len]"), "{stdout}");
    assert!(stdout.contains("teacher-forced"), "{stdout}");
    // The file runs at lengths other than the traced ones.
    let runnable = load(&std::fs::read(&onnx).unwrap());
    let (src, tgt) = seq2seq_tokens(3, 12, 4);
    let out = runnable
        .run(tvec![tract_tensor(&src), tract_tensor(&tgt)])
        .expect("tract runs the model");
    assert_eq!(out[0].shape()[..2], [3, 4]);
}
