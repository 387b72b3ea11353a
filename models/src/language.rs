//! Character-level language modelling: the corpus and its random windows, the held-out
//! loss, training through the one loop ([`fit`]), and sampling text from a trained model.
//!
//! ```
//! use strata_models::language::TextCorpus;
//!
//! let corpus = TextCorpus::new("abracadabra abracadabra", 0.25)?;
//! assert_eq!(corpus.vocab.len(), 6); // ' ', a, b, c, d, r
//! assert_eq!(corpus.train.len() + corpus.held_out.len(), 23);
//! assert!(corpus.unigram_entropy > 1.0 && corpus.unigram_entropy < 6f64.ln());
//! # Ok::<(), strata_models::ModelsError>(())
//! ```

use strata_autograd::{Var, no_grad};
use strata_nn::Module;
use strata_nn::loss::{ClassLossOptions, cross_entropy};
use strata_optim::Optimizer;
use strata_privacy::PoissonSampler;
use strata_tensor::IndexTensor;
use strata_tensor::rand::{Rng, RngExt};

use crate::data::readers::CharVocab;
use crate::error::finite_outputs;
use crate::models::{CharRnn, CharTransformer, RecurrentState};
use crate::train::{Batches, EpochRecord, Evaluation, Learner, LoopConfig, StepLoss, Unit, run};
use crate::{ModelsError, Result};

/// A text as character indices, split into a training part and a held-out tail.
#[derive(Clone, Debug, PartialEq)]
pub struct TextCorpus {
    /// The characters of the whole text.
    pub vocab: CharVocab,
    /// The first part of the text.
    pub train: Vec<usize>,
    /// The last `held_out_fraction` of the text.
    pub held_out: Vec<usize>,
    /// The entropy of the text's character frequencies, in nats: the loss of the best
    /// model that ignores context.
    pub unigram_entropy: f64,
}

