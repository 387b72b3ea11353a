//! DP-SGD across ranks (strata-privacy's `DpSgd::across` over the `Communicator`): each
//! rank clips its own samples, the clipped sums are summed, rank 0 adds the noise once.
//! Without noise (or with rank 0's seeded noise) N ranks take one process's step on the
//! same samples; with noise, the step's noise has standard deviation σC/B, not √N times
//! that; every rank ends with the same parameters; Poisson shards partition the data.

use strata_autograd::Var;
use strata_distributed::{Communicator, World, replicate};
use strata_nn::loss::{ClassLossOptions, cross_entropy};
use strata_nn::{Forward, Linear, Module, Sequential};
use strata_optim::{Optimizer, Sgd, SgdConfig};
use strata_privacy::{DpSgd, DpSgdConfig, GaussianNoise, PoissonSampler, PrivacyError};
use strata_tensor::{IndexTensor, Tensor, seeded_rng};

use crate::checks::{ensure, relative_difference};
use crate::models::{batch, net, rows};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Rank `r`'s rows `[start, end)` of a global batch of `b` at `step`: uneven shares,
/// some of them empty (as Poisson batches can be), covering the batch.
fn share(b: usize, n: usize, r: usize, step: usize) -> (usize, usize) {
    let weights: Vec<usize> = (0..n).map(|k| (k + step) % 3).collect();
    let total: usize = weights.iter().sum();
    if total == 0 {
        return if r == n - 1 { (0, b) } else { (0, 0) };
    }
    let before: usize = weights[..r].iter().sum();
    (b * before / total, b * (before + weights[r]) / total)
}

/// Every rank's value of every parameter equals rank 0's, to the bit.
fn same_on_every_rank(comm: &Communicator, model: &dyn Module<f64>) -> Result<(), String> {
    for (name, p) in model.named_parameters() {
        let root = comm.broadcast_tensor(&p.value(), 0).map_err(err)?;
        ensure(root.to_vec() == p.value().to_vec(), || {
            format!(
                "{name}: rank {}'s replica differs from rank 0's",
                comm.rank()
            )
        })?;
    }
    Ok(())
}

/// K private SGD steps on N ranks (each its uneven share of every global batch) against
/// one process on the whole batches; returns the largest relative difference.
fn steps_against_one_process(
    comm: &Communicator,
    sigma: f64,
    tolerance: f64,
) -> Result<f64, String> {
    let (r, n) = (comm.rank(), comm.size());
    let b = 24;
    let (c, q) = (0.05, 0.01); // C small enough that most samples are clipped
    let reference = net::<f64>(7, 6);
    // Every rank but 0 starts from other weights: replicate gives them rank 0's.
    let model = net::<f64>(7 + r as u64 * 1000, 6);
    replicate(&model, comm).map_err(err)?;
    let config = DpSgdConfig::new(c, sigma, q, b as f64);
    // The same seed for the reference and every rank: only rank 0's generator may be
    // used, or the noise would not match the reference's.
    let mut one = DpSgd::new(&reference, config.clone(), GaussianNoise::seeded(5)).map_err(err)?;
    let mut dp = DpSgd::new(&model, config, GaussianNoise::seeded(5))
        .map_err(err)?
        .across(comm.clone())
        .map_err(err)?;
    let sgd = SgdConfig {
        lr: 0.5,
        momentum: 0.9,
        ..SgdConfig::default()
    };
    let mut ref_opt = Sgd::new(reference.parameters(), sgd).map_err(err)?;
    let mut opt = Sgd::new(model.parameters(), sgd).map_err(err)?;
    let opts = ClassLossOptions::default();
    for step in 0..4 {
        let data = batch::<f64>(300 + step as u64, b);
        let (x, y) = rows(&data, 0, b);
        ref_opt.zero_grad();
        one.step(b, || cross_entropy(&reference.forward(&x)?, &y, &opts))
            .map_err(err)?;
        ref_opt.step().map_err(err)?;
        let (start, end) = share(b, n, r, step);
        let (x, y) = rows(&data, start, end - start);
        opt.zero_grad();
        dp.step(end - start, || {
            cross_entropy(&model.forward(&x)?, &y, &opts)
        })
        .map_err(err)?;
        opt.step().map_err(err)?;
    }
    same_on_every_rank(comm, &model)?;
    let mut worst = 0.0f64;
    for ((name, got), want) in model.named_parameters().iter().zip(reference.parameters()) {
        worst = worst.max(relative_difference(
            name,
            &got.value(),
            &want.value(),
            tolerance,
        )?);
    }
    let spent = (
        dp.epsilon(1e-5).map_err(err)?,
        one.epsilon(1e-5).map_err(err)?,
    );
    if sigma > 0.0 {
        ensure(spent.0 == spent.1 && dp.steps() == 4, || {
            format!(
                "ε {} after 4 steps on N ranks, {} on one process",
                spent.0, spent.1
            )
        })?;
    }
    Ok(worst)
}

