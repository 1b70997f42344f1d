//! Driving the probe's `--try` attempts (tests/src/bin/probe/attempts.rs) from tests: the
//! command line, the probe run as a oneshot service or on the host as a control, and reading
//! a result.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::Value;

use crate::harness::{Harness, as_user, output_with_timeout, probe_output};
use crate::image::{ImageBuilder, probe_path};

/// How long a probe run on the host may take.
const HOST_TIMEOUT: Duration = Duration::from_secs(30);
/// The host's `nobody`.
pub const NOBODY: u32 = 65534;

/// ` --try A --try B ...`, to append to the probe's command line.
pub fn try_args<S: AsRef<str>>(tries: &[S]) -> String {
    tries
        .iter()
        .map(|t| format!(" --try {}", t.as_ref()))
        .collect()
}

/// Whether an attempt's result says the kernel refused it (an errno, or a signal that killed
/// it), as opposed to success or an attempt that did not run.
pub fn refused(result: &Value) -> bool {
    let text = result.as_str().unwrap_or("");
    !(text.is_empty()
        || text.starts_with("ok")
        || text.starts_with("error")
        || text.starts_with("not done"))
}

/// [`Harness::attach_probe_unit`] and [`Harness::run_probe_unit`] with more: what `image` adds
/// to the image, `attach_args` (such as `--profile strict`), and any probe arguments.
pub fn probe_service(
    h: &Harness,
    name: &str,
    attach_args: &[&str],
    directives: &str,
    probe_args: &str,
    image: impl FnOnce(ImageBuilder) -> ImageBuilder,
) -> Result<Value> {
    let unit = format!(
        "[Service]\nType=oneshot\n{directives}ExecStart=/usr/bin/berth-probe{probe_args}\n"
    );
    image(ImageBuilder::new(&h.images_dir().join(name)).probe())
        .unit(&format!("{name}.service"), &unit)
        .build()?;
    let mut attach = vec!["attach"];
    attach.extend_from_slice(attach_args);
    attach.push(name);
    h.berth_ok(&attach)?;
    h.run_probe_unit(name)
}

/// The probe's report in what `command` prints (it runs the probe itself).
pub fn host_probe_output(command: Command) -> Result<Value> {
    let out = output_with_timeout(command, HOST_TIMEOUT)?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    probe_output(&String::from_utf8_lossy(&out.stdout))
}

/// The probe run on the host, outside any sandbox, through `command` (a prefix such as setpriv
/// or unshare) with `tries`.
pub fn host_probe<S: AsRef<str>>(mut command: Command, tries: &[S]) -> Result<Value> {
    command.arg(probe_path()?);
    for t in tries {
        command.args(["--try", t.as_ref()]);
    }
    host_probe_output(command)
}

/// The probe on the host as `nobody`: the unprivileged control.
pub fn on_host_as_nobody<S: AsRef<str>>(tries: &[S]) -> Result<Value> {
    host_probe(as_user(NOBODY, NOBODY, &[]), tries)
}

/// The probe on the host as root, in mount, UTS, IPC and network namespaces of its own, so
/// that what works changes nothing of the host's (give it only attempts harmless as root).
pub fn on_host_as_root_in_namespaces<S: AsRef<str>>(tries: &[S]) -> Result<Value> {
    let mut unshare = Command::new("unshare");
    unshare.args([
        "--mount",
        "--propagation",
        "private",
        "--uts",
        "--ipc",
        "--net",
        "--",
    ]);
    host_probe(unshare, tries)
}
