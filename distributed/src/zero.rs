//! [`ZeroRedundancyOptimizer`]: optimizer state sharded over the ranks (ZeRO stage 1).

use std::collections::BTreeMap;

use strata_autograd::Var;
use strata_optim::{Optimizer, OptimizerState, ParamGroup};
use strata_tensor::{Element, Tensor};

use crate::comm::Communicator;
use crate::{DistributedError, ReduceOp, Result};

/// The function that builds the wrapped optimizer over a rank's shard: it receives the
/// groups with only the parameters this rank owns (some groups may be empty).
pub type OptimizerFactory<T> =
    dyn FnOnce(Vec<ParamGroup<T>>) -> strata_optim::Result<Box<dyn Optimizer<T>>>;

/// An optimizer whose per-parameter state lives on one rank per parameter, like PyTorch's
/// `ZeroRedundancyOptimizer` (ZeRO stage 1): the parameters are split over the ranks (the
/// largest first, each to the rank with the fewest elements so far, as PyTorch does), each
/// rank builds the wrapped optimizer (Adam, AdamW, …) over its own shard only, and after
/// each step every rank broadcasts the parameters it updated. Adam's two moments then take
/// `1/N` of the memory on each of `N` ranks, and the trajectory is the same as the wrapped
/// optimizer's over all parameters on one process.
///
/// Use it with gradients averaged over the ranks (a
/// [`DistributedDataParallel`](crate::DistributedDataParallel) model). Every rank must call
/// [`step`](Optimizer::step). [`state_dict`](Optimizer::state_dict) holds this rank's
/// shard (keyed by the parameters' global indices) until
/// [`consolidate_state_dict`](ZeroRedundancyOptimizer::consolidate_state_dict) gathers the
/// whole state on one rank, as in PyTorch; [`load_state_dict`](Optimizer::load_state_dict)
/// takes a whole state (of this or of the plain optimizer) and keeps each rank's shard.
///
/// ```
/// use strata_distributed::{Communicator, ZeroRedundancyOptimizer};
/// use strata_optim::{Adam, AdamConfig, Optimizer, ParamGroup};
/// use strata_autograd::Var;
/// use strata_tensor::Tensor;
///
/// let w = Var::parameter(Tensor::<f32>::ones(&[3]));
/// let mut opt = ZeroRedundancyOptimizer::new(
///     vec![ParamGroup::new(vec![w.clone()])],
///     &Communicator::alone(),
///     Box::new(|groups| Ok(Box::new(Adam::with_groups(groups, AdamConfig::default())?))),
/// )?;
/// w.square().sum_all().backward()?;
/// opt.step()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ZeroRedundancyOptimizer<T: Element = f32> {
    comm: Communicator,
    /// Every parameter, group after group.
    params: Vec<Var<T>>,
    group_sizes: Vec<usize>,
    /// The rank that owns each parameter.
    owner: Vec<usize>,
    /// The global index of each of this rank's parameters, in the wrapped optimizer's order.
    local: Vec<usize>,
    inner: Option<Box<dyn Optimizer<T>>>,
    /// The groups' learning rates (kept here too: a rank may own no parameter).
    lrs: Vec<f64>,
    momentum: Option<f64>,
    consolidated: Option<OptimizerState<T>>,
}