impl TextCorpus {
    /// Splits `text` (by characters) into a training part and the last
    /// `held_out_fraction` held out.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for a fraction outside `(0, 1)` or a text too short to
    /// leave at least two characters on each side.
    pub fn new(text: &str, held_out_fraction: f64) -> Result<Self> {
        if !(held_out_fraction > 0.0 && held_out_fraction < 1.0) {
            return Err(ModelsError::Config(format!(
                "the held-out fraction must be in (0, 1), got {held_out_fraction}"
            )));
        }
        let vocab = CharVocab::from_text(text);
        let ids = vocab
            .encode(text)
            .expect("the vocabulary of the text itself");
        let held = (ids.len() as f64 * held_out_fraction).round() as usize;
        if held < 2 || ids.len() - held < 2 {
            return Err(ModelsError::Config(format!(
                "a text of {} characters is too short to split {held_out_fraction} of it off",
                ids.len()
            )));
        }
        let mut counts = vec![0usize; vocab.len()];
        for &i in &ids {
            counts[i] += 1;
        }
        let n = ids.len() as f64;
        let unigram_entropy = counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / n;
                -p * p.ln()
            })
            .sum();
        let held_out = ids[ids.len() - held..].to_vec();
        let mut train = ids;
        train.truncate(train.len() - held);
        Ok(TextCorpus {
            vocab,
            train,
            held_out,
            unigram_entropy,
        })
    }

    /// `batch` windows of `len + 1` characters at random places of the training part:
    /// inputs `[batch, len]` and their next characters as targets `[batch * len]`.
    ///
    /// # Errors
    /// [`ModelsError::Config`] when the training part is shorter than `len + 1`.
    pub fn random_batch<R: Rng + ?Sized>(
        &self,
        batch: usize,
        len: usize,
        rng: &mut R,
    ) -> Result<(IndexTensor, IndexTensor)> {
        self.check_windows(batch, len)?;
        // Both tensors are reserved before the first draw: `--batch-size 1e9` is an error
        // here, not an abort after a billion draws.
        let n = batch.saturating_mul(len);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        x.try_reserve_exact(n)
            .and_then(|()| y.try_reserve_exact(n))
            .map_err(|_| {
                ModelsError::Config(format!(
                    "{batch} windows of {len} characters are more than memory can hold"
                ))
            })?;
        for _ in 0..batch {
            let s = rng.random_range(0..self.train.len() - len);
            x.extend(self.train[s..s + len].iter().map(|&i| i as i64));
            y.extend(self.train[s + 1..=s + len].iter().map(|&i| i as i64));
        }
        Ok((
            IndexTensor::from_vec(x, &[batch, len])?,
            IndexTensor::from_vec(y, &[n])?,
        ))
    }

    /// Makes exactly the draws from `rng` that [`random_batch`](TextCorpus::random_batch)
    /// makes, without building the batch: a resumed training replays the windows of the
    /// steps it skips with it.
    ///
    /// # Errors
    /// As [`random_batch`](TextCorpus::random_batch).
    pub fn skip_batch<R: Rng + ?Sized>(&self, batch: usize, len: usize, rng: &mut R) -> Result<()> {
        self.check_windows(batch, len)?;
        for _ in 0..batch {
            rng.random_range(0..self.train.len() - len);
        }
        Ok(())
    }

    fn check_windows(&self, batch: usize, len: usize) -> Result<()> {
        if self.train.len() <= len || batch == 0 || len == 0 {
            return Err(ModelsError::Config(format!(
                "cannot draw {batch} windows of {len} characters from a training text of {}",
                self.train.len()
            )));
        }
        Ok(())
    }

    /// The number of disjoint windows of `len` characters (each with its next character
    /// as the last target) in the training text: the units of private training, window
    /// `k` starting at `k·len`.
    pub fn window_count(&self, len: usize) -> usize {
        self.train.len().saturating_sub(1) / len.max(1)
    }

    /// The disjoint windows `indices` of `len` characters (see
    /// [`window_count`](TextCorpus::window_count)) as inputs `[n, len]` and targets.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for a window past the end of the text.
    pub fn windows_at(&self, indices: &[usize], len: usize) -> Result<(IndexTensor, IndexTensor)> {
        let count = self.window_count(len);
        if let Some(&bad) = indices.iter().find(|&&k| k >= count) {
            return Err(ModelsError::Config(format!(
                "window {bad} of {len} characters is past the end of the training text \
                 ({count} windows)"
            )));
        }
        let starts: Vec<usize> = indices.iter().map(|&k| k * len).collect();
        windows(&self.train, &starts, len)
    }

    /// Rank `rank`'s share of [`random_batch`](TextCorpus::random_batch) among `ranks`:
    /// the same `batch` windows are drawn on every rank (the RNG advances as for one
    /// process), and this rank takes the `batch / ranks` from `rank · batch / ranks` on, so
    /// that the ranks' windows are together the batch one process would draw.
    ///
    /// # Errors
    /// As [`random_batch`](TextCorpus::random_batch), and a batch that does not divide
    /// among the ranks.
    pub fn random_batch_shard<R: Rng + ?Sized>(
        &self,
        batch: usize,
        len: usize,
        rng: &mut R,
        rank: usize,
        ranks: usize,
    ) -> Result<(IndexTensor, IndexTensor)> {
        if ranks == 0 || rank >= ranks || !batch.is_multiple_of(ranks) {
            return Err(ModelsError::Config(format!(
                "a batch of {batch} windows does not divide among {ranks} ranks (rank {rank})"
            )));
        }
        self.check_windows(batch, len)?;
        // Reserved before the first draw, as in `random_batch`: a user's batch size is no
        // infallible allocation size.
        let mut starts = Vec::new();
        starts.try_reserve_exact(batch).map_err(|_| {
            ModelsError::Config(format!("{batch} windows are more than memory can hold"))
        })?;
        starts.extend((0..batch).map(|_| rng.random_range(0..self.train.len() - len)));
        let share = batch / ranks;
        windows(&self.train, &starts[rank * share..(rank + 1) * share], len)
    }
}

