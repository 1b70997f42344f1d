//! berth-docs: writes berth's man page and shell completions into a directory.

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: berth-docs DIR");
        std::process::exit(2);
    };
    match berth_cli::docs::write_all(std::path::Path::new(&dir)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
        }
        Err(e) => {
            eprintln!("berth-docs: {e}");
            std::process::exit(1);
        }
    }
}
