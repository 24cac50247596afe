//! Fail points for tests: in debug builds only, `CAIRN_FAILPOINT=<name>` makes the named
//! point panic, so tests can prove that a panic in the middle of a command still ends as one
//! error line and releases the stanza lock; `CAIRN_FAILPOINT=kill:<name>` makes the process
//! die there at once, as SIGKILL would (no unwinding, no lock released, nothing flushed), so
//! tests can prove what a crash at that point leaves is safe; `CAIRN_FAILPOINT=act:<name>`
//! runs the action the point supplies, once per process (`act`). Release builds compile this
//! to nothing.

/// Panic (or die) here when `CAIRN_FAILPOINT` names this point (debug builds only).
pub fn hit(name: &str) {
    #[cfg(debug_assertions)]
    if let Ok(v) = std::env::var("CAIRN_FAILPOINT") {
        if v == name {
            panic!("fail point {name}");
        }
        if v.strip_prefix("kill:") == Some(name) {
            std::process::abort();
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Run `action` the first time this point is reached when `CAIRN_FAILPOINT=act:<name>`
/// (debug builds only): what a test needs to happen from outside at exactly this moment.
pub fn act(name: &str, action: impl FnOnce()) {
    #[cfg(debug_assertions)]
    if let Ok(v) = std::env::var("CAIRN_FAILPOINT")
        && v.strip_prefix("act:") == Some(name)
    {
        static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !FIRED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            action();
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = (name, action);
}
