//! The persistent /var (DESIGN.md §5): only for a service with the image's own users (a uid
//! block), whose files in it carry the block's ids. Its directory is checked with the other
//! extra descriptors (`floor/extra_fds.rs`).

use berth_protocol::sandbox::SandboxSpec;

use super::super::{Refusal, refuse};

pub(super) fn check(spec: &SandboxSpec) -> Result<(), Refusal> {
    if spec.mounts.persistent_var && spec.identity.user_block.is_none() {
        return Err(refuse(
            "sandbox.mounts.persistent_var",
            "a persistent /var is only for a service with the image's own users (a uid \
             block): a transient uid's files would outlive it",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use berth_protocol::sandbox::UidBlock;

    use super::*;

    fn spec(block: bool) -> SandboxSpec {
        let mut spec = SandboxSpec::baseline(61200, 61200, "var");
        spec.mounts.persistent_var = true;
        spec.identity.user_block = block.then(|| UidBlock::at(524_288));
        spec
    }

    #[test]
    fn a_persistent_var_without_a_uid_block_is_refused() {
        let refusal = check(&spec(false)).unwrap_err();

        assert_eq!(refusal.field, "sandbox.mounts.persistent_var");
        assert!(check(&spec(true)).is_ok());
    }
}
