//! Consumer locks on Redis: `SET <prefix>lock:<consumer> "<generation> <client id>" NX PX ttl`.
//!
//! The generation comes from `INCR <prefix>lockgen:<consumer>` and is the
//! lock's [`Fence`]. The holder keeps one connection of its own for the lock
//! (its `CLIENT ID` is in the value) and renews it every third of the TTL
//! from a thread. A newcomer that finds the lock held asks `CLIENT LIST ID`
//! whether the holder's connection still exists: when the holder died its
//! connection closed, and the newcomer takes over at once with a
//! compare-and-set on the value it saw. The TTL only bounds a holder whose
//! host went silent (or a server whose ACL denies `CLIENT LIST`).
//!
//! Renewing, releasing and fenced commits are scripts that compare the
//! generation in the value; a lock that expired while nobody took it (the
//! generation counter still at the holder's) is taken back by its holder.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, LazyLock};
use std::thread;
use std::time::Duration;

use redis::Script;
use seed_event::{ConsumerLock, ConsumerName, Cursor, Error, Fence, LockRequest, Result, Topic};

use crate::conn::Shared;

/// Takes the lock, or takes it over when the value is still `ARGV[3]`.
///
/// KEYS: lock, generation counter. ARGV: client id, ttl ms, the value a
/// takeover expects (`""`: only a free lock). Returns the new generation, or
/// the holder's value.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[3] then return v end
local gen = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], gen .. ' ' .. ARGV[1], 'PX', ARGV[2])
return gen
"#,
    )
});

/// The Lua test that the lock is the holder's of generation `ARGV[1]`:
/// its value names that generation, or it expired and nobody took it since.
const HELD: &str = r#"
local function held()
  local v = redis.call('GET', KEYS[1])
  if v then return string.match(v, '^(%d+) ') == ARGV[1] end
  return redis.call('GET', KEYS[2]) == ARGV[1]
end
"#;

/// Whether the lock is the holder's of generation `ARGV[1]` (1 or 0), as
/// [`HELD`] decides. KEYS: lock, generation counter.
static CONFIRM: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{HELD}\nif held() then return 1 end\nreturn 0")));

/// Renews the lock of generation `ARGV[1]` for `ARGV[3]` ms, recording
/// client id `ARGV[2]`. KEYS: lock, generation counter. Returns 1, or 0 when lost.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{HELD}\nif not held() then return 0 end\n\
         redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])\nreturn 1"
    ))
});

/// Lets go of the lock of generation `ARGV[1]`: deletes it and moves the
/// generation counter on, so that generation can never commit or renew again.
/// KEYS: lock, generation counter.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{HELD}\nif held() then\n  redis.call('DEL', KEYS[1])\n  redis.call('INCR', KEYS[2])\nend\nreturn 1"
    ))
});

/// Commits a position if generation `ARGV[1]` holds the lock.
/// KEYS: lock, generation counter, consumer hash, consumer set.
/// ARGV: generation, topic, cursor, consumer. Returns 1, or 0 when stale.
static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{HELD}\nif not held() then return 0 end\n\
         redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])\n\
         redis.call('SADD', KEYS[4], ARGV[4])\nreturn 1"
    ))
});

/// The first wait between attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest wait between attempts: bounds a takeover after the holder's death.
const MAX_PAUSE: Duration = Duration::from_millis(200);

#[derive(Clone)]
struct LockKeys {
    lock: String,
    generation: String,
}

fn keys(shared: &Shared, name: &ConsumerName) -> LockKeys {
    let prefix = &shared.config.prefix;
    LockKeys { lock: format!("{prefix}lock:{name}"), generation: format!("{prefix}lockgen:{name}") }
}

/// What one acquisition attempt found.
enum Attempt {
    Held(u64),
    Busy(String),
}

/// The holder's lock connection and its `CLIENT ID`.
struct LockConnection {
    con: redis::Connection,
    id: i64,
}

impl LockConnection {
    fn open(shared: &Shared) -> Result<LockConnection> {
        let mut con = shared.connect()?;
        let id = redis::cmd("CLIENT").arg("ID").query(&mut con).map_err(|e| shared.error(e))?;
        Ok(LockConnection { con, id })
    }
}

