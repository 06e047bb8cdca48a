//! The conformance suite against the in-memory reference store: the suite passes on a correct
//! store (`broken_stores.rs` shows that its cases fail on broken ones).

use std::sync::Arc;

use seed_event::conformance::Harness;
use seed_event::{EventStore, MemoryStore};

struct Memory(MemoryStore);

impl Harness for Memory {
    fn open(&self) -> Arc<dyn EventStore> {
        Arc::new(self.0.clone())
    }
}

seed_event::conformance_tests!(Memory(MemoryStore::new()));

mod groups {
    seed_event::group_conformance_tests!(crate::Memory(seed_event::MemoryStore::new()));
}
