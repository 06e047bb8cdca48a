//! Ctrl-C (SIGINT) and SIGTERM as a flag, so `subscribe` can stop cleanly.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only atomics and _exit: async-signal-safe.
    if STOP.swap(true, Ordering::SeqCst) {
        // A second signal: the clean stop is stuck (e.g. stdout blocks); leave now.
        // SAFETY: _exit is async-signal-safe and takes no pointers.
        unsafe { libc::_exit(130) }
    }
}

/// From now on SIGINT and SIGTERM set a flag instead of killing the process
/// (a second one ends it at once, with status 130).
pub fn catch_stop_signals() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only stores to an atomic.
        let previous = unsafe { libc::signal(signal, handler as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            log::warn!("cannot catch signal {signal}; it will end the process at once");
        }
    }
}

/// Whether SIGINT or SIGTERM arrived since [`catch_stop_signals`].
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
