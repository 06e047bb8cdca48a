//! The conformance suite against a real redis-server started for each case.

use std::sync::Arc;

use seed_event::conformance::Harness;
use seed_event::EventStore;
use store_redis::testing::RedisServer;
use store_redis::{RedisConfig, RedisStore};

/// One server per case; `open` reopens the same prefix on it.
struct Redis {
    server: RedisServer,
}

impl Harness for Redis {
    fn open(&self) -> Arc<dyn EventStore> {
        let config = RedisConfig::new(self.server.url()).prefix("conformance:");
        Arc::new(RedisStore::open_with(config).unwrap())
    }
}

seed_event::conformance_tests!(Redis { server: RedisServer::start() });

mod states {
    seed_state::state_conformance_tests!(crate::Redis {
        server: store_redis::testing::RedisServer::start()
    });
}

mod groups {
    seed_event::group_conformance_tests!(crate::Redis {
        server: store_redis::testing::RedisServer::start()
    });
}
