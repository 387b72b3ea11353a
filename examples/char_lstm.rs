//! A character-level LSTM language model written as a library user would: a model struct
//! of an embedding, an LSTM and a linear head (with `Module` so that optimizers and state
//! dicts see its parameters), random windows of Moby Dick, AdamW with gradient clipping,
//! and sampling with a temperature from the carried hidden state.
//!
//! `cargo run --release -p strata-examples --example char_lstm`

use strata_autograd::{Var, no_grad};
use strata_models::data::bundled;
use strata_models::data::readers::read_text;
use strata_nn::loss::{ClassLossOptions, cross_entropy};
use strata_nn::{Embedding, Forward, LSTM, Linear, Module, RnnConfig, StateKind, visit_child};
use strata_optim::{AdamW, AdamWConfig, Optimizer, clip_grad_norm};
use strata_tensor::rand::RngExt;
use strata_tensor::{IndexTensor, seeded_rng};

struct CharLstm {
    embed: Embedding,
    lstm: LSTM,
    head: Linear,
}

impl Module for CharLstm {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        visit_child("embed", &self.embed, f);
        visit_child("lstm", &self.lstm, f);
        visit_child("head", &self.head, f);
    }
}

impl CharLstm {
    /// Logits `[N, L, vocab]` for indices `[N, L]`, and the LSTM's final state.
    fn forward(
        &self,
        ids: &IndexTensor,
        state: Option<(&Var, &Var)>,
    ) -> strata_nn::Result<(Var, (Var, Var))> {
        let (h, state) = self.lstm.forward(&self.embed.forward(ids)?, state)?;
        Ok((self.head.forward(&h)?, state))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = strata_examples::quick();
    let (text, vocab) = read_text(&bundled::moby_dick_path(&bundled::data_dir()))?;
    let ids: Vec<usize> = vocab
        .encode(&text)
        .ok_or("the vocabulary is the text's own")?;
    let v = vocab.len();
    let mut rng = seeded_rng(0);
    let model = CharLstm {
        embed: Embedding::new(v, 64, None, &mut rng)?,
        lstm: LSTM::new(
            RnnConfig {
                batch_first: true,
                ..RnnConfig::new(64, 256)
            },
            &mut rng,
        )?,
        head: Linear::new(256, v, true, &mut rng),
    };
    let params = model.parameters();
    let mut opt = AdamW::new(
        params.clone(),
        AdamWConfig {
            lr: 3e-3,
            ..AdamWConfig::default()
        },
    )?;

    let (steps, batch, len) = if quick { (20, 8, 32) } else { (1500, 32, 64) };
    let (first, last) = {
        let (mut first, mut last) = (None, f32::NAN);
        for step in 0..steps {
            // Random windows; the targets are the same windows one character later.
            let (mut x, mut y) = (Vec::new(), Vec::new());
            for _ in 0..batch {
                let s = rng.random_range(0..ids.len() - len - 1);
                x.extend(ids[s..s + len].iter().map(|&i| i as i64));
                y.extend(ids[s + 1..s + len + 1].iter().map(|&i| i as i64));
            }
            let x = IndexTensor::from_vec(x, &[batch, len])?;
            let y = IndexTensor::from_vec(y, &[batch * len])?;
            let (logits, _) = model.forward(&x, None)?;
            let loss = cross_entropy(
                &logits.reshape([-1, v as isize])?,
                &y,
                &ClassLossOptions::default(),
            )?;
            opt.zero_grad();
            loss.backward()?;
            clip_grad_norm(&params, 1.0, 2.0, false)?;
            opt.step()?;
            let l = loss.item()?;
            first.get_or_insert(l);
            last = l;
            if step % 100 == 0 || step + 1 == steps {
                println!("step {step:>4}: loss {l:.3} nats/char");
            }
        }
        (first.unwrap_or(f32::NAN), last)
    };

    // Sampling: feed the prompt, then one character at a time from the carried state.
    let temperature = 0.8;
    let mut out = String::from("Call me");
    let prompt: Vec<i64> = vocab
        .encode(&out)
        .ok_or("prompt outside the vocabulary")?
        .iter()
        .map(|&i| i as i64)
        .collect();
    no_grad(|| -> Result<(), Box<dyn std::error::Error>> {
        let n = prompt.len();
        let (mut logits, mut state) =
            model.forward(&IndexTensor::from_vec(prompt, &[1, n])?, None)?;
        for _ in 0..200 {
            let last = logits.value().narrow(1, logits.shape()[1] - 1, 1)?;
            let probs = last.div_scalar(temperature).softmax(-1)?.to_vec();
            let u: f32 = rng.random();
            let mut acc = 0.0;
            let next = probs
                .iter()
                .position(|&p| {
                    acc += p;
                    acc > u
                })
                .unwrap_or(v - 1);
            out.push(vocab.char(next).ok_or("index outside the vocabulary")?);
            let step = model.forward(
                &IndexTensor::from_vec(vec![next as i64], &[1, 1])?,
                Some((&state.0, &state.1)),
            )?;
            (logits, state) = step;
        }
        Ok(())
    })?;
    println!("---\n{out}\n---");
    if last.is_nan() || last >= first {
        return Err(format!("the loss did not fall: {first} → {last}").into());
    }
    Ok(())
}
