//! The state cases of the conformance suite against the in-memory store.

use std::sync::Arc;

use seed_event::conformance::Harness;
use seed_event::{EventStore, MemoryStore};

struct Memory(MemoryStore);

impl Harness for Memory {
    fn open(&self) -> Arc<dyn EventStore> {
        Arc::new(self.0.clone())
    }
}

seed_state::state_conformance_tests!(Memory(MemoryStore::new()));
