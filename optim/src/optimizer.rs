//! The [`Optimizer`] trait, parameter groups, and the machinery every update rule shares:
//! per-parameter state, the fused parallel update loop, and state dicts.

use std::collections::BTreeMap;

use strata_autograd::{AutogradError, Var};
use strata_tensor::{Element, Tensor};

use crate::error::config;
use crate::{OptimError, Result, state::OptimizerState};

/// Parameters that share a learning rate and weight decay, like one entry of PyTorch's
/// `param_groups`. Unset values take the optimizer's.
///
/// ```
/// use strata_optim::{AdamW, AdamWConfig, ParamGroup};
/// use strata_autograd::Var;
/// use strata_tensor::Tensor;
///
/// let weight = Var::parameter(Tensor::<f32>::ones(&[4, 4]));
/// let bias = Var::parameter(Tensor::<f32>::zeros(&[4]));
/// let opt = AdamW::with_groups(
///     vec![ParamGroup::new(vec![weight]), ParamGroup::new(vec![bias]).weight_decay(0.0)],
///     AdamWConfig { lr: 1e-3, ..AdamWConfig::default() },
/// )?;
/// # Ok::<(), strata_optim::OptimError>(())
/// ```
#[derive(Clone)]
pub struct ParamGroup<T: Element = f32> {
    /// The parameters.
    pub params: Vec<Var<T>>,
    /// This group's learning rate, if not the optimizer's.
    pub lr: Option<f64>,
    /// This group's weight decay, if not the optimizer's.
    pub weight_decay: Option<f64>,
}

impl<T: Element> ParamGroup<T> {
    /// A group with the optimizer's settings.
    pub fn new(params: Vec<Var<T>>) -> Self {
        ParamGroup {
            params,
            lr: None,
            weight_decay: None,
        }
    }

    /// With its own learning rate.
    pub fn lr(mut self, lr: f64) -> Self {
        self.lr = Some(lr);
        self
    }

    /// With its own weight decay.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = Some(weight_decay);
        self
    }
}

/// An optimizer: it updates its parameters in place from their gradients.
pub trait Optimizer<T: Element = f32> {
    /// Updates every parameter that has a gradient (`optimizer.step()`); parameters
    /// without one are skipped, as in PyTorch.
    ///
    /// # Errors
    /// When a gradient's shape differs from its parameter's.
    fn step(&mut self) -> Result<()>;

    /// Clears every parameter's gradient (to `None`, PyTorch's default).
    fn zero_grad(&self);

    /// The number of parameter groups.
    fn num_groups(&self) -> usize;

    /// The learning rate of group `group`.
    fn group_lr(&self, group: usize) -> f64;

    /// Sets the learning rate of group `group` (schedules call this).
    fn set_group_lr(&mut self, group: usize, lr: f64);

    /// The learning rate of the first group.
    fn lr(&self) -> f64 {
        self.group_lr(0)
    }

    /// Sets every group's learning rate.
    fn set_lr(&mut self, lr: f64) {
        for g in 0..self.num_groups() {
            self.set_group_lr(g, lr);
        }
    }

    /// The momentum-like hyper-parameter that one-cycle schedules cycle: SGD's and
    /// RMSprop's `momentum`, Adam's and Lion's `beta1`. `None` for optimizers without one.
    fn momentum(&self) -> Option<f64> {
        None
    }

    /// Sets that hyper-parameter.
    ///
    /// # Errors
    /// [`OptimError::Config`] for optimizers without one.
    fn set_momentum(&mut self, _momentum: f64) -> Result<()> {
        Err(config(
            "optimizer",
            "this optimizer has no momentum to cycle",
        ))
    }

    /// The per-parameter state and hyper-parameters (`optimizer.state_dict()`).
    fn state_dict(&self) -> OptimizerState<T>;

    /// Restores a state saved by [`state_dict`](Optimizer::state_dict), so that training
    /// continues exactly where it stopped.
    ///
    /// # Errors
    /// [`OptimError::State`] when the state is another optimizer's, or for parameters of
    /// other counts or shapes.
    fn load_state_dict(&mut self, state: &OptimizerState<T>) -> Result<()>;
}

/// One resolved group.
pub(crate) struct Group<T: Element> {
    pub(crate) params: Vec<Var<T>>,
    pub(crate) lr: f64,
    pub(crate) weight_decay: f64,
}

/// The per-parameter state of an update rule: a step count and `K` values per element,
/// one after another (`[s0[0..n], s1[0..n], …]`), each updated in the same single pass
/// over memory as the parameter and its gradient.
#[derive(Clone, Debug, Default)]
pub(crate) struct ParamState<T> {
    pub(crate) step: u64,
    pub(crate) values: Vec<T>,
}

