//! The sequence-to-sequence transformer that translates dates into ISO 8601, and the
//! `seq2seq` reference training: an encoder–decoder [`Transformer`] trained with teacher
//! forcing, decoding greedily with the decoder's key/value cache.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_autograd::{Var, no_grad};
use strata_nn::loss::{ClassLossOptions, Reduction, cross_entropy};
use strata_nn::{
    AttnMask, DecoderCache, DecoderMasks, Embedding, Forward, LearnedPositionalEncoding, Linear,
    Module, StateKind, Transformer, TransformerActivation, TransformerEncoderLayerConfig,
    generate_square_subsequent_mask, visit_child,
};
use strata_optim::Optimizer;
use strata_privacy::PoissonSampler;
use strata_tensor::rand::Rng;
use strata_tensor::rand::rngs::StdRng;
use strata_tensor::rand::seq::SliceRandom;
use strata_tensor::{IndexTensor, Tensor, seeded_rng};

use super::dates::{
    BOS, DatePairs, EOS, EncodedPairs, MAX_PAIRS, MAX_SOURCE, MAX_TARGET, PAD, VOCAB, decode,
    encode_source,
};
use crate::data::bundled::Provenance;
use crate::data::readers::read_text;
use crate::reference::{
    Defaults, Figures, Length, OptimizerKind, Plan, Prepared, Record, ReferenceModel, Schedule,
    Task, TrainOptions, figures,
};
use crate::train::{self, Batches, EpochEnd, EpochRecord, Evaluation, Learner, StepLoss};
use crate::{ModelsError, Result};

/// The shape of a [`Seq2Seq`], and the architecture record of `seq2seq` checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seq2SeqConfig {
    /// Tokens in the (shared) vocabulary.
    pub vocab: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Encoder layers.
    pub encoder_layers: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// Width of the feed-forward blocks.
    pub feedforward: usize,
    /// The longest source (the source positions' table).
    pub max_source: usize,
    /// The longest output, end token included (the target positions' table).
    pub max_target: usize,
    /// Dropout inside the layers.
    pub dropout: f64,
}

/// An encoder–decoder transformer over tokens: source and target embeddings with learned
/// positions, a pre-norm [`Transformer`] (the decoder under a causal mask, attending to the
/// encoder's output with the sources' padding masked), a linear head over the vocabulary.
/// State-dict keys `src_embed.weight`, `tgt_embed.weight`, `src_pos.weight`,
/// `tgt_pos.weight`, `transformer.encoder.layers.0.self_attn.in_proj_weight`, …,
/// `transformer.decoder.norm.weight`, `head.weight`, `head.bias`.
pub struct Seq2Seq {
    /// Source tokens → vectors.
    pub src_embed: Embedding,
    /// Target tokens → vectors.
    pub tgt_embed: Embedding,
    /// Learned source positions.
    pub src_pos: LearnedPositionalEncoding,
    /// Learned target positions.
    pub tgt_pos: LearnedPositionalEncoding,
    /// The encoder and decoder.
    pub transformer: Transformer,
    /// Logits over the vocabulary.
    pub head: Linear,
    config: Seq2SeqConfig,
}

