//! The simulation harness: clusters of shards on madsim nodes with their own disks and
//! clocks, the faults a scenario can inject, and the replica states the checkers read.

#[cfg(madsim)]
pub mod bench;
#[cfg(madsim)]
pub mod bughunt;
#[cfg(madsim)]
pub mod chaos;
#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod command;
#[cfg(madsim)]
pub mod faults;
#[cfg(madsim)]
pub mod run;
#[cfg(madsim)]
pub mod shrink;
#[cfg(madsim)]
pub mod trace;
#[cfg(madsim)]
pub mod workload;

pub mod state;
