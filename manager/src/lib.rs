//! berthd, the unprivileged manager of berth: images, units, attachments, service lifecycle,
//! logs and in-process authorization.

pub mod exec_command;
pub mod image;
pub mod os_release;
pub mod service_config;
pub mod unit_file;
