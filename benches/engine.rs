//! Criterion benchmarks of the storage engine, `spool-log`.
//!
//! Each group measures one claim of `docs/performance.md`:
//!
//! | group | what |
//! |---|---|
//! | `append` | `Partition::append` (and `append_encoded`) with `Durability::None` |
//! | `write_path` | copying into a writable mapping vs `pwrite`, outside the engine |
//! | `fsync_append` | `Durability::Fsync` appends of about 1 MiB |
//! | `group_commit` | 1 and 16 threads appending 1 KiB records with `Fsync` |
//! | `read` | sequential reads of a prefilled partition from offset 0 |
//! | `open_clean` | reopening a cleanly closed store of 1,000 partitions |
//! | `open_unclean` | reopening after a crash, by unflushed and total bytes |
//!
//! Run with `scripts/bench-engine.sh` (which also records the machine and
//! `dd` figures) or `cargo bench --bench engine [-- FILTER]`. Under
//! `cargo test --benches` (criterion's test mode) every fixture shrinks so
//! that each benchmark runs once in seconds.
//!
//! The groups live in `benches/engine/`, one file each, with the shared
//! fixtures in `rig.rs` and the raw system calls in `sys.rs`.
//!
//! Scratch data goes to `SPOOL_SCRATCH_DIR` or the temporary directory;
//! the heavy fixtures are built lazily, only for benchmarks the filter
//! selects.

#[path = "engine/append.rs"]
mod append;
#[path = "engine/fsync.rs"]
mod fsync;
#[path = "engine/group_commit.rs"]
mod group_commit;
#[path = "engine/open.rs"]
mod open;
#[path = "engine/read.rs"]
mod read;
#[path = "engine/rig.rs"]
mod rig;
#[path = "engine/sys.rs"]
mod sys;
#[path = "engine/write_path.rs"]
mod write_path;

criterion::criterion_group! {
    name = engine;
    config = rig::criterion();
    targets = append::bench, write_path::bench, fsync::bench, group_commit::bench, read::bench, open::bench
}
criterion::criterion_main!(engine);