fn try_acquire(
    shared: &Shared,
    con: &mut LockConnection,
    keys: &LockKeys,
    ttl_ms: u64,
) -> Result<Attempt> {
    let mut expected = String::new();
    loop {
        let reply: redis::Value = ACQUIRE
            .key(&keys.lock)
            .key(&keys.generation)
            .arg(con.id)
            .arg(ttl_ms)
            .arg(&expected)
            .invoke(&mut con.con)
            .map_err(|e| shared.error(e))?;
        let holder = match reply {
            redis::Value::Int(generation) => return Ok(Attempt::Held(generation as u64)),
            redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            other => {
                return Err(Error::corrupt(
                    format!("Redis key {}", keys.lock),
                    format!("unexpected reply {other:?} to taking the lock"),
                ))
            }
        };
        if expected == holder || !holder_is_gone(shared, con, &holder) {
            return Ok(Attempt::Busy(holder));
        }
        log::info!("lock {}: its holder's connection is gone, taking it over", keys.lock);
        expected = holder;
    }
}

/// Whether the connection named in the lock value `holder` no longer exists.
/// Unknown (a value without an id, `CLIENT LIST` refused) counts as alive.
fn holder_is_gone(shared: &Shared, con: &mut LockConnection, holder: &str) -> bool {
    let Some(id) = holder.split(' ').nth(1).filter(|id| id.parse::<u64>().is_ok()) else {
        return false;
    };
    let listed: redis::RedisResult<String> =
        redis::cmd("CLIENT").arg("LIST").arg("ID").arg(id).query(&mut con.con);
    match listed {
        Ok(list) => list.trim().is_empty(),
        Err(e) => {
            log::debug!("CLIENT LIST refused, waiting for the lock's TTL: {}", shared.error(e));
            false
        }
    }
}

/// Takes `name`'s lock, waiting as `request` says.
pub(crate) fn lock(
    shared: &Arc<Shared>,
    name: &ConsumerName,
    request: &LockRequest,
) -> Result<Option<Box<dyn ConsumerLock>>> {
    let keys = keys(shared, name);
    let ttl_ms = request.ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
    let mut con = LockConnection::open(shared)?;
    let attempt = || match try_acquire(shared, &mut con, &keys, ttl_ms)? {
        Attempt::Held(generation) => Ok(Some(generation)),
        Attempt::Busy(holder) => {
            log::debug!("lock {} is held by {holder}", keys.lock);
            Ok(None)
        }
    };
    let pause = |n: u32| FIRST_PAUSE.saturating_mul(1 << n.min(10)).min(MAX_PAUSE);
    let Some(generation) = request.retry(attempt, pause)? else {
        return Ok(None);
    };
    let lost = Arc::new(AtomicBool::new(false));
    let lock_keys = keys.clone();
    let renewer = Renewer {
        shared: shared.clone(),
        keys,
        name: name.clone(),
        generation,
        ttl_ms,
        con: Some(con),
        lost: lost.clone(),
    };
    let (stop, stopped) = mpsc::channel::<()>();
    let handle = thread::Builder::new()
        .name(format!("lock-{name}"))
        .spawn(move || renewer.run(&stopped))
        .map_err(|e| Error::io("starting a lock renewer thread", e))?;
    Ok(Some(Box::new(RedisLock {
        fence: Fence(generation),
        lost,
        renewer: Some((stop, handle)),
        shared: shared.clone(),
        keys: lock_keys,
    })))
}

/// The holder's side: renews every third of the TTL, releases when dropped.
struct Renewer {
    shared: Arc<Shared>,
    keys: LockKeys,
    name: ConsumerName,
    generation: u64,
    ttl_ms: u64,
    con: Option<LockConnection>,
    lost: Arc<AtomicBool>,
}

