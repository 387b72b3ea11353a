//! [`Reducer`]: averages the gradients of a module's parameters over the ranks during the
//! backward, in buckets, overlapping communication with the rest of the walk.
//!
//! The life of a step, for a bucket `b` of parameters:
//!
//! 1. Each parameter of `b` gets its gradient from the backward walk; its
//!    post-accumulate-grad hook marks it ready (`pending[b]` counts down).
//! 2. When `pending[b]` reaches 0 and every bucket before `b` has been launched (buckets go
//!    out in order, so that every rank starts the same all-reduces in the same order), the
//!    hook launches `b`: it hands the gradients (cheap handles) to the communication thread,
//!    which copies them into one flat buffer, sums it over the ranks with a non-blocking
//!    all-reduce that it keeps testing, divides by the world size, and sends back one view
//!    of the averaged buffer per parameter. The walk meanwhile goes on with the layers below.
//! 3. Any hook that runs later writes back the buckets that have come back by then
//!    (`Var::set_grad`); the hook that launches the last bucket waits for the rest, so
//!    that when `backward()` returns every `.grad` is the average over the ranks, as in
//!    PyTorch.
//!
//! Parameters that get no gradient: with `find_unused_parameters`, the forward's graph is
//! walked once ([`Var::reachable_leaves`]) and the parameters it does not reach are marked
//! ready at once, contributing zeros (with a per-parameter count of the ranks that did use
//! it, all-reduced with the bucket: a parameter no rank used keeps no gradient). Without
//! it, a bucket that never fills stops the reduction, and the next forward (or hook) says
//! which parameters got no gradient, as PyTorch does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use strata_autograd::{HookHandle, Var};
use strata_nn::{Module, StateKind};
use strata_tensor::{Element, Tensor};

use super::DdpConfig;
use super::buckets::{self, Bucket};
use super::check;
use crate::buffer::{element_buffer, element_values};
use crate::comm::{Collectives, Communicator};
use crate::{DistributedError, ReduceOp, Result};

/// What a [`Reducer`] has measured since it was made (or since
/// [`reset_stats`](Reducer::reset_stats)): the basis of the overlap figure of the
/// benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReducerStats {
    /// Steps whose reduction completed.
    pub steps: usize,
    /// Buckets all-reduced.
    pub buckets: usize,
    /// Seconds the communication thread spent on buckets: from taking a bucket up to
    /// handing its averages back (copying, the all-reduce including any wait for slower
    /// ranks, the division).
    pub comm_seconds: f64,
    /// Seconds the backward waited for buckets after the last one was launched: the
    /// communication the backward did not hide.
    pub exposed_seconds: f64,
    /// Gradient elements all-reduced.
    pub elements: usize,
}

/// A bucket's averaged gradients, back from the communication thread.
struct Reduced<T: Element> {
    bucket: usize,
    grads: Result<Vec<Option<Tensor<T>>>>,
    seconds: f64,
}

/// The state of the step under way.
struct Step<T: Element> {
    /// Parameters whose gradient is final for this step.
    ready: Vec<bool>,
    /// Parameters marked unused by the forward (they contribute zeros).
    unused: Vec<bool>,
    /// Per bucket: parameters not ready yet.
    pending: Vec<usize>,
    /// The next bucket to launch.
    next: usize,
    /// Buckets written back.
    collected: usize,
    sender: Sender<Reduced<T>>,
    receiver: Receiver<Reduced<T>>,
    /// An error of a hook, in a world of one (in a world of several it aborts the job).
    error: Option<DistributedError>,
    stats: ReducerStats,
}

/// What the hooks share with the [`Reducer`].
struct Shared<T: Element> {
    comm: Communicator,
    params: Vec<Var<T>>,
    names: Vec<String>,
    buffers: Vec<Var<T>>,
    buckets: Vec<Bucket>,
    bucket_of: Vec<usize>,
    config: DdpConfig,
    sync: AtomicBool,
    step: Mutex<Step<T>>,
}