/// What every optimizer holds: groups, per-parameter state, and the names of its state
/// entries (`K = names.len()`).
pub(crate) struct Core<T: Element> {
    pub(crate) name: &'static str,
    pub(crate) groups: Vec<Group<T>>,
    pub(crate) state: Vec<Option<ParamState<T>>>,
    pub(crate) state_names: &'static [&'static str],
}

/// Elements per parallel task; smaller parameters update on the calling thread.
const CHUNK: usize = 1 << 15;

pub(crate) fn check_lr(optimizer: &'static str, lr: f64) -> Result<()> {
    if !(lr >= 0.0 && lr.is_finite()) {
        return Err(config(optimizer, format!("invalid learning rate: {lr}")));
    }
    Ok(())
}

pub(crate) fn check_non_negative(optimizer: &'static str, what: &str, v: f64) -> Result<()> {
    if !(v >= 0.0 && v.is_finite()) {
        return Err(config(optimizer, format!("invalid {what} value: {v}")));
    }
    Ok(())
}

/// The hyper-parameter `key` of a loaded `state`, or `default` when the state lacks it
/// (files of older versions).
pub(crate) fn loaded_value<T: Element>(state: &OptimizerState<T>, key: &str, default: f64) -> f64 {
    state.hyper.get(key).copied().unwrap_or(default)
}

/// The flag `key` of a loaded `state` (stored as 0 or 1), or `default` when absent.
///
/// # Errors
/// [`OptimError::State`] for any other value (NaN or 0.5 is no flag; `!= 0` would read
/// them as true).
pub(crate) fn loaded_flag<T: Element>(
    optimizer: &'static str,
    state: &OptimizerState<T>,
    key: &str,
    default: bool,
) -> Result<bool> {
    match state.hyper.get(key) {
        None => Ok(default),
        Some(&0.0) => Ok(false),
        Some(&1.0) => Ok(true),
        Some(&v) => Err(OptimError::State {
            optimizer,
            msg: format!("the flag {key} is {v}, not 0 or 1"),
        }),
    }
}

/// A hyper-parameter check failed on a loaded state: the same message, as a state error
/// (a file written by hand or by another program is held to the constructor's rules).
pub(crate) fn invalid_loaded(e: OptimError) -> OptimError {
    match e {
        OptimError::Config { optimizer, msg } => OptimError::State {
            optimizer,
            msg: format!("its hyper-parameters are invalid: {msg}"),
        },
        other => other,
    }
}

pub(crate) fn check_beta(optimizer: &'static str, index: usize, beta: f64) -> Result<()> {
    if !(0.0..1.0).contains(&beta) {
        return Err(config(
            optimizer,
            format!("invalid beta parameter at index {index}: {beta}"),
        ));
    }
    Ok(())
}

