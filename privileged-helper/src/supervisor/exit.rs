//! The end of a run: init's exit, the exact wait status of main, and telling the clients.

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
        let init_status = match sys::waitpid(*pid, libc::WNOHANG) {
            Ok(None) => return,
            Ok(Some((_, status))) => Some(status),
            Err(_) => None,
        };
        self.init = None;
        self.kill_at = None;
        // Everything in the pid namespace is dead now: drain the pipes so the log is complete
        // by the time the exit is announced.
        for i in 0..self.outputs.len() {
            self.read_output(i, chunk, 1024);
        }
        let mut raw = [0u8; 4];
        let main_status = match rustix::io::read(&self.status_pipe, &mut raw) {
            Ok(4) => Some(i32::from_ne_bytes(raw)),
            _ => None,
        };
        self.exit = Some(match (main_status, init_status) {
            (Some(status), _) | (None, Some(status)) => decode_wait(status),
            (None, None) => ExitStatus {
                code: None,
                signal: None,
            },
        });
        // Nothing of the service is left in it (init's death ended its pid namespace); gone
        // before the exit is told, so a successor never meets it.
        self.cgroup = None;
        let status = self.status(None);
        for client in &mut self.clients {
            client.queue(&status);
        }
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