/// Inputs `[n, len]` and targets `[n * len]` of the windows starting at `starts`.
fn windows(ids: &[usize], starts: &[usize], len: usize) -> Result<(IndexTensor, IndexTensor)> {
    let n = starts.len().saturating_mul(len);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    x.try_reserve_exact(n)
        .and_then(|()| y.try_reserve_exact(n))
        .map_err(|_| {
            ModelsError::Config(format!(
                "{} windows of {len} characters are more than memory can hold",
                starts.len()
            ))
        })?;
    for &s in starts {
        x.extend(ids[s..s + len].iter().map(|&i| i as i64));
        y.extend(ids[s + 1..=s + len].iter().map(|&i| i as i64));
    }
    Ok((
        IndexTensor::from_vec(x, &[starts.len(), len])?,
        IndexTensor::from_vec(y, &[starts.len() * len])?,
    ))
}

/// A character model of either family, behind one interface.
#[allow(clippy::large_enum_variant)] // one per training: the size does not matter
pub enum CharModel {
    /// Recurrent.
    Rnn(CharRnn),
    /// Transformer.
    Transformer(CharTransformer),
}

impl CharModel {
    /// Logits `[N, L, vocab]` for indices `[N, L]` (recurrent models start from zeros).
    ///
    /// # Errors
    /// The model's input errors.
    pub fn logits(&self, ids: &IndexTensor) -> Result<Var> {
        match self {
            CharModel::Rnn(m) => Ok(m.forward(ids, None)?.0),
            CharModel::Transformer(m) => m.forward(ids),
        }
    }

    /// The longest input the model takes (unbounded for recurrent models).
    pub fn context(&self) -> usize {
        match self {
            CharModel::Rnn(_) => usize::MAX,
            CharModel::Transformer(m) => m.config().context,
        }
    }

    /// The vocabulary size.
    pub fn vocab(&self) -> usize {
        match self {
            CharModel::Rnn(m) => m.config().vocab,
            CharModel::Transformer(m) => m.config().vocab,
        }
    }
}

impl Module for CharModel {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, strata_nn::StateKind)) {
        match self {
            CharModel::Rnn(m) => m.visit_state(f),
            CharModel::Transformer(m) => m.visit_state(f),
        }
    }

    fn set_training(&mut self, training: bool) {
        match self {
            CharModel::Rnn(m) => m.set_training(training),
            CharModel::Transformer(m) => m.set_training(training),
        }
    }
}

/// The mean cross-entropy (nats per character) and next-character accuracy of `model`
/// over `ids` cut into consecutive windows of `len` predictions (at most `max_chars` of
/// them), without recording graphs. Call it on a model in eval mode (as [`fit`] does), or
/// dropout takes part.
///
/// # Errors
/// [`ModelsError::Config`] when `ids` is shorter than `len + 1`; model errors.
pub fn held_out_loss(
    model: &CharModel,
    ids: &[usize],
    len: usize,
    max_chars: usize,
) -> Result<Evaluation> {
    let usable = ids.len().saturating_sub(1).min(max_chars);
    let n = usable / len.max(1);
    if n == 0 {
        return Err(ModelsError::Config(format!(
            "the held-out text ({} characters) is shorter than one window of {len}",
            ids.len()
        )));
    }
    let starts: Vec<usize> = (0..n).map(|w| w * len).collect();
    no_grad(|| {
        let (mut loss, mut correct, mut count) = (0.0f64, 0usize, 0usize);
        for chunk in starts.chunks(32) {
            let (x, y) = windows(ids, chunk, len)?;
            let logits = model.logits(&x)?.reshape([-1, model.vocab() as isize])?;
            let l = cross_entropy(&logits, &y, &ClassLossOptions::default())?.item()? as f64;
            loss += l * y.numel() as f64;
            let predicted = logits.value().argmax(Some(1), false)?;
            correct += predicted
                .as_slice()
                .iter()
                .zip(y.as_slice())
                .filter(|(a, b)| a == b)
                .count();
            count += y.numel();
        }
        Ok(Evaluation {
            loss: loss / count as f64,
            accuracy: Some(correct as f64 / count as f64),
            r2: None,
        })
    })
}