impl Seq2Seq {
    /// A freshly initialised model.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for a zero size; layer configuration errors (e.g. a width
    /// not divisible by the number of heads).
    pub fn new<R: Rng + ?Sized>(config: Seq2SeqConfig, rng: &mut R) -> Result<Self> {
        let c = config;
        if [
            c.vocab,
            c.encoder_layers,
            c.decoder_layers,
            c.max_source,
            c.max_target,
        ]
        .contains(&0)
            || c.vocab <= EOS as usize
        {
            return Err(ModelsError::Config(format!(
                "seq2seq sizes must be positive (and the vocabulary hold the special tokens), \
                 got {c:?}"
            )));
        }
        let layer = TransformerEncoderLayerConfig::new(c.d_model, c.heads)
            .dim_feedforward(c.feedforward)
            .dropout(c.dropout)
            .activation(TransformerActivation::Gelu)
            .batch_first(true)
            .norm_first(true);
        Ok(Seq2Seq {
            src_embed: Embedding::new(c.vocab, c.d_model, Some(PAD as usize), rng)?,
            tgt_embed: Embedding::new(c.vocab, c.d_model, None, rng)?,
            src_pos: LearnedPositionalEncoding::new(c.max_source, c.d_model, rng)?,
            tgt_pos: LearnedPositionalEncoding::new(c.max_target, c.d_model, rng)?,
            transformer: Transformer::new(layer, c.encoder_layers, c.decoder_layers, rng)?,
            head: Linear::new(c.d_model, c.vocab, true, rng),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> Seq2SeqConfig {
        self.config
    }

    /// The encoder's output `[N, S, d_model]` for source tokens `[N, S]` (padded with
    /// [`PAD`]), and the padding mask `[N, S]` the decoder's cross-attention needs.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for a source longer than the model reads or not `[N, S]`;
    /// a token outside the vocabulary.
    pub fn encode(&self, src: &IndexTensor) -> Result<(Var, AttnMask)> {
        let s = src.shape();
        if s.len() != 2 || s[1] == 0 || s[1] > self.config.max_source {
            return Err(ModelsError::Config(format!(
                "seq2seq: expected source tokens [N, S] with 0 < S <= {}, got {s:?}",
                self.config.max_source
            )));
        }
        let pad: Vec<f32> = src
            .as_slice()
            .iter()
            .map(|&t| f32::from(u8::from(t == PAD)))
            .collect();
        let pad = AttnMask::Bool(Tensor::from_vec(pad, s)?);
        let x = self.src_pos.forward(&self.src_embed.forward(src)?)?;
        let memory = self
            .transformer
            .encoder
            .forward_with(&x, None, Some(&pad), false)?;
        Ok((memory, pad))
    }

    /// Logits `[N, T, vocab]` of the next token at each position of the decoder's inputs
    /// `tgt_in` `[N, T]` (teacher forcing: each position sees itself and earlier ones).
    ///
    /// # Errors
    /// As [`encode`](Seq2Seq::encode); `T` beyond the model's longest output.
    pub fn forward(&self, src: &IndexTensor, tgt_in: &IndexTensor) -> Result<Var> {
        let (memory, pad) = self.encode(src)?;
        self.decode_all(tgt_in, &memory, &pad)
    }

    /// The decoder and head over the whole of `tgt_in`, recomputing every position.
    fn decode_all(&self, tgt_in: &IndexTensor, memory: &Var, pad: &AttnMask) -> Result<Var> {
        let t = tgt_in.shape();
        if t.len() != 2 || t[1] == 0 || t[1] > self.config.max_target {
            return Err(ModelsError::Config(format!(
                "seq2seq: expected decoder inputs [N, T] with 0 < T <= {}, got {t:?}",
                self.config.max_target
            )));
        }
        let y = self.tgt_pos.forward(&self.tgt_embed.forward(tgt_in)?)?;
        let causal = generate_square_subsequent_mask(t[1]);
        let masks = DecoderMasks {
            tgt_mask: Some(&causal),
            tgt_is_causal: true,
            memory_key_padding_mask: Some(pad),
            ..DecoderMasks::default()
        };
        let h = self.transformer.decoder.forward_with(&y, memory, &masks)?;
        Ok(self.head.forward(&h)?)
    }

    /// Greedy decoding of source tokens `[N, S]`: from [`BOS`], the most likely next token
    /// until [`EOS`] or the longest output. With `cached`, each step runs the decoder on
    /// the newest token only, with the keys and values of the earlier ones (and of the
    /// memory) from a [`DecoderCache`]; without, it recomputes the whole prefix (the
    /// reference the cache is tested against). Returns each output's tokens, [`EOS`]
    /// included when it came, and the logits of every step `[N, steps, vocab]`.
    ///
    /// # Errors
    /// As [`encode`](Seq2Seq::encode).
    pub fn greedy(&self, src: &IndexTensor, cached: bool) -> Result<(Vec<Vec<i64>>, Tensor)> {
        no_grad(|| {
            let (memory, pad) = self.encode(src)?;
            let n = src.shape()[0];
            let mut outputs: Vec<Vec<i64>> = vec![Vec::with_capacity(MAX_TARGET); n];
            let mut prefix = vec![BOS; n];
            let mut last = vec![BOS; n];
            let mut cache = DecoderCache::new();
            let mut steps = Vec::new();
            for t in 0..self.config.max_target {
                let logits = if cached {
                    let ids = IndexTensor::from_vec(last.clone(), &[n, 1])?;
                    let x = self
                        .tgt_embed
                        .forward(&ids)?
                        .add(&self.tgt_pos.weight.narrow(0, t, 1)?)?;
                    let h = self.transformer.decoder.forward_incremental(
                        &x,
                        &memory,
                        &mut cache,
                        Some(&pad),
                    )?;
                    self.head.forward(&h)?.value()
                } else {
                    let ids = IndexTensor::from_vec(prefix.clone(), &[n, t + 1])?;
                    self.decode_all(&ids, &memory, &pad)?
                        .value()
                        .narrow(1, t, 1)?
                };
                let next = logits.argmax(Some(-1), false)?.to_vec();
                steps.push(logits);
                for (i, &tok) in next.iter().enumerate() {
                    if outputs[i].last() != Some(&EOS) {
                        outputs[i].push(tok);
                    }
                }
                if outputs.iter().all(|o| o.last() == Some(&EOS)) {
                    break;
                }
                // Row-major [N, t + 1] → [N, t + 2].
                prefix = prefix
                    .chunks(t + 1)
                    .zip(&next)
                    .flat_map(|(row, &tok)| row.iter().copied().chain([tok]))
                    .collect();
                last = next;
            }
            let steps: Vec<&Tensor> = steps.iter().collect();
            Ok((outputs, Tensor::cat(&steps, 1)?))
        })
    }

    /// Translations of `texts` (dates the way people write them) into ISO 8601, decoded
    /// greedily with the cache.
    ///
    /// # Errors
    /// As [`encode_source`] for a text the vocabulary cannot write or too long.
    pub fn translate(&self, texts: &[String]) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(EVAL_BATCH) {
            let encoded = chunk
                .iter()
                .map(|t| encode_source(t))
                .collect::<Result<Vec<_>>>()?;
            let len = encoded.iter().map(Vec::len).max().unwrap_or(1);
            let mut v = Vec::with_capacity(chunk.len() * len);
            for e in &encoded {
                v.extend(e.iter().copied().chain(std::iter::repeat(PAD)).take(len));
            }
            let src = IndexTensor::from_vec(v, &[chunk.len(), len])?;
            out.extend(self.greedy(&src, true)?.0.iter().map(|o| decode(o)));
        }
        Ok(out)
    }
}

impl Seq2Seq {
    /// The teacher-forced forward [`forward`](Seq2Seq::forward) as an ONNX model, traced on
    /// `src` and `tgt_in`: inputs `src` (int64 `[batch, src_len]`, source tokens padded
    /// with [`PAD`]) and `tgt_in` (int64 `[batch, tgt_len]`, [`BOS`] then the output so
    /// far), output `logits` (`[batch, tgt_len, vocab]`, the next token's at each
    /// position). The batch and both lengths are symbolic; the sources' padding mask and
    /// the causal mask are computed in the graph. Greedy decoding is a loop around the
    /// file, not in it: from `tgt_in = [[BOS]]`, append the argmax of the last position's
    /// logits until [`EOS`] or `max_target` tokens.
    ///
    /// # Errors
    /// As [`forward`](Seq2Seq::forward); [`ModelsError::Onnx`] for what ONNX cannot
    /// express; a trace that differs from the forward.
    pub fn export_onnx(
        &self,
        src: &IndexTensor,
        tgt_in: &IndexTensor,
    ) -> Result<strata_onnx::Exported> {
        use strata_onnx::{ExportOptions, GraphInput, export_with_inputs};
        let expected = no_grad(|| self.forward(src, tgt_in))?.value();
        let options = ExportOptions {
            graph_name: "seq2seq".into(),
            output_name: "logits".into(),
            doc: format!(
                "strata seq2seq, exported by strata {}: {}",
                env!("CARGO_PKG_VERSION"),
                EXPORT_DOC
            ),
            ..ExportOptions::default()
        };
        let inputs = vec![
            GraphInput::new("src", src.clone()).dynamic(1, "src_len"),
            GraphInput::new("tgt_in", tgt_in.clone()).dynamic(1, "tgt_len"),
        ];
        let exported = export_with_inputs(inputs, &options, |g, xs| {
            self.export_graph(g, &xs[0], &xs[1])
        })?;
        let (a, b) = (exported.output.to_vec(), expected.contiguous().to_vec());
        let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        if exported.output.shape() != expected.shape()
            || a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-5 * scale)
        {
            return Err(ModelsError::Config(
                "seq2seq: the ONNX export's trace differs from the model's forward".into(),
            ));
        }
        Ok(exported)
    }

    /// The graph of [`forward`](Seq2Seq::forward) on the inputs `src` and `tgt_in`.
    fn export_graph(
        &self,
        g: &mut strata_onnx::Graph,
        src: &strata_onnx::Value,
        tgt_in: &strata_onnx::Value,
    ) -> strata_onnx::Result<strata_onnx::Value> {
        use strata_onnx::{Example, Export, GraphMasks, TransformerMasks, export_transformer};
        let Example::Index(ids) = src.example() else {
            return Err(strata_onnx::OnnxError::Input {
                shape: src.shape().to_vec(),
                why: "seq2seq takes source tokens (int64)".into(),
            });
        };
        // `true` where the source is padding, as `encode` makes it.
        let pad: Vec<f32> = ids
            .as_slice()
            .iter()
            .map(|&t| f32::from(u8::from(t == PAD)))
            .collect();
        let pad_token = g.ints("pad_token", &[PAD]);
        let is_pad = g.op("Equal", &[src.name(), &pad_token], vec![]);
        let pad = src.like(is_pad, Example::Bool(Tensor::from_vec(pad, ids.shape())?));
        let x = g.scoped("src_embed", |g| self.src_embed.export(g, src))?;
        let x = g.scoped("src_pos", |g| self.src_pos.export(g, &x))?;
        let y = g.scoped("tgt_embed", |g| self.tgt_embed.export(g, tgt_in))?;
        let y = g.scoped("tgt_pos", |g| self.tgt_pos.export(g, &y))?;
        let masks = TransformerMasks {
            src_key_padding: Some(&pad),
            tgt: GraphMasks {
                causal: true,
                key_padding: None,
            },
            memory_key_padding: Some(&pad),
        };
        let h = g.scoped("transformer", |g| {
            export_transformer(&self.transformer, g, &x, &y, &masks)
        })?;
        g.scoped("head", |g| self.head.export(g, &h))
    }
}

/// What an exported `seq2seq` file computes, for its doc string and `strata export`.
const EXPORT_DOC: &str = "the teacher-forced forward, not the greedy decoding loop: \
    src (int64 [batch, src_len], source characters as tokens padded with 0) and tgt_in \
    (int64 [batch, tgt_len], 1 (start) then the output so far) give logits [batch, tgt_len, \
    vocab], the next token's at each position. To translate, start from tgt_in = [[1]] and \
    append the argmax of the last position's logits until 2 (end) or 11 tokens.";

impl Module for Seq2Seq {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        visit_child("src_embed", &self.src_embed, f);
        visit_child("tgt_embed", &self.tgt_embed, f);
        visit_child("src_pos", &self.src_pos, f);
        visit_child("tgt_pos", &self.tgt_pos, f);
        visit_child("transformer", &self.transformer, f);
        visit_child("head", &self.head, f);
    }

