//! A team of helper threads for the fork-joins of a caller outside rayon's pool (the
//! program's main thread, in a training loop).
//!
//! Handing a job to rayon from outside its pool costs the caller a trip through the
//! global queue and a sleep on a lock until the last task ends; when the workers have
//! gone to sleep between two parallel ops, each fork-join costs tens of microseconds
//! (measured on the 2-core reference machine: 6 µs back to back, 30 µs with 20 µs of
//! serial work between two fork-joins), while one thread's share of a 256³ product
//! takes about 90 µs. A training step runs dozens of them.
//!
//! The team does what OpenMP runtimes do: `threads − 1` helpers wait for work by spinning
//! for a short while ([`SPIN`]) after each job, then sleep; the caller publishes a job,
//! runs tasks itself beside the helpers, and waits for those that joined (not for those
//! asleep: a task is claimed from a counter, never assigned). A fork-join then costs
//! about a microsecond.
//!
//! The tasks are cut into one contiguous span per thread, each with its own counter, as
//! OpenMP's static schedule cuts them: thread `p` claims the tasks of span `p` in order,
//! then helps with the others' spans. Consecutive tasks cover consecutive memory in most
//! kernels, so each core streams through its own region, far from the other's. Claimed
//! from one shared counter instead, the two cores took alternate chunks of neighbouring
//! memory, and an in-place add of 16 Mi floats in 64 chunks took 2.6 ms against 2.3 ms
//! in spans (measured in a standalone probe, 8 interleaved rounds; halves without the
//! help took 2.5 ms, waiting for the slower core).
//!
//! Rules that keep it sound and free of deadlocks:
//! - one caller at a time owns the team; a second caller (another thread, or a task of
//!   the running job that forks again) runs its tasks on its own thread instead of
//!   waiting;
//! - a helper enters a job through a gate that the caller closes when every task has
//!   been claimed; the caller returns only once every helper that entered has left, so
//!   no helper touches the job (which borrows the caller's stack) after `run` returns;
//! - a task's panic is caught where it happens, the remaining tasks are skipped, and the
//!   panic resumes on the caller once every helper has left.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How long a helper keeps looking for the next job before it sleeps. Long enough to
/// span the serial work between the parallel ops of a training step, short enough that
/// an idle program (or another process wanting the core) loses little.
const SPIN: Duration = Duration::from_micros(200);

/// The gate's bit that says the current job takes no more helpers; the other bits count
/// the helpers inside it.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// A job: `task(i)` for `i` in `0..n`, the task's lifetime erased (see [`Team::run`]).
#[derive(Clone, Copy)]
struct Job {
    task: *const (dyn Fn(usize) + Sync + 'static),
    n: usize,
}

// SAFETY: the task is `Sync`, and `Team::run` keeps it alive while any helper can reach
// it (the gate).
unsafe impl Send for Job {}

/// The team: its helpers' shared state.
pub(crate) struct Team {
    /// Helpers started (set once, before the team is handed out).
    helpers: AtomicUsize,
    /// Held by the caller that owns the team.
    owned: AtomicBool,
    /// Bumped once per job; helpers wait for it to change.
    epoch: AtomicU64,
    /// [`CLOSED`] and the number of helpers inside the job.
    gate: AtomicUsize,
    /// Per participant (the caller is 0, helper `h` is `h`), the tasks of its span claimed
    /// so far; each on its own cache line.
    spans: Box<[Counter]>,
    /// The current job, written only while the gate is closed and empty.
    job: Mutex<Option<Job>>,
    /// The first panic of the current job's tasks.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Helpers asleep (or about to be) on `wake`.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
}

/// The team for `threads` threads (the caller and `threads − 1` helpers), started on
/// first use; `None` when `threads < 2` or no helper could be started.
pub(crate) fn get(threads: usize) -> Option<&'static Team> {
    static TEAM: OnceLock<Option<&'static Team>> = OnceLock::new();
    let team = *TEAM.get_or_init(|| start(threads));
    team.filter(|t| t.helpers.load(Ordering::Relaxed) + 1 == threads)
}

fn start(threads: usize) -> Option<&'static Team> {
    if threads < 2 {
        return None;
    }
    let team: &'static Team = Box::leak(Box::new(Team {
        helpers: AtomicUsize::new(0),
        owned: AtomicBool::new(false),
        epoch: AtomicU64::new(0),
        gate: AtomicUsize::new(CLOSED),
        spans: (0..threads).map(|_| Counter::default()).collect(),
        job: Mutex::new(None),
        panic: Mutex::new(None),
        sleepers: AtomicUsize::new(0),
        sleep: Mutex::new(()),
        wake: Condvar::new(),
    }));
    let mut started = 0;
    for h in 0..threads - 1 {
        let spawned = std::thread::Builder::new()
            .name(format!("strata-team-{}", h + 1))
            .spawn(move || team.serve(h + 1));
        if spawned.is_ok() {
            started += 1;
        }
    }
    team.helpers.store(started, Ordering::Relaxed);
    (started > 0).then_some(team)
}