impl<T: Element> Core<T> {
    pub(crate) fn new(
        name: &'static str,
        groups: Vec<ParamGroup<T>>,
        lr: f64,
        weight_decay: f64,
        state_names: &'static [&'static str],
    ) -> Result<Self> {
        check_lr(name, lr)?;
        check_non_negative(name, "weight_decay", weight_decay)?;
        let mut resolved = Vec::with_capacity(groups.len());
        for g in groups {
            let (glr, gwd) = (g.lr.unwrap_or(lr), g.weight_decay.unwrap_or(weight_decay));
            check_lr(name, glr)?;
            check_non_negative(name, "weight_decay", gwd)?;
            resolved.push(Group {
                params: g.params,
                lr: glr,
                weight_decay: gwd,
            });
        }
        let n: usize = resolved.iter().map(|g| g.params.len()).sum();
        if n == 0 {
            return Err(config(name, "optimizer got an empty parameter list"));
        }
        Ok(Core {
            name,
            groups: resolved,
            state: vec![None; n],
            state_names,
        })
    }

    pub(crate) fn zero_grad(&self) {
        for g in &self.groups {
            for p in &g.params {
                p.zero_grad();
            }
        }
    }

    /// Runs one update: for every parameter with a gradient, `make(group, step)` builds
    /// the element kernel `f(param, grad, state)` for this group and step (1 on the first
    /// update), applied in one fused pass; `init` is the value new state starts from.
    pub(crate) fn update<F, K>(&mut self, init: impl Fn(usize) -> T, make: K) -> Result<()>
    where
        K: Fn(&Group<T>, u64) -> F,
        F: Fn(&mut T, T, &mut [T]) + Sync + Send,
    {
        let k = self.state_names.len();
        let mut index = 0;
        for group in &self.groups {
            for p in &group.params {
                let slot = &mut self.state[index];
                index += 1;
                let Some(grad) = p.grad() else { continue };
                if grad.shape() != p.shape() {
                    return Err(OptimError::State {
                        optimizer: self.name,
                        msg: format!(
                            "gradient shape {:?} differs from parameter shape {:?}",
                            grad.shape(),
                            p.shape()
                        ),
                    });
                }
                let grad = grad.contiguous();
                let g = grad.as_slice().expect("contiguous");
                let state = slot.get_or_insert_with(|| ParamState {
                    step: 0,
                    values: (0..p.numel() * k)
                        .map(|i| init(i / p.numel().max(1)))
                        .collect(),
                });
                state.step += 1;
                let f = make(group, state.step);
                let values = &mut state.values;
                p.update_value(|t| {
                    fused(t.as_mut_slice(), g, values, k, &f);
                    Ok::<_, AutogradError>(())
                })?;
            }
        }
        Ok(())
    }

    pub(crate) fn state_dict(&self, hyper: BTreeMap<String, f64>) -> OptimizerState<T> {
        let mut tensors = Vec::new();
        let mut steps = BTreeMap::new();
        let mut index = 0;
        for group in &self.groups {
            for p in &group.params {
                if let Some(s) = &self.state[index] {
                    steps.insert(index, s.step);
                    for (j, name) in self.state_names.iter().enumerate() {
                        let n = p.numel();
                        let values: Vec<T> = s.values[j * n..(j + 1) * n].to_vec();
                        let t = Tensor::from_vec(values, p.shape())
                            .expect("state has the parameter's size");
                        tensors.push((format!("state.{index}.{name}"), t));
                    }
                }
                index += 1;
            }
        }
        OptimizerState {
            optimizer: self.name.to_string(),
            group_lrs: self.groups.iter().map(|g| g.lr).collect(),
            group_weight_decays: self.groups.iter().map(|g| g.weight_decay).collect(),
            group_sizes: self.groups.iter().map(|g| g.params.len()).collect(),
            hyper,
            steps,
            tensors,
        }
    }

    /// Loads groups' settings and per-parameter state with the state entries `names`
    /// (which the optimizer derives from the saved hyper-parameters); nothing changes on
    /// error.
    pub(crate) fn load_state_dict(
        &mut self,
        s: &OptimizerState<T>,
        names: &'static [&'static str],
    ) -> Result<()> {
        let fail = |msg: String| OptimError::State {
            optimizer: self.name,
            msg,
        };
        if s.optimizer != self.name {
            return Err(fail(format!("the state is of a {} optimizer", s.optimizer)));
        }
        let sizes: Vec<usize> = self.groups.iter().map(|g| g.params.len()).collect();
        if s.group_sizes != sizes {
            return Err(fail(format!(
                "the state has parameter groups of sizes {:?}, this optimizer {sizes:?}",
                s.group_sizes
            )));
        }
        if s.group_lrs.len() != sizes.len() || s.group_weight_decays.len() != sizes.len() {
            return Err(fail(format!(
                "the state lists {} learning rates and {} weight decays for {} groups",
                s.group_lrs.len(),
                s.group_weight_decays.len(),
                sizes.len()
            )));
        }
        // The constructor's rules hold for loaded values too: a NaN or negative learning
        // rate from a hand-edited file would otherwise train silently into NaNs.
        for (&lr, &wd) in s.group_lrs.iter().zip(&s.group_weight_decays) {
            check_lr(self.name, lr).map_err(invalid_loaded)?;
            check_non_negative(self.name, "weight_decay", wd).map_err(invalid_loaded)?;
        }
        if let Some(&index) = s.steps.keys().find(|&&i| i >= sizes.iter().sum()) {
            return Err(fail(format!(
                "the state has a step count for parameter {index}, this optimizer has {}",
                sizes.iter().sum::<usize>()
            )));
        }
        let k = names.len();
        let params: Vec<&Var<T>> = self.groups.iter().flat_map(|g| &g.params).collect();
        let mut new_state: Vec<Option<ParamState<T>>> = vec![None; params.len()];
        for (index, p) in params.iter().enumerate() {
            let Some(&step) = s.steps.get(&index) else {
                if let Some(key) = names
                    .iter()
                    .map(|name| format!("state.{index}.{name}"))
                    .find(|key| s.get(key).is_some())
                {
                    return Err(fail(format!("{key} is there but its step count is not")));
                }
                continue;
            };
            if step == 0 {
                return Err(fail(format!(
                    "parameter {index} has state but a step count of 0"
                )));
            }
            let mut values = vec![T::zero(); p.numel() * k];
            for (j, name) in names.iter().enumerate() {
                let key = format!("state.{index}.{name}");
                let t = s
                    .get(&key)
                    .ok_or_else(|| fail(format!("{key} is missing")))?;
                if t.shape() != p.shape() {
                    return Err(fail(format!(
                        "{key} has shape {:?} but parameter {index} has shape {:?}",
                        t.shape(),
                        p.shape()
                    )));
                }
                for (i, v) in t.to_vec().into_iter().enumerate() {
                    if !v.is_finite() {
                        return Err(fail(format!("{key} holds {v} at element {i}")));
                    }
                    values[j * p.numel() + i] = v;
                }
            }
            new_state[index] = Some(ParamState { step, values });
        }
        self.state = new_state;
        self.state_names = names;
        for (g, (&lr, &wd)) in self
            .groups
            .iter_mut()
            .zip(s.group_lrs.iter().zip(&s.group_weight_decays))
        {
            g.lr = lr;
            g.weight_decay = wd;
        }
        Ok(())
    }
}