    fn set_training(&mut self, training: bool) {
        self.transformer.set_training(training);
    }
}

/// Pairs per batch of evaluation and translation.
const EVAL_BATCH: usize = 512;

/// The data of a `seq2seq` training: what it was generated from, the training pairs and
/// the test pairs (no test source is among the training ones), as text and as tokens.
pub struct DateData {
    /// The generated pairs' record.
    pub problem: DateProblem,
    /// The training pairs.
    pub train: EncodedPairs,
    /// The test pairs.
    pub test: EncodedPairs,
    /// The test pairs as text.
    pub test_text: DatePairs,
}

/// The extra record of `seq2seq` checkpoints: how its pairs were generated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateProblem {
    /// Training pairs.
    pub train: usize,
    /// Test pairs.
    pub test: usize,
    /// The seed they were drawn with.
    pub seed: u64,
}

impl DateData {
    /// The pairs `problem` describes: the training pairs from `seed`, then the test pairs
    /// from the next draws, excluding every training source.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for counts outside 1..=[`MAX_PAIRS`].
    pub fn generate(problem: DateProblem) -> Result<Self> {
        check_counts(&problem).map_err(ModelsError::Config)?;
        let mut rng = seeded_rng(problem.seed);
        let train = DatePairs::generate(problem.train, &mut rng, &HashSet::new())?;
        let seen: HashSet<String> = train.sources.iter().cloned().collect();
        let test = DatePairs::generate(problem.test, &mut rng, &seen)?;
        Ok(DateData {
            problem,
            train: EncodedPairs::new(&train)?,
            test: EncodedPairs::new(&test)?,
            test_text: test,
        })
    }
}

