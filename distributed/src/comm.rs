//! [`Communicator`]: a group of ranks and the collectives they run together.
//!
//! Every collective goes to one place that executes them in the order they were asked
//! for: in a world of one, the calling thread (the collectives are identities); under MPI,
//! the communication thread that initialised MPI and makes every MPI call of the process
//! (see [`World`](crate::World)). Work is handed over as a [`Job`], a closure over the
//! [`Collectives`] of that place, so that data-parallel training can start a bucket's
//! all-reduce from inside the backward walk and collect the result later.

#[cfg(feature = "mpi")]
use std::sync::Arc;
use std::sync::mpsc;

use strata_tensor::{Element, Tensor};

use crate::buffer::{Buffer, ReduceOp, Scalar, element_buffer, element_values};
use crate::{DistributedError, Result, config};

/// The collectives of the place that runs [`Job`]s, on communicators named by their id.
pub(crate) trait Collectives {
    /// Replaces `buf` on every rank by the element-wise reduction of all ranks' `buf`.
    fn all_reduce(&mut self, comm: usize, buf: &mut Buffer, op: ReduceOp) -> Result<()>;
    /// Replaces `buf` on every rank by `root`'s.
    fn broadcast(&mut self, comm: usize, buf: &mut Buffer, root: usize) -> Result<()>;
    /// Every rank's `send`, concatenated in rank order (equal lengths).
    fn all_gather(&mut self, comm: usize, send: &Buffer) -> Result<Buffer>;
    /// Returns once every rank has entered.
    fn barrier(&mut self, comm: usize) -> Result<()>;
    /// `MPI_Comm_split`: the ranks of one colour form a new communicator, ordered by
    /// `key`; returns its id, this rank in it and its size (`None` without a colour).
    fn split(
        &mut self,
        comm: usize,
        color: Option<u32>,
        key: i32,
    ) -> Result<Option<(usize, usize, usize)>>;
}

/// Work for the collectives' thread.
pub(crate) type Job = Box<dyn FnOnce(&mut dyn Collectives) + Send>;

/// The collectives of a world of one: each is the identity.
struct Alone;

impl Collectives for Alone {
    fn all_reduce(&mut self, _comm: usize, _buf: &mut Buffer, _op: ReduceOp) -> Result<()> {
        Ok(())
    }

    fn broadcast(&mut self, _comm: usize, _buf: &mut Buffer, _root: usize) -> Result<()> {
        Ok(())
    }

    fn all_gather(&mut self, _comm: usize, send: &Buffer) -> Result<Buffer> {
        Ok(send.clone())
    }

    fn barrier(&mut self, _comm: usize) -> Result<()> {
        Ok(())
    }

    fn split(
        &mut self,
        _comm: usize,
        color: Option<u32>,
        _key: i32,
    ) -> Result<Option<(usize, usize, usize)>> {
        Ok(color.map(|_| (0, 0, 1)))
    }
}

/// Where a communicator's collectives run.
#[derive(Clone)]
pub(crate) enum Backend {
    /// A world of one: on the calling thread, as identities.
    Alone,
    /// The MPI communication thread.
    #[cfg(feature = "mpi")]
    Mpi(Arc<crate::mpi::Engine>),
}

/// A group of ranks that run collectives together, like a `torch.distributed` process
/// group: its size, this process's rank in it, and the collectives a training needs around
/// its model (all-reduce of metrics, broadcast, all-gather, barrier). Cheap to clone.
///
/// Every rank of the group must call the same collectives in the same order (as in MPI and
/// PyTorch). The values travel through MPI; in a world of one each collective returns its
/// input.
///
/// ```
/// use strata_distributed::{Communicator, ReduceOp};
///
/// let comm = Communicator::alone();
/// // Sum a metric over the ranks: (loss sum, samples) from every rank.
/// let mut sums = [12.5f64, 50.0];
/// comm.all_reduce(&mut sums, ReduceOp::Sum)?;
/// assert_eq!(sums[0] / sums[1], 0.25);
/// assert_eq!((comm.rank(), comm.size()), (0, 1));
/// # Ok::<(), strata_distributed::DistributedError>(())
/// ```
#[derive(Clone)]
pub struct Communicator {
    rank: usize,
    size: usize,
    id: usize,
    backend: Backend,
}

impl std::fmt::Debug for Communicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Alone => "alone",
            #[cfg(feature = "mpi")]
            Backend::Mpi(_) => "mpi",
        };
        write!(
            f,
            "Communicator({kind}, rank {} of {}, id {})",
            self.rank, self.size, self.id
        )
    }
}

/// Two handles are equal when they name the same group, as seen from the same rank.
impl PartialEq for Communicator {
    fn eq(&self, other: &Self) -> bool {
        let same_backend = match (&self.backend, &other.backend) {
            (Backend::Alone, Backend::Alone) => true,
            #[cfg(feature = "mpi")]
            (Backend::Mpi(a), Backend::Mpi(b)) => Arc::ptr_eq(a, b),
            #[cfg(feature = "mpi")]
            _ => false,
        };
        same_backend && (self.rank, self.size, self.id) == (other.rank, other.size, other.id)
    }
}