/// How [`fit`] trains a character model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LmTrainConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Windows per step.
    pub batch_size: usize,
    /// Characters per window.
    pub seq_len: usize,
    /// Peak learning rate of the one-cycle schedule.
    pub max_lr: f64,
    /// Clip the gradient norm to this (`None`: no clipping).
    pub clip: Option<f64>,
    /// Evaluate (and record a point of the curves) every this many steps.
    pub eval_every: usize,
    /// Held-out characters used by the evaluations during training (the final one uses
    /// them all).
    pub eval_chars: usize,
    /// Draw a progress bar.
    pub progress: bool,
}

/// Random windows of a corpus's training text, cut into periods of `eval_every` steps (the
/// loop's epochs: the model is evaluated after each); the last period may be shorter.
pub struct Windows<'a, R: Rng + ?Sized> {
    corpus: &'a TextCorpus,
    batch_size: usize,
    seq_len: usize,
    steps: usize,
    eval_every: usize,
    rng: &'a mut R,
    /// This rank and the number of ranks, when the batches are shared among ranks.
    shard: (usize, usize),
}

impl<'a, R: Rng + ?Sized> Windows<'a, R> {
    /// `steps` batches of `batch_size` windows of `seq_len` characters drawn with `rng`
    /// from `corpus.train`, in periods of `eval_every` steps.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for zero steps or `eval_every`.
    pub fn new(
        corpus: &'a TextCorpus,
        batch_size: usize,
        seq_len: usize,
        steps: usize,
        eval_every: usize,
        rng: &'a mut R,
    ) -> Result<Self> {
        if steps == 0 || eval_every == 0 {
            return Err(ModelsError::Config(
                "steps and eval_every must be positive".into(),
            ));
        }
        Ok(Windows {
            corpus,
            batch_size,
            seq_len,
            steps,
            eval_every,
            rng,
            shard: (0, 1),
        })
    }

    /// Each batch shared among `ranks` ranks, this one `rank`: see
    /// [`TextCorpus::random_batch_shard`] (the batch size must divide).
    pub fn shard(mut self, rank: usize, ranks: usize) -> Self {
        self.shard = (rank, ranks);
        self
    }
}

impl<R: Rng + ?Sized> Batches for Windows<'_, R> {
    type Batch = (IndexTensor, IndexTensor);

    fn epochs(&self) -> usize {
        self.steps.div_ceil(self.eval_every)
    }

    fn steps_in(&self, epoch: usize) -> usize {
        let done = (epoch - 1) * self.eval_every;
        self.steps.saturating_sub(done).min(self.eval_every)
    }

    fn epoch(&mut self, epoch: usize) -> Box<dyn Iterator<Item = Result<Self::Batch>> + '_> {
        let n = self.steps_in(epoch);
        let (corpus, batch, len) = (self.corpus, self.batch_size, self.seq_len);
        let (rank, ranks) = self.shard;
        let rng = &mut *self.rng;
        if ranks == 1 {
            return Box::new((0..n).map(move |_| corpus.random_batch(batch, len, rng)));
        }
        Box::new((0..n).map(move |_| corpus.random_batch_shard(batch, len, rng, rank, ranks)))
    }

    fn unit(&self) -> Unit {
        Unit::Step
    }

    /// Replays the window draws of a period already trained, so that the RNG stands where
    /// it stood after it (a resumed training then draws the same windows, and the sample of
    /// the metrics the same text, as one that never stopped).
    fn skip_epoch(&mut self, epoch: usize) -> Result<()> {
        for _ in 0..self.steps_in(epoch) {
            self.corpus
                .skip_batch(self.batch_size, self.seq_len, &mut *self.rng)?;
        }
        Ok(())
    }
}

/// Poisson-sampled windows for private training: every step keeps each disjoint window
/// of the training text ([`TextCorpus::window_count`]) independently with strata-privacy's
/// [`PoissonSampler`], in periods of `eval_every` steps as [`Windows`].
pub struct PoissonWindows<'a> {
    corpus: &'a TextCorpus,
    seq_len: usize,
    steps: usize,
    eval_every: usize,
    sampler: PoissonSampler,
}