fn check_counts(p: &DateProblem) -> std::result::Result<(), String> {
    if [p.train, p.test]
        .iter()
        .any(|&n| n == 0 || n > MAX_PAIRS / 2)
    {
        return Err(format!(
            "its pair counts ({}, {}) must be between 1 and {}",
            p.train,
            p.test,
            MAX_PAIRS / 2
        ));
    }
    Ok(())
}

/// The teacher-forced loss and token accuracy, and the exact-match accuracy of greedy
/// decoding with the cache, of `net` on `pairs`.
///
/// # Errors
/// Model errors.
pub fn evaluate_pairs(net: &Seq2Seq, pairs: &EncodedPairs) -> Result<PairScores> {
    let mut s = PairScores::default();
    let rows: Vec<usize> = (0..pairs.len()).collect();
    for chunk in rows.chunks(EVAL_BATCH) {
        let src = pairs.sources(chunk)?;
        let (tin, tout) = pairs.targets(chunk)?;
        let logits = no_grad(|| net.forward(&src, &tin))?;
        let flat = logits.reshape([-1, net.config.vocab as isize])?;
        let target = tout.reshape(&[tout.numel()])?;
        let sum = ClassLossOptions {
            reduction: Reduction::Sum,
            ..ClassLossOptions::default()
        };
        s.loss += no_grad(|| cross_entropy(&flat, &target, &sum))?.item()? as f64;
        let predicted = flat.value().argmax(Some(-1), false)?.to_vec();
        s.tokens_right += predicted
            .iter()
            .zip(target.as_slice())
            .filter(|(p, t)| p == t)
            .count();
        s.tokens += target.numel();
        let (decoded, _) = net.greedy(&src, true)?;
        s.exact += decoded
            .iter()
            .zip(tout.as_slice().chunks(MAX_TARGET))
            .filter(|(d, t)| d.as_slice() == *t)
            .count();
        s.pairs += chunk.len();
    }
    Ok(s)
}

