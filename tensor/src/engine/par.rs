//! The parallel toolkit: when and how kernels split work across rayon's pool, and the one
//! type through which parallel tasks write disjoint parts of a buffer.
//!
//! Every kernel that runs in parallel describes its work as *numbered tasks* and hands them
//! to [`run`] (or one of the helpers built on it: [`map`], [`run_init`], [`chunks_mut`],
//! [`chunk_pairs_mut`], [`for_each_chunk_mut`]). `run` is the only place strata-tensor
//! forks: a caller outside rayon's pools hands the tasks to the [team](super::team) (the
//! caller and spinning helpers, a fork-join of about a microsecond), a caller inside a pool
//! to rayon's parallel iterators. It takes the task as a `&dyn Fn`, so that machinery is
//! compiled once rather than once per kernel closure (rayon's was more than half of the
//! LLVM IR of a test build).
//!
//! Task boundaries depend only on the problem size, never on the thread count, so every
//! result is bitwise identical whatever `RAYON_NUM_THREADS` says. Below a threshold of
//! work a kernel runs on the calling thread: handing a job to rayon costs a few
//! microseconds, as much as adding ~30,000 floats on one core.
//!
//! # Disjoint writes
//!
//! [`Disjoint`] is a buffer shared by the tasks of one parallel call. Its contract, which
//! every `unsafe` use of it relies on and which is written only here:
//!
//! > While a slice or pointer obtained from a `Disjoint` is in use, no other task writes
//! > the elements it covers, and if it is used for writing, no other task reads them
//! > either.
//!
//! The `Disjoint` borrows the buffer mutably for its whole life, so nothing outside the
//! tasks touches it, and every range it hands out is bounds-checked with checked
//! arithmetic. The safe helpers ([`chunks_mut`], [`chunk_pairs_mut`], [`map`]) give task
//! `i` chunk `i`, which makes the contract hold by construction; kernels with their own
//! partition (the recurrent tiles, attention problems, transposed blocks) state at each
//! `unsafe` block why their ranges are disjoint.

use std::marker::PhantomData;

use rayon::prelude::*;

/// Elements of a cheap elementwise op (one add) below which threading does not pay.
/// Measured on the 2-core reference machine: at 32 Ki f32 an add takes ~8 µs on one core,
/// about twice the cost of a rayon fork/join round trip.
pub(crate) const PAR_MIN_WORK: usize = 1 << 15;

/// Relative cost of one element of an op, in units of one add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cost {
    /// add, mul, max, relu, copy
    Cheap,
    /// exp, log, tanh, sigmoid, gelu, erf: a few dozen flops
    Transcendental,
}

impl Cost {
    fn weight(self) -> usize {
        match self {
            Cost::Cheap => 1,
            Cost::Transcendental => 8,
        }
    }
}

/// The number of threads of the current rayon pool.
pub(crate) fn threads() -> usize {
    rayon::current_num_threads()
}

/// The chunk length to split `n` elements into, or `None` to run on the calling thread.
pub(crate) fn chunk_len(n: usize, cost: Cost) -> Option<usize> {
    let work = n.saturating_mul(cost.weight());
    if work < PAR_MIN_WORK || threads() < 2 {
        return None;
    }
    // At least PAR_MIN_WORK of work per chunk; about 64 chunks for large problems so idle
    // threads can steal; the split is a function of n alone.
    let min_len = PAR_MIN_WORK.div_ceil(cost.weight());
    Some((n / 64).max(min_len).next_multiple_of(16))
}

/// Runs `task(i)` for every `i` in `0..n`: on rayon's pool when `parallel` and the pool
/// has more than one thread, otherwise in order on the calling thread.
pub(crate) fn run(n: usize, parallel: bool, task: impl Fn(usize) + Sync) {
    if parallel && n > 1 && threads() > 1 {
        run_on_pool(n, &task);
    } else {
        (0..n).for_each(task);
    }
}

