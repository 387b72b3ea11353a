//! The MPI engine: one thread that initialises MPI, makes every MPI call of the process in
//! the order the jobs arrive, and finalises MPI at the end.
//!
//! Why a thread of its own: a non-blocking collective in Open MPI or MPICH advances only
//! while some thread is inside an MPI call, so an all-reduce started from the backward walk
//! would sit still until the walk ended. Here it runs on a thread that keeps testing it
//! while the walk goes on, which is what lets communication overlap the backward. Because
//! that thread is also the one that called `MPI_Init_thread`, MPI only needs
//! `MPI_THREAD_FUNNELED`, which every MPI library provides.
//!
//! Waiting: the engine tests a request in a tight loop for a few microseconds, then yields
//! the core between tests (to the backward, when it shares the core; at once back to the
//! test when the core is free), and after a few milliseconds, which means waiting for a
//! slower rank, sleeps in short steps between tests. Each test is also what moves the
//! bytes along (TCP and shared-memory transports progress only inside MPI calls), so the
//! engine never blocks inside MPI. Between tests it checks two things: an abort asked for
//! by another thread of the process ([`Engine::abort`]), and the collective timeout, after
//! which it aborts the job rather than hang (`STRATA_COLLECTIVE_TIMEOUT`, in seconds,
//! default 1800 as PyTorch's process groups). `STRATA_MPI_WAIT=spin` keeps testing without
//! yielding (the lowest latency, when every rank's engine has a core of its own),
//! `STRATA_MPI_WAIT=sleep` naps from the start (the least CPU).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::request::{Request, Scope};
use mpi::topology::{Color, SimpleCommunicator};
use mpi::traits::*;

use crate::buffer::{Buffer, ReduceOp};
use crate::comm::{Collectives, Job};
use crate::{DistributedError, Result};

/// Set once MPI has been initialised in this process: it cannot be again.
static STARTED: AtomicBool = AtomicBool::new(false);

/// No abort requested.
const NO_ABORT: i32 = i32::MIN;

enum Message {
    Job(Job),
    Shutdown,
}

/// The handle on the engine thread.
pub(crate) struct Engine {
    sender: Mutex<Option<Sender<Message>>>,
    abort: Arc<AtomicI32>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
}

/// What the engine reports once MPI is up.
pub(crate) struct Started {
    pub engine: Arc<Engine>,
    pub rank: usize,
    pub size: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Engine {
    /// Starts the engine thread, which initialises MPI.
    ///
    /// # Errors
    /// [`DistributedError::Init`] when MPI was initialised before in this process or
    /// refuses to start.
    pub(crate) fn start() -> Result<Started> {
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(DistributedError::Init(
                "MPI can be initialised once per process, and it already was".into(),
            ));
        }
        let timeout = collective_timeout();
        let abort = Arc::new(AtomicI32::new(NO_ABORT));
        let (sender, receiver) = mpsc::channel::<Message>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(usize, usize)>>(1);
        let flag = abort.clone();
        let thread = std::thread::Builder::new()
            .name("strata-mpi".into())
            .spawn(move || run(receiver, ready_tx, flag, timeout))
            .map_err(|e| DistributedError::Init(format!("cannot start the MPI thread: {e}")))?;
        let thread_id = thread.thread().id();
        let (rank, size) = ready_rx.recv().map_err(|_| {
            DistributedError::Init("the MPI thread stopped while initialising".into())
        })??;
        Ok(Started {
            engine: Arc::new(Engine {
                sender: Mutex::new(Some(sender)),
                abort,
                thread: Mutex::new(Some(thread)),
                thread_id,
            }),
            rank,
            size,
        })
    }

    /// Queues `job`.
    pub(crate) fn submit(&self, job: Job) -> Result<()> {
        let stopped = || DistributedError::Stopped("the world has been finalised".into());
        let guard = lock(&self.sender);
        let sender = guard.as_ref().ok_or_else(stopped)?;
        sender.send(Message::Job(job)).map_err(|_| stopped())
    }

    /// Asks the engine to call `MPI_Abort(code)`, which ends every rank; if it cannot
    /// within ten seconds (it died), exits this process with `code`, which the launcher
    /// also turns into the end of the job.
    pub(crate) fn abort(&self, code: i32) -> ! {
        let code = if code == NO_ABORT { 1 } else { code };
        if std::thread::current().id() == self.thread_id {
            SimpleCommunicator::world().abort(code);
        }
        self.abort.store(code, Ordering::SeqCst);
        // Wake an idle engine: an empty job, after which it checks the flag.
        let _ = self.submit(Box::new(|_| {}));
        std::thread::sleep(Duration::from_secs(10));
        std::process::exit(code)
    }

