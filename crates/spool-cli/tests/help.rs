//! The `spool` binary starts and documents itself. (This test also makes
//! `cargo test --workspace` build the binary that the workspace's
//! end-to-end tests run.)

use std::process::Command;

#[test]
fn help_lists_the_commands_with_examples() {
    let output = Command::new(env!("CARGO_BIN_EXE_spool"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for command in [
        "topic",
        "produce",
        "consume",
        "replay",
        "offsets",
        "checkpoint",
        "job",
        "queue",
        "bench",
    ] {
        assert!(text.contains(command), "{command} missing from --help:\n{text}");
    }
}
