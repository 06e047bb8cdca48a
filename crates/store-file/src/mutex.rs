//! Taking a mutex whatever a panicking holder left: every lock of the crate
//! guards state that stays consistent between statements.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering the guard if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