    /// Finalises MPI once the queued jobs have run, and joins the thread.
    pub(crate) fn shutdown(&self) {
        if let Some(sender) = lock(&self.sender).take() {
            let _ = sender.send(Message::Shutdown);
        }
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

fn collective_timeout() -> Duration {
    let seconds = std::env::var("STRATA_COLLECTIVE_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1800.0);
    Duration::from_secs_f64(seconds)
}

/// The engine thread.
fn run(
    receiver: Receiver<Message>,
    ready: mpsc::SyncSender<Result<(usize, usize)>>,
    abort: Arc<AtomicI32>,
    timeout: Duration,
) {
    let Some((universe, _threading)) = mpi::initialize_with_threading(mpi::Threading::Funneled)
    else {
        let _ = ready.send(Err(DistributedError::Init(
            "MPI was initialised already".into(),
        )));
        return;
    };
    let world = universe.world();
    // strata's own copy of the world, so that its collectives never mix with another
    // library's on MPI_COMM_WORLD.
    let comms = vec![Some(world.duplicate())];
    let rank = world.rank() as usize;
    let size = world.size() as usize;
    let _ = ready.send(Ok((rank, size)));
    let mut ctx = Mpi {
        comms,
        abort,
        timeout,
        rank,
        wait: wait_strategy(),
    };
    while let Ok(message) = receiver.recv() {
        match message {
            Message::Job(job) => {
                ctx.check_abort();
                if catch_unwind(AssertUnwindSafe(|| job(&mut ctx))).is_err() {
                    eprintln!(
                        "strata-distributed: rank {rank}: a collective panicked; aborting the job"
                    );
                    world.abort(101);
                }
                ctx.check_abort();
            }
            Message::Shutdown => break,
        }
    }
    // Free strata's communicators before MPI_Finalize, which dropping the universe calls.
    ctx.comms.clear();
    drop(universe);
}

/// The engine's side of [`Collectives`].
struct Mpi {
    comms: Vec<Option<SimpleCommunicator>>,
    abort: Arc<AtomicI32>,
    timeout: Duration,
    rank: usize,
    wait: Wait,
}

/// How long a wait tests in a tight loop before it yields the core between tests.
const SPIN: Duration = Duration::from_micros(20);
/// How long it yields between tests before it sleeps between them.
const YIELD: Duration = Duration::from_millis(5);
/// The sleep between two tests after that.
const NAP: Duration = Duration::from_micros(50);

/// How the engine waits between two tests of a request (`STRATA_MPI_WAIT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// Spin, then yield, then nap (the default).
    Yield,
    /// Spin throughout.
    Spin,
    /// Nap throughout.
    Sleep,
}

fn wait_strategy() -> Wait {
    match std::env::var("STRATA_MPI_WAIT").as_deref().map(str::trim) {
        Ok("spin") => Wait::Spin,
        Ok("sleep") => Wait::Sleep,
        _ => Wait::Yield,
    }
}

impl Mpi {
    fn comm(&self, id: usize) -> Result<&SimpleCommunicator> {
        self.comms
            .get(id)
            .and_then(Option::as_ref)
            .ok_or_else(|| DistributedError::Config(format!("no communicator {id}")))
    }

    fn check_abort(&self) {
        let code = self.abort.load(Ordering::SeqCst);
        if code != NO_ABORT {
            SimpleCommunicator::world().abort(code);
        }
    }

    /// Tests `request` until it completes (spinning, then yielding, then napping between
    /// tests); aborts the job on request or after the timeout.
    fn wait<'a, D: ?Sized, S: Scope<'a>>(&self, mut request: Request<'a, D, S>) {
        let start = Instant::now();
        loop {
            match request.test() {
                Ok(_) => return,
                Err(r) => request = r,
            }
            self.check_abort();
            let waited = start.elapsed();
            if waited > self.timeout {
                eprintln!(
                    "strata-distributed: rank {}: a collective waited {:.0} s for the other \
                     ranks (STRATA_COLLECTIVE_TIMEOUT); aborting the job",
                    self.rank,
                    waited.as_secs_f64()
                );
                SimpleCommunicator::world().abort(1);
            }
            match self.wait {
                Wait::Spin => std::hint::spin_loop(),
                Wait::Sleep => std::thread::sleep(NAP),
                Wait::Yield if waited < SPIN => std::hint::spin_loop(),
                Wait::Yield if waited < YIELD => std::thread::yield_now(),
                Wait::Yield => std::thread::sleep(NAP),
            }
        }
    }

    fn all_reduce_typed<T: Equivalence + Copy>(
        &self,
        comm: &SimpleCommunicator,
        values: &mut [T],
        op: ReduceOp,
    ) {
        let send = values.to_vec();
        let op = match op {
            ReduceOp::Sum => SystemOperation::sum(),
            ReduceOp::Product => SystemOperation::product(),
            ReduceOp::Min => SystemOperation::min(),
            ReduceOp::Max => SystemOperation::max(),
        };
        mpi::request::scope(|scope| {
            self.wait(comm.immediate_all_reduce_into(scope, &send[..], values, op));
        });
    }

    fn broadcast_typed<T: Equivalence>(
        &self,
        comm: &SimpleCommunicator,
        values: &mut [T],
        root: usize,
    ) {
        let root = comm.process_at_rank(root as i32);
        mpi::request::scope(|scope| {
            self.wait(root.immediate_broadcast_into(scope, values));
        });
    }

    fn all_gather_typed<T: Equivalence + Copy + Default>(
        &self,
        comm: &SimpleCommunicator,
        values: &[T],
    ) -> Vec<T> {
        let mut out = vec![T::default(); values.len() * comm.size() as usize];
        mpi::request::scope(|scope| {
            self.wait(comm.immediate_all_gather_into(scope, values, &mut out[..]));
        });
        out
    }
}

/// Calls `$f(self, comm, values $(, $arg)*)` on the typed vector inside `$buf`.
macro_rules! typed {
    ($self:ident, $buf:expr, $f:ident, $comm:expr $(, $arg:expr)*) => {
        match $buf {
            Buffer::F32(v) => $self.$f($comm, v $(, $arg)*),
            Buffer::F64(v) => $self.$f($comm, v $(, $arg)*),
            Buffer::I32(v) => $self.$f($comm, v $(, $arg)*),
            Buffer::I64(v) => $self.$f($comm, v $(, $arg)*),
            Buffer::U8(v) => $self.$f($comm, v $(, $arg)*),
            Buffer::U64(v) => $self.$f($comm, v $(, $arg)*),
        }
    };
}

impl Collectives for Mpi {
    fn all_reduce(&mut self, comm: usize, buf: &mut Buffer, op: ReduceOp) -> Result<()> {
        let comm = self.comm(comm)?;
        typed!(self, buf, all_reduce_typed, comm, op);
        Ok(())
    }

    fn broadcast(&mut self, comm: usize, buf: &mut Buffer, root: usize) -> Result<()> {
        let comm = self.comm(comm)?;
        typed!(self, buf, broadcast_typed, comm, root);
        Ok(())
    }

    fn all_gather(&mut self, comm: usize, send: &Buffer) -> Result<Buffer> {
        let comm = self.comm(comm)?;
        Ok(match send {
            Buffer::F32(v) => Buffer::F32(self.all_gather_typed(comm, v)),
            Buffer::F64(v) => Buffer::F64(self.all_gather_typed(comm, v)),
            Buffer::I32(v) => Buffer::I32(self.all_gather_typed(comm, v)),
            Buffer::I64(v) => Buffer::I64(self.all_gather_typed(comm, v)),
            Buffer::U8(v) => Buffer::U8(self.all_gather_typed(comm, v)),
            Buffer::U64(v) => Buffer::U64(self.all_gather_typed(comm, v)),
        })
    }

    fn barrier(&mut self, comm: usize) -> Result<()> {
        let comm = self.comm(comm)?;
        self.wait(comm.immediate_barrier());
        Ok(())
    }

    fn split(
        &mut self,
        comm: usize,
        color: Option<u32>,
        key: i32,
    ) -> Result<Option<(usize, usize, usize)>> {
        let color = match color {
            Some(c) => Color::with_value(i32::try_from(c).map_err(|_| {
                DistributedError::Config(format!("colour {c} is beyond what MPI takes"))
            })?),
            None => Color::undefined(),
        };
        // MPI_Comm_split has no non-blocking form; it is rare and quick.
        let made = self.comm(comm)?.split_by_color_with_key(color, key);
        Ok(made.map(|c| {
            let (rank, size) = (c.rank() as usize, c.size() as usize);
            self.comms.push(Some(c));
            (self.comms.len() - 1, rank, size)
        }))
    }
}
