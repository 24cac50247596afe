//! Fail points for tests: in debug builds only, `CAIRN_FAILPOINT=<name>` makes the named
//! point panic, so tests can prove that a panic in the middle of a command still ends as one
//! error line and releases the stanza lock. Release builds compile this to nothing.

/// Panic here when `CAIRN_FAILPOINT` names this point (debug builds only).
pub fn hit(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("CAIRN_FAILPOINT").is_ok_and(|v| v == name) {
        panic!("fail point {name}");
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