/// `f(param, grad, state)` over every element, in one pass; `state` holds `k` runs of
/// `p.len()` values and `f` sees element `i` of each. Large parameters are split into
/// chunks updated in parallel.
fn fused<T: Element>(
    p: &mut [T],
    g: &[T],
    state: &mut [T],
    k: usize,
    f: &(impl Fn(&mut T, T, &mut [T]) + Sync),
) {
    match k {
        0 => fused_k::<T, 0>(p, g, state, f),
        1 => fused_k::<T, 1>(p, g, state, f),
        2 => fused_k::<T, 2>(p, g, state, f),
        3 => fused_k::<T, 3>(p, g, state, f),
        _ => unreachable!("update rules keep at most three state values per element"),
    }
}

fn fused_k<T: Element, const K: usize>(
    p: &mut [T],
    g: &[T],
    state: &mut [T],
    f: &(impl Fn(&mut T, T, &mut [T]) + Sync),
) {
    let n = p.len();
    // One slice per state value, then the same chunk boundaries for everything.
    let mut runs: Vec<&mut [T]> = state.chunks_mut(n.max(1)).collect();
    runs.resize_with(K, || &mut []);
    // Zipped iterators per arity, so the loop has no bounds checks and vectorises.
    let run = |p: &mut [T], g: &[T], mut s: Vec<&mut [T]>| match s.as_mut_slice() {
        [] => p.iter_mut().zip(g).for_each(|(p, &g)| f(p, g, &mut [])),
        [a] => p
            .iter_mut()
            .zip(g)
            .zip(a.iter_mut())
            .for_each(|((p, &g), a)| {
                let mut v = [*a];
                f(p, g, &mut v);
                *a = v[0];
            }),
        [a, b] => p
            .iter_mut()
            .zip(g)
            .zip(a.iter_mut().zip(b.iter_mut()))
            .for_each(|((p, &g), (a, b))| {
                let mut v = [*a, *b];
                f(p, g, &mut v);
                (*a, *b) = (v[0], v[1]);
            }),
        [a, b, c] => p
            .iter_mut()
            .zip(g)
            .zip(a.iter_mut().zip(b.iter_mut()).zip(c.iter_mut()))
            .for_each(|((p, &g), ((a, b), c))| {
                let mut v = [*a, *b, *c];
                f(p, g, &mut v);
                (*a, *b, *c) = (v[0], v[1], v[2]);
            }),
        _ => unreachable!("at most three state values"),
    };
    if n <= CHUNK {
        run(p, g, runs);
        return;
    }
    let mut tasks = Vec::with_capacity(n.div_ceil(CHUNK));
    let (mut p, mut g) = (p, g);
    while !p.is_empty() {
        let len = CHUNK.min(p.len());
        let (ph, pt) = p.split_at_mut(len);
        let (gh, gt) = g.split_at(len);
        let mut heads = Vec::with_capacity(K);
        let mut tails = Vec::with_capacity(K);
        for r in runs {
            let (h, t) = r.split_at_mut(len);
            heads.push(h);
            tails.push(t);
        }
        tasks.push((ph, gh, heads));
        (p, g, runs) = (pt, gt, tails);
    }
    strata_tensor::parallel_map(tasks, |(p, g, s)| run(p, g, s));
}

/// Implements the group and lr parts of [`Optimizer`] by delegating to `self.core`.
macro_rules! delegate_groups {
    () => {
        fn zero_grad(&self) {
            self.core.zero_grad();
        }
        fn num_groups(&self) -> usize {
            self.core.groups.len()
        }
        fn group_lr(&self, group: usize) -> f64 {
            self.core.groups[group].lr
        }
        fn set_group_lr(&mut self, group: usize, lr: f64) {
            self.core.groups[group].lr = lr;
        }
    };
}
pub(crate) use delegate_groups;