/// The gradient averaging of [`DistributedDataParallel`](crate::DistributedDataParallel),
/// attached to a module's parameters without owning the module: for models with several
/// forward methods, or a training loop that keeps its model as it is. On construction it
/// checks that every rank has the same model and gives every rank rank 0's parameters and
/// buffers; from then on, every backward that reaches the parameters leaves them with
/// gradients averaged over the ranks. Dropping it takes its hooks off.
///
/// ```
/// use strata_distributed::{Communicator, DdpConfig, Reducer};
/// use strata_nn::{Forward, Linear, Module};
/// use strata_autograd::Var;
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let model = Linear::new(3, 2, true, &mut seeded_rng(0));
/// let reducer = Reducer::new(&model, &Communicator::alone(), &DdpConfig::default())?;
/// let x = Var::new(Tensor::<f32>::ones(&[4, 3]));
/// model.forward(&x)?.sum_all().backward()?; // .grad: the average over the ranks
/// assert_eq!(reducer.stats().steps, 1);
/// # Ok::<(), strata_distributed::DistributedError>(())
/// ```
pub struct Reducer<T: Element = f32> {
    shared: Arc<Shared<T>>,
    hooks: Vec<HookHandle>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T: Element> Reducer<T> {
    /// Attaches to `module`'s parameters that require grad: checks that every rank has the
    /// same parameters and buffers (names, kinds, shapes, element type, in order), copies
    /// rank 0's values to every rank, cuts the parameters into buckets (reverse
    /// registration order, `config`'s caps), and hooks every parameter. Every rank must
    /// call it.
    ///
    /// # Errors
    /// [`DistributedError::ModelMismatch`] (on every rank) naming the first difference
    /// between the lowest differing rank's model and rank 0's;
    /// [`DistributedError::Config`] for a negative bucket cap; communication errors.
    pub fn new<M: Module<T> + ?Sized>(
        module: &M,
        comm: &Communicator,
        config: &DdpConfig,
    ) -> Result<Self> {
        if !(config.bucket_cap_mb >= 0.0 && config.first_bucket_cap_mb >= 0.0) {
            return Err(DistributedError::Config(format!(
                "bucket caps must be non-negative, got {} MB and {} MB (first bucket)",
                config.bucket_cap_mb, config.first_bucket_cap_mb
            )));
        }
        check::check_same(comm, &check::describe(module))?;
        let mut params = Vec::new();
        let mut names = Vec::new();
        let mut all = Vec::new();
        let mut buffers = Vec::new();
        module.visit_state(&mut |name, var, kind| {
            all.push(var.clone());
            match kind {
                StateKind::Parameter if var.needs_grad() => {
                    params.push(var.clone());
                    names.push(name.to_string());
                }
                StateKind::Parameter => {}
                StateKind::Buffer | StateKind::Counter => buffers.push(var.clone()),
            }
        });
        check::broadcast_values(comm, &all, 0)?;
        let numels: Vec<usize> = params.iter().map(Var::numel).collect();
        let order: Vec<usize> = (0..params.len()).rev().collect();
        let buckets = buckets::assign(
            &order,
            &numels,
            T::DTYPE.size_in_bytes(),
            buckets::mib(config.first_bucket_cap_mb),
            buckets::mib(config.bucket_cap_mb),
        );
        let mut bucket_of = vec![0; params.len()];
        for (b, bucket) in buckets.iter().enumerate() {
            for &i in &bucket.members {
                bucket_of[i] = b;
            }
        }
        let (sender, receiver) = mpsc::channel();
        let step = Step {
            ready: vec![false; params.len()],
            unused: vec![false; params.len()],
            pending: buckets.iter().map(|b| b.members.len()).collect(),
            next: 0,
            collected: 0,
            sender,
            receiver,
            error: None,
            stats: ReducerStats::default(),
        };
        let shared = Arc::new(Shared {
            comm: comm.clone(),
            params,
            names,
            buffers,
            buckets,
            bucket_of,
            config: *config,
            sync: AtomicBool::new(true),
            step: Mutex::new(step),
        });
        let mut hooks = Vec::with_capacity(shared.params.len());
        for (i, p) in shared.params.iter().enumerate() {
            let weak: Weak<Shared<T>> = Arc::downgrade(&shared);
            hooks.push(p.register_post_accumulate_grad_hook(move |_| {
                if let Some(shared) = weak.upgrade() {
                    shared.on_ready(i);
                }
            })?);
        }
        Ok(Reducer { shared, hooks })
    }

    /// The communicator the gradients are averaged over.
    pub fn comm(&self) -> &Communicator {
        &self.shared.comm
    }

    /// The parameters' names, bucket by bucket, in the order the buckets are all-reduced.
    pub fn buckets(&self) -> Vec<Vec<String>> {
        self.shared
            .buckets
            .iter()
            .map(|b| {
                b.members
                    .iter()
                    .map(|&i| self.shared.names[i].clone())
                    .collect()
            })
            .collect()
    }

    /// Runs `f` without averaging gradients (`ddp.no_sync()`): backward passes inside
    /// accumulate each rank's own gradients, and the first backward outside averages the
    /// accumulated sums. For gradient accumulation over several micro-batches at the cost
    /// of one all-reduce.
    pub fn no_sync<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore<'a>(&'a AtomicBool, bool);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.0.store(self.1, Ordering::SeqCst);
            }
        }
        let _restore = Restore(
            &self.shared.sync,
            self.shared.sync.swap(false, Ordering::SeqCst),
        );
        f()
    }

    /// What it has measured so far.
    pub fn stats(&self) -> ReducerStats {
        lock(&self.shared.step).stats
    }

    /// Starts measuring afresh.
    pub fn reset_stats(&self) {
        lock(&self.shared.step).stats = ReducerStats::default();
    }

    /// What [`DistributedDataParallel`](crate::DistributedDataParallel)'s forward does
    /// before the module's: reports a reduction the previous backward left unfinished and
    /// a hook's error, and broadcasts rank 0's buffers (`broadcast_buffers`).
    ///
    /// # Errors
    /// [`DistributedError::UnfinishedReduction`] naming the parameters that got no gradient;
    /// communication errors.
    pub fn before_forward(&self) -> Result<()> {
        {
            let mut step = lock(&self.shared.step);
            if let Some(e) = step.error.take() {
                return Err(e);
            }
            let hooked = step.ready.iter().zip(&step.unused).any(|(&r, &u)| r && !u);
            if step.ready.iter().any(|&r| r) {
                // Take back what is on its way, so that the communication stays in step.
                let missing = self.shared.not_ready(&step);
                let launched = step.next;
                self.shared.collect(&mut step, launched, true)?;
                self.shared.reset(&mut step);
                // Only parameters the last forward found unused: a forward without a
                // backward (an evaluation with grad mode on), nothing to report.
                if hooked {
                    return Err(DistributedError::UnfinishedReduction(missing));
                }
            }
        }
        if self.shared.config.broadcast_buffers && !self.shared.buffers.is_empty() {
            check::broadcast_values(&self.shared.comm, &self.shared.buffers, 0)?;
        }
        Ok(())
    }

    /// What [`DistributedDataParallel`](crate::DistributedDataParallel)'s forward does
    /// after the module's, with `find_unused_parameters`: marks the parameters `output`'s
    /// graph does not reach as ready, so that their buckets do not wait for them.
    ///
    /// # Errors
    /// A graph freed by an earlier backward.
    pub fn after_forward(&self, output: &Var<T>) -> Result<()> {
        if !self.shared.config.find_unused_parameters
            || !self.shared.sync.load(Ordering::SeqCst)
            || !output.needs_grad()
        {
            return Ok(());
        }
        let reached: std::collections::HashSet<u64> =
            output.reachable_leaves()?.iter().map(Var::id).collect();
        let mut step = lock(&self.shared.step);
        for (i, p) in self.shared.params.iter().enumerate() {
            if !reached.contains(&p.id()) && !step.ready[i] {
                step.unused[i] = true;
                self.shared.mark(&mut step, i);
            }
        }
        self.shared.advance(&mut step)
    }
}