/// The one entry into rayon's parallel iterators (see the module docs).
///
/// A caller outside the pool (the program's main thread) blocks while the pool's workers
/// run every task. Letting it run the first task itself (OpenMP's way) was measured and
/// rejected: with two workers and the caller on two cores, a W4 training step took 25 %
/// longer (2.9–3.3 ms against 2.4 ms), the third thread preempting the other two.
///
/// A caller outside every rayon pool hands the tasks to the [team](super::team) instead:
/// its helpers spin between jobs, so a fork-join costs about a microsecond rather than
/// rayon's 6–30 µs. A caller that finds the team busy (a task forking again, or a second
/// thread) runs its tasks itself.
#[inline(never)]
fn run_on_pool(n: usize, task: &(dyn Fn(usize) + Sync)) {
    if rayon::current_thread_index().is_none()
        && let Some(team) = super::team::get(threads())
    {
        if !team.run(n, task) {
            (0..n).for_each(task);
        }
        return;
    }
    (0..n).into_par_iter().for_each(task);
}

/// [`run`] with per-worker state: tasks are taken in at most `4 × threads` contiguous
/// groups, each of which calls `init` once and hands the state to its tasks (scratch
/// buffers; the state must not change what a task computes).
pub(crate) fn run_init<S>(
    n: usize,
    parallel: bool,
    init: impl Fn() -> S + Sync,
    task: impl Fn(&mut S, usize) + Sync,
) {
    let groups = if parallel && threads() > 1 {
        n.min(4 * threads())
    } else {
        n.min(1)
    };
    run(groups, parallel, |gi| {
        let mut state = init();
        for i in gi * n / groups..(gi + 1) * n / groups {
            task(&mut state, i);
        }
    });
}

/// `[f(0), f(1), …, f(n − 1)]`, the calls made as by [`run`].
pub(crate) fn map<R: Send>(n: usize, parallel: bool, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    if !(parallel && n > 1 && threads() > 1) {
        return (0..n).map(f).collect();
    }
    let mut slots: Vec<Option<R>> = (0..n).map(|_| None).collect();
    chunks_mut(&mut slots, 1, true, |i, slot| slot[0] = Some(f(i)));
    slots
        .into_iter()
        .map(|s| s.expect("every task fills its slot"))
        .collect()
}

/// Calls `f(i, chunk)` for the consecutive chunks of `len` elements of `out` (the last may
/// be shorter), as tasks of [`run`]. Nothing is called for an empty `out`; `len == 0`
/// makes one chunk of all of `out`.
pub(crate) fn chunks_mut<T: Send>(
    out: &mut [T],
    len: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let total = out.len();
    if total == 0 {
        return;
    }
    let len = if len == 0 { total } else { len };
    let tasks = total.div_ceil(len);
    if tasks == 1 {
        f(0, out);
        return;
    }
    let shared = Disjoint::new(out);
    run(tasks, parallel, |i| {
        // i < tasks = ⌈total / len⌉, so i·len < total.
        let start = i * len;
        // SAFETY: task i alone takes chunk i, `start..start + len` clipped to the buffer;
        // the chunks of distinct tasks are disjoint.
        let chunk = unsafe { shared.slice_mut(start, len.min(total - start)) };
        f(i, chunk);
    });
}

/// [`chunks_mut`] with per-worker state, as [`run_init`].
pub(crate) fn chunks_mut_init<T: Send, S>(
    out: &mut [T],
    len: usize,
    parallel: bool,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync,
) {
    let total = out.len();
    if total == 0 {
        return;
    }
    let len = if len == 0 { total } else { len };
    let shared = Disjoint::new(out);
    run_init(total.div_ceil(len), parallel, init, |state, i| {
        let start = i * len;
        // SAFETY: as in `chunks_mut`: chunk i belongs to task i alone.
        let chunk = unsafe { shared.slice_mut(start, len.min(total - start)) };
        f(state, i, chunk);
    });
}

/// Calls `f(i, a_chunk, b_chunk)` for chunk `i` of `a` (`len_a` elements) and of `b`
/// (`len_b`) together, as tasks of [`run`].
///
/// # Panics
/// When `a` and `b` do not split into the same number of chunks.
#[track_caller]
pub(crate) fn chunk_pairs_mut<A: Send, B: Send>(
    (a, len_a): (&mut [A], usize),
    (b, len_b): (&mut [B], usize),
    parallel: bool,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
) {
    let count = |total: usize, len: usize| if len == 0 { 1 } else { total.div_ceil(len) };
    let (ta, tb) = (a.len(), b.len());
    let tasks = count(ta, len_a);
    assert_eq!(
        tasks,
        count(tb, len_b),
        "chunk_pairs_mut: chunk counts differ"
    );
    let (len_a, len_b) = (
        if len_a == 0 { ta } else { len_a },
        if len_b == 0 { tb } else { len_b },
    );
    let (sa, sb) = (Disjoint::new(a), Disjoint::new(b));
    run(tasks, parallel, |i| {
        let (start_a, start_b) = ((i * len_a).min(ta), (i * len_b).min(tb));
        // SAFETY: chunk i of each buffer belongs to task i alone.
        let (ca, cb) = unsafe {
            (
                sa.slice_mut(start_a, len_a.min(ta - start_a)),
                sb.slice_mut(start_b, len_b.min(tb - start_b)),
            )
        };
        f(i, ca, cb);
    });
}

