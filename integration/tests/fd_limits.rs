//! berthd under a connection flood. A test binary of its own: it lowers its RLIMIT_NOFILE, which
//! berthd inherits, and that limit would hamper other tests sharing the process.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::net::UnixStream;
use std::time::Duration;

use berth_testkit::Harness;

const LIMIT: u64 = 320;

fn lower_fd_limit(limit: u64) {
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit reads the struct we pass; lowering a limit is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) }, 0);
}

#[test]
fn connection_flood_is_refused_and_the_daemon_recovers() {
    lower_fd_limit(LIMIT);
    let h = Harness::start().unwrap();
    let berthd = h.berthd_pid().unwrap();

    let flood: Vec<UnixStream> = (0..200)
        .filter_map(|_| UnixStream::connect(h.socket()).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let open = berth_testkit::open_fd_count(berthd) as u64;
    drop(flood);

    assert!(
        open <= LIMIT - berth_varlink::limits::FD_RESERVE + 2,
        "berthd holds {open} fds with a limit of {LIMIT}"
    );
    berth_testkit::wait_until(Duration::from_secs(5), || {
        Ok(h.berth(&["list"])?.status.success())
    })
    .unwrap();
}