/// What [`evaluate_pairs`] counts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PairScores {
    /// The summed cross-entropy of every target token.
    pub loss: f64,
    /// Target tokens.
    pub tokens: usize,
    /// Target tokens predicted right under teacher forcing.
    pub tokens_right: usize,
    /// Pairs.
    pub pairs: usize,
    /// Pairs whose greedy decoding is exactly the target.
    pub exact: usize,
}

impl PairScores {
    /// The evaluation: the mean loss per token and the exact-match accuracy.
    pub fn evaluation(&self) -> Evaluation {
        Evaluation {
            loss: self.loss / self.tokens.max(1) as f64,
            accuracy: Some(self.exact as f64 / self.pairs.max(1) as f64),
            r2: None,
        }
    }
}

/// Epochs of shuffled batches of training pairs (the last incomplete batch dropped), each
/// rank taking its contiguous part of every batch.
struct PairBatches<'a> {
    pairs: &'a EncodedPairs,
    batch_size: usize,
    epochs: usize,
    seed: u64,
    shard: (usize, usize),
}

impl Batches for PairBatches<'_> {
    type Batch = (IndexTensor, IndexTensor, IndexTensor);

    fn epochs(&self) -> usize {
        self.epochs
    }

    fn steps_in(&self, _epoch: usize) -> usize {
        self.pairs.len() / self.batch_size
    }

    fn epoch(&mut self, epoch: usize) -> Box<dyn Iterator<Item = Result<Self::Batch>> + '_> {
        let mut order: Vec<usize> = (0..self.pairs.len()).collect();
        let mixed = self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        order.shuffle(&mut seeded_rng(mixed));
        let (b, (rank, ranks)) = (self.batch_size, self.shard);
        let part = b / ranks;
        Box::new((0..self.steps_in(epoch)).map(move |s| {
            let rows = &order[s * b + rank * part..s * b + (rank + 1) * part];
            let (tin, tout) = self.pairs.targets(rows)?;
            Ok((self.pairs.sources(rows)?, tin, tout))
        }))
    }
}

/// Poisson-sampled batches of training pairs for private training: every step keeps each
/// pair independently with strata-privacy's [`PoissonSampler`]; an epoch is `⌊1/q⌋`
/// steps, as in Opacus.
struct PoissonPairs<'a> {
    pairs: &'a EncodedPairs,
    sampler: PoissonSampler,
    epochs: usize,
}

impl Batches for PoissonPairs<'_> {
    type Batch = (IndexTensor, IndexTensor, IndexTensor);

    fn epochs(&self) -> usize {
        self.epochs
    }

    fn steps_in(&self, _epoch: usize) -> usize {
        self.sampler.steps_per_epoch()
    }

    fn epoch(&mut self, _epoch: usize) -> Box<dyn Iterator<Item = Result<Self::Batch>> + '_> {
        let steps = self.sampler.steps_per_epoch();
        let (pairs, sampler) = (self.pairs, &mut self.sampler);
        Box::new((0..steps).map(move |_| {
            let rows = sampler.sample();
            let (tin, tout) = pairs.targets(&rows)?;
            Ok((pairs.sources(&rows)?, tin, tout))
        }))
    }
}

/// Teacher-forced training of a [`Seq2Seq`], evaluated on the test pairs.
struct Translation<'a> {
    net: &'a mut Seq2Seq,
    test: &'a EncodedPairs,
}

impl Learner for Translation<'_> {
    type Batch = (IndexTensor, IndexTensor, IndexTensor);

    fn module(&mut self) -> &mut dyn Module {
        self.net
    }

    /// Pairs: the units of privacy.
    fn samples(&self, (src, _, _): &Self::Batch) -> Option<usize> {
        src.shape().first().copied()
    }

    fn loss(&self, (src, tin, tout): &Self::Batch) -> Result<StepLoss> {
        let logits = self.net.forward(src, tin)?;
        let flat = logits.reshape([-1, self.net.config.vocab as isize])?;
        let target = tout.reshape(&[tout.numel()])?;
        Ok(StepLoss {
            loss: cross_entropy(&flat, &target, &ClassLossOptions::default())?,
            weight: src.shape()[0] as f64,
            items: src.shape()[0],
        })
    }

    fn evaluate(&self, _last: bool) -> Result<Evaluation> {
        Ok(evaluate_pairs(self.net, self.test)?.evaluation())
    }

    fn describe(&self, r: &EpochRecord) -> String {
        format!(
            "train loss {:.4}, test loss {:.4}, exact match {:.2}%",
            r.train_loss,
            r.test.loss,
            100.0 * r.test.accuracy.unwrap_or(0.0)
        )
    }

    fn items(&self) -> &'static str {
        "pairs"
    }
}

