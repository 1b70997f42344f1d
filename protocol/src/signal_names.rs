//! Signal names as units and the CLI spell them (`SIGTERM`, `TERM`, `15`, `SIGRTMIN+3`), and
//! their Linux numbers: signals travel as numbers, names are read by berthd and the CLI.

/// The standard signals of Linux (x86_64), from `SIGHUP` (1) on: a signal's number is its
/// place here plus one. 32 and 33 are glibc's own real-time signals and have no name.
const STANDARD_SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// `SIGRTMIN` as a C program sees it (glibc keeps 32 and 33 for itself).
pub const SIGRTMIN: i32 = 34;
/// `SIGRTMAX`, the highest signal number (`_NSIG - 1`).
pub const SIGRTMAX: i32 = 64;

/// The number of a signal given as `SIGTERM`, `TERM`, `SIGRTMIN+n`, `RTMAX-n` or a decimal
/// number in 1..=[`SIGRTMAX`] (as systemd's `signal_from_string` reads them). Signal 0 is not a
/// signal.
pub fn signal_number(text: &str) -> Option<i32> {
    if let Ok(number) = text.parse::<i32>() {
        return Some(number).filter(|n| (1..=SIGRTMAX).contains(n));
    }
    let name = text.strip_prefix("SIG").unwrap_or(text);
    if let Some(index) = STANDARD_SIGNALS.iter().position(|n| *n == name) {
        return i32::try_from(index + 1).ok();
    }
    // Aliases the kernel headers define.
    match name {
        "IOT" => return Some(6),
        "POLL" => return Some(29),
        _ => {}
    }
    let realtime = |base: i32, offset: Option<&str>, sign: i32| {
        let offset = match offset {
            None => 0,
            Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                digits.parse::<i32>().ok()?
            }
            Some(_) => return None,
        };
        Some(base + sign * offset).filter(|n| (SIGRTMIN..=SIGRTMAX).contains(n))
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return realtime(
            SIGRTMIN,
            if rest.is_empty() {
                None
            } else {
                Some(rest.strip_prefix('+')?)
            },
            1,
        );
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return realtime(
            SIGRTMAX,
            if rest.is_empty() {
                None
            } else {
                Some(rest.strip_prefix('-')?)
            },
            -1,
        );
    }
    None
}

/// The name of signal `number` with its `SIG` prefix (`SIGTERM`, `SIGRTMIN+2`), for messages.
pub fn signal_name(number: i32) -> Option<String> {
    let index = usize::try_from(number).ok()?.checked_sub(1)?;
    if let Some(name) = STANDARD_SIGNALS.get(index) {
        return Some(format!("SIG{name}"));
    }
    match number {
        SIGRTMIN => Some("SIGRTMIN".to_owned()),
        n if (SIGRTMIN + 1..=SIGRTMAX).contains(&n) => Some(format!("SIGRTMIN+{}", n - SIGRTMIN)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_and_without_sig_and_numbers_are_read() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("TERM"), Some(15));
        assert_eq!(signal_number("15"), Some(15));
        assert_eq!(signal_number("SIGHUP"), Some(1));
        assert_eq!(signal_number("SIGKILL"), Some(9));
        assert_eq!(signal_number("SIGABRT"), Some(6));
        assert_eq!(signal_number("SIGIOT"), Some(6));
        assert_eq!(signal_number("SIGSYS"), Some(31));
        assert_eq!(signal_number("WINCH"), Some(28));
    }

    #[test]
    fn realtime_signals_are_relative_to_rtmin_and_rtmax() {
        assert_eq!(signal_number("SIGRTMIN"), Some(34));
        assert_eq!(signal_number("SIGRTMIN+3"), Some(37));
        assert_eq!(signal_number("RTMAX"), Some(64));
        assert_eq!(signal_number("RTMAX-4"), Some(60));
        assert_eq!(signal_number("64"), Some(64));
    }

    #[test]
    fn bad_signals_are_refused() {
        for bad in [
            "",
            "0",
            "65",
            "-1",
            "SIG",
            "sigterm",
            "SIGBOGUS",
            "SIGRTMIN+31",
            "SIGRTMIN-1",
            "RTMAX+1",
            "RTMIN+",
            "RTMIN+x",
            "SIGTERM ",
        ] {
            assert_eq!(signal_number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        for number in 1..=SIGRTMAX {
            let Some(name) = signal_name(number) else {
                assert!(number == 32 || number == 33, "{number} has no name");
                continue;
            };
            assert_eq!(signal_number(&name), Some(number), "{name}");
        }
    }
}