impl Renewer {
    fn run(mut self, stopped: &mpsc::Receiver<()>) {
        let every = Duration::from_millis((self.ttl_ms / 3).max(1));
        // Failed renewals in a row: an outage is logged once when it starts and once when it ends.
        let mut failed = 0u64;
        while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
            match self.renew() {
                Ok(true) if failed > 0 => {
                    log::warn!(
                        "consumer {}: renewed its lock again after {failed} failed tries",
                        self.name
                    );
                    failed = 0;
                }
                Ok(true) => {}
                Ok(false) => {
                    log::error!("consumer {}: another holder took its lock", self.name);
                    self.lost.store(true, Ordering::SeqCst);
                    return;
                }
                // The next tick tries again on a new connection; fenced commits catch a real loss.
                Err(e) => {
                    if failed == 0 {
                        log::warn!(
                            "consumer {}: renewing its lock failed (trying again every {} ms): {e}",
                            self.name,
                            every.as_millis()
                        );
                    } else {
                        log::debug!("consumer {}: renewing its lock failed again: {e}", self.name);
                    }
                    failed += 1;
                    self.con = None;
                }
            }
        }
        if let Err(e) = self.release() {
            log::warn!("consumer {}: releasing its lock failed (it expires): {e}", self.name);
        }
    }

    fn connection(&mut self) -> Result<&mut LockConnection> {
        if self.con.is_none() {
            self.con = Some(LockConnection::open(&self.shared)?);
        }
        Ok(self.con.as_mut().unwrap_or_else(|| unreachable!("just opened")))
    }

    /// Runs `script` on the lock connection with the lock's keys and
    /// generation, then `args`; the client id comes first when `with_id`.
    fn call(&mut self, script: &Script, with_id: bool, args: &[u64]) -> Result<i64> {
        let (generation, shared) = (self.generation, self.shared.clone());
        let keys = [self.keys.lock.clone(), self.keys.generation.clone()];
        let con = self.connection()?;
        let mut invocation = script.key(&keys[0]);
        invocation.key(&keys[1]).arg(generation);
        if with_id {
            invocation.arg(con.id);
        }
        invocation.arg(args);
        invocation.invoke(&mut con.con).map_err(|e| shared.error(e))
    }

    fn renew(&mut self) -> Result<bool> {
        Ok(self.call(&RENEW, true, &[self.ttl_ms])? == 1)
    }

    fn release(&mut self) -> Result<()> {
        self.call(&RELEASE, false, &[])?;
        Ok(())
    }
}

/// A held lock; dropping it stops the renewer, which releases the lock.
struct RedisLock {
    fence: Fence,
    lost: Arc<AtomicBool>,
    renewer: Option<(mpsc::Sender<()>, thread::JoinHandle<()>)>,
    shared: Arc<Shared>,
    keys: LockKeys,
}

impl ConsumerLock for RedisLock {
    fn fence(&self) -> Fence {
        self.fence
    }

    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// One script of the renewal's test: held while the lock's value names
    /// this holder's generation, or it expired and nobody took it since.
    fn confirm(&self) -> Result<bool> {
        if self.is_lost() {
            return Ok(false);
        }
        let mut invocation = CONFIRM.key(&self.keys.lock);
        invocation.key(&self.keys.generation).arg(self.fence.0);
        let held: i64 = self.shared.run(|con, _| invocation.invoke(con))?;
        if held == 1 {
            return Ok(true);
        }
        self.lost.store(true, Ordering::SeqCst);
        Ok(false)
    }
}

impl Drop for RedisLock {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.renewer.take() {
            drop(stop);
            let _ = handle.join();
        }
    }
}

/// Commits `cursor` for `name` in `topic` if `fence` holds the lock.
pub(crate) fn commit_fenced(
    shared: &Shared,
    name: &ConsumerName,
    fence: Fence,
    topic: &Topic,
    cursor: Cursor,
) -> Result<()> {
    let keys = keys(shared, name);
    let consumer = shared.keys.consumer(name.as_str());
    let cursor = cursor.to_string();
    let done: i64 = shared.run(|con, _| {
        COMMIT
            .key(&keys.lock)
            .key(&keys.generation)
            .key(&consumer)
            .key(&shared.keys.consumers)
            .arg(fence.0)
            .arg(topic.as_str())
            .arg(&cursor)
            .arg(name.as_str())
            .invoke(con)
    })?;
    if done != 1 {
        return Err(Error::StaleLock { consumer: name.to_string(), fence: fence.0 });
    }
    Ok(())
}
