//! The character language models' shared parts: [`LanguageTask`] (random windows of a
//! text, the held-out loss, a sample of text in the metrics), the corpus they load, and
//! their extra record, the vocabulary.

use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_optim::Optimizer;
use strata_tensor::IndexTensor;
use strata_tensor::rand::rngs::StdRng;
use strata_tensor::seeded_rng;

use super::TrainOptions;
use super::record::Hyperparameters;
use super::spec::{Figures, Length, Plan, Task, figures};
use crate::data::bundled::{self, Provenance};
use crate::data::readers::{CharVocab, read_text};
use crate::language::{self, CharModel, NextCharacter, PoissonWindows, TextCorpus, Windows};
use crate::train::{self, Batches, EpochEnd, EpochRecord, Evaluation};
use crate::{ModelsError, Result};

/// The held-out share of the text the character models are evaluated on (its end).
const HELD_OUT_FRACTION: f64 = 0.1;

/// The extra record of a character model: the characters of its vocabulary, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharExtra {
    /// The vocabulary's characters, sorted.
    pub vocab: String,
}

impl CharExtra {
    /// The extra record of `vocab`.
    pub fn of(vocab: &CharVocab) -> Self {
        CharExtra {
            vocab: (0..vocab.len()).filter_map(|i| vocab.char(i)).collect(),
        }
    }

    /// The vocabulary.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for an empty one.
    pub fn vocab(&self) -> Result<CharVocab> {
        if self.vocab.is_empty() {
            return Err(ModelsError::Config("the record has no vocabulary".into()));
        }
        Ok(CharVocab::from_text(&self.vocab))
    }

    /// Checks a vocabulary read from a record for a model of `vocab` characters: that
    /// many distinct characters, in order (a hand-edited vocabulary of another size, or
    /// one with repeats, would map indices to the wrong characters).
    ///
    /// # Errors
    /// A message saying what does not fit.
    pub fn check(&self, vocab: usize) -> std::result::Result<(), String> {
        let chars: Vec<char> = self.vocab.chars().collect();
        if chars.len() != vocab {
            return Err(format!(
                "its vocabulary has {} characters, the model {vocab}",
                chars.len()
            ));
        }
        if chars.windows(2).any(|w| w[0] >= w[1]) {
            return Err("its vocabulary is not a sorted list of distinct characters".into());
        }
        Ok(())
    }

    /// The check of `eval` that the text loaded again has the vocabulary recorded.
    ///
    /// # Errors
    /// A message saying that the text has changed.
    pub fn check_same_text(&self, reloaded: &CharExtra) -> std::result::Result<(), String> {
        if self == reloaded {
            Ok(())
        } else {
            Err("the text it was trained on has changed (another vocabulary)".into())
        }
    }

    /// `prompt` continued by `length` characters that `net` samples at `temperature` from
    /// `rng`; see [`language::generate`].
    ///
    /// # Errors
    /// As [`language::generate`].
    pub fn generate(
        &self,
        net: &CharModel,
        prompt: &str,
        length: usize,
        temperature: f64,
        rng: &mut StdRng,
    ) -> Result<String> {
        language::generate(net, &self.vocab()?, prompt, length, temperature, rng)
    }
}

/// The error of `predict` for the language model `name`.
pub fn language_model_predicts_nothing(name: &str) -> ModelsError {
    ModelsError::Config(format!(
        "{name} is a language model: sample from it with `strata generate`"
    ))
}

/// The text a character model trains on and its provenance: the file `--data` names or
/// the bundled Moby Dick, cut to its first `--limit` characters (before the vocabulary is
/// taken), its last tenth held out. `--dataset` is refused.
///
/// # Errors
/// [`ModelsError::Config`] for `--dataset` or a text too short to split; data errors.
pub fn corpus(opts: &TrainOptions) -> Result<(TextCorpus, Provenance)> {
    if opts.dataset.is_some() {
        return Err(ModelsError::Config(format!(
            "{} has one bundled text (Moby Dick); give another with --data FILE",
            opts.model.name()
        )));
    }
    let (path, provenance) = match &opts.data {
        Some(file) => (
            file.to_path_buf(),
            Provenance {
                name: file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                source: file.display().to_string(),
                license: "see the text's terms".into(),
            },
        ),
        None => (
            bundled::moby_dick_path(&bundled::data_dir()),
            bundled::moby_dick_provenance(),
        ),
    };
    let (mut text, _) = read_text(Path::new(&path))?;
    if let Some(n) = opts.limit
        && let Some((cut, _)) = text.char_indices().nth(n)
    {
        text.truncate(cut);
    }
    Ok((TextCorpus::new(&text, HELD_OUT_FRACTION)?, provenance))
}

/// The task of the character models: steps of random windows of the training text under
/// AdamW and a one-cycle schedule, evaluated twenty times on the held-out text; the
/// metrics add bits per character, the unigram baseline and a sample of text.
pub struct LanguageTask {
    /// Characters per window.
    pub seq_len: usize,
    /// Held-out characters of the evaluations during training (the last uses them all).
    pub eval_chars: usize,
    /// Draws the windows, then the sample of the metrics.
    rng: StdRng,
}

impl LanguageTask {
    /// Windows of `seq_len` characters.
    pub fn new(seq_len: usize) -> Self {
        LanguageTask {
            seq_len,
            eval_chars: 16_384,
            rng: seeded_rng(0),
        }
    }
}

