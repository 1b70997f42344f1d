//! The floor for a spawn's [`ServiceProgram`] and journal fields: bounded lists, absolute
//! executables, valid signals, no NUL bytes. What the commands do inside the sandbox is the
//! sandbox's business; here only their shape is checked.

use berth_protocol::helper::JournalFields;
use berth_protocol::service_program::{
    Command, MAX_COMMANDS, MAX_PID_FILE_BYTES, ServiceProgram, ServiceType,
};

use super::{MAX_ARGS, Refusal, refuse};
use crate::sandbox::sys;

/// Longest journal field value berth sends.
const MAX_JOURNAL_FIELD: usize = 255;

/// Checks the program; returns the bytes of its strings, for the request's total.
pub(super) fn check_program(program: &ServiceProgram) -> Result<usize, Refusal> {
    let lists: [(&str, &[Command]); 6] = [
        ("program.exec_start_pre", &program.exec_start_pre),
        ("program.exec_start", &program.exec_start),
        ("program.exec_start_post", &program.exec_start_post),
        ("program.exec_reload", &program.exec_reload),
        ("program.exec_stop", &program.exec_stop),
        ("program.exec_stop_post", &program.exec_stop_post),
    ];
    let mut total = 0usize;
    for (field, list) in lists {
        if list.len() > MAX_COMMANDS {
            return Err(refuse(field, format!("more than {MAX_COMMANDS} commands")));
        }
        for command in list {
            total += check_command(field, command)?;
        }
    }
    match (program.service_type, program.exec_start.len()) {
        (_, 0) => return Err(refuse("program.exec_start", "no command to run")),
        (ServiceType::Oneshot, _) | (_, 1) => {}
        (_, _) => {
            return Err(refuse(
                "program.exec_start",
                "only Type=oneshot may have more than one command",
            ));
        }
    }
    if let Some(pid_file) = &program.pid_file {
        if !pid_file.starts_with('/') || pid_file.len() > MAX_PID_FILE_BYTES {
            return Err(refuse(
                "program.pid_file",
                format!("must be an absolute path of at most {MAX_PID_FILE_BYTES} bytes"),
            ));
        }
        if pid_file.contains('\0') {
            return Err(refuse("program.pid_file", "must not contain NUL bytes"));
        }
        total += pid_file.len();
    }
    let kill = &program.kill;
    for (field, signal) in [
        ("program.kill.signal", kill.signal),
        ("program.kill.final_signal", kill.final_signal),
        ("program.kill.watchdog_signal", kill.watchdog_signal),
    ] {
        if !(1..=sys::SIGNAL_MAX).contains(&signal) {
            return Err(refuse(field, format!("{signal} is not a signal")));
        }
    }
    Ok(total)
}

fn check_command(field: &str, command: &Command) -> Result<usize, Refusal> {
    if command.argv.is_empty() || command.argv.len() > MAX_ARGS {
        return Err(refuse(
            field,
            format!("argv must have 1 to {MAX_ARGS} entries"),
        ));
    }
    if !command.argv[0].starts_with('/') {
        return Err(refuse(field, "argv[0] must be an absolute path"));
    }
    if command.argv.iter().any(|a| a.contains('\0')) {
        return Err(refuse(field, "strings must not contain NUL bytes"));
    }
    Ok(command.argv.iter().map(String::len).sum())
}

/// Checks the journal fields: short, printable, one line each.
pub(super) fn check_journal(journal: &JournalFields) -> Result<(), Refusal> {
    for (field, value) in [
        ("journal.identifier", &journal.identifier),
        ("journal.portable", &journal.portable),
    ] {
        if value.len() > MAX_JOURNAL_FIELD || value.chars().any(char::is_control) {
            return Err(refuse(
                field,
                format!("must be at most {MAX_JOURNAL_FIELD} bytes without control characters"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(argv: &[&str]) -> ServiceProgram {
        ServiceProgram::simple(argv.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn a_simple_program_passes() {
        assert!(check_program(&program(&["/bin/true"])).is_ok());
    }

    #[test]
    fn a_relative_executable_is_refused() {
        let err = check_program(&program(&["true"])).unwrap_err();

        assert_eq!(err.field, "program.exec_start");
    }

    #[test]
    fn two_start_commands_need_oneshot() {
        let mut p = program(&["/bin/a"]);
        p.exec_start.push(p.exec_start[0].clone());

        assert!(check_program(&p).is_err());
        p.service_type = ServiceType::Oneshot;
        assert!(check_program(&p).is_ok());
    }

    #[test]
    fn a_relative_pid_file_is_refused() {
        let mut p = program(&["/bin/a"]);
        p.pid_file = Some("run/a.pid".into());

        assert_eq!(check_program(&p).unwrap_err().field, "program.pid_file");
    }

    #[test]
    fn an_invalid_kill_signal_is_refused() {
        let mut p = program(&["/bin/a"]);
        p.kill.signal = 0;

        assert_eq!(check_program(&p).unwrap_err().field, "program.kill.signal");
    }

    #[test]
    fn too_many_commands_are_refused() {
        let mut p = program(&["/bin/a"]);
        p.exec_stop = vec![p.exec_start[0].clone(); MAX_COMMANDS + 1];

        assert_eq!(check_program(&p).unwrap_err().field, "program.exec_stop");
    }
}
