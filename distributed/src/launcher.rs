//! Which MPI launcher started this process, read from the environment it sets.
//!
//! strata initialises MPI only when a launcher started it: a plain `strata train cnn` stays
//! a world of one without touching MPI (an MPI library started outside a launcher would
//! spawn helper daemons, or fail, on many systems).

/// What the launcher's environment says about this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The launcher (`"mpirun (Open MPI)"`, `"mpiexec (MPICH/Hydra)"`, …).
    pub launcher: &'static str,
    /// This process's rank, when the environment says.
    pub rank: Option<usize>,
    /// The number of processes started, when the environment says.
    pub size: Option<usize>,
    /// The number of processes started on this machine, when the environment says (what
    /// the `strata` command divides the cores by).
    pub local_size: Option<usize>,
}

/// The environment variables each launcher sets: its name, then the variables of the
/// rank, the size and the local size (any may be missing).
const LAUNCHERS: &[(&str, &str, &str, &str)] = &[
    (
        "mpirun (Open MPI)",
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_SIZE",
    ),
    (
        "mpiexec (MPICH/Hydra, Intel MPI)",
        "PMI_RANK",
        "PMI_SIZE",
        "MPI_LOCALNRANKS",
    ),
    (
        "mpirun (MVAPICH2)",
        "MV2_COMM_WORLD_RANK",
        "MV2_COMM_WORLD_SIZE",
        "MV2_COMM_WORLD_LOCAL_SIZE",
    ),
    // A PMIx server (Open MPI 5's prterun, srun --mpi=pmix) names the rank only.
    ("a PMIx launcher", "PMIX_RANK", "", ""),
];

/// The launcher that started this process, or `None` for a process started on its own.
pub fn detect() -> Option<Launch> {
    detect_from(|name| std::env::var(name).ok())
}

/// [`detect`] over any source of variables (for tests).
pub fn detect_from(get: impl Fn(&str) -> Option<String>) -> Option<Launch> {
    let number = |name: &str| -> Option<usize> {
        if name.is_empty() {
            return None;
        }
        get(name)?.trim().parse().ok()
    };
    LAUNCHERS
        .iter()
        .find(|(_, rank, size, _)| get(rank).is_some() || (!size.is_empty() && get(size).is_some()))
        .map(|&(launcher, rank, size, local)| Launch {
            launcher,
            rank: number(rank),
            size: number(size),
            local_size: number(local),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn open_mpi_mpich_and_none() {
        let ompi = detect_from(env(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ]))
        .unwrap();
        assert_eq!(ompi.launcher, "mpirun (Open MPI)");
        assert_eq!(
            (ompi.rank, ompi.size, ompi.local_size),
            (Some(3), Some(4), Some(2))
        );
        let hydra = detect_from(env(&[("PMI_RANK", "0"), ("PMI_SIZE", "2")])).unwrap();
        assert!(hydra.launcher.contains("MPICH"));
        assert_eq!(
            (hydra.rank, hydra.size, hydra.local_size),
            (Some(0), Some(2), None)
        );
        let pmix = detect_from(env(&[("PMIX_RANK", "1")])).unwrap();
        assert_eq!((pmix.rank, pmix.size), (Some(1), None));
        assert_eq!(detect_from(env(&[("HOME", "/root")])), None);
    }
}
