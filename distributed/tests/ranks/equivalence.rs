//! N ranks at per-rank batch B/N against one process at batch B: the same parameters after
//! K steps, for SGD and Adam, one bucket or many, with and without `no_sync`; parameters
//! without gradients; buffers; ZeRO; and mismatched models refused.

use strata_autograd::Var;
use strata_distributed::{
    DdpConfig, DistributedDataParallel, DistributedError, World, ZeroRedundancyOptimizer,
    state_elements, total_state_elements,
};
use strata_nn::{BatchNorm1d, Forward, Linear, Module, Sequential};
use strata_optim::{Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use strata_tensor::{Element, Tensor, seeded_rng};

use crate::checks::{ensure, relative_difference};
use crate::models::{Heads, batch, loss, net, rows};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Opt {
    Sgd,
    Adam,
}

fn optimizer<T: Element>(kind: Opt, params: Vec<Var<T>>) -> Result<Box<dyn Optimizer<T>>, String> {
    Ok(match kind {
        // Momentum, so that the state carries every step's gradient forward.
        Opt::Sgd => Box::new(
            Sgd::new(
                params,
                SgdConfig {
                    lr: 0.1,
                    momentum: 0.9,
                    ..SgdConfig::default()
                },
            )
            .map_err(err)?,
        ),
        Opt::Adam => Box::new(
            Adam::new(
                params,
                AdamConfig {
                    lr: 0.01,
                    ..AdamConfig::default()
                },
            )
            .map_err(err)?,
        ),
    })
}

/// The global batch: 24 (divides among 1, 2, 3, 4, 6 and 8 ranks), else 6 per rank.
fn global_batch(n: usize) -> usize {
    if 24usize.is_multiple_of(n) { 24 } else { 6 * n }
}

const STEPS: u64 = 4;

/// One case: K steps of `micro` micro-batches each, on one process at batch B (the
/// reference, which every rank computes alone) and data-parallel at B/N per rank; returns
/// the largest relative difference of a parameter.
fn case<T: Element>(
    world: &World,
    kind: Opt,
    config: DdpConfig,
    micro: u64,
    tolerance: f64,
) -> Result<f64, String> {
    let comm = world.comm();
    let (r, n) = (comm.rank(), comm.size());
    let b = global_batch(n);
    let local = b / n;
    let reference = net::<T>(7, 6);
    let mut ref_opt = optimizer(kind, reference.parameters())?;
    // Every rank but 0 starts from other weights: DDP must give them rank 0's.
    let ddp = DistributedDataParallel::new(net::<T>(7 + r as u64 * 1000, 6), comm, config)
        .map_err(err)?;
    let mut opt = optimizer(kind, ddp.parameters())?;
    for step in 0..STEPS {
        ref_opt.zero_grad();
        opt.zero_grad();
        for m in 0..micro {
            let data = batch::<T>(100 + 10 * step + m, b);
            let (x, y) = rows(&data, 0, b);
            loss(&reference, &x, &y)?.backward().map_err(err)?;
            let (x, y) = rows(&data, r * local, local);
            let backward = || -> Result<(), String> { loss(&ddp, &x, &y)?.backward().map_err(err) };
            if m + 1 < micro {
                ddp.no_sync(backward)?
            } else {
                backward()?
            }
        }
        ref_opt.step().map_err(err)?;
        opt.step().map_err(err)?;
    }
    let mut worst = 0.0f64;
    for ((name, got), want) in ddp.named_parameters().iter().zip(reference.parameters()) {
        worst = worst.max(relative_difference(
            name,
            &got.value(),
            &want.value(),
            tolerance,
        )?);
        // The replicas stay equal to the bit.
        let root = comm.broadcast_tensor(&got.value(), 0).map_err(err)?;
        ensure(root.to_vec() == got.to_vec(), || {
            format!("{name}: rank {r}'s replica differs from rank 0's")
        })?;
    }
    Ok(worst)
}

pub fn equivalence(world: &World) -> Result<Vec<String>, String> {
    let n = world.size();
    let b = global_batch(n);
    let buckets = [
        ("one bucket", DdpConfig::default()),
        (
            "a bucket per parameter",
            DdpConfig {
                bucket_cap_mb: 0.0,
                first_bucket_cap_mb: 0.0,
                ..DdpConfig::default()
            },
        ),
        // 0.0005 MiB: 65 f64 or 131 f32 gradients per bucket, so 3 or 4 buckets.
        (
            "small buckets",
            DdpConfig {
                bucket_cap_mb: 0.0005,
                first_bucket_cap_mb: 0.0005,
                ..DdpConfig::default()
            },
        ),
    ];
    let mut lines = Vec::new();
    for kind in [Opt::Sgd, Opt::Adam] {
        for (bname, config) in buckets {
            for micro in [1, 2] {
                let sync = if micro == 1 {
                    "every step synced".to_string()
                } else {
                    format!("{micro} micro-batches, no_sync on the first")
                };
                let f64_diff = case::<f64>(world, kind, config, micro, 1e-12)?;
                let f32_diff = case::<f32>(world, kind, config, micro, 1e-5)?;
                lines.push(format!(
                    "{kind:?}, {bname}, {sync}: {n} rank(s) at batch {} vs one process at {b} after {STEPS} steps: max relative difference f64 {f64_diff:.1e} (≤ 1e-12), f32 {f32_diff:.1e} (≤ 1e-5)",
                    b / n
                ));
            }
        }
    }
    Ok(lines)
}

/// A head only odd ranks use and one no rank uses: with `find_unused_parameters`, the
/// gradients are those of the mean of the ranks' losses, the head no rank used keeps no
/// gradient, and nothing hangs; without it, the next forward names the parameters that
/// got no gradient (on every rank alike).
pub fn unused(world: &World) -> Result<Vec<String>, String> {
    let comm = world.comm();
    let (r, n) = (comm.rank(), comm.size());
    let local = 3;
    let data = Tensor::<f64>::randn(&[local * n, 4], &mut seeded_rng(5));
    let shard = |k: usize| Var::new(data.narrow(0, k * local, local).unwrap().contiguous());
    // The reference: one process, the mean over ranks of each rank's mean squared output.
    let reference = Heads::new(3);
    let mut total: Option<Var<f64>> = None;
    for k in 0..n {
        let l = reference
            .forward(&shard(k), k % 2 == 1)
            .map_err(err)?
            .square()
            .mean_all();
        total = Some(match total {
            None => l,
            Some(t) => t.add(&l).map_err(err)?,
        });
    }
    total
        .ok_or("no ranks")?
        .mul_scalar(1.0 / n as f64)
        .backward()
        .map_err(err)?;
    let config = DdpConfig {
        find_unused_parameters: true,
        bucket_cap_mb: 0.0001,
        first_bucket_cap_mb: 0.0001,
        ..DdpConfig::default()
    };
    let ddp = DistributedDataParallel::new(Heads::new(3), comm, config).map_err(err)?;
    for _ in 0..2 {
        ddp.zero_grad();
        let out = ddp
            .forward_with(|m| m.forward(&shard(r), r % 2 == 1))
            .map_err(err)?;
        out.square().mean_all().backward().map_err(err)?;
    }
    let mut worst = 0.0f64;
    for ((name, got), (_, want)) in ddp
        .named_parameters()
        .iter()
        .zip(reference.named_parameters())
    {
        match (got.grad(), want.grad()) {
            (Some(g), Some(w)) => worst = worst.max(relative_difference(name, &g, &w, 1e-12)?),
            (None, None) => {}
            (g, w) => {
                return Err(format!(
                    "{name}: gradient {} here, {} in the reference",
                    if g.is_some() { "present" } else { "absent" },
                    if w.is_some() { "present" } else { "absent" }
                ));
            }
        }
    }
    ensure(ddp.module().never.weight.grad().is_none(), || {
        "the head no rank used has a gradient".into()
    })?;
    // Without find_unused_parameters, the `never` head holds up the first bucket.
    let strict =
        DistributedDataParallel::new(Heads::new(3), comm, DdpConfig::default()).map_err(err)?;
    let out = strict
        .forward_with(|m| m.forward(&shard(r), false))
        .map_err(err)?;
    out.square().mean_all().backward().map_err(err)?;
    let again = strict.forward_with(|m| m.forward(&shard(r), false));
    match again {
        Err(DistributedError::UnfinishedReduction(names)) => ensure(
            names.contains(&"never.weight".to_string()) && names.contains(&"b.bias".to_string()),
            || format!("the parameters without gradient were reported as {names:?}"),
        )?,
        other => {
            return Err(format!(
                "a forward after an unfinished reduction gave {:?}",
                other.map(|_| ())
            ));
        }
    }
    Ok(vec![
        format!(
            "find_unused_parameters: gradients of the ranks' mean loss to {worst:.1e} (≤ 1e-12), none for the head no rank used"
        ),
        "without it: the next forward names never.weight, never.bias, b.weight, b.bias".into(),
    ])
}

/// Every rank's buffers become rank 0's before each forward (`broadcast_buffers`).
pub fn buffers(world: &World) -> Result<Vec<String>, String> {
    let comm = world.comm();
    let r = comm.rank();
    let mut rng = seeded_rng(1);
    let model = Sequential::<f64>::new()
        .push(Linear::new(3, 2, true, &mut rng))
        .push(BatchNorm1d::new(2));
    let mut ddp = DistributedDataParallel::new(model, comm, DdpConfig::default()).map_err(err)?;
    // Rank-dependent running statistics, then an evaluation forward.
    for (name, buffer) in ddp.named_buffers() {
        if name.ends_with("running_mean") {
            buffer
                .set_value(Tensor::from_vec(vec![r as f64, 1.0], &[2]).map_err(err)?)
                .map_err(err)?;
        }
    }
    ddp.eval();
    ddp.forward(&Var::new(Tensor::<f64>::ones(&[4, 3])))
        .map_err(err)?;
    for (name, buffer) in ddp.named_buffers() {
        if name.ends_with("running_mean") {
            ensure(buffer.to_vec() == vec![0.0, 1.0], || {
                format!("{name} is {:?} on rank {r}", buffer.to_vec())
            })?;
        }
    }
    Ok(vec![
        "rank 0's running statistics reach every rank before the forward".into(),
    ])
}

/// ZeRO stage 1: Adam's state sharded over the ranks gives the trajectory of plain Adam on
/// one process, each rank keeping its shard's moments only; the consolidated state is
/// plain Adam's.
pub fn zero(world: &World) -> Result<Vec<String>, String> {
    let comm = world.comm();
    let (r, n) = (comm.rank(), comm.size());
    let b = global_batch(n);
    let local = b / n;
    let reference = net::<f64>(9, 6);
    let mut ref_opt = optimizer(Opt::Adam, reference.parameters())?;
    let ddp = DistributedDataParallel::new(net::<f64>(9 + r as u64, 6), comm, DdpConfig::default())
        .map_err(err)?;
    let mut opt = ZeroRedundancyOptimizer::new(
        vec![ParamGroup::new(ddp.parameters())],
        comm,
        Box::new(|groups| {
            Ok(Box::new(Adam::with_groups(
                groups,
                AdamConfig {
                    lr: 0.01,
                    ..AdamConfig::default()
                },
            )?))
        }),
    )
    .map_err(err)?;
    for step in 0..STEPS {
        ref_opt.zero_grad();
        opt.zero_grad();
        let data = batch::<f64>(300 + step, b);
        let (x, y) = rows(&data, 0, b);
        loss(&reference, &x, &y)?.backward().map_err(err)?;
        let (x, y) = rows(&data, r * local, local);
        loss(&ddp, &x, &y)?.backward().map_err(err)?;
        ref_opt.step().map_err(err)?;
        opt.step().map_err(err)?;
    }
    let mut worst = 0.0f64;
    for ((name, got), want) in ddp.named_parameters().iter().zip(reference.parameters()) {
        worst = worst.max(relative_difference(
            name,
            &got.value(),
            &want.value(),
            1e-12,
        )?);
    }
    let numel: usize = reference.parameters().iter().map(Var::numel).sum();
    let mine = state_elements(&opt.state_dict());
    let total = total_state_elements(&opt).map_err(err)?;
    ensure(total == 2 * numel as u64, || {
        format!(
            "the shards hold {total} state values, Adam needs {}",
            2 * numel
        )
    })?;
    ensure(n == 1 || mine < 2 * numel, || {
        format!("rank {r} holds {mine} of {} state values", 2 * numel)
    })?;
    opt.consolidate_state_dict(0).map_err(err)?;
    let mut state_worst = 0.0f64;
    if r == 0 {
        let whole = opt.state_dict();
        let plain = ref_opt.state_dict();
        ensure(whole.tensors.len() == plain.tensors.len(), || {
            format!(
                "consolidated {} entries, plain Adam has {}",
                whole.tensors.len(),
                plain.tensors.len()
            )
        })?;
        for (key, want) in &plain.tensors {
            let got = whole
                .get(key)
                .ok_or_else(|| format!("the consolidated state lacks {key}"))?;
            state_worst = state_worst.max(relative_difference(key, got, want, 1e-12)?);
        }
    }
    Ok(vec![format!(
        "Adam sharded over {n} rank(s) vs plain Adam after {STEPS} steps: parameters to {worst:.1e}, consolidated state to {state_worst:.1e} (≤ 1e-12); rank 0 keeps {mine} of {} moment values",
        2 * numel
    )])
}

/// Rank N−1's second linear layer is wider: every rank refuses, naming it.
pub fn mismatch(world: &World) -> Result<Vec<String>, String> {
    let comm = world.comm();
    let (r, n) = (comm.rank(), comm.size());
    if n == 1 {
        return Ok(vec![
            "(one rank: nothing to differ; the description's comparison has unit tests)".into(),
        ]);
    }
    let hidden = if r == n - 1 { 7 } else { 6 };
    match DistributedDataParallel::new(net::<f32>(1, hidden), comm, DdpConfig::default()) {
        Err(DistributedError::ModelMismatch(msg)) => {
            ensure(
                msg.contains(&format!("rank {}", n - 1))
                    && msg.contains("3.weight [6, 48]")
                    && msg.contains("3.weight [7, 48]"),
                || format!("the message does not name the difference: {msg}"),
            )?;
            Ok(vec![format!("every rank refused: {msg}")])
        }
        Err(e) => Err(format!("another error: {e}")),
        Ok(_) => Err("models of different shapes were accepted".into()),
    }
}

/// `T`-generic models must be forwardable through `&dyn Forward<T>`.
#[allow(dead_code)]
fn assert_forward<T: Element, M: Forward<T>>(_: &M) {}