/// The task of `seq2seq`: epochs of shuffled pairs under teacher forcing, the test pairs
/// decoded greedily after each.
pub struct Seq2SeqTask;

/// The figures of a `seq2seq` training.
#[derive(Serialize)]
struct Seq2SeqFigures {
    test_exact_match: f64,
    test_token_accuracy: f64,
    test_loss: f64,
    pairs_per_s: f64,
    examples: Vec<String>,
}

impl Task for Seq2SeqTask {
    type Network = Seq2Seq;
    type Data = DateData;

    /// The pairs were generated `--limit` many.
    fn limit(&self, _data: &mut DateData, _n: usize) {}

    fn train_len(&self, data: &DateData) -> usize {
        data.train.len()
    }

    fn fit(
        &mut self,
        net: &mut Seq2Seq,
        data: &DateData,
        optimizer: &mut dyn Optimizer,
        plan: &Plan,
        on_epoch: &mut dyn FnMut(&EpochEnd<'_>) -> Result<()>,
    ) -> Result<Vec<EpochRecord>> {
        let Length::Epochs(epochs) = plan.length else {
            return Err(ModelsError::Config(
                "seq2seq trains in epochs: use --epochs".into(),
            ));
        };
        let comm = &plan.loop_config.comm;
        let (rank, ranks) = (comm.rank(), comm.size());
        let batch_size = plan.batch_size.min(data.train.len());
        if epochs == 0 || batch_size == 0 || !batch_size.is_multiple_of(ranks) {
            return Err(ModelsError::Config(format!(
                "epochs and batch size must be positive, and the batch size ({batch_size}) a \
                 multiple of the number of ranks ({ranks})"
            )));
        }
        let mut poisson = match &plan.loop_config.privacy {
            // Private training draws Poisson batches of pairs, from the OS generator
            // unless the noise is seeded.
            Some(private) => {
                let sampler = private.sampler(data.train.len(), plan.seed, comm)?;
                Some(PoissonPairs {
                    pairs: &data.train,
                    sampler,
                    epochs,
                })
            }
            None => None,
        };
        let mut shuffled = PairBatches {
            pairs: &data.train,
            batch_size,
            epochs,
            seed: plan.seed,
            shard: (rank, ranks),
        };
        let batches: &mut dyn Batches<Batch = (IndexTensor, IndexTensor, IndexTensor)> =
            match &mut poisson {
                Some(p) => p,
                None => &mut shuffled,
            };
        let mut learner = Translation {
            net,
            test: &data.test,
        };
        train::run_from(
            &mut learner,
            batches,
            optimizer,
            &plan.loop_config,
            plan.start,
            on_epoch,
        )
    }

    fn private_units(&self, data: &DateData) -> Result<(usize, &'static str)> {
        Ok((data.train.len(), "date pair"))
    }

    fn evaluate(&self, net: &Seq2Seq, data: &DateData) -> Result<Evaluation> {
        Ok(evaluate_pairs(net, &data.test)?.evaluation())
    }

    fn metrics(
        &mut self,
        net: &Seq2Seq,
        data: &DateData,
        history: &[EpochRecord],
        _plan: &Plan,
    ) -> Result<Figures> {
        let s = evaluate_pairs(net, &data.test)?;
        let shown = &data.test_text.sources[..data.test_text.len().min(5)];
        let examples = shown
            .iter()
            .zip(net.translate(shown)?)
            .map(|(s, t)| format!("{s} → {t}"))
            .collect();
        let seconds: f64 = history.iter().map(|r| r.seconds).sum();
        figures(&Seq2SeqFigures {
            test_exact_match: s.exact as f64 / s.pairs.max(1) as f64,
            test_token_accuracy: s.tokens_right as f64 / s.tokens.max(1) as f64,
            test_loss: s.evaluation().loss,
            pairs_per_s: (history.len() * data.train.len()) as f64 / seconds.max(1e-9),
            examples,
        })
    }
}

/// `strata train seq2seq`: a [`Seq2Seq`] (d_model 64, 4 heads, two pre-norm encoder and
/// two decoder layers, no dropout) translating dates written ten ways ("Saturday, 5
/// December 2026", "Dec 5 2026", "05.12.2026", …) into ISO 8601, on 20 000 generated
/// pairs (2000 unseen ones for testing); 6 epochs of Adam under a one-cycle schedule
/// peaking at 2e-3, batch 64, gradient norm clipped at 1. Its accuracy is the exact match
/// of greedy decoding.
pub struct Seq2SeqSpec;

impl ReferenceModel for Seq2SeqSpec {
    type Architecture = Seq2SeqConfig;
    type Extra = DateProblem;
    type Task = Seq2SeqTask;