impl<T: Element> Drop for Reducer<T> {
    fn drop(&mut self) {
        for h in self.hooks.drain(..) {
            h.remove();
        }
    }
}

impl<T: Element> std::fmt::Debug for Reducer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reducer")
            .field("comm", &self.shared.comm)
            .field("buckets", &self.buckets())
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<T: Element> Shared<T> {
    /// The hook of parameter `i`.
    fn on_ready(&self, i: usize) {
        if !self.sync.load(Ordering::SeqCst) {
            return;
        }
        let mut step = lock(&self.step);
        let result = if step.ready[i] {
            // A second gradient for the same parameter in one step: the previous backward
            // left buckets unlaunched (or a parameter the forward thought unused got one).
            let missing = self.not_ready(&step);
            if missing.is_empty() {
                Err(DistributedError::Config(format!(
                    "parameter {} got a gradient twice in one step (used outside the forward \
                     that DistributedDataParallel saw?)",
                    self.names[i]
                )))
            } else {
                Err(DistributedError::UnfinishedReduction(missing))
            }
        } else {
            self.mark(&mut step, i);
            self.advance(&mut step)
        };
        if let Err(e) = result {
            self.fail(&mut step, e);
        }
    }

    fn not_ready(&self, step: &Step<T>) -> Vec<String> {
        step.ready
            .iter()
            .zip(&self.names)
            .filter(|(r, _)| !**r)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// An error inside a hook, which cannot return one: in a world of several the job
    /// ends (the other ranks would wait for this one's buckets forever); in a world of one
    /// it waits for the next forward.
    fn fail(&self, step: &mut Step<T>, e: DistributedError) {
        if self.comm.size() > 1 {
            eprintln!(
                "error (rank {} of {}): gradient reduction: {e}",
                self.comm.rank(),
                self.comm.size()
            );
            self.comm.abort(1);
        }
        self.reset(step);
        step.error = Some(e);
    }

    fn mark(&self, step: &mut Step<T>, i: usize) {
        step.ready[i] = true;
        step.pending[self.bucket_of[i]] -= 1;
    }

    /// Launches the buckets that are ready, in order; writes back those that came back;
    /// after the last launch, waits for all and ends the step.
    fn advance(&self, step: &mut Step<T>) -> Result<()> {
        while step.next < self.buckets.len() && step.pending[step.next] == 0 {
            self.launch(step, step.next)?;
            step.next += 1;
        }
        let launched = step.next;
        self.collect(step, launched, false)?;
        if step.next == self.buckets.len() {
            let start = Instant::now();
            self.collect(step, launched, true)?;
            step.stats.exposed_seconds += start.elapsed().as_secs_f64();
            step.stats.steps += 1;
            self.reset(step);
        }
        Ok(())
    }

    fn reset(&self, step: &mut Step<T>) {
        step.ready.iter_mut().for_each(|r| *r = false);
        step.unused.iter_mut().for_each(|u| *u = false);
        for (p, b) in step.pending.iter_mut().zip(&self.buckets) {
            *p = b.members.len();
        }
        step.next = 0;
        step.collected = 0;
    }

    /// Hands bucket `b` to the communication thread.
    fn launch(&self, step: &mut Step<T>, b: usize) -> Result<()> {
        let bucket = &self.buckets[b];
        let grads: Vec<Option<Tensor<T>>> = bucket
            .members
            .iter()
            .map(|&i| {
                if step.unused[i] {
                    None
                } else {
                    self.params[i].grad()
                }
            })
            .collect();
        let shapes: Vec<Vec<usize>> = bucket
            .members
            .iter()
            .map(|&i| self.params[i].shape().to_vec())
            .collect();
        let job = BucketJob {
            bucket: b,
            grads,
            shapes,
            offsets: bucket.offsets.clone(),
            numel: bucket.numel,
            count_users: self.config.find_unused_parameters,
            size: self.comm.size(),
            comm: self.comm.id(),
        };
        let sender = step.sender.clone();
        step.stats.elements += bucket.numel;
        self.comm.submit(Box::new(move |c: &mut dyn Collectives| {
            let start = Instant::now();
            let bucket = job.bucket;
            let grads = job.run(c);
            // The receiver lives as long as the reducer; a send fails only after it is gone.
            let _ = sender.send(Reduced {
                bucket,
                grads,
                seconds: start.elapsed().as_secs_f64(),
            });
        }))
    }

    /// Writes back the buckets that have come back, up to `launched`; with `block`, waits
    /// for all of them.
    fn collect(&self, step: &mut Step<T>, launched: usize, block: bool) -> Result<()> {
        while step.collected < launched {
            let reduced = if block {
                step.receiver
                    .recv()
                    .map_err(|_| DistributedError::Stopped("a gradient bucket was lost".into()))?
            } else {
                match step.receiver.try_recv() {
                    Ok(r) => r,
                    Err(TryRecvError::Empty) => return Ok(()),
                    Err(TryRecvError::Disconnected) => {
                        return Err(DistributedError::Stopped(
                            "a gradient bucket was lost".into(),
                        ));
                    }
                }
            };
            debug_assert_eq!(reduced.bucket, step.collected, "buckets come back in order");
            step.collected += 1;
            step.stats.buckets += 1;
            step.stats.comm_seconds += reduced.seconds;
            let members = &self.buckets[reduced.bucket].members;
            for (&i, grad) in members.iter().zip(reduced.grads?) {
                // A parameter no rank used keeps no gradient, as in PyTorch.
                if let Some(g) = grad {
                    self.params[i].set_grad(Some(g))?;
                }
            }
        }
        Ok(())
    }
}

/// One bucket's all-reduce, as the communication thread runs it.
struct BucketJob<T: Element> {
    bucket: usize,
    /// The gradients, `None` for parameters without one (they contribute zeros).
    grads: Vec<Option<Tensor<T>>>,
    shapes: Vec<Vec<usize>>,
    offsets: Vec<usize>,
    numel: usize,
    /// Append one count per parameter (1 where this rank has a gradient), summed with the
    /// bucket, so that a parameter no rank used can keep no gradient.
    count_users: bool,
    size: usize,
    comm: usize,
}

impl<T: Element> BucketJob<T> {
    fn run(self, c: &mut dyn Collectives) -> Result<Vec<Option<Tensor<T>>>> {
        let extra = if self.count_users {
            self.grads.len()
        } else {
            0
        };
        let mut flat: Vec<T> = Vec::with_capacity(self.numel + extra);
        for (g, shape) in self.grads.iter().zip(&self.shapes) {
            match g {
                Some(t) => {
                    let t = t.contiguous();
                    match t.as_slice() {
                        Some(s) => flat.extend_from_slice(s),
                        None => flat.extend(t.to_vec()),
                    }
                }
                None => flat.resize(flat.len() + shape.iter().product::<usize>(), T::zero()),
            }
        }
        if self.count_users {
            flat.extend(
                self.grads
                    .iter()
                    .map(|g| if g.is_some() { T::one() } else { T::zero() }),
            );
        }
        let mut buffer = element_buffer(flat)?;
        c.all_reduce(self.comm, &mut buffer, ReduceOp::Sum)?;
        let mut flat: Vec<T> = element_values(buffer)?;
        // The average, as PyTorch's default communication hook (a division by the world
        // size; exact for a world of one).
        let n = T::from_usize(self.size);
        if self.size > 1 {
            for v in &mut flat[..self.numel] {
                *v /= n;
            }
        }
        let users = flat.split_off(self.numel);
        let all = Tensor::from_vec(flat, &[self.numel])?;
        let mut out = Vec::with_capacity(self.shapes.len());
        for (k, (shape, &offset)) in self.shapes.iter().zip(&self.offsets).enumerate() {
            if self.count_users && users[k] == T::zero() {
                out.push(None);
                continue;
            }
            let len = shape.iter().product::<usize>();
            // A view of the bucket's buffer: no copy.
            out.push(Some(all.narrow(0, offset, len)?.reshape(shape.as_slice())?));
        }
        Ok(out)
    }
}
