//! The one run-and-assert helper of the binaries' bad-input tests (`tests/bad_input.rs` of
//! coeff-cli and coeff-experiments, and the command tests beside them): run a built binary,
//! never accept a panic, and expect either success or a clean error (exit status 1 with an
//! `Error: ` line, not a signal such as an allocation abort).

use std::path::Path;
use std::process::Command;

/// Run `bin` with `args` in `cwd`; returns (exit code, stderr). `None` is a death by signal
/// (an abort). Panics (fails the test) if the program panicked.
pub fn run(bin: &str, cwd: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{bin} does not start: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked at"),
        "{args:?} panicked:\n{stderr}"
    );
    (out.status.code(), stderr)
}

/// Run and expect success (exit 0); returns stderr.
pub fn succeeds(bin: &str, cwd: &Path, args: &[&str]) -> String {
    let (code, stderr) = run(bin, cwd, args);
    assert_eq!(code, Some(0), "{args:?} should succeed:\n{stderr}");
    stderr
}

/// Run and expect a clean error (exit 1 and an `Error: ` line); returns stderr.
pub fn fails(bin: &str, cwd: &Path, args: &[&str]) -> String {
    let (code, stderr) = run(bin, cwd, args);
    assert_eq!(
        code,
        Some(1),
        "{args:?} should fail with an error:\n{stderr}"
    );
    assert!(stderr.contains("Error: "), "{stderr}");
    stderr
}

/// Run, expect a clean error, and check that it says every one of `needles`; returns stderr.
pub fn fails_saying(bin: &str, cwd: &Path, args: &[&str], needles: &[&str]) -> String {
    let stderr = fails(bin, cwd, args);
    for n in needles {
        assert!(
            stderr.contains(n),
            "{args:?}: the error should say `{n}`:\n{stderr}"
        );
    }
    stderr
}
