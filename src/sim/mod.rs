//! The simulation harness: clusters of shards on madsim nodes with their own disks and
//! clocks, the workload clients, the faults a scenario can inject (scheduled and random), the
//! observation of a cluster for the checks, the run trace, and a run from scenario to
//! verdict. The command line lives in `crate::cmd`, which drives this module and which
//! nothing here imports.

#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod faults;
#[cfg(madsim)]
pub mod nemesis;
#[cfg(madsim)]
pub mod observe;
#[cfg(madsim)]
pub mod report;
#[cfg(madsim)]
pub mod run;
#[cfg(madsim)]
pub mod trace;
#[cfg(madsim)]
pub mod workload;

pub mod state;
