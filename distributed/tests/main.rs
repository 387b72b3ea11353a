//! strata-distributed in a world of one: the same machinery as under MPI (hooks, buckets,
//! the averaging job, the sampler, ZeRO's partition), with every collective the identity.

mod world_of_one;