/// The figures of a character model's training.
#[derive(Serialize)]
struct LanguageFigures {
    held_out_loss: f64,
    held_out_bits_per_char: f64,
    held_out_accuracy: Option<f64>,
    unigram_entropy: f64,
    below_unigram: f64,
    train_chars_per_s: f64,
    sample: String,
}

impl Task for LanguageTask {
    type Network = CharModel;
    type Data = TextCorpus;

    /// The text was cut while loading it (the vocabulary is the cut text's).
    fn limit(&self, _data: &mut TextCorpus, _n: usize) {}

    fn train_len(&self, data: &TextCorpus) -> usize {
        data.train.len()
    }

    fn fit(
        &mut self,
        net: &mut CharModel,
        corpus: &TextCorpus,
        optimizer: &mut dyn Optimizer,
        plan: &Plan,
        on_epoch: &mut dyn FnMut(&EpochEnd<'_>) -> Result<()>,
    ) -> Result<Vec<EpochRecord>> {
        let Length::Steps(steps) = plan.length else {
            return Err(ModelsError::Config(
                "a character model trains in steps: use --steps".into(),
            ));
        };
        // What the evaluations and windows need is checked before the first step, so that
        // a text too short for them fails now, not after the first period of training.
        if corpus.held_out.len() <= self.seq_len {
            return Err(ModelsError::Config(format!(
                "the held-out text ({} characters) is shorter than one window of {} and the \
                 character after it: use a longer text (or a larger --limit)",
                corpus.held_out.len(),
                self.seq_len
            )));
        }
        if corpus.train.len() <= self.seq_len {
            return Err(ModelsError::Config(format!(
                "the training text ({} characters) is shorter than one window of {} and the \
                 character after it",
                corpus.train.len(),
                self.seq_len
            )));
        }
        self.rng = seeded_rng(plan.seed ^ 0x5eed);
        let eval_every = (steps / 20).max(1);
        let mut poisson = match &plan.loop_config.privacy {
            // Private training draws Poisson batches of disjoint windows, from the OS
            // generator unless the noise is seeded.
            Some(private) => {
                let n = corpus.window_count(self.seq_len);
                let sampler = private.sampler(n, plan.seed, &plan.loop_config.comm)?;
                Some(PoissonWindows::new(
                    corpus,
                    self.seq_len,
                    steps,
                    eval_every,
                    sampler,
                )?)
            }
            None => None,
        };
        let mut windows = Windows::new(
            corpus,
            plan.batch_size,
            self.seq_len,
            steps,
            eval_every,
            &mut self.rng,
        )?
        .shard(plan.loop_config.comm.rank(), plan.loop_config.comm.size());
        let batches: &mut dyn Batches<Batch = (IndexTensor, IndexTensor)> = match &mut poisson {
            Some(p) => p,
            None => &mut windows,
        };
        if self.seq_len > net.context() {
            return Err(ModelsError::Config(format!(
                "seq_len {} exceeds the model's context {}",
                self.seq_len,
                net.context()
            )));
        }
        let mut learner = NextCharacter::new(net, &corpus.held_out, self.seq_len, self.eval_chars);
        train::run_from(
            &mut learner,
            batches,
            optimizer,
            &plan.loop_config,
            plan.start,
            on_epoch,
        )
    }

    fn private_units(&self, corpus: &TextCorpus) -> Result<(usize, &'static str)> {
        Ok((corpus.window_count(self.seq_len), "window of text"))
    }

    fn evaluate(&self, net: &CharModel, corpus: &TextCorpus) -> Result<Evaluation> {
        language::held_out_loss(net, &corpus.held_out, self.seq_len, usize::MAX)
    }

    fn metrics(
        &mut self,
        net: &CharModel,
        corpus: &TextCorpus,
        history: &[EpochRecord],
        plan: &Plan,
    ) -> Result<Figures> {
        let last = history.last().map(|r| r.test).unwrap_or_default();
        let steps = match plan.length {
            Length::Steps(n) | Length::Epochs(n) => n,
        };
        // From a newline, or, in a text without one, from the held-out text's first
        // character (`generate` from an empty prompt needs a newline).
        let prompt = if corpus.vocab.index('\n').is_some() {
            "\n".to_string()
        } else {
            corpus
                .held_out
                .first()
                .and_then(|&i| corpus.vocab.char(i))
                .map(String::from)
                .unwrap_or_default()
        };
        let sample = language::generate(net, &corpus.vocab, &prompt, 240, 0.8, &mut self.rng)?;
        figures(&LanguageFigures {
            held_out_loss: last.loss,
            held_out_bits_per_char: last.loss / std::f64::consts::LN_2,
            held_out_accuracy: last.accuracy,
            unigram_entropy: corpus.unigram_entropy,
            below_unigram: 1.0 - last.loss / corpus.unigram_entropy,
            train_chars_per_s: (steps * plan.batch_size * self.seq_len) as f64
                / history.iter().map(|r| r.seconds).sum::<f64>().max(1e-9),
            sample,
        })
    }

    fn record_settings(&self, hyperparameters: &mut Hyperparameters) {
        hyperparameters.seq_len = Some(self.seq_len);
        hyperparameters.held_out_fraction = Some(HELD_OUT_FRACTION);
    }

    fn restore_settings(&mut self, hyperparameters: &Hyperparameters) {
        if let Some(n) = hyperparameters.seq_len {
            self.seq_len = n;
        }
    }
}