/// Calls `f(start, chunk)` for consecutive chunks of `out`, in parallel when the work is
/// large enough for an op of this `cost`.
pub(crate) fn for_each_chunk_mut<T: Send>(
    out: &mut [T],
    cost: Cost,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    match chunk_len(out.len(), cost) {
        None => f(0, out),
        Some(len) => chunks_mut(out, len, true, |i, chunk| f(i * len, chunk)),
    }
}

/// Calls `f(start, chunk)` for consecutive chunks of `chunk_len` elements of `out`, in
/// parallel when there are several.
pub(crate) fn for_each_chunk_mut_by<T: Send>(
    out: &mut [T],
    chunk_len: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    if chunk_len == 0 || chunk_len >= out.len() {
        f(0, out);
    } else {
        chunks_mut(out, chunk_len, true, |i, chunk| f(i * chunk_len, chunk));
    }
}

/// Fills `buf` with `value`, in parallel when large.
pub(crate) fn fill<T: Copy + Send + Sync>(buf: &mut [T], value: T) {
    for_each_chunk_mut(buf, Cost::Cheap, |_, chunk| chunk.fill(value));
}

/// Runs `lane(0)` on the calling thread and `lane(1)`, …, `lane(n − 1)` as spawned jobs of
/// the pool. Lanes may wait for each other's progress only in ways that cannot deadlock
/// when a spawned lane starts late or never runs concurrently (a lane that is not running
/// cannot be waited on; see the recurrent walks).
pub(crate) fn lanes(n: usize, lane: &(dyn Fn(usize) + Sync)) {
    rayon::scope(|scope| {
        for me in 1..n {
            scope.spawn(move |_| lane(me));
        }
        if n > 0 {
            lane(0);
        }
    });
}

/// Runs `f` on a thread of rayon's pool. A kernel that forks and joins many times (per
/// chunk of steps, and in its GEMMs) would, from a thread outside the pool, hand each fork
/// to the pool and sleep until it is done; from inside it the other workers steal directly.
pub(crate) fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

/// A buffer written in disjoint parts by the tasks of one parallel call (see the module
/// docs for the contract). Copying it copies the handle, not the data.
pub(crate) struct Disjoint<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

impl<T> Clone for Disjoint<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Disjoint<'_, T> {}

// SAFETY: a `Disjoint` is a mutable borrow split between tasks: through it a task gets
// exclusive slices (which moves the right to use those `T`s to its thread: `T: Send`) or,
// only where `T: Sync` (see `slice`), shared ones of elements nobody writes; the module's
// contract rules out every other access.
unsafe impl<T: Send> Send for Disjoint<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Disjoint<'_, T> {}

impl<'a, T> Disjoint<'a, T> {
    /// Shares `buf` between the tasks of one call.
    pub(crate) fn new(buf: &'a mut [T]) -> Self {
        Disjoint {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            _borrow: PhantomData,
        }
    }

    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Panics unless `start..start + len` lies inside the buffer.
    #[track_caller]
    pub(crate) fn check(&self, start: usize, len: usize) {
        let end = start.checked_add(len);
        assert!(
            end.is_some_and(|end| end <= self.len),
            "Disjoint: elements {start}..{start}+{len} outside a buffer of {}",
            self.len
        );
    }

    /// `len` elements from `start`, shared.
    ///
    /// # Safety
    /// No task writes these elements while the slice lives (the module's contract).
    ///
    /// # Panics
    /// When the range is not inside the buffer.
    #[track_caller]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &'a [T]
    where
        T: Sync,
    {
        self.check(start, len);
        // SAFETY: in bounds (checked); the buffer is borrowed for 'a; the caller rules out
        // concurrent writes.
        unsafe { std::slice::from_raw_parts(self.ptr.add(start), len) }
    }