impl<'a> PoissonWindows<'a> {
    /// `steps` Poisson batches of windows of `seq_len` drawn by `sampler` (over
    /// `corpus.window_count(seq_len)` windows), in periods of `eval_every` steps.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for zero steps or `eval_every`.
    pub fn new(
        corpus: &'a TextCorpus,
        seq_len: usize,
        steps: usize,
        eval_every: usize,
        sampler: PoissonSampler,
    ) -> Result<Self> {
        if steps == 0 || eval_every == 0 {
            return Err(ModelsError::Config(
                "steps and eval_every must be positive".into(),
            ));
        }
        Ok(PoissonWindows {
            corpus,
            seq_len,
            steps,
            eval_every,
            sampler,
        })
    }
}

impl Batches for PoissonWindows<'_> {
    type Batch = (IndexTensor, IndexTensor);

    fn epochs(&self) -> usize {
        self.steps.div_ceil(self.eval_every)
    }

    fn steps_in(&self, epoch: usize) -> usize {
        let done = (epoch - 1) * self.eval_every;
        self.steps.saturating_sub(done).min(self.eval_every)
    }

    fn epoch(&mut self, epoch: usize) -> Box<dyn Iterator<Item = Result<Self::Batch>> + '_> {
        let n = self.steps_in(epoch);
        let (corpus, len, sampler) = (self.corpus, self.seq_len, &mut self.sampler);
        Box::new((0..n).map(move |_| corpus.windows_at(&sampler.sample(), len)))
    }

    fn unit(&self) -> Unit {
        Unit::Step
    }
}

/// A character model trained to predict each next character of its windows, evaluated on
/// the held-out text.
pub struct NextCharacter<'a> {
    model: &'a mut CharModel,
    held_out: &'a [usize],
    seq_len: usize,
    eval_chars: usize,
}

impl<'a> NextCharacter<'a> {
    /// `model` evaluated on windows of `seq_len` of `held_out`: on `eval_chars` characters
    /// during training, on all of them after the last period.
    pub fn new(
        model: &'a mut CharModel,
        held_out: &'a [usize],
        seq_len: usize,
        eval_chars: usize,
    ) -> Self {
        NextCharacter {
            model,
            held_out,
            seq_len,
            eval_chars,
        }
    }
}

impl Learner for NextCharacter<'_> {
    type Batch = (IndexTensor, IndexTensor);

    fn module(&mut self) -> &mut dyn Module {
        self.model
    }

    fn samples(&self, (x, _): &Self::Batch) -> Option<usize> {
        x.shape().first().copied()
    }

    fn loss(&self, (x, y): &Self::Batch) -> Result<StepLoss> {
        let logits = self
            .model
            .logits(x)?
            .reshape([-1, self.model.vocab() as isize])?;
        Ok(StepLoss {
            loss: cross_entropy(&logits, y, &ClassLossOptions::default())?,
            weight: 1.0,
            items: y.numel(),
        })
    }

    fn evaluate(&self, last: bool) -> Result<Evaluation> {
        let chars = if last { usize::MAX } else { self.eval_chars };
        held_out_loss(self.model, self.held_out, self.seq_len, chars)
    }

    fn describe(&self, r: &EpochRecord) -> String {
        format!(
            "train loss {:.4}, held-out loss {:.4} nats/char, accuracy {:.2}%",
            r.train_loss,
            r.test.loss,
            100.0 * r.test.accuracy.unwrap_or(0.0)
        )
    }

    fn items(&self) -> &'static str {
        "chars"
    }
}

