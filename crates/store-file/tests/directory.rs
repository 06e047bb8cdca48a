//! The events directory itself: the format version mark, and reads that
//! never create the directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use seed_event::conformance::{event, topic};
use seed_event::{
    Clear, ConsumerName, Cursor, ErrorKind, EventStore, FollowFrom, Limit, Query, Start,
    TopicPattern,
};
use store_file::{FileStore, FileStoreConfig, Limits, Retention};

/// Every file under `dir` with its bytes, to tell that nothing was written.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(name, fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// A store in `dir` with events in `a.one`, a consumer position, then the mark set to `mark`.
fn marked(dir: &Path, mark: &str) {
    let store = FileStore::open(dir).unwrap();
    for n in 0..3 {
        store.append(&event(&topic("a.one"), n)).unwrap();
    }
    let name = ConsumerName::new("c").unwrap();
    store.commit_consumer(&name, &topic("a.one"), Cursor::new(1, 0)).unwrap();
    fs::write(dir.join(".format"), mark).unwrap();
}

#[test]
fn the_first_write_marks_the_directory_with_format_version_1() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    assert!(!dir.path().join(".format").exists(), "opening writes nothing");
    store.append(&event(&topic("t"), 1)).unwrap();
    assert_eq!(fs::read_to_string(dir.path().join(".format")).unwrap(), "1\n");
    assert_eq!(store.topics().unwrap().len(), 1, "the mark is not taken for a topic");
}

/// A directory written before the mark existed (logs, no mark) is read and
/// written as version 1, and marked by its next write.
#[test]
fn a_directory_without_a_mark_is_version_1() {
    let dir = tempfile::tempdir().unwrap();
    marked(dir.path(), "1\n");
    fs::remove_file(dir.path().join(".format")).unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.query(&Query::topic(&topic("a.one"))).unwrap().len(), 3);
    assert!(!dir.path().join(".format").exists(), "reading does not mark");
    store.append(&event(&topic("a.one"), 4)).unwrap();
    assert_eq!(fs::read_to_string(dir.path().join(".format")).unwrap(), "1\n");
    assert_eq!(store.query(&Query::topic(&topic("a.one"))).unwrap().len(), 4);
}

/// A newer or unreadable mark: every write (append, batch, conditional
/// append, clear, retention, consumer commit) and every read is refused with
/// an error naming the directory, the version found and the one supported,
/// and nothing in the directory changes.
#[test]
fn a_directory_of_another_format_is_refused_and_left_alone() {
    for (mark, found) in [("2\n", "format version 2"), ("v7 beta", "unreadable format mark")] {
        let dir = tempfile::tempdir().unwrap();
        marked(dir.path(), mark);
        let before = snapshot(dir.path());
        let config =
            FileStoreConfig::default().retention(Retention::new(Limits::default().max_events(1)));
        let t = topic("a.one");
        let name = ConsumerName::new("c").unwrap();
        let check = |what: &str, err: seed_event::Error| {
            let text = err.to_string();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{what}: {text}");
            for needle in [&dir.path().display().to_string(), found, "format version 1"] {
                assert!(text.contains(needle), "{what}: {text:?} should name {needle:?}");
            }
            assert!(!text.contains('\n') && !text.ends_with('.'), "{what}: one line: {text:?}");
            assert_eq!(snapshot(dir.path()), before, "{what} wrote nothing");
        };
        // A fresh store for each write, as another process would be.
        let fresh = || FileStore::open_with(dir.path(), config.clone()).unwrap();
        check("append", fresh().append(&event(&t, 9)).unwrap_err());
        check("append to a new topic", fresh().append(&event(&topic("a.new"), 9)).unwrap_err());
        check("batch", fresh().append_batch(&t, &[event(&t, 9), event(&t, 10)]).unwrap_err());
        check("conditional", fresh().append_expecting(&event(&t, 9), None).unwrap_err());
        check("clear", fresh().clear(&Clear { topic: None, before: None }).unwrap_err());
        check("retention", fresh().enforce_retention().unwrap_err());
        check("commit", fresh().commit_consumer(&name, &t, Cursor::new(2, 0)).unwrap_err());
        let store = fresh();
        check("query", store.query(&Query::topic(&t)).unwrap_err());
        check("topics", store.topics().unwrap_err());
        check("last cursor", store.last_cursor(&t).unwrap_err());
        check("consumers", store.consumers().unwrap_err());
        check("load consumer", store.load_consumer(&name).unwrap_err());
        check("verify", store.verify().unwrap_err());
        let pattern = TopicPattern::new("a.>").unwrap();
        check("follow", store.follow(&pattern, FollowFrom::start(Start::New)).err().unwrap());
    }
}

/// Reads of a missing events directory see an empty store and leave no
/// directory behind; the first write creates it.
#[test]
fn reads_of_a_missing_directory_do_not_create_it() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("events");
    let store = FileStore::open(&dir).unwrap();
    let t = topic("a.one");
    assert!(store.query(&Query::default()).unwrap().is_empty());
    let last = Query { limit: Some(Limit::Last(3)), ..Query::topic(&t) };
    assert!(store.query(&last).unwrap().is_empty());
    assert!(store.topics().unwrap().is_empty());
    assert_eq!(store.last_cursor(&t).unwrap(), None);
    assert_eq!(store.count_after(&t, Cursor::new(0, 0)).unwrap(), 0);
    assert!(store.consumers().unwrap().is_empty());
    assert!(store.load_consumer(&ConsumerName::new("c").unwrap()).unwrap().is_empty());
    assert!(store.verify().unwrap().is_empty());
    assert_eq!(store.clear(&Clear { topic: None, before: None }).unwrap(), 0);
    assert_eq!(store.enforce_retention().unwrap(), 0);
    let mut follower =
        store.follow(&TopicPattern::new("a.>").unwrap(), FollowFrom::start(Start::New)).unwrap();
    assert!(follower.next_batch(10, Duration::ZERO).unwrap().is_empty());
    assert!(!dir.exists(), "a read created the events directory");

    // A writer (another process) creates it: the follower picks its events up.
    let writer = FileStore::open(&dir).unwrap();
    let sent = event(&t, 1);
    writer.append(&sent).unwrap();
    assert!(dir.is_dir());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.is_empty() && Instant::now() < deadline {
        got = follower.next_batch(10, Duration::from_millis(200)).unwrap();
    }
    assert_eq!(got.iter().map(|e| e.event.id).collect::<Vec<_>>(), vec![sent.id]);
}
