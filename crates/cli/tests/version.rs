//! `seed --version` names the version and the commit it was built from
//! (`seed 0.1.0 (abc1234 2026-12-05)`, `abc1234-dirty` for changed sources),
//! and the build script falls back to the bare version outside a git checkout.

use std::path::Path;
use std::process::Command;

/// The output of `program args…` run in `dir`, panicking with the command, its folder and its output.
fn run(program: &Path, args: &[&str], dir: &Path, env: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(dir);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let output = cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        panic!(
            "\n\ncommand failed ({})\ncommand: {cmd:?}\nfolder: {}\n\nstdout:\n{stdout}\nstderr:\n{}\n",
            output.status,
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    stdout
}

/// The commit part of a version: `abc1234-dirty 2026-12-05`.
#[derive(Debug, PartialEq)]
struct Commit<'a> {
    hash: &'a str,
    dirty: bool,
    date: &'a str,
}

/// Splits `0.1.0 (abc1234-dirty 2026-12-05)` into the version number and its
/// commit, if any; `None` if it has neither form.
fn parse(version: &str) -> Option<(&str, Option<Commit<'_>>)> {
    let (number, rest) = match version.split_once(' ') {
        Some((number, rest)) => (number, Some(rest)),
        None => (version, None),
    };
    let parts: Vec<&str> = number.split('.').collect();
    if parts.len() != 3
        || parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let Some(rest) = rest else { return Some((number, None)) };
    let (hash, date) = rest.strip_prefix('(')?.strip_suffix(')')?.split_once(' ')?;
    let (hash, dirty) = match hash.strip_suffix("-dirty") {
        Some(hash) => (hash, true),
        None => (hash, false),
    };
    let hex =
        hash.len() >= 7 && hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    let date_ok = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    (hex && date_ok).then_some((number, Some(Commit { hash, dirty, date })))
}

#[test]
fn the_parser_accepts_both_forms_and_nothing_else() {
    assert_eq!(parse("0.1.0"), Some(("0.1.0", None)));
    assert_eq!(
        parse("0.1.0 (abc1234 2026-12-05)"),
        Some(("0.1.0", Some(Commit { hash: "abc1234", dirty: false, date: "2026-12-05" })))
    );
    assert_eq!(
        parse("0.1.0 (abc1234-dirty 2026-12-05)"),
        Some(("0.1.0", Some(Commit { hash: "abc1234", dirty: true, date: "2026-12-05" })))
    );
    for bad in [
        "0.1",
        "0.1.0 (abc 2026-12-05)",
        "0.1.0 (abc1234)",
        "0.1.0 (ABC1234 2026-12-05)",
        "0.1.0 (abc1234 2026-1-05)",
    ] {
        assert_eq!(parse(bad), None, "{bad}");
    }
}

#[test]
fn version_names_the_commit_of_this_checkout() {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let stdout = run(Path::new(env!("CARGO_BIN_EXE_seed")), &["--version"], manifest_dir, &[]);
    let line = stdout.strip_suffix('\n').unwrap_or_else(|| panic!("no newline after {stdout:?}"));
    let version = line
        .strip_prefix("seed ")
        .unwrap_or_else(|| panic!("{line:?} does not start with `seed `"));
    let (number, commit) =
        parse(version).unwrap_or_else(|| panic!("{line:?} is not `seed X.Y.Z (HASH DATE)`"));
    assert_eq!(number, env!("CARGO_PKG_VERSION"));
    // These tests run from a git checkout whenever git is there to ask.
    let head = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(manifest_dir).output();
    let Some(head) = head.ok().filter(|o| o.status.success()) else {
        assert_eq!(commit, None, "{line:?} names a commit outside a git checkout");
        return;
    };
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let commit = commit.unwrap_or_else(|| panic!("{line:?} names no commit in a git checkout"));
    assert!(head.starts_with(commit.hash), "{line:?} does not name HEAD {head}");
}

#[test]
fn outside_a_git_checkout_the_build_script_gives_the_bare_version() {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = tempfile::Builder::new().prefix("seed-version-").tempdir().unwrap();
    // The build script compiled on its own, run as cargo would on unpacked sources.
    let script = scratch.path().join("build-script");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let build_rs = manifest_dir.join("build.rs");
    let out = script.to_str().unwrap();
    run(
        Path::new(&rustc),
        &["--edition", "2021", "-o", out, build_rs.to_str().unwrap()],
        scratch.path(),
        &[],
    );
    let sources = scratch.path().join("seed-0.1.0");
    let cli = sources.join("crates/cli");
    std::fs::create_dir_all(&cli).unwrap();
    let stdout = run(
        &script,
        &[],
        &cli,
        &[
            ("CARGO_MANIFEST_DIR", &cli),
            ("CARGO_PKG_VERSION", Path::new("9.8.7")),
            ("GIT_CEILING_DIRECTORIES", scratch.path()),
        ],
    );
    assert!(stdout.lines().any(|l| l == "cargo:rustc-env=SEED_VERSION=9.8.7"), "{stdout}");
    assert!(!stdout.contains(&format!("rerun-if-changed={}", sources.display())), "{stdout}");
}