impl<T: Element> ZeroRedundancyOptimizer<T> {
    /// Shards `groups` over `comm`'s ranks and builds the wrapped optimizer over this
    /// rank's shard with `make`. Every rank must pass the same groups.
    ///
    /// # Errors
    /// The wrapped optimizer's errors (an invalid learning rate, …).
    pub fn new(
        groups: Vec<ParamGroup<T>>,
        comm: &Communicator,
        make: Box<OptimizerFactory<T>>,
    ) -> Result<Self> {
        let size = comm.size();
        let mut loads = vec![0usize; size];
        let mut owner = Vec::new();
        let mut params = Vec::new();
        let mut group_sizes = Vec::new();
        for g in &groups {
            // The largest parameters first, each to the least loaded rank (ties: the
            // lowest), with the loads carried across groups: PyTorch's partition.
            let mut by_size: Vec<usize> = (0..g.params.len()).collect();
            by_size.sort_by_key(|&k| std::cmp::Reverse(g.params[k].numel()));
            let mut owners = vec![0; g.params.len()];
            for k in by_size {
                let rank = (0..size).min_by_key(|&r| (loads[r], r)).unwrap_or(0);
                owners[k] = rank;
                loads[rank] += g.params[k].numel();
            }
            owner.extend(owners);
            params.extend(g.params.iter().cloned());
            group_sizes.push(g.params.len());
        }
        let mut local = Vec::new();
        let mut shard = Vec::with_capacity(groups.len());
        let mut at = 0;
        for g in &groups {
            let mine: Vec<Var<T>> = (at..at + g.params.len())
                .filter(|&i| owner[i] == comm.rank())
                .map(|i| {
                    local.push(i);
                    params[i].clone()
                })
                .collect();
            at += g.params.len();
            shard.push(ParamGroup {
                params: mine,
                lr: g.lr,
                weight_decay: g.weight_decay,
            });
        }
        let inner = if local.is_empty() {
            None
        } else {
            Some(make(shard)?)
        };
        let lrs = match &inner {
            Some(o) => (0..o.num_groups()).map(|g| o.group_lr(g)).collect(),
            None => groups.iter().map(|g| g.lr.unwrap_or(0.0)).collect(),
        };
        let momentum = inner.as_ref().and_then(|o| o.momentum());
        Ok(ZeroRedundancyOptimizer {
            comm: comm.clone(),
            params,
            group_sizes,
            owner,
            local,
            inner,
            lrs,
            momentum,
            consolidated: None,
        })
    }

    /// The rank that owns (keeps the state of, and updates) parameter `index` (counted
    /// over all groups).
    pub fn owner_of(&self, index: usize) -> Option<usize> {
        self.owner.get(index).copied()
    }

    /// The global indices of the parameters this rank owns.
    pub fn local_indices(&self) -> &[usize] {
        &self.local
    }

    /// Gathers the whole optimizer state on rank `to` (every rank must call it), where
    /// [`state_dict`](Optimizer::state_dict) then returns it, keyed by the parameters'
    /// global indices: the state dict the wrapped optimizer would have over all
    /// parameters, which a single process can load.
    ///
    /// # Errors
    /// A rank outside the group; communication errors.
    pub fn consolidate_state_dict(&mut self, to: usize) -> Result<()> {
        if to >= self.comm.size() {
            return Err(DistributedError::Config(format!(
                "rank {to} is outside a group of {}",
                self.comm.size()
            )));
        }
        let mine = self.shard_state();
        let mut tensors = Vec::new();
        let mut hyper = mine.as_ref().map(|s| s.hyper.clone()).unwrap_or_default();
        let mut optimizer = mine
            .as_ref()
            .map(|s| s.optimizer.clone())
            .unwrap_or_default();
        let mut weight_decays = mine.as_ref().map(|s| s.group_weight_decays.clone());
        for rank in 0..self.comm.size() {
            // Each rank in turn tells its entries: keys (with shapes), then the values.
            let (keys, values) = if rank == self.comm.rank() {
                describe(mine.as_ref())
            } else {
                (String::new(), Vec::new())
            };
            let keys = String::from_utf8_lossy(&self.comm.broadcast_bytes(keys.as_bytes(), rank)?)
                .into_owned();
            let meta = self.comm.broadcast_bytes(
                if rank == self.comm.rank() {
                    meta_line(mine.as_ref()).into_bytes()
                } else {
                    Vec::new()
                }
                .as_slice(),
                rank,
            )?;
            let mut count = [values.len() as u64];
            self.comm.broadcast(&mut count, rank)?;
            let mut values = if rank == self.comm.rank() {
                values
            } else {
                vec![T::zero(); count[0] as usize]
            };
            values = self.comm.broadcast_elements(values, rank)?;
            if self.comm.rank() != to {
                continue;
            }
            if let Some((name, decays, h)) = parse_meta(&String::from_utf8_lossy(&meta)) {
                optimizer = name;
                weight_decays.get_or_insert(decays);
                hyper.extend(h);
            }
            let mut at = 0;
            for line in keys.lines().filter(|l| !l.is_empty()) {
                let (key, shape) = parse_key(line)?;
                let n: usize = shape.iter().product();
                let slice = values.get(at..at + n).ok_or_else(|| {
                    DistributedError::Config("a shard sent fewer values than its keys say".into())
                })?;
                tensors.push((key, Tensor::from_vec(slice.to_vec(), &shape)?));
                at += n;
            }
        }
        if self.comm.rank() == to {
            // In the order of the plain optimizer: by parameter, then entry.
            tensors.sort_by_key(|(k, _)| state_key_order(k));
            self.consolidated = Some(OptimizerState {
                optimizer,
                group_lrs: self.lrs.clone(),
                group_weight_decays: weight_decays.unwrap_or_else(|| vec![0.0; self.lrs.len()]),
                group_sizes: self.group_sizes.clone(),
                hyper,
                tensors,
            });
        }
        Ok(())
    }

