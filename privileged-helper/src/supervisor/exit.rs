//! The end of a run: init's exit (the sandbox is gone), its last reports, and telling the
//! clients.

use berth_protocol::supervisor::ExitStatus;

use super::event_loop::Supervisor;
use crate::sandbox::sys;

pub(super) fn decode_wait(status: i32) -> ExitStatus {
    if libc::WIFEXITED(status) {
        ExitStatus {
            code: Some(libc::WEXITSTATUS(status)),
            signal: None,
        }
    } else if libc::WIFSIGNALED(status) {
        ExitStatus {
            code: None,
            signal: Some(libc::WTERMSIG(status)),
        }
    } else {
        ExitStatus {
            code: None,
            signal: None,
        }
    }
}

impl Supervisor {
    pub(super) fn reap_init(&mut self, chunk: &mut [u8]) {
        let Some((pid, _)) = &self.init else { return };
        if let Ok(None) = sys::waitpid(*pid, libc::WNOHANG) {
            return;
        }
        // What init reported before it went (main's exit among it) comes first. Everything
        // in the pid namespace is dead now, so the channel ends; bounded all the same.
        for _ in 0..64 {
            if !self.read_channel() {
                break;
            }
        }
        self.channel = None;
        self.init = None;
        // Drain the pipes so the log is complete by the time the end is announced.
        for i in 0..self.outputs.len() {
            self.read_output(i, chunk, 1024);
        }
        self.run.sandbox_gone();
        // Nothing of the service is left in it (init's death ended its pid namespace); gone
        // before the end is told, so a successor never meets it.
        self.cgroup = None;
        self.broadcast();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decodes_code_and_signal() {
        assert_eq!(
            decode_wait(3 << 8),
            ExitStatus {
                code: Some(3),
                signal: None
            }
        );
        assert_eq!(
            decode_wait(libc::SIGKILL),
            ExitStatus {
                code: None,
                signal: Some(9)
            }
        );
    }
}
