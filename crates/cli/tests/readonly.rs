//! Read-only commands leave a missing events directory missing.

mod util;

use util::Dir;

/// `seed history`, `seed topics` and `seed stats` on a missing
/// `--events-dir` succeed (an empty store) and create nothing.
#[test]
fn read_only_commands_do_not_create_the_events_directory() {
    let dir = Dir::new();
    let missing = dir.path().join("never").join("events");
    let missing_arg = missing.display().to_string();
    for command in [&["history"][..], &["topics"], &["stats"], &["history", "--json"]] {
        let mut args = vec!["--events-dir", missing_arg.as_str()];
        args.extend_from_slice(command);
        dir.stdout(&args);
        assert!(!missing.exists(), "seed {command:?} created {}", missing.display());
        assert!(!dir.path().join("never").exists(), "seed {command:?} created a parent");
    }
    // The first write creates it.
    let mut args = vec!["--events-dir", missing_arg.as_str()];
    args.extend_from_slice(&["publish", "--topic", "t", "--source", "s", "--payload", "{}"]);
    dir.stdout(&args);
    assert!(missing.is_dir());
}