    /// This rank's state, keyed by global parameter indices.
    fn shard_state(&self) -> Option<OptimizerState<T>> {
        let inner = self.inner.as_ref()?;
        let mut s = inner.state_dict();
        s.tensors = s
            .tensors
            .into_iter()
            .filter_map(|(key, t)| {
                let (index, rest) = split_key(&key)?;
                let global = *self.local.get(index)?;
                Some((format!("state.{global}.{rest}"), t))
            })
            .collect();
        s.group_sizes = self.group_sizes.clone();
        Some(s)
    }

    /// Every rank's updated parameters, from their owners.
    fn sync_params(&self) -> Result<()> {
        if self.comm.size() == 1 {
            return Ok(());
        }
        for rank in 0..self.comm.size() {
            let owned: Vec<&Var<T>> = self
                .params
                .iter()
                .zip(&self.owner)
                .filter(|&(_, &o)| o == rank)
                .map(|(p, _)| p)
                .collect();
            if owned.is_empty() {
                continue;
            }
            let mut flat = Vec::with_capacity(owned.iter().map(|p| p.numel()).sum());
            for p in &owned {
                flat.extend(p.value().to_vec());
            }
            let flat = self.comm.broadcast_elements(flat, rank)?;
            if rank != self.comm.rank() {
                let mut at = 0;
                for p in owned {
                    let n = p.numel();
                    p.set_value(Tensor::from_vec(flat[at..at + n].to_vec(), p.shape())?)?;
                    at += n;
                }
            }
        }
        Ok(())
    }
}

/// `state.{i}.{rest}` → `(i, rest)`.
fn split_key(key: &str) -> Option<(usize, &str)> {
    let rest = key.strip_prefix("state.")?;
    let (index, rest) = rest.split_once('.')?;
    Some((index.parse().ok()?, rest))
}

fn state_key_order(key: &str) -> (usize, String) {
    split_key(key).map_or((usize::MAX, key.to_string()), |(i, r)| (i, r.to_string()))
}

/// A shard's keys with their shapes (`state.3.exp_avg 4,5`), one a line, and its values.
fn describe<T: Element>(state: Option<&OptimizerState<T>>) -> (String, Vec<T>) {
    let mut keys = String::new();
    let mut values = Vec::new();
    for (k, t) in state.map(|s| s.tensors.as_slice()).unwrap_or(&[]) {
        let shape: Vec<String> = t.shape().iter().map(usize::to_string).collect();
        keys.push_str(&format!("{k} {}\n", shape.join(",")));
        values.extend(t.to_vec());
    }
    (keys, values)
}

fn parse_key(line: &str) -> Result<(String, Vec<usize>)> {
    let bad = || DistributedError::Config(format!("malformed optimizer state entry {line:?}"));
    let (key, shape) = line.rsplit_once(' ').ok_or_else(bad)?;
    let shape = if shape.is_empty() {
        Vec::new()
    } else {
        shape
            .split(',')
            .map(|d| d.parse().map_err(|_| bad()))
            .collect::<Result<_>>()?
    };
    Ok((key.to_string(), shape))
}

/// The optimizer's name, weight decays and hyper-parameters of a shard, on one line.
fn meta_line<T: Element>(state: Option<&OptimizerState<T>>) -> String {
    let Some(s) = state else { return String::new() };
    let decays: Vec<String> = s
        .group_weight_decays
        .iter()
        .map(|d| format!("{d:?}"))
        .collect();
    let hyper: Vec<String> = s.hyper.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{}\t{}\t{}", s.optimizer, decays.join(","), hyper.join(","))
}

#[allow(clippy::type_complexity)]
fn parse_meta(line: &str) -> Option<(String, Vec<f64>, BTreeMap<String, f64>)> {
    let mut parts = line.split('\t');
    let name = parts.next().filter(|n| !n.is_empty())?.to_string();
    let decays = parts
        .next()?
        .split(',')
        .filter(|d| !d.is_empty())
        .filter_map(|d| d.parse().ok())
        .collect();
    let hyper = parts
        .next()?
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    Some((name, decays, hyper))
}

