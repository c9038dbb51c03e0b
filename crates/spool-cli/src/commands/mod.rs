//! One module per command family.

pub mod audit;
pub mod cluster;
pub mod consume;
pub mod init_security;
pub mod job;
pub mod job_view;
pub mod metrics;
pub mod offsets;
pub mod produce;
pub mod queue;
pub mod token;
pub mod top;
pub mod topic;
