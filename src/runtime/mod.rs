//! The toolkit every controller shares: naming, labels, apply and prune, conditions, backoff,
//! metrics, leader election, resilient watches and memory. One implementation of each.

pub mod apply;
pub mod backoff;
pub mod cache;
pub mod conditions;
pub mod labels;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod naming;
pub mod own_writes;
pub mod settle;
pub mod startup;
pub mod watch;
