//! The man page and shell completions, generated from the same clap grammar `berth` parses.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::args::Cli;

/// Writes `berth.1` and completions for bash, zsh and fish into `dir`; returns the files.
pub fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let man = dir.join("berth.1");
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    std::fs::write(&man, page)?;
    written.push(man);
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut Cli::command(), "berth", dir)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_and_completions_name_the_verbs() {
        let dir = tempfile::tempdir().unwrap();

        let files = write_all(dir.path()).unwrap();

        assert_eq!(files.len(), 4);
        let man = std::fs::read_to_string(dir.path().join("berth.1")).unwrap();
        assert!(man.contains("berth") && man.contains("attach"), "{man}");
        let bash = std::fs::read_to_string(dir.path().join("berth.bash")).unwrap();
        for verb in [
            "attach",
            "detach",
            "is-attached",
            "is-active",
            "is-failed",
            "logs",
            "status",
        ] {
            assert!(bash.contains(verb), "bash completion lacks {verb}");
        }
    }
}
