//! Fail points for tests: in debug builds only, `CAIRN_FAILPOINT=<name>` makes the named
//! point panic, so tests can prove that a panic in the middle of a command still ends as one
//! error line and releases the stanza lock; `CAIRN_FAILPOINT=kill:<name>` makes the process
//! die there at once, as SIGKILL would (no unwinding, no lock released, nothing flushed), so
//! tests can prove what a crash at that point leaves is safe. Release builds compile this to
//! nothing.

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