impl Team {
    /// Runs `task(i)` for every `i` in `0..n` on the caller and the helpers, returning
    /// once all have run (a task's panic resumes here). Returns `false`, running nothing,
    /// when another caller owns the team.
    pub(crate) fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) -> bool {
        if self.owned.swap(true, Ordering::Acquire) {
            return false;
        }
        // SAFETY: the erased lifetime is never outlived: helpers reach the task only
        // inside the gate, and the `Finish` guard below (also on unwinding) closes
        // the gate and waits until no helper is inside before this borrow ends.
        let task: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(task) };
        let job = Job { task, n };
        *lock(&self.job) = Some(job);
        for c in &self.spans {
            c.0.store(0, Ordering::Relaxed);
        }
        // Open the gate (helpers that knock while it is closed leave without reading the
        // job), then announce the job.
        self.gate.fetch_and(!CLOSED, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = lock(&self.sleep);
            self.wake.notify_all();
        }
        let guard = Finish(self);
        self.work(job, 0);
        drop(guard);
        let panic = lock(&self.panic).take();
        self.owned.store(false, Ordering::Release);
        if let Some(p) = panic {
            resume_unwind(p);
        }
        true
    }

    /// Claims and runs tasks of `job` as participant `me`, its own span first, then the
    /// others' in turn, until none is left or one has panicked.
    fn work(&self, job: Job, me: usize) {
        // SAFETY: the job is alive while its gate lets this thread in (`run`).
        let task = unsafe { &*job.task };
        let parts = self.participants();
        for q in 0..parts {
            let p = (me + q) % parts;
            let (start, end) = (span_start(p, parts, job.n), span_start(p + 1, parts, job.n));
            loop {
                let i = start.saturating_add(self.spans[p].0.fetch_add(1, Ordering::Relaxed));
                if i >= end {
                    break;
                }
                if let Err(e) = catch_unwind(AssertUnwindSafe(|| task(i))) {
                    lock(&self.panic).get_or_insert(e);
                    for c in &self.spans {
                        c.0.fetch_max(job.n, Ordering::Relaxed);
                    }
                    return;
                }
            }
        }
    }

    /// The caller and the helpers started (at most one per span counter).
    fn participants(&self) -> usize {
        (self.helpers.load(Ordering::Relaxed) + 1).min(self.spans.len())
    }

    /// A helper's life: wait for a job, help with it, repeat.
    fn serve(&'static self, me: usize) {
        let mut seen = 0;
        loop {
            seen = self.next_epoch(seen);
            let inside = self.gate.fetch_add(1, Ordering::Acquire);
            if inside & CLOSED == 0 {
                let job = *lock(&self.job);
                if let Some(job) = job {
                    self.work(job, me);
                }
            }
            self.gate.fetch_sub(1, Ordering::Release);
        }
    }

    /// Waits until the epoch differs from `seen` and returns it: spinning for [`SPIN`]
    /// (yielding the core every microsecond or so, in case another thread wants it),
    /// then asleep until `run` wakes the team.
    fn next_epoch(&self, seen: u64) -> u64 {
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            let e = self.epoch.load(Ordering::Acquire);
            if e != seen {
                return e;
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(16) {
                if start.elapsed() > SPIN {
                    break;
                }
                // Every microsecond or so, let a thread that shares this core run (the
                // caller itself, when the scheduler put both on one core).
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        let mut g = lock(&self.sleep);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        loop {
            let e = self.epoch.load(Ordering::SeqCst);
            if e != seen {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return e;
            }
            g = self.wake.wait(g).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The first task of span `p` of `n` tasks cut into `parts` spans (`n` for `p = parts`).
fn span_start(p: usize, parts: usize, n: usize) -> usize {
    // p ≤ parts, so the quotient is at most n and fits.
    (p as u128 * n as u128 / parts as u128) as usize
}

/// A task counter alone on its cache line (64 bytes; 128 on the CPUs whose adjacent-line
/// prefetcher pairs lines), so that two threads' claims do not contend.
#[derive(Default)]
#[repr(align(128))]
struct Counter(AtomicUsize);

/// Closes the gate of the owner's job and waits until no helper is inside it; runs on
/// the owner's unwinding too, so the borrowed task outlives every use.
struct Finish<'a>(&'a Team);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let team = self.0;
        team.gate.fetch_or(CLOSED, Ordering::AcqRel);
        let mut polls = 0u32;
        while team.gate.load(Ordering::Acquire) & !CLOSED != 0 {
            // A helper inside may have been preempted: let it have the core.
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        *lock(&team.job) = None;
    }
}

/// Locks `m`, ignoring poisoning (no code panics while holding these locks).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A private team of `threads` threads (its helpers live until the test binary ends).
    fn team(threads: usize) -> &'static Team {
        start(threads).expect("helpers start")
    }

    #[test]
    fn every_task_runs_exactly_once() {
        let t = team(3);
        for n in [0, 1, 2, 3, 7, 64, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            assert!(t.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            }));
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
    }

    /// Each thread starts in its own span: the caller at task 0, a helper (whenever it
    /// joins) in the second half; within a span, tasks are taken in ascending order.
    #[test]
    fn threads_start_in_their_own_span() {
        let t = team(2);
        let caller = std::thread::current().id();
        for n in [2, 9, 64] {
            let order = Mutex::new(Vec::new());
            assert!(t.run(n, &|i| {
                order
                    .lock()
                    .unwrap()
                    .push((std::thread::current().id() == caller, i));
                std::thread::sleep(Duration::from_micros(100));
            }));
            let order = order.into_inner().unwrap();
            let mine: Vec<usize> = order.iter().filter(|o| o.0).map(|o| o.1).collect();
            let theirs: Vec<usize> = order.iter().filter(|o| !o.0).map(|o| o.1).collect();
            assert_eq!(mine.first(), Some(&0), "n = {n}: {order:?}");
            assert!(
                theirs.first().is_none_or(|&i| i >= n / 2),
                "n = {n}: {order:?}"
            );
            for seq in [&mine, &theirs] {
                let (low, high): (Vec<usize>, Vec<usize>) = seq.iter().partition(|&&i| i < n / 2);
                assert!(low.is_sorted() && high.is_sorted(), "n = {n}: {order:?}");
            }
            assert_eq!(mine.len() + theirs.len(), n);
        }
    }

    #[test]
    fn helpers_share_the_work_and_wake_after_sleeping() {
        let t = team(2);
        let caller = std::thread::current().id();
        for round in 0..3 {
            if round > 0 {
                // Longer than SPIN: the helper has gone to sleep.
                std::thread::sleep(SPIN * 20);
            }
            let helped = AtomicBool::new(false);
            let sum = AtomicU64::new(0);
            assert!(t.run(64, &|i| {
                if std::thread::current().id() != caller {
                    helped.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(200));
                sum.fetch_add(i as u64, Ordering::Relaxed);
            }));
            assert_eq!(sum.load(Ordering::Relaxed), 64 * 63 / 2);
            assert!(
                helped.load(Ordering::Relaxed),
                "round {round}: no helper took a task"
            );
        }
    }

    #[test]
    fn a_task_panic_resumes_on_the_caller_and_the_team_survives() {
        let t = team(2);
        let ran = AtomicUsize::new(0);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            t.run(20_000, &|i| {
                ran.fetch_add(1, Ordering::Relaxed);
                if i == 5 {
                    panic!("task five");
                }
                std::thread::sleep(Duration::from_micros(50));
            })
        }));
        let payload = caught.expect_err("the panic reaches the caller");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"task five"));
        // The remaining tasks were skipped (those claimed already ran).
        assert!(ran.load(Ordering::Relaxed) < 20_000);
        let sum = AtomicUsize::new(0);
        assert!(t.run(10, &|i| {
            sum.fetch_add(i, Ordering::Relaxed);
        }));
        assert_eq!(sum.load(Ordering::Relaxed), 45);
    }

    #[test]
    fn a_busy_team_turns_nested_and_concurrent_callers_away() {
        let t = team(2);
        let nested = AtomicUsize::new(0);
        assert!(t.run(4, &|_| {
            // A task forking again finds the team owned.
            if !t.run(3, &|_| unreachable!("the nested job is refused")) {
                nested.fetch_add(1, Ordering::Relaxed);
            }
        }));
        assert_eq!(nested.load(Ordering::Relaxed), 4);
        // Several threads at once: each job either runs on the team or is refused, and
        // the team is never left owned.
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let sum = AtomicUsize::new(0);
                        let task = |i: usize| {
                            sum.fetch_add(i, Ordering::Relaxed);
                        };
                        if !t.run(16, &task) {
                            (0..16).for_each(task);
                        }
                        assert_eq!(sum.load(Ordering::Relaxed), 120);
                    }
                });
            }
        });
        assert!(t.run(1, &|_| {}));
    }

    #[test]
    fn no_team_for_one_thread() {
        assert!(start(1).is_none());
    }
}