/// Trains `model` on random windows of `corpus.train` with `optimizer` under a one-cycle
/// schedule; evaluates on the held-out text (in eval mode) every `eval_every` steps and
/// at the end (on all of it). One record per evaluation: `epoch` counts evaluations,
/// `train_loss` is the mean loss since the previous one, `samples_per_s` counts
/// characters. The model is left in eval mode. [`run`] with [`Windows`] and
/// [`NextCharacter`].
///
/// # Errors
/// Configuration, model and optimizer errors; a non-finite loss (training diverged).
pub fn fit<R: Rng + ?Sized>(
    model: &mut CharModel,
    optimizer: &mut dyn Optimizer,
    corpus: &TextCorpus,
    config: &LmTrainConfig,
    rng: &mut R,
) -> Result<Vec<EpochRecord>> {
    let mut windows = Windows::new(
        corpus,
        config.batch_size,
        config.seq_len,
        config.steps,
        config.eval_every,
        rng,
    )?;
    if config.seq_len > model.context() {
        return Err(ModelsError::Config(format!(
            "seq_len {} exceeds the model's context {}",
            config.seq_len,
            model.context()
        )));
    }
    let mut learner =
        NextCharacter::new(model, &corpus.held_out, config.seq_len, config.eval_chars);
    let loop_config = LoopConfig {
        one_cycle_max_lr: Some(config.max_lr),
        clip_grad_norm: config.clip,
        progress: config.progress,
        comm: strata_distributed::Communicator::alone(),
        privacy: None,
        ema: None,
    };
    run(
        &mut learner,
        &mut windows,
        optimizer,
        &loop_config,
        &mut |_| Ok(()),
    )
}

/// The most characters one [`generate`] call samples: one forward pass each (hours for
/// a million on a CPU), held in memory until the text is returned. Without a bound,
/// `--length 1000000000000` would run until memory ran out.
pub const MAX_GENERATE_LENGTH: usize = 1_000_000;

/// Continues `prompt` by `length` characters sampled from `model` at `temperature`
/// (0: always the most likely character). An empty prompt starts from a newline when the
/// vocabulary has one. Call it on a model in eval mode.
///
/// # Errors
/// [`ModelsError::Config`] for a prompt character outside the vocabulary, an empty prompt
/// with no newline in the vocabulary, a negative temperature, a `length` beyond
/// [`MAX_GENERATE_LENGTH`], or logits that are NaN or infinite; model errors.
pub fn generate<R: Rng + ?Sized>(
    model: &CharModel,
    vocab: &CharVocab,
    prompt: &str,
    length: usize,
    temperature: f64,
    rng: &mut R,
) -> Result<String> {
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err(ModelsError::Config(format!(
            "the temperature must be a finite number >= 0, got {temperature}"
        )));
    }
    if length > MAX_GENERATE_LENGTH {
        return Err(ModelsError::Config(format!(
            "a length of {length} characters is more than the {MAX_GENERATE_LENGTH} that one \
             call generates"
        )));
    }
    let seed_text = if prompt.is_empty() { "\n" } else { prompt };
    let mut ids = vocab.encode(seed_text).ok_or_else(|| {
        let bad: String = seed_text
            .chars()
            .filter(|&c| vocab.index(c).is_none())
            .collect();
        ModelsError::Config(format!(
            "the prompt has characters the model never saw: {bad:?}"
        ))
    })?;
    let prompt_len = ids.len();
    no_grad(|| -> Result<()> {
        let mut state: Option<RecurrentState> = None;
        let mut pending = ids.clone();
        for _ in 0..length {
            let logits = match model {
                CharModel::Rnn(m) => {
                    let x = as_row(&pending)?;
                    let (y, s) = m.forward(&x, state.as_ref())?;
                    state = Some(s);
                    y.select(1, -1)?.squeeze(0)?.to_vec()
                }
                CharModel::Transformer(m) => {
                    let from = ids.len().saturating_sub(m.config().context);
                    let y = m.forward(&as_row(&ids[from..])?)?;
                    y.select(1, -1)?.squeeze(0)?.to_vec()
                }
            };
            let next = sample(finite_outputs("logit", &logits)?, temperature, rng);
            ids.push(next);
            pending = vec![next];
        }
        Ok(())
    })?;
    let text = vocab
        .decode(&ids[prompt_len..])
        .expect("sampled indices are in the vocabulary");
    Ok(format!("{prompt}{text}"))
}

fn as_row(ids: &[usize]) -> Result<IndexTensor> {
    Ok(IndexTensor::from_vec(
        ids.iter().map(|&i| i as i64).collect(),
        &[1, ids.len()],
    )?)
}