impl Default for Communicator {
    /// [`Communicator::alone`].
    fn default() -> Self {
        Communicator::alone()
    }
}

impl Communicator {
    /// The world of one process: rank 0 of 1, every collective the identity. What a
    /// program started without an MPI launcher trains in.
    pub fn alone() -> Self {
        Communicator {
            rank: 0,
            size: 1,
            id: 0,
            backend: Backend::Alone,
        }
    }

    #[cfg(feature = "mpi")]
    pub(crate) fn new(rank: usize, size: usize, id: usize, backend: Backend) -> Self {
        Communicator {
            rank,
            size,
            id,
            backend,
        }
    }

    /// The id of this group on the collectives' thread.
    pub(crate) fn id(&self) -> usize {
        self.id
    }

    /// This process's rank in the group, from 0.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks in the group.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether this process is rank 0, the one that writes checkpoints, metrics and
    /// progress bars.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Whether collectives go through MPI (`false` for a world of one without a launcher).
    pub fn is_mpi(&self) -> bool {
        !matches!(self.backend, Backend::Alone)
    }

    /// Hands `job` to the collectives' thread (in a world of one, runs it now) and
    /// returns without waiting for it.
    pub(crate) fn submit(&self, job: Job) -> Result<()> {
        match &self.backend {
            Backend::Alone => {
                job(&mut Alone);
                Ok(())
            }
            #[cfg(feature = "mpi")]
            Backend::Mpi(engine) => engine.submit(job),
        }
    }