impl<T: Element> Optimizer<T> for ZeroRedundancyOptimizer<T> {
    /// Steps the wrapped optimizer over this rank's shard, then broadcasts every shard's
    /// parameters from its owner. Every rank must call it.
    fn step(&mut self) -> strata_optim::Result<()> {
        if let Some(o) = &mut self.inner {
            o.step()?;
        }
        self.consolidated = None;
        self.sync_params()
            .map_err(|e| strata_optim::OptimError::State {
                optimizer: "ZeroRedundancyOptimizer",
                msg: e.to_string(),
            })
    }

    fn zero_grad(&self) {
        for p in &self.params {
            p.zero_grad();
        }
    }

    fn num_groups(&self) -> usize {
        self.lrs.len()
    }

    fn group_lr(&self, group: usize) -> f64 {
        self.lrs[group]
    }

    fn set_group_lr(&mut self, group: usize, lr: f64) {
        self.lrs[group] = lr;
        if let Some(o) = &mut self.inner {
            o.set_group_lr(group, lr);
        }
    }

    fn momentum(&self) -> Option<f64> {
        self.momentum
    }

    fn set_momentum(&mut self, momentum: f64) -> strata_optim::Result<()> {
        if let Some(o) = &mut self.inner {
            o.set_momentum(momentum)?;
        }
        self.momentum = Some(momentum);
        Ok(())
    }

    /// The state gathered by the last
    /// [`consolidate_state_dict`](ZeroRedundancyOptimizer::consolidate_state_dict) (since
    /// the last step), or else this rank's shard (in a world of one: the whole state).
    fn state_dict(&self) -> OptimizerState<T> {
        if let Some(s) = &self.consolidated {
            return s.clone();
        }
        self.shard_state().unwrap_or_else(|| OptimizerState {
            optimizer: String::new(),
            group_lrs: self.lrs.clone(),
            group_weight_decays: vec![0.0; self.lrs.len()],
            group_sizes: self.group_sizes.clone(),
            hyper: BTreeMap::new(),
            tensors: Vec::new(),
        })
    }

    /// Loads a whole state (keyed by global parameter indices), keeping this rank's shard.
    fn load_state_dict(&mut self, state: &OptimizerState<T>) -> strata_optim::Result<()> {
        if state.group_sizes != self.group_sizes {
            return Err(strata_optim::OptimError::State {
                optimizer: "ZeroRedundancyOptimizer",
                msg: format!(
                    "the state has parameter groups of sizes {:?}, this optimizer {:?}",
                    state.group_sizes, self.group_sizes
                ),
            });
        }
        self.lrs.clone_from(&state.group_lrs);
        let Some(inner) = &mut self.inner else {
            return Ok(());
        };
        let mut shard = state.clone();
        shard.tensors = state
            .tensors
            .iter()
            .filter_map(|(key, t)| {
                let (global, rest) = split_key(key)?;
                let index = self.local.iter().position(|&g| g == global)?;
                Some((format!("state.{index}.{rest}"), t.clone()))
            })
            .collect();
        // The shard's own group sizes.
        let mut sizes = vec![0; self.group_sizes.len()];
        let mut start = 0;
        for (g, &n) in self.group_sizes.iter().enumerate() {
            sizes[g] = self
                .local
                .iter()
                .filter(|&&i| i >= start && i < start + n)
                .count();
            start += n;
        }
        shard.group_sizes = sizes;
        inner.load_state_dict(&shard)
    }
}

impl<T: Element> std::fmt::Debug for ZeroRedundancyOptimizer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeroRedundancyOptimizer")
            .field("comm", &self.comm)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// The number of state elements (all entries but step counts) this rank keeps: 1/N of
/// the whole under ZeRO. For tests and memory reports.
pub fn state_elements<T: Element>(state: &OptimizerState<T>) -> usize {
    state
        .tensors
        .iter()
        .filter(|(k, _)| !k.ends_with(".step"))
        .map(|(_, t)| t.numel())
        .sum()
}

/// The sum over the ranks of [`state_elements`] of each rank's shard.
///
/// # Errors
/// Communication errors.
pub fn total_state_elements<T: Element>(opt: &ZeroRedundancyOptimizer<T>) -> Result<u64> {
    let mut n = [opt.shard_state().as_ref().map_or(0, state_elements) as u64];
    opt.comm.all_reduce(&mut n, ReduceOp::Sum)?;
    Ok(n[0])
}
