//! berthd, the unprivileged manager of berth: images, units, attachments, service lifecycle,
//! logs and in-process authorization.

pub mod api;
pub mod atomic_write;
pub mod attach;
pub mod attachments;
pub mod config;
pub mod daemon;
pub mod drop_ins;
pub mod dynamic_user;
pub mod extension;
pub mod helper_connection;
pub mod host_files;
pub mod host_users;
pub mod image;
pub mod image_catalog;
pub mod image_users;
pub mod import;
pub mod lifecycle;
pub mod log_access;
pub mod logs;
pub mod monitor;
pub mod paths;
pub mod privilege_split;
pub mod profile;
pub mod reattach;
pub mod service_directories;
pub mod startup;
pub mod uid_blocks;
pub mod uid_release;
pub mod unit;
pub mod unit_edit;
pub mod unit_instances;
pub mod unit_state;
pub mod var_state;
