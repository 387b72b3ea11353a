//! A transformer classifier of token sequences: embedding plus learned positions → a
//! pre-norm `TransformerEncoder` with a padding mask → mean over the real tokens →
//! linear head. The task, generated as it trains: which of four tokens occurs most
//! often in a sequence of 8 to 24 tokens (ties go to the smaller token), padded with
//! token 4 to the longest in a batch.
//!
//! `cargo run --release -p strata-examples --example transformer_classifier`

use strata_autograd::{Var, no_grad};
use strata_nn::loss::{ClassLossOptions, cross_entropy};
use strata_nn::{
    AttnMask, Embedding, Forward, LearnedPositionalEncoding, Linear, Module, StateKind,
    TransformerActivation, TransformerEncoder, TransformerEncoderLayerConfig, visit_child,
};
use strata_optim::{AdamW, AdamWConfig, Optimizer};
use strata_tensor::rand::{Rng, RngExt};
use strata_tensor::{IndexTensor, Tensor, seeded_rng};

const PAD: i64 = 4;

struct Classifier {
    embed: Embedding,
    pos: LearnedPositionalEncoding,
    encoder: TransformerEncoder,
    head: Linear,
}

impl Module for Classifier {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        visit_child("embed", &self.embed, f);
        visit_child("pos", &self.pos, f);
        visit_child("encoder", &self.encoder, f);
        visit_child("head", &self.head, f);
    }

    fn set_training(&mut self, training: bool) {
        self.encoder.set_training(training);
    }
}

impl Classifier {
    /// Logits `[N, 4]` for tokens `[N, L]` padded with `PAD`.
    fn forward(&self, tokens: &IndexTensor) -> strata_nn::Result<Var> {
        let n = tokens.shape()[0];
        let real: Vec<f32> = tokens
            .as_slice()
            .iter()
            .map(|&t| f32::from(u8::from(t != PAD)))
            .collect();
        let real = Tensor::from_vec(real, tokens.shape())?;
        // `true` (1) where a key may not be attended to: the padding.
        let padding = AttnMask::Bool(real.rsub_scalar(1.0));
        let h = self.pos.forward(&self.embed.forward(tokens)?)?;
        let h = self.encoder.forward_with(&h, None, Some(&padding), false)?;
        // The mean over real tokens only.
        let weights = Var::new(
            real.div(&real.sum(&[1], true)?)?
                .reshape(&[n, tokens.shape()[1], 1][..])?,
        );
        self.head.forward(&h.mul(&weights)?.sum(&[1], false)?)
    }
}

/// A batch of `n` sequences and their majority tokens.
fn batch(
    n: usize,
    rng: &mut impl Rng,
) -> Result<(IndexTensor, IndexTensor), Box<dyn std::error::Error>> {
    let lens: Vec<usize> = (0..n).map(|_| rng.random_range(8..=24)).collect();
    let longest = *lens.iter().max().unwrap_or(&8);
    let (mut tokens, mut labels) = (Vec::with_capacity(n * longest), Vec::with_capacity(n));
    for &len in &lens {
        let mut counts = [0usize; 4];
        for _ in 0..len {
            let t = rng.random_range(0..4usize);
            counts[t] += 1;
            tokens.push(t as i64);
        }
        tokens.extend(std::iter::repeat_n(PAD, longest - len));
        let best = (0..4)
            .max_by_key(|&t| (counts[t], std::cmp::Reverse(t)))
            .unwrap_or(0);
        labels.push(best as i64);
    }
    Ok((
        IndexTensor::from_vec(tokens, &[n, longest])?,
        IndexTensor::from_vec(labels, &[n])?,
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = strata_examples::quick();
    let mut rng = seeded_rng(0);
    let layer = TransformerEncoderLayerConfig::new(32, 4)
        .dim_feedforward(64)
        .dropout(0.0)
        .activation(TransformerActivation::Gelu)
        .batch_first(true)
        .norm_first(true);
    let mut model = Classifier {
        embed: Embedding::new(5, 32, Some(PAD as usize), &mut rng)?,
        pos: LearnedPositionalEncoding::new(24, 32, &mut rng)?,
        encoder: TransformerEncoder::new(layer, 2, true, &mut rng)?,
        head: Linear::new(32, 4, true, &mut rng),
    };
    let mut opt = AdamW::new(
        model.parameters(),
        AdamWConfig {
            lr: 2e-3,
            ..AdamWConfig::default()
        },
    )?;
    let steps = if quick { 30 } else { 600 };
    model.train();
    for step in 0..steps {
        let (x, y) = batch(64, &mut rng)?;
        let loss = cross_entropy(&model.forward(&x)?, &y, &ClassLossOptions::default())?;
        opt.zero_grad();
        loss.backward()?;
        opt.step()?;
        if step % 100 == 0 {
            println!("step {step:>3}: loss {:.4}", loss.item()?);
        }
    }
    model.eval();
    let (x, y) = batch(2000, &mut seeded_rng(99))?;
    let predicted = no_grad(|| model.forward(&x))?
        .value()
        .argmax(Some(-1), false)?
        .to_vec();
    let right = predicted
        .iter()
        .zip(y.as_slice())
        .filter(|(p, t)| p == t)
        .count();
    let accuracy = right as f64 / 2000.0;
    println!("accuracy on 2000 new sequences: {:.1} %", 100.0 * accuracy);
    let floor = if quick { 0.3 } else { 0.9 };
    if accuracy < floor {
        return Err(format!("accuracy {accuracy} below {floor}").into());
    }
    Ok(())
}