/// (a) N ranks' private steps are one process's on the same samples.
pub fn equivalence(world: &World) -> Result<Vec<String>, String> {
    let comm = world.comm();
    // No noise: the clipped sums alone, summed over the ranks (f64, sums in another order).
    let plain = steps_against_one_process(comm, 0.0, 1e-12)?;
    // Rank 0's seeded noise, added once to the summed clipped gradients, is the noise one
    // process with the same seed adds: the steps agree up to the grid's rounding.
    let noisy = steps_against_one_process(comm, 1.0, 1e-9)?;
    Ok(vec![format!(
        "4 DP-SGD steps (SGD, momentum) on {} ranks with uneven shares, some empty, equal one process's: without noise to {plain:.1e}, with rank 0's seeded noise to {noisy:.1e}; replicas equal to the bit",
        comm.size()
    )])
}

/// (b) The noise of an N-rank step has standard deviation σC/B: added once.
pub fn noise(world: &World) -> Result<Vec<String>, String> {
    let comm = world.comm();
    let (r, n) = (comm.rank(), comm.size());
    let mut rng = seeded_rng(11);
    let model = Sequential::<f64>::new().push(Linear::new(32, 64, true, &mut rng));
    replicate(&model, comm).map_err(err)?;
    let (sigma, c, b) = (1.3, 0.7, 16.0);
    let config = DpSgdConfig::new(c, sigma, 0.01, b);
    // The secure generator, as a private run uses (rank 0's is the only one drawn from).
    let secure = GaussianNoise::secure().map_err(err)?;
    let mut noisy = DpSgd::new(&model, config.clone(), secure)
        .map_err(err)?
        .across(comm.clone())
        .map_err(err)?;
    let exact = DpSgdConfig {
        noise_multiplier: 0.0,
        ..config
    };
    let mut clean = DpSgd::new(&model, exact, GaussianNoise::seeded(0))
        .map_err(err)?
        .across(comm.clone())
        .map_err(err)?;
    ensure(noisy.secure_noise() && noisy.world_size() == n, || {
        "the guarantee should say secure noise over every rank".into()
    })?;
    let mut diffs = Vec::new();
    let local = 4;
    for step in 0..5u64 {
        let mut rng = seeded_rng(500 + step * 10 + r as u64);
        let x = Var::new(Tensor::<f64>::randn(&[local, 32], &mut rng));
        let y = IndexTensor::from_vec((0..local as i64).map(|i| i % 64).collect(), &[local])
            .map_err(err)?;
        let loss = || cross_entropy(&model.forward(&x)?, &y, &ClassLossOptions::default());
        noisy.step(local, loss).map_err(err)?;
        let with_noise: Vec<Tensor<f64>> = model
            .parameters()
            .iter()
            .map(|p| p.grad().ok_or("no gradient"))
            .collect::<Result<_, _>>()?;
        clean.step(local, loss).map_err(err)?;
        for (p, g) in model.parameters().iter().zip(&with_noise) {
            // Every rank got rank 0's noisy gradient.
            let root = comm.broadcast_tensor(g, 0).map_err(err)?;
            ensure(root.to_vec() == g.to_vec(), || {
                format!("rank {r}'s noisy gradient differs from rank 0's")
            })?;
            let exact = p.grad().ok_or("no gradient")?;
            diffs.extend(g.to_vec().iter().zip(exact.to_vec()).map(|(a, b)| a - b));
        }
    }
    let m = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / m;
    let std = (diffs.iter().map(|d| (d - mean) * (d - mean)).sum::<f64>() / (m - 1.0)).sqrt();
    let want = sigma * c / b;
    // m ≈ 10 560 draws: the estimate's relative standard error is 1/√(2m) ≈ 0.7 %, so 4 %
    // is about 6 standard errors; noise added on every rank would be √N times larger
    // (41 % off at N = 2).
    ensure((std / want - 1.0).abs() < 0.04, || {
        format!("the noise has std {std:.5e}, expected σC/B = {want:.5e} ({n} ranks)")
    })?;
    ensure(mean.abs() < 6.0 * want / m.sqrt(), || {
        format!("the noise has mean {mean:.3e}, expected 0 (std {want:.3e})")
    })?;
    Ok(vec![format!(
        "the noise of a {n}-rank step has std {std:.5e} over {m} coordinates, σC/B = {want:.5e} (ratio {:.4}; √N times would be {:.3})",
        std / want,
        (n as f64).sqrt()
    )])
}

