//! The sequence reference models train in CI: each model's loss falls in a few steps on
//! the bundled data; checkpoints evaluate, predict and generate; errors are clear.

use crate::common;

use common::TempDir;
use strata_models::data::bundled;
use strata_models::data::readers::read_text;
use strata_models::language::{self, CharModel, LmTrainConfig, TextCorpus};
use strata_models::models::{
    CharRnn, CharRnnConfig, CharTransformer, CharTransformerConfig, RecurrentKind,
};
use strata_models::reference::{self, Model, TrainOptions};
use strata_nn::Module;
use strata_optim::{AdamW, AdamWConfig};
use strata_tensor::seeded_rng;

/// The first 60,000 characters of the bundled Moby Dick, 10% held out.
fn corpus() -> TextCorpus {
    let (text, _) = read_text(&bundled::moby_dick_path(&bundled::data_dir())).unwrap();
    let head: String = text.chars().take(60_000).collect();
    TextCorpus::new(&head, 0.1).unwrap()
}

/// Trains `model` for `steps` and returns the held-out loss before and after.
fn train_briefly(model: &mut CharModel, corpus: &TextCorpus, steps: usize, lr: f64) -> (f64, f64) {
    let before = language::held_out_loss(model, &corpus.held_out, 32, 4096)
        .unwrap()
        .loss;
    let mut opt = AdamW::new(
        model.parameters(),
        AdamWConfig {
            lr,
            ..AdamWConfig::default()
        },
    )
    .unwrap();
    let config = LmTrainConfig {
        steps,
        batch_size: 16,
        seq_len: 32,
        max_lr: lr,
        clip: Some(1.0),
        eval_every: steps,
        eval_chars: 4096,
        progress: false,
    };
    let history = language::fit(model, &mut opt, corpus, &config, &mut seeded_rng(3)).unwrap();
    assert_eq!(history.len(), 1);
    let after = language::held_out_loss(model, &corpus.held_out, 32, 4096)
        .unwrap()
        .loss;
    assert_eq!(
        history[0].test.loss,
        language::held_out_loss(model, &corpus.held_out, 32, usize::MAX)
            .unwrap()
            .loss,
        "the last record evaluates all of the held-out text, in eval mode (no dropout)"
    );
    (before, after)
}

#[test]
fn char_rnn_loss_falls_below_the_unigram_entropy() {
    let c = corpus();
    for kind in [RecurrentKind::Lstm, RecurrentKind::Gru] {
        let mut model = CharModel::Rnn(
            CharRnn::new(
                CharRnnConfig {
                    vocab: c.vocab.len(),
                    embed_dim: 16,
                    hidden: 64,
                    layers: 1,
                    kind,
                    dropout: 0.0,
                },
                &mut seeded_rng(0),
            )
            .unwrap(),
        );
        let (before, after) = train_briefly(&mut model, &c, 150, 1e-2);
        eprintln!(
            "{kind:?}: held-out loss {before:.3} -> {after:.3} (unigram {:.3})",
            c.unigram_entropy
        );
        assert!(before > 0.9 * (c.vocab.len() as f64).ln(), "{before}");
        assert!(
            after < c.unigram_entropy - 0.2,
            "{kind:?}: {after} vs unigram {}",
            c.unigram_entropy
        );
    }
}

#[test]
fn char_transformer_loss_falls() {
    let c = corpus();
    let mut model = CharModel::Transformer(
        CharTransformer::new(
            CharTransformerConfig {
                vocab: c.vocab.len(),
                d_model: 32,
                heads: 4,
                layers: 1,
                feedforward: 64,
                context: 32,
                dropout: 0.1,
            },
            &mut seeded_rng(0),
        )
        .unwrap(),
    );
    let (before, after) = train_briefly(&mut model, &c, 150, 1e-2);
    eprintln!(
        "transformer: held-out loss {before:.3} -> {after:.3} (unigram {:.3})",
        c.unigram_entropy
    );
    assert!(
        after < c.unigram_entropy,
        "{after} vs {}",
        c.unigram_entropy
    );
    assert!(after < before - 1.0);
}

#[test]
fn the_transformer_is_causal() {
    // Changing a later character leaves the logits of earlier positions unchanged.
    let model = CharTransformer::new(
        CharTransformerConfig {
            vocab: 5,
            d_model: 8,
            heads: 2,
            layers: 2,
            feedforward: 16,
            context: 6,
            dropout: 0.0,
        },
        &mut seeded_rng(1),
    )
    .unwrap();
    let ids = |v: Vec<i64>| strata_tensor::IndexTensor::from_vec(v, &[1, 6]).unwrap();
    let a = model
        .forward(&ids(vec![0, 1, 2, 3, 4, 0]))
        .unwrap()
        .to_vec();
    let b = model
        .forward(&ids(vec![0, 1, 2, 4, 4, 1]))
        .unwrap()
        .to_vec();
    assert_eq!(a[..3 * 5], b[..3 * 5], "positions 0..3 see only themselves");
    assert_ne!(a[3 * 5..4 * 5], b[3 * 5..4 * 5]);
    assert!(
        model
            .forward(&strata_tensor::IndexTensor::from_vec(vec![0; 7], &[1, 7]).unwrap())
            .is_err(),
        "longer than the context"
    );
}

