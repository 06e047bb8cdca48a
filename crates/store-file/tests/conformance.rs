//! The shared conformance suite, run against the file store (with inotify and with polling).

use std::sync::Arc;

use seed_event::conformance::Harness;
use seed_event::EventStore;
use store_file::{FileStore, FileStoreConfig};

/// A fresh events directory; `open` reopens the same directory each time.
struct Dir {
    dir: tempfile::TempDir,
    config: FileStoreConfig,
}

impl Harness for Dir {
    fn open(&self) -> Arc<dyn EventStore> {
        Arc::new(FileStore::open_with(self.dir.path(), self.config.clone()).unwrap())
    }
}

fn with_inotify() -> Dir {
    Dir { dir: tempfile::tempdir().unwrap(), config: FileStoreConfig::default() }
}

fn polling() -> Dir {
    let config = FileStoreConfig::default().inotify(false);
    Dir { dir: tempfile::tempdir().unwrap(), config }
}

seed_event::conformance_tests!(crate::with_inotify());

mod polling {
    seed_event::conformance_tests!(crate::polling());
}

mod groups {
    seed_event::group_conformance_tests!(crate::with_inotify());

    mod polling {
        seed_event::group_conformance_tests!(crate::polling());
    }
}

mod states {
    seed_state::state_conformance_tests!(crate::with_inotify());
}
