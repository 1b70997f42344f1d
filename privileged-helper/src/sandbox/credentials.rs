//! Dropping from root to the service's dynamic uid/gid with no capabilities at all.

use super::Failure;
use super::sys;

/// Above any capability number a kernel has had (40 today). The kernel answers EINVAL past its
/// own last one, which ends the drop loop; no need to read `cap_last_cap` on every start.
const CAP_NUMBERS: u32 = 64;

/// Becomes `uid`/`gid` for good: empty bounding, permitted, effective, inheritable and ambient
/// sets, no supplementary groups, no_new_privs, not dumpable, and SIGKILL when the supervisor
/// dies.
pub(super) fn drop_to(uid: u32, gid: u32) -> Result<(), Failure> {
    // Needs CAP_SETPCAP, so before the uid change.
    for cap in 0..CAP_NUMBERS {
        match sys::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => {
                return Err(Failure::setup(
                    format!("drop capability {cap} from the bounding set"),
                    e,
                ));
            }
        }
    }
    sys::clear_groups().map_err(|e| Failure::setup("setgroups", e))?;
    sys::setresgid(gid).map_err(|e| Failure::setup("setresgid", e))?;
    sys::setresuid(uid).map_err(|e| Failure::setup("setresuid", e))?;
    // setresuid already emptied permitted/effective unless securebits say otherwise; make
    // sure, and clear inheritable too.
    sys::clear_capabilities().map_err(|e| Failure::setup("clear capabilities", e))?;
    sys::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    )
    .map_err(|e| Failure::setup("clear ambient capabilities", e))?;
    rustix::thread::set_no_new_privs(true).map_err(|e| Failure::setup("set no_new_privs", e))?;
    // The uid change made us non-dumpable only because fs.suid_dumpable is 0 by default; make
    // sure, so the service (same uid) can never ptrace init or read its /proc/1/{environ,
    // maps,mem,exe}. Main's exec makes main dumpable again.
    sys::prctl(libc::PR_SET_DUMPABLE, 0)
        .map_err(|e| Failure::setup("make init non-dumpable", e))?;
    // A credential change resets the parent-death signal, so set it last. A service whose
    // supervisor died could never be stopped or reported on: take it down with it.
    sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
        .map_err(|e| Failure::setup("set the parent-death signal", e))?;
    Ok(())
}