fn quick(model: &str, out: &std::path::Path) -> TrainOptions {
    TrainOptions {
        progress: false,
        ..TrainOptions::new(Model::named(model).unwrap(), out)
    }
}

#[test]
fn char_models_train_save_eval_and_generate() {
    let dir = TempDir::new("char-models");
    for (kind, cell) in [
        ("char-rnn", Some(RecurrentKind::Gru)),
        ("char-transformer", None),
    ] {
        let out = dir.join(kind);
        let metrics = reference::train(&TrainOptions {
            steps: Some(4),
            batch_size: Some(4),
            limit: Some(20_000),
            cell,
            ..quick(kind, &out)
        })
        .unwrap();
        let held_out = metrics["held_out_loss"].as_f64().unwrap();
        assert!(held_out.is_finite() && held_out > 0.0);
        assert!(metrics["unigram_entropy"].as_f64().unwrap() > 2.0);
        let ckpt = out.join("checkpoint");
        // eval recomputes the final held-out loss from the checkpoint alone.
        let e = reference::eval(&ckpt).unwrap();
        assert!((e.loss - held_out).abs() < 1e-4, "{} vs {held_out}", e.loss);
        let text = reference::generate(&ckpt, "Call me", 40, 0.8, 7).unwrap();
        assert!(text.starts_with("Call me"));
        assert_eq!(text.chars().count(), "Call me".len() + 40);
        assert_eq!(
            text,
            reference::generate(&ckpt, "Call me", 40, 0.8, 7).unwrap(),
            "same seed, same text"
        );
        let err = reference::generate(&ckpt, "Call me ☃", 10, 0.8, 7).unwrap_err();
        assert!(err.to_string().contains("never saw"), "{err}");
        assert!(reference::generate(&ckpt, "x", 10, -1.0, 7).is_err());
        assert!(reference::predict(&ckpt, &out.join("metrics.json")).is_err());
        let record = reference::info(&ckpt).unwrap();
        assert!(record.contains("\"vocab\""), "{record}");
    }
    // Epochs are refused for step-trained models.
    let err = reference::train(&TrainOptions {
        epochs: Some(1),
        ..quick("char-rnn", &dir.join("x"))
    })
    .unwrap_err();
    assert!(err.to_string().contains("--steps"), "{err}");
}

#[test]
fn forecaster_beats_the_mean_on_sunspots() {
    let dir = TempDir::new("forecast");
    let out = dir.join("f");
    let metrics = reference::train(&TrainOptions {
        epochs: Some(3),
        ..quick("forecast", &out)
    })
    .unwrap();
    let r2 = metrics["test_r2"].as_f64().unwrap();
    eprintln!(
        "forecast: test R² {r2:.3}, persistence {:.3}",
        metrics["persistence_test_r2"].as_f64().unwrap()
    );
    assert!(r2 > 0.5, "test R² {r2}");
    let ckpt = out.join("checkpoint");
    let e = reference::eval(&ckpt).unwrap();
    assert!((e.r2.unwrap() - r2).abs() < 1e-9);
    // predict: one forecast per window of a raw series, in the series' units.
    let series = dir.join("series.txt");
    let values: Vec<String> = (0..62)
        .map(|i| format!("{}", 80.0 + 40.0 * (i as f64 / 10.0).sin()))
        .collect();
    std::fs::write(&series, values.join("\n")).unwrap();
    let p = reference::predict(&ckpt, &series).unwrap();
    assert_eq!(p.len(), 3, "62 values, windows of 60");
    for v in &p {
        let v: f64 = v.parse().unwrap();
        assert!((-100.0..400.0).contains(&v), "{v}");
    }
    std::fs::write(&series, "1\n2\n").unwrap();
    assert!(reference::predict(&ckpt, &series).is_err());
}

#[test]
fn sequence_classifier_learns_digits() {
    let dir = TempDir::new("seqcls");
    let out = dir.join("s");
    let metrics = reference::train(&TrainOptions {
        epochs: Some(8),
        dataset: Some("digits".into()),
        ..quick("seq-classifier", &out)
    })
    .unwrap();
    let acc = metrics["test_accuracy"].as_f64().unwrap();
    eprintln!("seq-classifier on the 8x8 digits: test accuracy {acc:.3}");
    assert!(acc > 0.85, "{acc}");
    let e = reference::eval(&out.join("checkpoint")).unwrap();
    assert!((e.accuracy.unwrap() - acc).abs() < 1e-9);
}
