//! Spawn requests sent to berth-helper's socket directly, as berthd (user `berth`) sends them:
//! for tests of the helper's own side and of a compromised berthd, where the test, not berthd,
//! decides what the request holds.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use anyhow::Result;

use crate::harness::{as_user, output_with_timeout};

/// Sends one `io.berth.Helper.Spawn` for `UNIT.service` (argv: helper socket, image root,
/// spy directory, unit, sandbox JSON, program JSON) with the image root, a log `SPY/UNIT.log`
/// and a control directory `SPY/UNIT.ctl` as descriptors, and prints the reply.
const SPAWNER: &str = r#"
import array, json, os, socket, sys
helper, image, spy, unit, sandbox, program = sys.argv[1:7]
log = os.open(os.path.join(spy, unit + ".log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
os.mkdir(os.path.join(spy, unit + ".ctl"), 0o700)
ctl = os.open(os.path.join(spy, unit + ".ctl"), os.O_RDONLY | os.O_DIRECTORY)
root = os.open(image, os.O_RDONLY | os.O_DIRECTORY)
call = {"method": "io.berth.Helper.Spawn", "parameters": {
    "unit": unit + ".service", "program": json.loads(program), "environment": ["PATH=/bin"],
    "working_directory": "/", "sandbox": json.loads(sandbox)}}
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(helper)
s.sendmsg([json.dumps(call).encode() + b"\0"],
           [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [root, log, ctl]))])
reply = b""
while not reply.endswith(b"\0"):
    chunk = s.recv(65536)
    if not chunk:
        break
    reply += chunk
print(reply.rstrip(b"\0").decode())
"#;

/// One Spawn as berthd would send it.
pub struct DirectSpawn<'a> {
    /// berthd's uid and gid (the helper's manager).
    pub berth: (u32, u32),
    /// The helper's socket.
    pub socket: &'a Path,
    /// The image root directory (opened by the spawner as user `berth`).
    pub image: &'a Path,
    /// A directory user `berth` may write: the unit's log and control directory go there.
    pub spy: &'a Path,
    /// The unit's name without `.service`.
    pub unit: &'a str,
}

impl DirectSpawn<'_> {
    /// Sends the Spawn with `sandbox` and `program` (their JSON) and returns the spawner's
    /// output: the reply on stdout, one line.
    pub fn send(&self, sandbox: &str, program: &str) -> Result<Output> {
        let mut cmd = as_user(self.berth.0, self.berth.1, &[]);
        cmd.args(["/usr/bin/python3", "-c", SPAWNER])
            .arg(self.socket)
            .arg(self.image)
            .arg(self.spy)
            .arg(self.unit)
            .arg(sandbox)
            .arg(program);
        output_with_timeout(cmd, Duration::from_secs(30))
    }
}
