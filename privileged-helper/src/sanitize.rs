//! First thing the helper does: forget everything it inherited.

use std::io;

/// Closes every fd above stderr and clears the environment, so nothing a parent left behind
/// (sockets, directories, `LD_*` variables) can reach a sandbox or steer the helper.
pub fn sanitize_process() -> io::Result<()> {
    // SAFETY: the process has no threads yet and no Rust object owns a descriptor above 2.
    unsafe { crate::sandbox::sys::close_fds_except(&[]) }?;
    let keys: Vec<_> = std::env::vars_os().map(|(k, _)| k).collect();
    for key in keys {
        // SAFETY: called at start-up before any other thread exists, so no concurrent reader of
        // the environment can observe the removal.
        unsafe { std::env::remove_var(key) };
    }
    // SAFETY: same single-threaded start-up as above.
    unsafe { std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin") };
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    Ok(())
}