/// An index drawn from `softmax(logits / temperature)`; the argmax at temperature 0.
fn sample<R: Rng + ?Sized>(logits: &[f32], temperature: f64, rng: &mut R) -> usize {
    let argmax = logits
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &l)| {
            if l > best.1 { (i, l) } else { best }
        })
        .0;
    if temperature == 0.0 {
        return argmax;
    }
    let max = f64::from(logits[argmax]);
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| ((f64::from(l) - max) / temperature).exp())
        .collect();
    let mut u = rng.random::<f64>() * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    argmax
}

/// A character model exported traced on one window of `len` indices below `vocab`; the
/// trace must equal the model's own logits.
///
/// # Errors
/// The export's errors; a trace that differs from the model's forward.
pub(crate) fn export_char_model(
    net: &CharModel,
    len: usize,
    vocab: usize,
    name: &str,
) -> Result<strata_onnx::Exported> {
    let data = (0..len)
        .map(|i| ((i * 31 + 7) % vocab.max(1)) as i64)
        .collect();
    let ids = IndexTensor::from_vec(data, &[1, len])?;
    let expected = strata_autograd::no_grad(|| net.logits(&ids))?;
    match net {
        CharModel::Rnn(m) => crate::models::export_checked(m, ids.into(), &expected.value(), name),
        // The length is symbolic: the file runs on any window up to the context.
        CharModel::Transformer(m) => {
            let input = strata_onnx::GraphInput::new("input", ids).dynamic(1, "seq_len");
            crate::models::export_checked_with(vec![input], &expected.value(), name, |g, xs| {
                strata_onnx::Export::export(m, g, &xs[0])
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_tensor::seeded_rng;

    #[test]
    fn corpus_split_and_entropy() {
        let c = TextCorpus::new("aabb", 0.5).unwrap();
        assert_eq!(c.train, vec![0, 0]);
        assert_eq!(c.held_out, vec![1, 1]);
        assert!((c.unigram_entropy - 2f64.ln()).abs() < 1e-12);
        assert!(TextCorpus::new("ab", 0.5).is_err());
        assert!(TextCorpus::new("aabb", 1.0).is_err());
    }

    #[test]
    fn batches_are_shifted_windows() {
        let c = TextCorpus::new("abcdefghijklmnopqrstuvwxyz", 0.2).unwrap();
        let (x, y) = c.random_batch(3, 4, &mut seeded_rng(1)).unwrap();
        assert_eq!(x.shape(), &[3, 4]);
        assert_eq!(y.shape(), &[12]);
        for (row, next) in x.as_slice().chunks(4).zip(y.as_slice().chunks(4)) {
            for k in 0..4 {
                assert_eq!(next[k], row[k] + 1, "the alphabet's next letter");
            }
        }
        assert!(c.random_batch(1, 30, &mut seeded_rng(1)).is_err());
    }

    #[test]
    fn windows_come_in_periods_of_eval_every_steps() {
        let c = TextCorpus::new("abcdefghijklmnopqrstuvwxyz", 0.2).unwrap();
        let mut rng = seeded_rng(1);
        let mut w = Windows::new(&c, 2, 4, 45, 20, &mut rng).unwrap();
        assert_eq!(w.epochs(), 3);
        assert_eq!(
            (1..=3).map(|e| w.steps_in(e)).collect::<Vec<_>>(),
            [20, 20, 5]
        );
        assert_eq!(w.epoch(3).count(), 5);
        assert_eq!(w.unit(), Unit::Step);
        let mut rng = seeded_rng(1);
        assert!(Windows::new(&c, 2, 4, 0, 20, &mut rng).is_err());
        assert!(Windows::new(&c, 2, 4, 10, 0, &mut rng).is_err());
    }

    #[test]
    fn sampling_follows_temperature() {
        let logits = [0.0f32, 3.0, 1.0];
        assert_eq!(sample(&logits, 0.0, &mut seeded_rng(0)), 1);
        let mut rng = seeded_rng(0);
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            counts[sample(&logits, 1.0, &mut rng)] += 1;
        }
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        for (i, &c) in counts.iter().enumerate() {
            let p = f64::from(logits[i]).exp() / z;
            assert!((c as f64 / 20_000.0 - p).abs() < 0.015, "class {i}: {c}");
        }
    }
}
