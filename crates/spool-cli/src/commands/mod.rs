//! One module per command family.

pub mod consume;
pub mod offsets;
pub mod produce;
pub mod topic;
