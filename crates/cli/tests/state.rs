//! Black-box tests of `seed state …`: every command, its output and its exit status.

mod util;

use serde_json::{json, Value};
use store_redis::testing::RedisServer;
use util::Dir;

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// `seed state …` printing one JSON line.
fn one(dir: &Dir, args: &[&str]) -> Value {
    let mut full = vec!["state"];
    full.extend_from_slice(args);
    let out = dir.stdout(&full);
    assert_eq!(out.lines().count(), 1, "{out}");
    parse(out.trim())
}

fn lines(dir: &Dir, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["state"];
    full.extend_from_slice(args);
    dir.stdout(&full).lines().map(parse).collect()
}

fn fails(dir: &Dir, args: &[&str], code: i32) -> String {
    let mut full = vec!["state"];
    full.extend_from_slice(args);
    let stderr = dir.command(&full).fails_with(code);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr.trim().to_string()
}

fn lifecycle(dir: &Dir) {
    let v1 = one(
        dir,
        &[
            "create",
            "task",
            "t-1",
            "--by",
            "fenrir",
            "--data",
            r#"{"a":1}"#,
            "--metadata",
            r#"{"m":true}"#,
        ],
    );
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["status"], "pending");
    assert_eq!(v1["data"], json!({"a": 1}));
    assert_eq!(v1["metadata"], json!({"m": true}));
    assert_eq!(v1["updated_by"], "fenrir");
    assert_eq!(
        fails(dir, &["create", "task", "t-1", "--by", "x"], 3),
        "seed: conflict: task/t-1 already exists"
    );
    assert_eq!(one(dir, &["get", "task", "t-1"]), v1);
    let v2 = one(
        dir,
        &[
            "update",
            "task",
            "t-1",
            "--expect-version",
            "1",
            "--by",
            "odin",
            "--merge",
            r#"{"b":2}"#,
            "--status",
            "active",
        ],
    );
    assert_eq!((v2["version"].clone(), v2["status"].clone()), (json!(2), json!("active")));
    assert_eq!(v2["data"], json!({"a": 1, "b": 2}));
    assert_eq!(
        fails(
            dir,
            &["update", "task", "t-1", "--expect-version", "1", "--by", "x", "--status", "paused"],
            3
        ),
        "seed: conflict: task/t-1 is at version 2, expected 1"
    );
    let v3 = one(
        dir,
        &["update", "task", "t-1", "--expect-version", "2", "--by", "odin", "--data", r#"{"c":3}"#],
    );
    assert_eq!(v3["data"], json!({"c": 3}));
    assert_eq!(one(dir, &["get", "task", "t-1", "--version", "2"]), v2);
    one(dir, &["create", "task", "t-2", "--by", "x", "--status", "active"]);
    let active: Vec<String> = lines(dir, &["list", "task", "--status", "active"])
        .iter()
        .map(|s| s["entity_id"].as_str().unwrap().to_string())
        .collect();
    let mut active = active;
    active.sort();
    assert_eq!(active, ["t-1", "t-2"]);
    assert!(lines(dir, &["list", "task", "--status", "failed"]).is_empty());
    let gone = one(dir, &["delete", "task", "t-1", "--expect-version", "3", "--by", "thor"]);
    assert_eq!((gone["version"].clone(), gone["deleted"].clone()), (json!(4), json!(true)));
    assert_eq!(
        fails(dir, &["get", "task", "t-1"], 1),
        "seed: not found: task/t-1 (deleted at version 4)"
    );
    assert_eq!(fails(dir, &["get", "task", "nope"], 1), "seed: not found: task/nope");
    let versions: Vec<Value> =
        lines(dir, &["history", "task", "t-1"]).iter().map(|s| s["version"].clone()).collect();
    assert_eq!(versions, [json!(1), json!(2), json!(3), json!(4)]);
    assert_eq!(fails(dir, &["history", "task", "nope"], 1), "seed: not found: task/nope");
    let again = one(dir, &["create", "task", "t-1", "--by", "freya"]);
    assert_eq!(again["version"], 5);
    assert_eq!(lines(dir, &["list", "task"]).len(), 2);
}

#[test]
fn every_command_and_exit_status_on_the_file_store() {
    lifecycle(&Dir::new());
}

#[test]
fn every_command_and_exit_status_on_redis() {
    let server = RedisServer::start();
    lifecycle(&Dir::with_redis(server.url()));
}

