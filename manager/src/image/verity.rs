//! Whether dm-verity can enforce an image's verity data on this host.
//!
//! berth recognises verity partitions but does not (yet) set up dm-verity devices, and many
//! hosts (this project's test machine among them) have no device-mapper at all. Attach and
//! inspect say which case holds, so nobody takes an image with verity data for a verified one.

use std::path::Path;

/// The device-mapper control node; absent when the kernel has no device-mapper.
const DM_CONTROL: &str = "/dev/mapper/control";
/// Misc devices the kernel registered; device-mapper's is `NNN device-mapper`.
const PROC_MISC: &str = "/proc/misc";

/// What the host offers for dm-verity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceMapper {
    /// Neither /dev/mapper/control nor a device-mapper entry in /proc/misc.
    Missing,
    /// The kernel has device-mapper; berth does not set up dm-verity devices yet.
    NotUsed,
}

impl DeviceMapper {
    /// Probes the running host.
    pub fn probe() -> DeviceMapper {
        let misc = std::fs::read_to_string(PROC_MISC).unwrap_or_default();
        DeviceMapper::from_host(Path::new(DM_CONTROL).exists(), &misc)
    }

    /// The answer for a host whose control node exists or not and whose /proc/misc says `misc`.
    pub fn from_host(control_exists: bool, misc: &str) -> DeviceMapper {
        let registered = misc
            .lines()
            .any(|line| line.split_whitespace().nth(1) == Some("device-mapper"));
        if control_exists || registered {
            DeviceMapper::NotUsed
        } else {
            DeviceMapper::Missing
        }
    }

    /// Why the verity data is not enforced, for messages and inspect's JSON.
    pub fn reason(self) -> &'static str {
        match self {
            DeviceMapper::Missing => {
                "this kernel has no device-mapper (no /dev/mapper/control, no device-mapper in \
                 /proc/misc), so dm-verity cannot run"
            }
            DeviceMapper::NotUsed => {
                "berth does not set up dm-verity devices yet (the kernel has device-mapper)"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_control_node_and_no_misc_entry_is_missing() {
        let misc = " 62 ptmx\n183 hw_random\n";

        assert_eq!(DeviceMapper::from_host(false, misc), DeviceMapper::Missing);
    }

    #[test]
    fn a_misc_entry_means_the_kernel_has_it() {
        let misc = " 62 ptmx\n236 device-mapper\n";

        assert_eq!(DeviceMapper::from_host(false, misc), DeviceMapper::NotUsed);
    }

    #[test]
    fn a_control_node_means_the_kernel_has_it() {
        assert_eq!(DeviceMapper::from_host(true, ""), DeviceMapper::NotUsed);
    }

    #[test]
    fn this_host_is_probed_consistently_with_its_files() {
        let expected = Path::new(DM_CONTROL).exists()
            || std::fs::read_to_string(PROC_MISC)
                .unwrap_or_default()
                .contains("device-mapper");

        let probed = DeviceMapper::probe();

        assert_eq!(probed == DeviceMapper::NotUsed, expected);
    }
}