    const NAME: &'static str = "seq2seq";
    const ABOUT: &'static str = "An encoder-decoder transformer translating dates written ten \
                                 ways into ISO 8601 (generated pairs; greedy decoding).";

    fn preprocessing(
        &self,
        _dataset: &crate::reference::DatasetRecord,
        _extra: &Self::Extra,
    ) -> Option<crate::reference::Preprocessing> {
        Some(crate::reference::Preprocessing::described(
            "characters as token indices: 0 padding, 1 start, 2 end, then ' ,-./', the digits, A-Z and a-z from 3 on; sources padded with 0 to the longest in a batch (at most 32)",
        ))
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            length: Length::Epochs(6),
            lr: 2e-3,
            batch_size: Some(64),
            optimizer: OptimizerKind::Adam,
            schedule: Schedule::OneCycle,
            clip_grad_norm: Some(1.0),
            ema: None,
        }
    }

    fn prepare(&self, opts: &TrainOptions) -> Result<Prepared<Self>> {
        if opts.data.is_some() || opts.dataset.is_some() {
            return Err(ModelsError::Config(
                "seq2seq generates its own date pairs: it takes no --data or --dataset".into(),
            ));
        }
        let train = opts.limit.unwrap_or(20_000);
        let problem = DateProblem {
            train,
            test: 2000.min(train.max(100)),
            seed: opts.seed,
        };
        Ok(Prepared {
            data: DateData::generate(problem.clone())?,
            architecture: Seq2SeqConfig {
                vocab: VOCAB,
                d_model: 64,
                heads: 4,
                encoder_layers: 2,
                decoder_layers: 2,
                feedforward: 256,
                max_source: MAX_SOURCE,
                max_target: MAX_TARGET,
                dropout: 0.0,
            },
            extra: problem,
            dataset: Provenance {
                name: "dates in ten formats and in ISO 8601".into(),
                source: "generated with the run's seed: dates uniform over 1950-2049, formats \
                         uniform; no test source among the training ones"
                    .into(),
                license: "none (generated)".into(),
            },
        })
    }

    fn build(&self, config: &Seq2SeqConfig, rng: &mut StdRng) -> Result<Box<Seq2Seq>> {
        Ok(Box::new(Seq2Seq::new(*config, rng)?))
    }

    fn task(&self, _: &Seq2SeqConfig) -> Seq2SeqTask {
        Seq2SeqTask
    }

    /// The architecture's vocabulary and lengths must be the data's (a record edited to
    /// others would read tokens outside its tables), the counts ones a training could
    /// have generated.
    fn check_extra(&self, a: &Seq2SeqConfig, p: &DateProblem) -> std::result::Result<(), String> {
        if (a.vocab, a.max_source, a.max_target) != (VOCAB, MAX_SOURCE, MAX_TARGET) {
            return Err(format!(
                "its vocabulary and lengths ({}, {}, {}) are not seq2seq's ({VOCAB}, \
                 {MAX_SOURCE}, {MAX_TARGET})",
                a.vocab, a.max_source, a.max_target
            ));
        }
        check_counts(p)
    }

    fn check_reloaded(
        &self,
        recorded: &DateProblem,
        reloaded: &DateProblem,
    ) -> std::result::Result<(), String> {
        if recorded == reloaded {
            Ok(())
        } else {
            Err(format!(
                "the checkpoint trained on {recorded:?}, the options now give {reloaded:?}"
            ))
        }
    }

    /// The ISO form of each line of a text file of dates.
    fn predict(
        &self,
        net: &Seq2Seq,
        _record: &Record<Seq2SeqConfig, DateProblem>,
        input: &Path,
    ) -> Result<Vec<String>> {
        let (text, _) = read_text(input)?;
        let lines: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if lines.is_empty() {
            return Err(ModelsError::Config(format!(
                "{} has no dates to translate (one per line)",
                input.display()
            )));
        }
        net.translate(&lines)
    }

