//! The date-translating sequence-to-sequence transformer: a short training learns, its
//! checkpoint evaluates to the figures of its metrics and translates a file of dates, and
//! what it cannot take is an error.

use crate::common;

use common::TempDir;
use strata_models::reference::{self, Model, TrainOptions};

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
