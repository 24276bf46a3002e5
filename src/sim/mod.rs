//! The simulation harness: clusters of shards on madsim nodes with their own disks and
//! clocks, the faults a scenario can inject, and the replica states the checkers read.

#[cfg(madsim)]
pub mod bench;
#[cfg(madsim)]
pub mod cluster;

pub mod state;
