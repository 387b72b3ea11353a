//! The collectives, and the sampler's coverage of a data set across the ranks.

use strata_distributed::{DistributedSampler, ReduceOp, World};
use strata_tensor::Tensor;

use crate::checks::ensure;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Every collective on values that tell the ranks apart.
pub fn collectives(world: &World) -> Result<Vec<String>, String> {
    let comm = world.comm();
    let (r, n) = (comm.rank(), comm.size());
    // Sums, extremes and products of (rank + 1).
    let mut sum = [r as f64 + 1.0, 1.0];
    comm.all_reduce(&mut sum, ReduceOp::Sum).map_err(err)?;
    ensure(sum == [(n * (n + 1) / 2) as f64, n as f64], || {
        format!("sum {sum:?}")
    })?;
    let mut max = [r as i64, -(r as i64)];
    comm.all_reduce(&mut max, ReduceOp::Max).map_err(err)?;
    ensure(max == [n as i64 - 1, 0], || format!("max {max:?}"))?;
    let mut min = [r as u64 + 5];
    comm.all_reduce(&mut min, ReduceOp::Min).map_err(err)?;
    ensure(min == [5], || format!("min {min:?}"))?;
    let mut product = [r as f32 + 1.0];
    comm.all_reduce(&mut product, ReduceOp::Product)
        .map_err(err)?;
    let factorial: f32 = (1..=n).map(|k| k as f32).product();
    ensure(product == [factorial], || format!("product {product:?}"))?;
    // A broadcast from every root.
    for root in 0..n {
        let mut v = [r as i32 * 10, 7];
        comm.broadcast(&mut v, root).map_err(err)?;
        ensure(v == [root as i32 * 10, 7], || {
            format!("broadcast from {root}: {v:?}")
        })?;
    }
    // All-gather in rank order.
    let gathered = comm.all_gather(&[r as u8, 9]).map_err(err)?;
    let expected: Vec<u8> = (0..n).flat_map(|k| [k as u8, 9]).collect();
    ensure(gathered == expected, || format!("all_gather {gathered:?}"))?;
    comm.barrier().map_err(err)?;
    // Tensors.
    let t = Tensor::from_vec(vec![r as f64, 1.0, -2.0], &[3]).map_err(err)?;
    let total = comm
        .all_reduce_tensor(&t, ReduceOp::Sum)
        .map_err(err)?
        .to_vec();
    ensure(
        total == vec![(n * (n - 1) / 2) as f64, n as f64, -2.0 * n as f64],
        || format!("all_reduce_tensor {total:?}"),
    )?;
    let from_last = comm.broadcast_tensor(&t, n - 1).map_err(err)?.to_vec();
    ensure(from_last[0] == (n - 1) as f64, || {
        format!("broadcast_tensor {from_last:?}")
    })?;
    // Even and odd ranks in groups of their own, ranked in reverse.
    let group = comm
        .split(Some((r % 2) as u32), -(r as i32))
        .map_err(err)?
        .ok_or("split gave no group")?;
    let members: Vec<usize> = (0..n).filter(|k| k % 2 == r % 2).collect();
    ensure(group.size() == members.len(), || {
        format!("group size {}", group.size())
    })?;
    ensure(
        group.rank()
            == members
                .iter()
                .rev()
                .position(|&k| k == r)
                .unwrap_or(usize::MAX),
        || format!("rank {r} is rank {} of its group", group.rank()),
    )?;
    let mut s = [r as u64];
    group.all_reduce(&mut s, ReduceOp::Sum).map_err(err)?;
    ensure(
        s[0] == members.iter().map(|&k| k as u64).sum::<u64>(),
        || format!("group sum {s:?}"),
    )?;
    ensure(comm.split(None, 0).map_err(err)?.is_none(), || {
        "a rank without a colour got a group".into()
    })?;
    // A metric as a training reports it: the mean of the ranks' losses, by sample.
    let (loss_sum, count) = (0.5 * (r + 1) as f64 * 10.0, 10.0);
    let mut m = [loss_sum, count];
    comm.all_reduce(&mut m, ReduceOp::Sum).map_err(err)?;
    let mean = m[0] / m[1];
    ensure((mean - 0.25 * (n + 1) as f64).abs() < 1e-12, || {
        format!("mean {mean}")
    })?;
    Ok(vec![format!(
        "all_reduce (sum, max, min, product), broadcast from each of {n} roots, all_gather, barrier, split, tensors"
    )])
}

/// Across the ranks, an epoch reads every sample once, plus PyTorch's padding (the start
/// of the epoch's permutation), or minus the dropped tail; ranks read equal counts; epochs
/// differ.
pub fn sampler(world: &World) -> Result<Vec<String>, String> {
    let comm = world.comm();
    let n = comm.size();
    let mut checked = 0;
    for len in [1usize, 5, 7, 10, 13, 24, 101] {
        for shuffle in [false, true] {
            for drop_last in [false, true] {
                let s = DistributedSampler::new(len, comm)
                    .seed(11)
                    .shuffle(shuffle)
                    .drop_last(drop_last);
                let mut epochs = Vec::new();
                for epoch in [1u64, 2] {
                    let mine: Vec<u64> = s.indices(epoch).into_iter().map(|i| i as u64).collect();
                    ensure(mine.len() == s.num_samples(), || {
                        format!(
                            "len {len}: rank reads {} of {}",
                            mine.len(),
                            s.num_samples()
                        )
                    })?;
                    let all = comm.all_gather(&mine).map_err(err)?;
                    // Rank k's j-th sample is position j·n + k of the padded permutation.
                    let mut order = vec![0u64; all.len()];
                    for (k, shard) in all.chunks(s.num_samples().max(1)).enumerate() {
                        for (j, &i) in shard.iter().enumerate() {
                            order[j * n + k] = i;
                        }
                    }
                    let distinct = len.min(order.len());
                    let head = &order[..distinct];
                    let mut sorted = head.to_vec();
                    sorted.sort();
                    sorted.dedup();
                    ensure(
                        sorted.len() == distinct && head.iter().all(|&i| (i as usize) < len),
                        || {
                            format!(
                                "len {len}, shuffle {shuffle}, drop_last {drop_last}: the epoch's first {distinct} samples repeat or stray: {head:?}"
                            )
                        },
                    )?;
                    if drop_last {
                        ensure(order.len() == len - len % n, || {
                            format!("len {len}: {} read with drop_last", order.len())
                        })?;
                    } else {
                        ensure(order.len() == len.div_ceil(n) * n, || {
                            format!("len {len}: {} read", order.len())
                        })?;
                        // The padding is the permutation's start, repeated.
                        for (p, &i) in order[len..].iter().enumerate() {
                            ensure(i == order[p % len], || {
                                format!("len {len}: padding {p} is {i}")
                            })?;
                        }
                    }
                    epochs.push(order);
                }
                if shuffle && len > 4 {
                    ensure(epochs[0] != epochs[1], || {
                        format!("len {len}: epochs 1 and 2 read the same order")
                    })?;
                }
                checked += 1;
            }
        }
    }
    Ok(vec![format!(
        "{checked} samplers (lengths 1 to 101, shuffled or not, padded or dropping the tail) cover each data set once per epoch across {n} rank(s)"
    )])
}