/// Settings that differ between ranks are refused on every rank; Poisson shards partition
/// the data set, at the global sample rate.
pub fn settings(world: &World) -> Result<Vec<String>, String> {
    let comm = world.comm();
    let (r, n) = (comm.rank(), comm.size());
    let mut lines = Vec::new();
    if n > 1 {
        let model = Linear::<f64>::new(3, 2, true, &mut seeded_rng(0));
        let sigma = if r == n - 1 { 2.0 } else { 1.0 };
        let config = DpSgdConfig::new(1.0, sigma, 0.1, 10.0);
        let got = DpSgd::new(&model, config, GaussianNoise::seeded(0))
            .map_err(err)?
            .across(comm.clone());
        ensure(matches!(got, Err(PrivacyError::Config { .. })), || {
            format!("rank {r}: ranks with different σ were not refused")
        })?;
        lines.push(format!("a rank with another σ is refused on all {n} ranks"));
    }
    // q = 1: the shards are disjoint and cover the data set.
    let len = 1001;
    let mut all = PoissonSampler::seeded(len, 1.0, 0)
        .map_err(err)?
        .shard(r, n)
        .map_err(err)?;
    let mine = all.sample();
    ensure(mine.iter().all(|i| i % n == r), || {
        format!("rank {r} sampled outside its shard")
    })?;
    let mut counts = vec![0u64; len];
    for &i in &mine {
        counts[i] += 1;
    }
    comm.all_reduce(&mut counts, strata_distributed::ReduceOp::Sum)
        .map_err(err)?;
    ensure(counts.iter().all(|&c| c == 1), || {
        "the ranks' shards do not partition the data set".into()
    })?;
    // q = 0.2: the global batch has mean q·len (each rank's stream its own).
    let (q, steps) = (0.2, 200);
    let mut sampler = PoissonSampler::seeded(len, q, 3)
        .map_err(err)?
        .shard(r, n)
        .map_err(err)?;
    let mut total = [0u64];
    for _ in 0..steps {
        total[0] += sampler.sample().len() as u64;
    }
    comm.all_reduce(&mut total, strata_distributed::ReduceOp::Sum)
        .map_err(err)?;
    let mean = total[0] as f64 / steps as f64;
    let want = q * len as f64;
    // The global batch is Binomial(1001, 0.2): std 12.7, so the mean of 200 has std 0.9.
    ensure((mean - want).abs() < 5.0, || {
        format!("the global Poisson batch has mean size {mean}, expected {want}")
    })?;
    lines.push(format!(
        "Poisson shards partition the data set; the global batch has mean size {mean:.1} (q·n = {want:.1})"
    ));
    Ok(lines)
}