    /// Runs `f` on the collectives' thread with this communicator's id and waits for its
    /// result.
    pub(crate) fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Collectives, usize) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        let id = self.id;
        self.submit(Box::new(move |c: &mut dyn Collectives| {
            // The receiver waits below; it is gone only if the caller panicked.
            let _ = tx.send(f(c, id));
        }))?;
        rx.recv().map_err(|_| {
            DistributedError::Stopped("a collective was dropped before it finished".into())
        })?
    }

    /// Replaces `data` on every rank by its element-wise reduction over the ranks
    /// (`torch.distributed.all_reduce`, `MPI_Allreduce`). Every rank must pass the same
    /// length.
    ///
    /// # Errors
    /// [`DistributedError::Stopped`] when the world has been finalised.
    pub fn all_reduce<T: Scalar>(&self, data: &mut [T], op: ReduceOp) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let buf = T::into_buffer(data.to_vec());
        let out = self.call(move |c, id| {
            let mut buf = buf;
            c.all_reduce(id, &mut buf, op)?;
            Ok(buf)
        })?;
        copy_back(data, out)
    }

    /// Replaces `data` on every rank by `root`'s (`torch.distributed.broadcast`,
    /// `MPI_Bcast`). Every rank must pass the same length.
    ///
    /// # Errors
    /// [`DistributedError::Config`] for a root outside the group;
    /// [`DistributedError::Stopped`] when the world has been finalised.
    pub fn broadcast<T: Scalar>(&self, data: &mut [T], root: usize) -> Result<()> {
        self.check_root(root)?;
        if self.size == 1 {
            return Ok(());
        }
        let buf = T::into_buffer(data.to_vec());
        let out = self.call(move |c, id| {
            let mut buf = buf;
            c.broadcast(id, &mut buf, root)?;
            Ok(buf)
        })?;
        copy_back(data, out)
    }

    /// Every rank's `data`, concatenated in rank order, on every rank
    /// (`torch.distributed.all_gather`, `MPI_Allgather`). Every rank must pass the same
    /// length.
    ///
    /// # Errors
    /// [`DistributedError::Stopped`] when the world has been finalised.
    pub fn all_gather<T: Scalar>(&self, data: &[T]) -> Result<Vec<T>> {
        if self.size == 1 {
            return Ok(data.to_vec());
        }
        let buf = T::into_buffer(data.to_vec());
        let out = self.call(move |c, id| c.all_gather(id, &buf))?;
        let expected = data.len() * self.size;
        if out.len() != expected {
            return Err(config(format!(
                "all_gather returned {} values for {} ranks of {}",
                out.len(),
                self.size,
                data.len()
            )));
        }
        T::from_buffer(out).ok_or_else(|| config("all_gather returned another element type"))
    }

    /// Returns once every rank has called it (`torch.distributed.barrier`).
    ///
    /// # Errors
    /// [`DistributedError::Stopped`] when the world has been finalised.
    pub fn barrier(&self) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        self.call(|c, id| c.barrier(id))
    }

    /// The tensor's element-wise reduction over the ranks, as a new tensor of its shape.
    ///
    /// # Errors
    /// As [`all_reduce`](Communicator::all_reduce).
    pub fn all_reduce_tensor<T: Element>(&self, t: &Tensor<T>, op: ReduceOp) -> Result<Tensor<T>> {
        if self.size == 1 {
            return Ok(t.clone());
        }
        let values = self.reduce_elements(t.to_vec(), op)?;
        Ok(Tensor::from_vec(values, t.shape())?)
    }

    /// `root`'s tensor on every rank (every rank passes a tensor of the same shape).
    ///
    /// # Errors
    /// As [`broadcast`](Communicator::broadcast).
    pub fn broadcast_tensor<T: Element>(&self, t: &Tensor<T>, root: usize) -> Result<Tensor<T>> {
        self.check_root(root)?;
        if self.size == 1 {
            return Ok(t.clone());
        }
        let values = self.broadcast_elements(t.to_vec(), root)?;
        Ok(Tensor::from_vec(values, t.shape())?)
    }

    /// [`all_reduce`](Communicator::all_reduce) of tensor elements.
    pub(crate) fn reduce_elements<T: Element>(
        &self,
        values: Vec<T>,
        op: ReduceOp,
    ) -> Result<Vec<T>> {
        if self.size == 1 {
            return Ok(values);
        }
        let buf = element_buffer(values)?;
        let out = self.call(move |c, id| {
            let mut buf = buf;
            c.all_reduce(id, &mut buf, op)?;
            Ok(buf)
        })?;
        element_values(out)
    }

    /// [`broadcast`](Communicator::broadcast) of tensor elements.
    pub(crate) fn broadcast_elements<T: Element>(
        &self,
        values: Vec<T>,
        root: usize,
    ) -> Result<Vec<T>> {
        self.check_root(root)?;
        if self.size == 1 {
            return Ok(values);
        }
        let buf = element_buffer(values)?;
        let out = self.call(move |c, id| {
            let mut buf = buf;
            c.broadcast(id, &mut buf, root)?;
            Ok(buf)
        })?;
        element_values(out)
    }

    /// `root`'s bytes on every rank, whatever their length on the others.
    pub(crate) fn broadcast_bytes(&self, bytes: &[u8], root: usize) -> Result<Vec<u8>> {
        let mut len = [bytes.len() as u64];
        self.broadcast(&mut len, root)?;
        let mut out = if self.rank == root {
            bytes.to_vec()
        } else {
            vec![0u8; len[0] as usize]
        };
        self.broadcast(&mut out, root)?;
        Ok(out)
    }

    /// Splits the group like `MPI_Comm_split` (`torch.distributed.new_group` by colour):
    /// the ranks that pass the same `color` form a new communicator, ranked by `key` (then
    /// by their rank here); a rank passing `None` joins none and gets `None`. Every rank of
    /// this group must call it.
    ///
    /// # Errors
    /// [`DistributedError::Stopped`] when the world has been finalised.
    pub fn split(&self, color: Option<u32>, key: i32) -> Result<Option<Communicator>> {
        let backend = self.backend.clone();
        let made = self.call(move |c, id| c.split(id, color, key))?;
        Ok(made.map(|(id, rank, size)| Communicator {
            rank,
            size,
            id,
            backend,
        }))
    }

    /// Ends every process of the job with exit code `code` (`MPI_Abort`): what a rank that
    /// cannot go on calls so that the others do not wait for it forever. In a world of one,
    /// exits this process.
    pub fn abort(&self, code: i32) -> ! {
        match &self.backend {
            Backend::Alone => std::process::exit(code),
            #[cfg(feature = "mpi")]
            Backend::Mpi(engine) => engine.abort(code),
        }
    }

    fn check_root(&self, root: usize) -> Result<()> {
        if root >= self.size {
            return Err(config(format!(
                "root rank {root} is outside a group of {} ranks",
                self.size
            )));
        }
        Ok(())
    }
}

fn copy_back<T: Scalar>(data: &mut [T], out: Buffer) -> Result<()> {
    let values =
        T::from_buffer(out).ok_or_else(|| config("a collective changed the element type"))?;
    if values.len() != data.len() {
        return Err(config(format!(
            "a collective returned {} values for {}",
            values.len(),
            data.len()
        )));
    }
    data.copy_from_slice(&values);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_world_of_one_returns_its_inputs() {
        let comm = Communicator::alone();
        let mut v = [1.0f32, -2.0];
        comm.all_reduce(&mut v, ReduceOp::Max).unwrap();
        comm.broadcast(&mut v, 0).unwrap();
        assert_eq!(v, [1.0, -2.0]);
        assert_eq!(comm.all_gather(&[3u64, 4]).unwrap(), vec![3, 4]);
        assert!(comm.broadcast(&mut v, 1).is_err());
        comm.barrier().unwrap();
        let sub = comm.split(Some(5), 0).unwrap().unwrap();
        assert_eq!((sub.rank(), sub.size()), (0, 1));
        assert!(comm.split(None, 0).unwrap().is_none());
        assert_eq!(comm.broadcast_bytes(b"abc", 0).unwrap(), b"abc");
        let t = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap();
        assert_eq!(
            comm.all_reduce_tensor(&t, ReduceOp::Sum).unwrap().to_vec(),
            vec![1.0, 2.0]
        );
        assert_eq!(comm, Communicator::default());
    }
}
