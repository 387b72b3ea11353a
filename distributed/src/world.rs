//! [`World`]: the processes of a job, started from the launcher's environment.

use crate::Result;
use crate::comm::Communicator;
use crate::launcher::{self, Launch};

/// All the processes of a job, and this process's place among them
/// (`torch.distributed.init_process_group`). Create it once, at the start of `main`; when
/// it is dropped at the end, MPI is finalised.
///
/// [`World::init`] reads the environment: a process started by an MPI launcher (`mpirun`,
/// `mpiexec`, `srun` with PMI) joins the launcher's world through MPI; a process started on
/// its own is a world of one, and MPI is not touched at all.
///
/// ```
/// use strata_distributed::World;
///
/// let world = World::init()?; // a world of one here; rank r of N under `mpirun -np N`
/// world.abort_on_panic();     // a panicking rank ends the job instead of hanging it
/// let comm = world.comm();
/// if comm.is_root() {
///     println!("training on {} process(es)", comm.size());
/// }
/// # Ok::<(), strata_distributed::DistributedError>(())
/// ```
pub struct World {
    comm: Communicator,
    launch: Option<Launch>,
    #[cfg(feature = "mpi")]
    engine: Option<std::sync::Arc<crate::mpi::Engine>>,
}

impl World {
    /// Joins the launcher's world, or makes a world of one when no launcher started this
    /// process.
    ///
    /// # Errors
    /// [`DistributedError::NotBuiltWithMpi`](crate::DistributedError::NotBuiltWithMpi) when a launcher started several processes but
    /// this build has no MPI (the processes would otherwise each train alone and overwrite
    /// each other's files); [`DistributedError::Init`](crate::DistributedError::Init) when MPI fails to start or was
    /// initialised before in this process.
    pub fn init() -> Result<World> {
        let Some(launch) = launcher::detect() else {
            return Ok(World::alone());
        };
        Self::join(launch)
    }

    /// A world of one process, whatever the environment says.
    pub fn alone() -> World {
        World {
            comm: Communicator::alone(),
            launch: None,
            #[cfg(feature = "mpi")]
            engine: None,
        }
    }

    #[cfg(feature = "mpi")]
    fn join(launch: Launch) -> Result<World> {
        let started = crate::mpi::Engine::start()?;
        let comm = Communicator::new(
            started.rank,
            started.size,
            0,
            crate::comm::Backend::Mpi(started.engine.clone()),
        );
        Ok(World {
            comm,
            launch: Some(launch),
            engine: Some(started.engine),
        })
    }

    #[cfg(not(feature = "mpi"))]
    fn join(launch: Launch) -> Result<World> {
        if launch.size == Some(1) {
            return Ok(World {
                comm: Communicator::alone(),
                launch: Some(launch),
            });
        }
        Err(crate::DistributedError::NotBuiltWithMpi {
            launcher: launch.launcher.to_string(),
            size: launch
                .size
                .map_or_else(|| "several".to_string(), |s| s.to_string()),
        })
    }

    /// The communicator of all the ranks (`MPI_COMM_WORLD`, strata's own copy of it).
    pub fn comm(&self) -> &Communicator {
        &self.comm
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// The number of processes.
    pub fn size(&self) -> usize {
        self.comm.size()
    }

    /// What the launcher's environment said, when a launcher started this process.
    pub fn launch(&self) -> Option<&Launch> {
        self.launch.as_ref()
    }

    /// Makes a panic on any thread of this process end the whole job (`MPI_Abort`, exit
    /// code 101) after the usual panic message, instead of leaving the other ranks waiting
    /// in their next collective. Does nothing in a world of one.
    pub fn abort_on_panic(&self) {
        if self.size() == 1 {
            return;
        }
        let comm = self.comm.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            eprintln!(
                "strata-distributed: rank {} of {} panicked; aborting the job",
                comm.rank(),
                comm.size()
            );
            comm.abort(101);
        }));
    }

    /// Ends the job after printing `error` with this rank's name: in a world of several, on
    /// every rank (`MPI_Abort`), so that no rank waits for this one forever; in a world of
    /// one, this process. `code` is the exit status.
    pub fn fail(&self, error: &dyn std::fmt::Display, code: i32) -> ! {
        if self.size() > 1 {
            eprintln!("error (rank {} of {}): {error}", self.rank(), self.size());
        } else {
            eprintln!("error: {error}");
        }
        self.comm.abort(code)
    }
}

impl Drop for World {
    /// Finalises MPI (after the collectives already asked for have run).
    fn drop(&mut self) {
        #[cfg(feature = "mpi")]
        if let Some(engine) = self.engine.take() {
            engine.shutdown();
        }
    }
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("comm", &self.comm)
            .field("launch", &self.launch)
            .finish()
    }
}