    /// `len` elements from `start`, exclusively.
    ///
    /// # Safety
    /// No other task reads or writes these elements while the slice lives (the module's
    /// contract).
    ///
    /// # Panics
    /// When the range is not inside the buffer.
    #[track_caller]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(&self, start: usize, len: usize) -> &'a mut [T] {
        self.check(start, len);
        // SAFETY: in bounds (checked); the buffer is mutably borrowed for 'a; the caller
        // guarantees exclusive access to the range.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// The start of the buffer, for kernels that address strided elements themselves
    /// (through [`gemm::raw`](crate::engine::gemm::raw) or a hand-written kernel), which
    /// check their extents against [`len`](Disjoint::len) and follow the contract.
    pub(crate) fn as_mut_ptr(&self) -> *mut T {
        self.ptr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a test pool")
    }

    /// Every helper gives each task its own chunk, whatever the thread count: the results
    /// are the same on 1, 2 and 5 threads, every element is written exactly once.
    #[test]
    fn helpers_write_each_element_once_on_any_thread_count() {
        let mut reference = None;
        for threads in [1, 2, 5] {
            let got = pool(threads).install(|| {
                let mut a = vec![0usize; 1003];
                chunks_mut(&mut a, 17, true, |i, c| {
                    for (j, x) in c.iter_mut().enumerate() {
                        *x += i * 17 + j + 1;
                    }
                });
                let mut b = vec![0usize; 1003];
                let mut b2 = vec![0u8; 59];
                chunk_pairs_mut((&mut b, 17), (&mut b2, 1), true, |i, c, d| {
                    c.iter_mut().for_each(|x| *x += i);
                    d[0] += 1;
                });
                let mut e = vec![0usize; 1003];
                chunks_mut_init(&mut e, 10, true, Vec::<usize>::new, |scratch, i, c| {
                    scratch.push(i);
                    c.iter_mut().for_each(|x| *x += i + 1);
                });
                let m = map(77, true, |i| i * i);
                let count = AtomicUsize::new(0);
                run_init(
                    33,
                    true,
                    || (),
                    |_, _| {
                        count.fetch_add(1, Ordering::Relaxed);
                    },
                );
                let mut f = vec![0.0f32; (1 << 16) + 5];
                fill(&mut f, 2.5);
                (
                    a,
                    b,
                    b2,
                    e,
                    m,
                    count.into_inner(),
                    f.iter().all(|&x| x == 2.5),
                )
            });
            let (a, b, b2, e, m, count, filled) = &got;
            assert!(a.iter().enumerate().all(|(k, &x)| x == k + 1));
            assert!(b.iter().enumerate().all(|(k, &x)| x == k / 17));
            assert!(b2.iter().all(|&x| x == 1));
            assert!(e.iter().enumerate().all(|(k, &x)| x == k / 10 + 1));
            assert_eq!(m, &(0..77).map(|i| i * i).collect::<Vec<_>>());
            assert_eq!(*count, 33);
            assert!(filled);
            match &reference {
                None => reference = Some(got),
                Some(r) => assert_eq!(r, &got),
            }
        }
    }

    #[test]
    fn empty_and_single_chunks() {
        let mut none: Vec<u8> = Vec::new();
        chunks_mut(&mut none, 4, true, |_, _| {
            panic!("no chunk of an empty buffer")
        });
        let mut one = vec![0u8; 5];
        chunks_mut(&mut one, 0, true, |i, c| {
            assert_eq!((i, c.len()), (0, 5));
            c.fill(1);
        });
        assert_eq!(one, vec![1; 5]);
        assert!(map(0, true, |i| i).is_empty());
    }

    #[test]
    #[should_panic(expected = "outside a buffer")]
    fn disjoint_ranges_are_bounds_checked() {
        let mut buf = vec![0u8; 8];
        let d = Disjoint::new(&mut buf);
        // SAFETY: no other task exists; the call must panic before any access.
        let _ = unsafe { d.slice_mut(usize::MAX, 2) };
    }

    #[test]
    fn lanes_run_every_lane_once_even_when_they_wait_on_each_other() {
        for threads in [1, 2, 4] {
            let done = AtomicUsize::new(0);
            pool(threads).install(|| {
                lanes(3, &|me| {
                    done.fetch_add(1 << (8 * me), Ordering::Relaxed);
                });
            });
            assert_eq!(done.into_inner(), 1 | 1 << 8 | 1 << 16);
        }
    }
}
