//! The checked-in `.varlink` files must equal what the services describe: they are derived from
//! the wire types, so a changed type without a changed IDL file fails here. Run with
//! `BERTH_BLESS=1` to rewrite the files after an intended change.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;

fn check(file: &str, generated: String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    if std::env::var_os("BERTH_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        checked_in, generated,
        "{file} is out of date; rerun with BERTH_BLESS=1"
    );
}

#[test]
fn manager_idl_file_matches_the_wire_types() {
    check(
        "io.berth.Manager.varlink",
        berth_protocol::manager::description(),
    );
}

#[test]
fn helper_idl_file_matches_the_wire_types() {
    check(
        "io.berth.Helper.varlink",
        berth_protocol::helper::description(),
    );
}
