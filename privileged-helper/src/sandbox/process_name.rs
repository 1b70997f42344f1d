//! What `ps` and `/proc/PID/{comm,cmdline,environ}` show of a process forked from the helper
//! without an exec (the supervisor, the sandbox's init).
//!
//! Such a process inherits the helper's memory map, so its `cmdline` is the helper's argv (its
//! path, the private socket, the manager uid) and its `environ` the environment the helper was
//! exec'd with. The kernel shows whatever lies between the `arg_start`/`arg_end` and
//! `env_start`/`env_end` addresses of the mm; [`set`] points the first pair at a new argv in
//! anonymous memory and empties the second, with one `prctl(PR_SET_MM, PR_SET_MM_MAP)`.
//!
//! Why that call: the single-field `PR_SET_MM_ARG_START` & co. need CAP_SYS_RESOURCE, which
//! containers commonly drop (Docker does, and so does this test machine); `PR_SET_MM_MAP`
//! needs no capability as long as the executable stays the same (it exists for unprivileged
//! checkpoint/restore, CONFIG_CHECKPOINT_RESTORE, set by every major distribution). It takes
//! the whole layout, so the fields we keep are read back from `/proc/self/stat` first.
//! Overwriting the inherited argv in place would need no kernel support but cannot grow past
//! the helper's argv (a unit name is up to 255 bytes) and leaves its length visible.
//!
//! The buffer lives in the heap: the kernel reads the command line only from anonymous memory
//! (a file-backed range such as `.rodata` reads as empty).

use std::ffi::CStr;
use std::io;

/// Sets the comm (`PR_SET_NAME`, at most 15 bytes: longer is cut by the kernel), the command
/// line to `argv` (each NUL-terminated, as exec would lay them out) and an empty environment.
/// Call before anything else reads the mm layout concurrently: the process must be
/// single-threaded.
pub(crate) fn set(comm: &CStr, argv: &[&[u8]]) -> io::Result<()> {
    if argv.iter().any(|arg| arg.contains(&0)) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    rustix::thread::set_name(comm)?;
    let mut area = Vec::with_capacity(argv.iter().map(|a| a.len() + 1).sum());
    for arg in argv {
        area.extend_from_slice(arg);
        area.push(0);
    }
    // The kernel keeps pointing at it for the rest of the process's life.
    let area: &'static mut [u8] = area.leak();
    let start = area.as_ptr() as u64;
    let end = start + area.len() as u64;
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let layout =
        Layout::parse(&stat).ok_or_else(|| io::Error::other("unreadable /proc/self/stat"))?;
    // Read last: nothing may move the program break between here and the prctl.
    // SAFETY: brk(0) changes nothing and returns the current break.
    let brk = unsafe { libc::syscall(libc::SYS_brk, 0usize) } as u64;
    let map = layout.map(brk, start..end);
    // SAFETY: `map` is a PrctlMmMap of exactly the size passed, alive for the call; the argv
    // range it names is leaked above, so it stays mapped and unchanged.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            libc::PR_SET_MM_MAP as libc::c_ulong,
            &map as *const PrctlMmMap,
            std::mem::size_of::<PrctlMmMap>() as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct prctl_mm_map` of `<linux/prctl.h>` (104 bytes; the libc crate lacks it).
#[repr(C)]
struct PrctlMmMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: u64,
    /// 0 keeps the saved auxiliary vector.
    auxv_size: u32,
    /// `u32::MAX` (-1) keeps the executable.
    exe_fd: u32,
}

/// The parts of the mm layout `PR_SET_MM_MAP` must be given back unchanged.
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    start_code: u64,
    end_code: u64,
    start_stack: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
}

impl Layout {
    /// Reads fields 26-28 and 45-47 of `/proc/self/stat` (proc(5)). The comm (field 2) may
    /// hold spaces and parentheses, so fields are counted from the last `)`.
    fn parse(stat: &str) -> Option<Layout> {
        let (_, rest) = stat.rsplit_once(')')?;
        // `rest` starts with field 3 (state).
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Layout {
            start_code: field(26)?,
            end_code: field(27)?,
            start_stack: field(28)?,
            start_data: field(45)?,
            end_data: field(46)?,
            start_brk: field(47)?,
        })
    }

    /// The full map: this layout, the current break, `argv` as the command line and an empty
    /// environment right after it.
    fn map(&self, brk: u64, argv: std::ops::Range<u64>) -> PrctlMmMap {
        PrctlMmMap {
            start_code: self.start_code,
            end_code: self.end_code,
            start_data: self.start_data,
            end_data: self.end_data,
            start_brk: self.start_brk,
            brk,
            start_stack: self.start_stack,
            arg_start: argv.start,
            arg_end: argv.end,
            env_start: argv.end,
            env_end: argv.end,
            auxv: 0,
            auxv_size: 0,
            exe_fd: u32::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line (kernel 6.18, of `cat`) with its comm changed to one holding a space and a
    /// parenthesis.
    const STAT: &str = "2953 (a b) c) R 2951 2951 8069 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 \
        61371 3133440 380 18446744073709551615 93927831560192 93927831580073 140732736831040 0 0 \
        0 0 0 0 0 0 0 17 0 0 0 0 0 0 93927831596080 93927831597696 93928699658240 \
        140732736838174 140732736838194 140732736838194 140732736839659 0\n";

    #[test]
    fn layout_fields_are_counted_from_the_last_parenthesis() {
        let layout = Layout::parse(STAT);

        assert_eq!(
            layout,
            Some(Layout {
                start_code: 93927831560192,
                end_code: 93927831580073,
                start_stack: 140732736831040,
                start_data: 93927831596080,
                end_data: 93927831597696,
                start_brk: 93928699658240,
            })
        );
    }

    #[test]
    fn a_truncated_stat_line_is_refused() {
        let layout = Layout::parse("4242 (x) S 1 4242 4242 0 -1");

        assert_eq!(layout, None);
    }

    #[test]
    fn the_map_has_the_size_the_kernel_expects() {
        assert_eq!(std::mem::size_of::<PrctlMmMap>(), 104);
    }

    #[test]
    fn the_environment_is_an_empty_range_after_the_command_line() {
        let layout = Layout::parse(STAT).unwrap();

        let map = layout.map(7, 100..120);

        assert_eq!((map.arg_start, map.arg_end), (100, 120));
        assert_eq!((map.env_start, map.env_end), (120, 120));
        assert_eq!((map.brk, map.exe_fd, map.auxv_size), (7, u32::MAX, 0));
    }

    #[test]
    fn an_argument_with_a_nul_byte_is_refused() {
        let set = set(c"x", &[b"a\0b"]);

        assert_eq!(set.unwrap_err().raw_os_error(), Some(libc::EINVAL));
    }
}