    /// The teacher-forced forward (see [`Seq2Seq::export_onnx`]),
    /// traced on two dates and their ISO forms, the batch and both lengths symbolic.
    fn export(&self, net: &Seq2Seq, _config: &Seq2SeqConfig) -> Result<strata_onnx::Exported> {
        let pairs = [("March 5, 2021", "2021-03-05"), ("12/31/99", "1999-12-31")];
        let sources = pairs
            .iter()
            .map(|(s, _)| encode_source(s))
            .collect::<Result<Vec<_>>>()?;
        let len = sources.iter().map(Vec::len).max().unwrap_or(1);
        let mut src = Vec::with_capacity(pairs.len() * len);
        for s in &sources {
            src.extend(s.iter().copied().chain(std::iter::repeat(PAD)).take(len));
        }
        let mut tgt = Vec::with_capacity(pairs.len() * MAX_TARGET);
        for (_, iso) in pairs {
            let t = encode_source(iso)?;
            tgt.extend(std::iter::once(BOS).chain(t).take(MAX_TARGET));
        }
        let src = IndexTensor::from_vec(src, &[pairs.len(), len])?;
        let tgt = IndexTensor::from_vec(tgt, &[pairs.len(), MAX_TARGET])?;
        net.export_onnx(&src, &tgt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::assert_round_trip;
    use serde_json::json;

    fn small() -> Seq2SeqConfig {
        Seq2SeqConfig {
            vocab: VOCAB,
            d_model: 16,
            heads: 2,
            encoder_layers: 1,
            decoder_layers: 2,
            feedforward: 32,
            max_source: MAX_SOURCE,
            max_target: MAX_TARGET,
            dropout: 0.0,
        }
    }

    #[test]
    fn the_architecture_round_trips() {
        let keys = json!({
            "vocab": VOCAB, "d_model": 16, "heads": 2, "encoder_layers": 1,
            "decoder_layers": 2, "feedforward": 32, "max_source": 32, "max_target": 11,
            "dropout": 0.0,
        });
        assert_round_trip(&small(), keys);
    }

    #[test]
    fn cached_greedy_decoding_equals_recomputing_the_prefix() {
        let net = Seq2Seq::new(small(), &mut seeded_rng(3)).unwrap();
        let data = DateData::generate(DateProblem {
            train: 8,
            test: 8,
            seed: 5,
        })
        .unwrap();
        let src = data.test.sources(&(0..8).collect::<Vec<_>>()).unwrap();
        let (tokens, logits) = net.greedy(&src, true).unwrap();
        let (tokens_ref, logits_ref) = net.greedy(&src, false).unwrap();
        assert_eq!(tokens, tokens_ref);
        assert_eq!(logits.shape(), logits_ref.shape());
        assert_eq!(logits.shape()[..2], [8, MAX_TARGET]);
        let diff = logits
            .to_vec()
            .iter()
            .zip(logits_ref.to_vec())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "cached and recomputed logits differ by {diff}");
    }

    #[test]
    fn the_teacher_forced_logits_are_those_of_greedy_decoding_on_its_own_output() {
        // Feeding greedy decoding's own tokens back as the decoder's inputs reproduces the
        // logits of every step: the causal mask hides later positions.
        let net = Seq2Seq::new(small(), &mut seeded_rng(4)).unwrap();
        let src = IndexTensor::from_vec(encode_source("Dec 5 2026").unwrap(), &[1, 10]).unwrap();
        let (tokens, logits) = net.greedy(&src, true).unwrap();
        let steps = logits.shape()[1];
        let mut tin = vec![BOS];
        tin.extend(&tokens[0][..steps - 1]);
        let tin = IndexTensor::from_vec(tin, &[1, steps]).unwrap();
        let forced = no_grad(|| net.forward(&src, &tin)).unwrap().value();
        let diff = forced
            .to_vec()
            .iter()
            .zip(logits.to_vec())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn hostile_inputs_are_errors() {
        let net = Seq2Seq::new(small(), &mut seeded_rng(4)).unwrap();
        let too_long = IndexTensor::from_vec(vec![3; MAX_SOURCE + 1], &[1, MAX_SOURCE + 1]);
        assert!(net.greedy(&too_long.unwrap(), true).is_err());
        let outside = IndexTensor::from_vec(vec![VOCAB as i64], &[1, 1]).unwrap();
        assert!(net.greedy(&outside, true).is_err());
        assert!(net.translate(&["31 Février".into()]).is_err());
        assert!(
            DateData::generate(DateProblem {
                train: 0,
                test: 1,
                seed: 0
            })
            .is_err()
        );
        let mut c = small();
        c.vocab = 2;
        assert!(Seq2Seq::new(c, &mut seeded_rng(0)).is_err());
        assert!(
            Seq2SeqSpec
                .check_extra(
                    &Seq2SeqConfig {
                        vocab: 10_000,
                        ..small()
                    },
                    &DateProblem {
                        train: 10,
                        test: 10,
                        seed: 0
                    }
                )
                .is_err()
        );
    }
}
