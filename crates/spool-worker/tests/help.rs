//! The `spool-worker` binary starts and documents itself. (This test also
//! makes `cargo test --workspace` build the binary that the workspace's
//! end-to-end tests run.)

use std::process::Command;

#[test]
fn help_documents_both_handlers_and_the_exit_code_for_no_retry() {
    let output = Command::new(env!("CARGO_BIN_EXE_spool-worker"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for needle in ["--exec", "--http", "--queue", "100"] {
        assert!(text.contains(needle), "{needle} missing from --help:\n{text}");
    }
}

#[test]
fn a_missing_handler_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_spool-worker"))
        .args(["--queue", "q"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}
