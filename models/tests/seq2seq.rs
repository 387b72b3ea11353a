//! The date-translating sequence-to-sequence transformer: a short training learns, its
//! checkpoint evaluates to the figures of its metrics and translates a file of dates, and
//! what it cannot take is an error.

use crate::common;

use common::TempDir;
use strata_models::reference::{self, Model, PrivacyOptions, TrainOptions};
use strata_privacy::AccountantKind;

#[test]
fn seq2seq_learns_and_its_checkpoint_translates() {
    let dir = TempDir::new("seq2seq");
    let opts = TrainOptions {
        epochs: Some(3),
        limit: Some(1024),
        batch_size: Some(32),
        progress: false,
        ..TrainOptions::new(Model::named("seq2seq").unwrap(), dir.join("run"))
    };
    let metrics = reference::train(&opts).unwrap();
    // From ln(70) ≈ 4.2 nats per token, a uniform guess over the vocabulary.
    let loss = metrics["train_loss"].as_f64().unwrap();
    assert!(loss < 1.5, "train loss {loss}");
    let tokens = metrics["test_token_accuracy"].as_f64().unwrap();
    assert!(tokens > 0.5, "token accuracy {tokens}");
    assert_eq!(metrics["examples"].as_array().unwrap().len(), 5);
    let exact = metrics["test_exact_match"].as_f64().unwrap();
    let checkpoint = dir.join("run").join("checkpoint");
    let eval = reference::eval(&checkpoint).unwrap();
    assert_eq!(eval.accuracy, Some(exact));
    let input = dir.write("dates.txt", b"Saturday, 5 December 2026\n\n7-Mar-2049\n");
    let out = reference::predict(&checkpoint, &input).unwrap();
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|d| d.len() <= 10), "{out:?}");
    // A character outside the vocabulary, a date too long, an empty file: errors.
    for bad in ["5 Décembre 2026\n", &"1".repeat(40), "\n \n"] {
        let input = dir.write("bad.txt", bad.as_bytes());
        let err = reference::predict(&checkpoint, &input).unwrap_err();
        assert!(!err.to_string().is_empty());
    }
    // seq2seq generates its data: it takes no --dataset, and trains in epochs.
    let with_data = TrainOptions {
        dataset: Some("digits".into()),
        ..opts.clone()
    };
    assert!(reference::train(&with_data).is_err());
}

/// seq2seq trains privately too: Poisson batches of date pairs, the guarantee recorded
/// with the pair as the unit of privacy.
#[test]
fn seq2seq_trains_privately() {
    let dir = TempDir::new("seq2seq-dp");
    let out = dir.join("run");
    let opts = TrainOptions {
        epochs: Some(1),
        limit: Some(256),
        batch_size: Some(32),
        progress: false,
        privacy: Some(PrivacyOptions {
            accountant: AccountantKind::Rdp,
            seeded_noise: true,
            ..PrivacyOptions::target(8.0, 1e-5)
        }),
        ..TrainOptions::new(Model::named("seq2seq").unwrap(), out.clone())
    };
    let metrics = reference::train(&opts).unwrap();
    let eps = metrics["epsilon"].as_f64().unwrap();
    assert!(eps <= 8.0 && eps > 7.9, "{eps}");
    assert!(metrics["train_loss"].as_f64().unwrap().is_finite());
    let info: serde_json::Value =
        serde_json::from_str(&reference::info(&out.join("checkpoint")).unwrap()).unwrap();
    assert_eq!(info["privacy"]["unit"], "date pair");
    // 256 pairs at batch 32: ⌊1/q⌋ = 8 steps.
    assert_eq!(info["privacy"]["steps"].as_u64().unwrap(), 8);
}