/// Invalid input exits 2 naming what is wrong, and writes nothing.
#[test]
fn invalid_input_exits_2_and_writes_nothing() {
    let dir = Dir::new();
    for (args, needle) in [
        (vec!["create", "ta.sk", "x", "--by", "a"], "invalid entity_type"),
        (vec!["create", "task", "a b", "--by", "a"], "invalid entity_id"),
        (vec!["create", "task", "x", "--by", ""], "invalid updated_by"),
        (vec!["create", "task", "x", "--by", "a", "--data", "[1]"], "--data"),
        (vec!["create", "task", "x", "--by", "a", "--status", "sleeping"], "--status"),
        (vec!["update", "task", "x", "--expect-version", "0", "--by", "a"], "--expect-version"),
        (vec!["watch", "*", "--from-revision", "1-0"], "revision"),
        (vec!["watch", "task", "--from-revision", "soon"], "--from-revision"),
    ] {
        let stderr = fails(&dir, &args, 2);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    one(&dir, &["create", "task", "x", "--by", "a"]);
    let stderr = fails(&dir, &["update", "task", "x", "--expect-version", "1", "--by", "a"], 2);
    assert!(stderr.contains("changes nothing"), "{stderr}");
    let stderr = fails(
        &dir,
        &["update", "task", "x", "--expect-version", "1", "--by", "a", "--status", "pending"],
        2,
    );
    assert!(stderr.contains("changes nothing"), "{stderr}");
    assert_eq!(lines(&dir, &["history", "task", "x"]).len(), 1, "nothing written");
}

/// `watch` prints the current states, says it is watching, then prints each change;
/// `--from-revision` prints the changes after a revision.
#[test]
fn watch_prints_states_then_changes() {
    let dir = Dir::new();
    let v1 = one(&dir, &["create", "task", "a", "--by", "x"]);
    one(&dir, &["create", "task", "b", "--by", "x"]);
    let watch = dir.spawn(&["state", "watch", "task"]);
    let mut initial: Vec<String> = watch
        .lines(2)
        .iter()
        .map(|l| parse(l)["entity_id"].as_str().unwrap().to_string())
        .collect();
    initial.sort();
    assert_eq!(initial, ["a", "b"]);
    watch.wait_stderr("Watching state task");
    one(&dir, &["update", "task", "a", "--expect-version", "1", "--by", "y", "--status", "active"]);
    let change = parse(&watch.line());
    assert_eq!((change["entity_id"].clone(), change["version"].clone()), (json!("a"), json!(2)));
    let one_entity = dir.spawn(&[
        "state",
        "watch",
        "task",
        "--id",
        "a",
        "--from-revision",
        v1["revision"].as_str().unwrap(),
    ]);
    assert_eq!(parse(&one_entity.line())["version"], 2);
    one_entity.wait_stderr("Watching state task");
    one(&dir, &["update", "task", "b", "--expect-version", "1", "--by", "y", "--status", "active"]);
    one(&dir, &["delete", "task", "a", "--expect-version", "2", "--by", "y"]);
    assert_eq!(parse(&watch.line())["entity_id"], "b");
    let gone = parse(&one_entity.line());
    assert_eq!((gone["version"].clone(), gone["deleted"].clone()), (json!(3), json!(true)));
    assert_eq!(parse(&watch.line())["deleted"], true);
    let mut watch = watch;
    watch.signal(libc::SIGINT);
    watch.expect_exit(0);
}

/// A watch from a revision whose changes a clear removed says so on stderr
/// and starts again from the current states; `seed clear` keeps every current state.
#[test]
fn watch_from_a_cleared_revision_says_so_and_starts_from_the_current_states() {
    let dir = Dir::new();
    let v1 = one(&dir, &["create", "task", "a", "--by", "x"]);
    one(&dir, &["update", "task", "a", "--expect-version", "1", "--by", "y", "--status", "active"]);
    one(&dir, &["update", "task", "a", "--expect-version", "2", "--by", "y", "--status", "paused"]);
    dir.stdout(&["clear", "--confirm"]);
    assert_eq!(one(&dir, &["get", "task", "a"])["version"], 3);
    let watch =
        dir.spawn(&["state", "watch", "task", "--from-revision", v1["revision"].as_str().unwrap()]);
    let said = watch.wait_stderr("seed: changes of state task");
    assert!(said.contains("compacted"), "{said}");
    assert_eq!(parse(&watch.line())["version"], 3);
    watch.wait_stderr("Watching state task");
}
