//! Local testnets: spawn, kill, partition and heal many `lattice daemon` processes, and
//! the deterministic simulator front end.
