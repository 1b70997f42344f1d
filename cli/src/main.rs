//! berth: the command line client of berthd.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use berth_protocol::manager::{
    AttachParams, AttachReply, CatReply, DetachParams, DetachReply, DropInsReply, Empty, Image,
    ImageParams, ImageReply, ImagesReply, ImportImageParams, ImportImageReply, InspectImageParams,
    InspectImageReply, IsAttachedReply, ListReply, LogEntry, LogsParams, LogsReply,
    MAX_DROP_IN_BYTES, ManagerError, ReadOnlyParams, ReattachParams, ReattachReply,
    SetPropertyParams, StatusReply, UnitParams, UnitStatus, WriteDropInParams,
};
use berth_varlink::client::{Client, ClientError, remote_error_of};
use clap::Parser;
use rustix::fs::OFlags;
use serde::Serialize;
use serde::de::DeserializeOwned;

use berth_cli::args::{Cli, Command, ImageCommand, LogFormat};
use berth_cli::escape::escape;
use berth_cli::remote_error::describe;
use berth_cli::{output, pack, progress};

/// `println!` that hands back the write error instead of panicking: on a closed pipe
/// (`berth logs x | head`) berth stops and exits quietly.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            report(&anyhow!("cannot start: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        // The reader has gone (`| head`): what it wanted it got.
        Err(e) if is_closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// The one-line `berth: ...` message on stderr, escaped: errors name units, images and reasons
/// that come from images.
fn report(error: &anyhow::Error) {
    let line = format!("{error:#}");
    // Nothing better to do when stderr is gone too.
    let _ = writeln!(std::io::stderr(), "berth: {}", escape(&line));
}

fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Turns a client error into the one line a user should read; a typed error stays one, so
/// callers can tell a missing unit apart ([`is_no_such_unit`]).
fn explain(error: ClientError) -> anyhow::Error {
    if let Some(remote) = remote_error_of(&error) {
        if let Some(typed) = remote.typed::<ManagerError>() {
            return anyhow::Error::new(typed);
        }
        return anyhow!("{}", describe(&remote));
    }
    anyhow!("{error}")
}

fn is_no_such_unit(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<ManagerError>(),
        Some(ManagerError::NoSuchUnit { .. })
    )
}

struct Session {
    client: Client,
    json: bool,
    legend: bool,
}

impl Session {
    async fn call<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: &P,
    ) -> anyhow::Result<R> {
        self.call_with_fds(method, params, Vec::new()).await
    }

    /// `method` with descriptors (an image opened here, see [`local_image`]).
    async fn call_with_fds<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: &P,
        fds: Vec<OwnedFd>,
    ) -> anyhow::Result<R> {
        self.client
            .call(&format!("io.berth.Manager.{method}"), params, fds)
            .await
            .map_err(explain)
    }

    /// `method` with `more`: `each` gets every reply until the last (or until it says stop).
    async fn call_more<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: &P,
        each: impl FnMut(R) -> bool,
    ) -> anyhow::Result<()> {
        self.client
            .call_more(
                &format!("io.berth.Manager.{method}"),
                params,
                Vec::new(),
                each,
            )
            .await
            .map_err(explain)
    }

    fn print_json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        out!("{}", serde_json::to_string_pretty(value)?)?;
        Ok(())
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Packing reads the caller's directory and writes the caller's file: berthd has no part.
    if let Command::Image(ImageCommand::Pack {
        dir,
        output,
        format,
    }) = &cli.command
    {
        let quiet = !std::io::stderr().is_terminal();
        pack::pack(dir, output, *format, quiet)?;
        return Ok(ExitCode::SUCCESS);
    }
    let client = Client::connect(&cli.socket)
        .await
        .map_err(|e| anyhow!("{e} (is berthd running?)"))?;
    let mut s = Session {
        client,
        json: cli.json,
        legend: !cli.no_legend,
    };
    match cli.command {
        Command::Image(ImageCommand::List) => image_list(&mut s).await?,
        Command::Image(ImageCommand::Inspect {
            image,
            prefixes,
            cat,
        }) => image_inspect(&mut s, image, prefixes, cat).await?,
        Command::Image(ImageCommand::Import { path, name }) => {
            image_import(&mut s, &path, name).await?
        }
        Command::Image(ImageCommand::Remove { images }) => {
            for image in images {
                let params = ImageParams {
                    image: image_arg(&image)?,
                    extensions: None,
                };
                let reply: ImageReply = s.call("RemoveImage", &params).await?;
                if s.json {
                    s.print_json(&reply.image)?;
                } else {
                    out!("Removed image {}.", escape(&reply.image.name))?;
                }
            }
        }
        Command::Image(ImageCommand::ReadOnly { image, read_only }) => {
            let params = ReadOnlyParams {
                image: image_arg(&image)?,
                read_only,
            };
            let reply: ImageReply = s.call("MarkImageReadOnly", &params).await?;
            if s.json {
                s.print_json(&reply.image)?;
            } else {
                let state = if reply.image.read_only {
                    "read-only"
                } else {
                    "writable"
                };
                out!("Image {} is {state}.", escape(&reply.image.name))?;
            }
        }
        Command::Image(ImageCommand::Pack { .. }) => {}
        Command::List => list(&mut s).await?,
        Command::Attach {
            image,
            prefixes,
            profile,
            now,
            force,
            extensions,
        } => return attach(&mut s, image, prefixes, profile, now, force, extensions).await,
        Command::Detach {
            image,
            now,
            extensions,
        } => detach(&mut s, image, now, extensions).await?,
        Command::Reattach { image, now } => reattach(&mut s, image, now).await?,
        Command::IsAttached { image, extensions } => {
            let reply: IsAttachedReply = s
                .call(
                    "IsAttached",
                    &ImageParams {
                        image: image_arg(&image)?,
                        extensions: Some(image_args(&extensions)?),
                    },
                )
                .await?;
            if s.json {
                s.print_json(&reply)?;
            } else {
                out!("{}", escape(&reply.state))?;
            }
            if reply.state == "detached" {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Start { units } => return lifecycle(&mut s, "Start", units).await,
        Command::Stop { units } => return lifecycle(&mut s, "Stop", units).await,
        Command::Restart { units } => return lifecycle(&mut s, "Restart", units).await,
        Command::Status { unit } => return status(&mut s, unit).await,
        Command::IsActive { units, quiet } => {
            return is_state(&mut s, units, quiet, "active", EXIT_NOT_ACTIVE).await;
        }
        Command::IsFailed { units, quiet } => {
            return is_state(&mut s, units, quiet, "failed", 1).await;
        }
        Command::Cat { unit } => cat(&mut s, unit).await?,
        Command::Edit { unit, drop_in } => edit(&mut s, unit, drop_in).await?,
        Command::SetProperty { unit, properties } => {
            let params = SetPropertyParams { unit, properties };
            let reply: DropInsReply = s.call("SetProperty", &params).await?;
            print_drop_ins(&s, &reply)?;
        }
        Command::Logs {
            unit,
            follow,
            lines,
            output,
        } => {
            let format = if s.json { LogFormat::Json } else { output };
            logs(&mut s, unit, follow, lines, format).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// [`image_arg`] of each.
fn image_args(images: &[String]) -> anyhow::Result<Vec<String>> {
    images.iter().map(|i| image_arg(i)).collect()
}

/// Paths are resolved here, with the caller's view of the filesystem; names go as they are.
fn image_arg(image: &str) -> anyhow::Result<String> {
    if !image.contains('/') {
        return Ok(image.to_string());
    }
    let path = std::fs::canonicalize(image).with_context(|| format!("image {image}"))?;
    Ok(path.display().to_string())
}

/// An IMAGE argument as berthd gets it: a name in its search path, or a local path resolved and
/// opened here with the caller's own rights (DESIGN.md §1), the path then sent along with the
/// descriptor. berthd reads the image through the descriptor, so root can attach an image
/// under /root that berthd's user cannot open; and a user gets no descriptor for what they
/// could not open themselves.
fn local_image(image: &str) -> anyhow::Result<(String, Vec<OwnedFd>)> {
    if !image.contains('/') {
        return Ok((image.to_string(), Vec::new()));
    }
    let cannot_open = |e: std::io::Error| {
        let e = if e.kind() == std::io::ErrorKind::PermissionDenied {
            "permission denied (berth opens a local image with your own rights)".to_string()
        } else {
            e.to_string()
        };
        anyhow!("cannot open image {image}: {e}")
    };
    let path = std::fs::canonicalize(image).map_err(cannot_open)?;
    // Non-blocking, so that naming a FIFO fails here instead of waiting for a writer; no
    // controlling terminal from a tty either. Reading a directory or a file is unaffected.
    let fd = rustix::fs::open(
        &path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| cannot_open(e.into()))?;
    let kind = rustix::fs::FileType::from_raw_mode(
        rustix::fs::fstat(&fd)
            .map_err(|e| cannot_open(e.into()))?
            .st_mode,
    );
    if !matches!(
        kind,
        rustix::fs::FileType::Directory | rustix::fs::FileType::RegularFile
    ) {
        let kind = format!("{kind:?}").to_lowercase();
        return Err(anyhow!(
            "image {image} is a {kind}, not a directory or an image file"
        ));
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(|e| cannot_open(e.into()))?;
    Ok((path.display().to_string(), vec![fd]))
}

async fn image_list(s: &mut Session) -> anyhow::Result<()> {
    let reply: ImagesReply = s.call("ListImages", &Empty {}).await?;
    if s.json {
        return s.print_json(&reply.images);
    }
    if reply.images.is_empty() {
        if s.legend {
            out!("No images.")?;
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = reply.images.iter().map(image_row).collect();
    let legend = output::Legend {
        header: &[
            "NAME",
            "TYPE",
            "VERSION",
            "RO",
            "SIZE",
            "MTIME",
            "STATE",
            "DESCRIPTION",
        ],
        footer: listed(rows.len(), "image", "images"),
        show: s.legend,
    };
    output::table(&mut std::io::stdout(), &legend, &rows)?;
    Ok(())
}

/// One row of `image list`.
fn image_row(i: &Image) -> Vec<String> {
    let size = i
        .size
        .and_then(|s| u64::try_from(s).ok())
        .map_or_else(|| "-".into(), progress::human_bytes);
    // Seconds are enough in a table.
    let mtime = i.mtime_usec.map_or_else(
        || "-".into(),
        |us| output::format_usec(us)[..19].to_string(),
    );
    vec![
        i.name.clone(),
        i.kind.clone(),
        i.version.clone().unwrap_or_else(|| "-".into()),
        if i.read_only { "yes" } else { "no" }.into(),
        size,
        mtime,
        i.state.clone(),
        i.pretty_name.clone().unwrap_or_else(|| "-".into()),
    ]
}

async fn image_import(s: &mut Session, path: &Path, name: Option<String>) -> anyhow::Result<()> {
    // Always a path, opened with the caller's rights: `foo.raw` is `./foo.raw` here.
    let shown = path.display().to_string();
    let arg = if shown.contains('/') {
        shown
    } else {
        format!("./{shown}")
    };
    let (canonical, fds) = local_image(&arg)?;
    let source = Path::new(&canonical)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("{} has no file name to name the image by", path.display()))?;
    let params = ImportImageParams {
        source: source.clone(),
        name,
    };
    let reply: ImportImageReply = if !s.json && std::io::stderr().is_terminal() {
        // Progress replies until the last one, which names the image.
        let mut bar: Option<indicatif::ProgressBar> = None;
        let mut last = None;
        s.client
            .call_more(
                "io.berth.Manager.ImportImage",
                &params,
                fds,
                |reply: ImportImageReply| {
                    let bar = bar.get_or_insert_with(|| {
                        let bar = progress::bytes_bar(
                            reply.bytes_total.and_then(|t| u64::try_from(t).ok()),
                        );
                        bar.set_message(format!("Importing {}", escape(&source)));
                        bar
                    });
                    bar.set_position(u64::try_from(reply.bytes_done).unwrap_or(0));
                    if reply.image.is_some() {
                        last = Some(reply);
                    }
                    true
                },
            )
            .await
            .map_err(explain)?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        last.ok_or_else(|| anyhow!("berthd ended the import without naming the image"))?
    } else {
        s.call_with_fds("ImportImage", &params, fds).await?
    };
    for warning in &reply.warnings {
        report(&anyhow!("warning: {warning}"));
    }
    let image = reply
        .image
        .ok_or_else(|| anyhow!("berthd ended the import without naming the image"))?;
    if s.json {
        return s.print_json(&image);
    }
    out!(
        "Imported image {} ({}, {}).",
        escape(&image.name),
        escape(&image.path),
        progress::human_bytes(u64::try_from(reply.bytes_done).unwrap_or(0))
    )?;
    Ok(())
}

/// The footer of a table: `1 image listed.`, `2 images listed.`
fn listed(count: usize, one: &str, many: &str) -> String {
    format!("{count} {} listed.", if count == 1 { one } else { many })
}

async fn image_inspect(
    s: &mut Session,
    image: String,
    prefixes: Vec<String>,
    cat: bool,
) -> anyhow::Result<()> {
    let (image, fds) = local_image(&image)?;
    let params = InspectImageParams {
        image,
        cat: Some(cat),
        prefixes: (!prefixes.is_empty()).then_some(prefixes),
    };
    let reply: InspectImageReply = s.call_with_fds("InspectImage", &params, fds).await?;
    let d = reply.details;
    if s.json {
        return s.print_json(&d);
    }
    out!("Image: {}", escape(&d.image.path))?;
    out!(
        "Portable Service: {}",
        escape(d.image.pretty_name.as_deref().unwrap_or("n/a"))
    )?;
    out!(
        "Operating System: {}",
        escape(d.os_pretty_name.as_deref().unwrap_or("n/a"))
    )?;
    if !d.portable_prefixes.is_empty() {
        out!("Prefixes: {}", escape(&d.portable_prefixes.join(" ")))?;
    }
    if let Some(p) = &d.partition {
        out!(
            "Partition: {} #{} ({}, {})",
            escape(&p.designator),
            p.number,
            escape(&p.architecture),
            escape(&p.filesystem)
        )?;
    }
    if let Some(v) = &d.verity {
        let sig = v
            .signature_number
            .map(|n| format!(", signature #{n}"))
            .unwrap_or_default();
        let state = if v.enforced {
            "enforced".to_owned()
        } else {
            format!("NOT enforced: {}", v.reason.as_deref().unwrap_or("unknown"))
        };
        out!(
            "Verity: {} #{}{sig}, {}",
            escape(&v.partition),
            v.number,
            escape(&state)
        )?;
    }
    if let Some(text) = &d.os_release {
        out!("\n/etc/os-release:")?;
        print_text(text)?;
    }
    out!("Unit files:")?;
    for unit in &d.units {
        out!("  {} ({})", escape(&unit.name), escape(&unit.path))?;
        if let Some(contents) = &unit.contents {
            print_text(contents)?;
        }
    }
    Ok(())
}

/// `cat`: as `systemctl cat` shows a unit, each file after a `# PATH` line.
async fn cat(s: &mut Session, unit: String) -> anyhow::Result<()> {
    let reply: CatReply = s.call("Cat", &UnitParams { unit }).await?;
    if s.json {
        return s.print_json(&reply);
    }
    for (i, file) in reply.files.iter().enumerate() {
        if i > 0 {
            out!()?;
        }
        out!("# {}", escape(&file.path))?;
        print_text(&file.contents)?;
    }
    Ok(())
}

/// What a drop-in change did, and berthd's warnings about the unit.
fn print_drop_ins(s: &Session, reply: &DropInsReply) -> anyhow::Result<()> {
    for warning in &reply.warnings {
        report(&anyhow!("warning: {warning}"));
    }
    if s.json {
        return s.print_json(reply);
    }
    for path in &reply.written {
        out!("Wrote {}", escape(path))?;
    }
    for path in &reply.removed {
        out!("Removed {}", escape(path))?;
    }
    Ok(())
}

/// `edit`: the drop-in (or, for a new one, a commented copy of the unit for reference) in a
/// private temporary file, the editor on it, and what it holds then sent to berthd, which
/// checks it before writing anything.
async fn edit(s: &mut Session, unit: String, drop_in: String) -> anyhow::Result<()> {
    let current: CatReply = s.call("Cat", &UnitParams { unit: unit.clone() }).await?;
    let suffix = format!(".d/{drop_in}");
    let existing = current.files.iter().find(|f| f.path.ends_with(&suffix));
    let before = match existing {
        Some(file) => file.contents.clone(),
        None => {
            let mut text = format!(
                "### New drop-in {drop_in} of {}: lines here apply after the unit's own.\n\
                 ### Only comments (as now) writes nothing. The unit as it stands:\n",
                current.unit
            );
            for file in &current.files {
                text.push_str(&format!("# {}\n", file.path));
                for line in file.contents.lines() {
                    text.push_str(&format!("#   {line}\n"));
                }
            }
            text
        }
    };
    let dir = private_temp_dir()?;
    let path = dir.join(&drop_in);
    let result = edit_in(&path, &before);
    let _ = std::fs::remove_dir_all(&dir);
    let after = result?;
    if after == before {
        report(&anyhow!(
            "{drop_in} of {} unchanged, nothing written",
            current.unit
        ));
        return Ok(());
    }
    let params = WriteDropInParams {
        unit: current.unit,
        name: drop_in,
        contents: after,
    };
    let reply: DropInsReply = s.call("WriteDropIn", &params).await?;
    print_drop_ins(s, &reply)
}

/// Writes `text` to `path`, runs the editor on it, and reads back what it holds.
fn edit_in(path: &std::path::Path, text: &str) -> anyhow::Result<String> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    let editor = editor()?;
    // Through sh, as git and systemctl take $EDITOR: it may carry arguments (`code -w`).
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(path)
        .status()
        .with_context(|| format!("cannot run the editor {editor}"))?;
    if !status.success() {
        return Err(anyhow!(
            "the editor {editor} failed ({status}); nothing written"
        ));
    }
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_DROP_IN_BYTES as u64 {
        return Err(anyhow!(
            "the drop-in is {size} bytes, more than the {MAX_DROP_IN_BYTES} a drop-in may hold; \
             nothing written"
        ));
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| anyhow!("the drop-in is not UTF-8 text; nothing written"))
}

/// `$EDITOR`, then `$VISUAL`, then the first of editor, nano, vim, vi on the PATH.
fn editor() -> anyhow::Result<String> {
    for var in ["EDITOR", "VISUAL"] {
        if let Some(value) = std::env::var_os(var).and_then(|v| v.into_string().ok())
            && !value.trim().is_empty()
        {
            return Ok(value);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for candidate in ["editor", "nano", "vim", "vi"] {
        if std::env::split_paths(&path).any(|dir| dir.join(candidate).is_file()) {
            return Ok(candidate.to_owned());
        }
    }
    Err(anyhow!(
        "no editor: set EDITOR (nor VISUAL, editor, nano, vim or vi was found)"
    ))
}

/// A new directory only the caller may enter, for the file being edited.
fn private_temp_dir() -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for attempt in 0..16u32 {
        let dir = base.join(format!(
            "berth-edit-{}-{nanos}-{attempt}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(anyhow!(
                    "cannot create a directory in {}: {e}",
                    base.display()
                ));
            }
        }
    }
    Err(anyhow!(
        "cannot create a private directory in {}",
        base.display()
    ))
}

/// A file's text, line by line, each escaped.
fn print_text(text: &str) -> std::io::Result<()> {
    for line in text.trim_end().lines() {
        out!("{}", escape(line))?;
    }
    Ok(())
}

fn unit_rows(units: &[UnitStatus]) -> Vec<Vec<String>> {
    let opt = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    units
        .iter()
        .map(|u| {
            vec![
                u.unit.clone(),
                u.image.clone(),
                u.state.clone(),
                opt(u.main_pid),
                opt(u.uid),
                u.profile.clone(),
            ]
        })
        .collect()
}

async fn list(s: &mut Session) -> anyhow::Result<()> {
    let mut units = Vec::new();
    s.call_more("List", &Empty {}, |reply: ListReply| {
        units.extend(reply.units);
        true
    })
    .await?;
    if s.json {
        return s.print_json(&units);
    }
    if units.is_empty() {
        if s.legend {
            out!("No units attached.")?;
        }
        return Ok(());
    }
    let legend = output::Legend {
        header: &["UNIT", "IMAGE", "STATE", "MAIN PID", "UID", "PROFILE"],
        footer: listed(units.len(), "unit", "units"),
        show: s.legend,
    };
    output::table(&mut std::io::stdout(), &legend, &unit_rows(&units))?;
    Ok(())
}

async fn attach(
    s: &mut Session,
    image: String,
    prefixes: Vec<String>,
    profile: Option<String>,
    now: bool,
    force: bool,
    extensions: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let (image, mut fds) = local_image(&image)?;
    // Extensions given as paths go as descriptors too, after the image's, in order.
    let mut extension_args = Vec::new();
    for extension in &extensions {
        let (arg, extension_fds) = local_image(extension)?;
        extension_args.push(arg);
        fds.extend(extension_fds);
    }
    let params = AttachParams {
        image,
        prefixes: Some(prefixes),
        profile,
        force: Some(force),
        extensions: Some(extension_args),
    };
    let reply: AttachReply = s.call_with_fds("Attach", &params, fds).await?;
    for warning in &reply.warnings {
        report(&anyhow!("warning: {warning}"));
    }
    if s.json {
        s.print_json(&reply)?;
    } else {
        out!(
            "Attached {}: {}",
            escape(&reply.image),
            escape(&reply.units.join(" "))
        )?;
    }
    if !now {
        return Ok(ExitCode::SUCCESS);
    }
    let (_, failed) = act_on_each(s, "Start", reply.units).await?;
    Ok(exit_for(failed))
}

async fn detach(
    s: &mut Session,
    image: String,
    now: bool,
    extensions: Vec<String>,
) -> anyhow::Result<()> {
    let params = DetachParams {
        image: image_arg(&image)?,
        now: Some(now),
        extensions: Some(image_args(&extensions)?),
    };
    let reply: DetachReply = s.call("Detach", &params).await?;
    if s.json {
        s.print_json(&reply)
    } else {
        out!(
            "Detached {}: {}",
            escape(&reply.image),
            escape(&reply.units.join(" "))
        )?;
        Ok(())
    }
}

async fn reattach(s: &mut Session, image: String, now: bool) -> anyhow::Result<()> {
    let params = ReattachParams {
        image: image_arg(&image)?,
        now: Some(now),
    };
    let reply: ReattachReply = s.call("Reattach", &params).await?;
    if s.json {
        return s.print_json(&reply);
    }
    out!(
        "Reattached {} to {}",
        escape(&reply.image),
        escape(&reply.path)
    )?;
    for (what, units) in [
        ("updated", &reply.updated),
        ("added", &reply.added),
        ("removed", &reply.removed),
    ] {
        if !units.is_empty() {
            out!("  {what}: {}", escape(&units.join(" ")))?;
        }
    }
    Ok(())
}

fn check_started(status: &UnitStatus) -> anyhow::Result<()> {
    if status.state == "failed" {
        let why = status.failure.as_deref().unwrap_or("failed");
        return Err(anyhow!(
            "{} failed: {why} (see 'berth logs {}')",
            status.unit,
            status.unit
        ));
    }
    Ok(())
}

/// Calls `method` (`Start`, `Stop`, `Restart`) on every unit, as systemctl does: a failure is
/// reported as its own `berth: ...` line and the next unit is still acted on. Returns the states
/// the calls answered and whether any failed.
async fn act_on_each(
    s: &mut Session,
    method: &str,
    units: Vec<String>,
) -> anyhow::Result<(Vec<UnitStatus>, bool)> {
    let mut statuses = Vec::new();
    let mut failed = false;
    for unit in units {
        let outcome = match s.call::<_, StatusReply>(method, &UnitParams { unit }).await {
            Ok(reply) => {
                let checked = if method == "Stop" {
                    Ok(())
                } else {
                    check_started(&reply.status)
                };
                statuses.push(reply.status);
                checked
            }
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            report(&e);
            failed = true;
        }
    }
    Ok((statuses, failed))
}

fn exit_for(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn lifecycle(s: &mut Session, method: &str, units: Vec<String>) -> anyhow::Result<ExitCode> {
    let (statuses, failed) = act_on_each(s, method, units).await?;
    if s.json {
        s.print_json(&statuses)?;
    }
    Ok(exit_for(failed))
}

/// `systemctl status`'s exit status for a unit that is not active (LSB "program is not
/// running"); also `is-active`'s.
const EXIT_NOT_ACTIVE: u8 = 3;
/// `systemctl status`'s exit status for a unit that does not exist (LSB "status is unknown").
const EXIT_NO_SUCH_UNIT: u8 = 4;

/// systemd's name for a berth state, as `systemctl is-active` prints it: a oneshot that has
/// exited is inactive (berth keeps no `RemainAfterExit=`).
fn active_state(state: &str) -> Cow<'_, str> {
    Cow::Borrowed(match state {
        "running" => "active",
        "starting" => "activating",
        "stopping" => "deactivating",
        "failed" => "failed",
        "stopped" | "exited" => "inactive",
        other => return escape(other),
    })
}

/// `is-active`/`is-failed`: prints the state of every unit (unless `quiet`) and exits 0 when at
/// least one is in `wanted`, else `otherwise`. A unit that does not exist is `inactive`, as in
/// systemctl.
async fn is_state(
    s: &mut Session,
    units: Vec<String>,
    quiet: bool,
    wanted: &str,
    otherwise: u8,
) -> anyhow::Result<ExitCode> {
    let mut any = false;
    for unit in units {
        let state = match s
            .call::<_, StatusReply>("Status", &UnitParams { unit })
            .await
        {
            Ok(reply) => active_state(&reply.status.state).into_owned(),
            Err(e) if is_no_such_unit(&e) => "inactive".to_string(),
            Err(e) => return Err(e),
        };
        any |= state == wanted;
        if !quiet {
            out!("{state}")?;
        }
    }
    Ok(if any {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(otherwise)
    })
}

async fn status(s: &mut Session, unit: String) -> anyhow::Result<ExitCode> {
    let st = match s
        .call::<_, StatusReply>("Status", &UnitParams { unit: unit.clone() })
        .await
    {
        Ok(reply) => reply.status,
        Err(e) if is_no_such_unit(&e) => {
            report(&e);
            return Ok(ExitCode::from(EXIT_NO_SUCH_UNIT));
        }
        Err(e) => return Err(e),
    };
    let code = if st.state == "running" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_ACTIVE)
    };
    if s.json {
        s.print_json(&st)?;
        return Ok(code);
    }
    let dot = match st.state.as_str() {
        "running" => "●",
        "failed" => "×",
        _ => "○",
    };
    match &st.description {
        Some(d) => out!("{dot} {} - {}", escape(&st.unit), escape(d))?,
        None => out!("{dot} {}", escape(&st.unit))?,
    }
    out!(
        "     Image: {} (profile {})",
        escape(&st.image),
        escape(&st.profile)
    )?;
    let since = st
        .since_usec
        .map(|u| format!(" since {} UTC", output::format_usec(u)))
        .unwrap_or_default();
    out!("     State: {}{since}", escape(&st.state))?;
    if let Some(pid) = st.main_pid {
        out!("  Main PID: {pid}")?;
    }
    if let Some(uid) = st.uid {
        out!("       UID: {uid} (dynamic)")?;
    }
    match (st.exit_code, st.exit_signal) {
        (Some(code), _) => out!("      Exit: code {code}")?,
        (_, Some(sig)) => out!("      Exit: signal {sig}")?,
        _ => {}
    }
    if let Some(f) = &st.failure {
        out!("   Failure: {}", escape(f))?;
    }
    let params = LogsParams {
        unit,
        lines: Some(10),
        follow: None,
    };
    let entries = match s.call::<_, LogsReply>("Logs", &params).await {
        Ok(logs) => logs.entries,
        // Not allowed to read this unit's logs: the status without them, as systemctl shows it.
        Err(e)
            if matches!(
                e.downcast_ref::<ManagerError>(),
                Some(ManagerError::PermissionDenied { .. })
            ) =>
        {
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    if !entries.is_empty() {
        out!()?;
        print_entries(&st.unit, &entries, LogFormat::Short)?;
    }
    Ok(code)
}

/// The line as the service wrote it, so that invalid UTF-8 is shown as `\xNN` rather than as
/// the replacement character of `text`.
fn exact_text(entry: &LogEntry) -> &[u8] {
    entry.bytes.as_deref().unwrap_or(entry.text.as_bytes())
}

fn print_entries(unit: &str, entries: &[LogEntry], format: LogFormat) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    for e in entries {
        match format {
            LogFormat::Json => writeln!(stdout, "{}", serde_json::to_string(e)?)?,
            LogFormat::Cat => writeln!(stdout, "{}", escape(exact_text(e)))?,
            LogFormat::Short => {
                let marker = if e.stream == "stderr" {
                    " [stderr]"
                } else {
                    ""
                };
                writeln!(
                    stdout,
                    "{} {}{marker}: {}",
                    output::format_usec(e.usec),
                    escape(unit),
                    escape(exact_text(e))
                )?
            }
        }
    }
    stdout.flush()?;
    Ok(())
}

async fn logs(
    s: &mut Session,
    unit: String,
    follow: bool,
    lines: Option<i64>,
    format: LogFormat,
) -> anyhow::Result<()> {
    let name = berth_protocol::manager::unit_name(&unit);
    // Always streamed with `more`: the entries come in small batches however long the log.
    let params = LogsParams {
        unit,
        lines,
        follow: Some(follow),
    };
    let mut failed = None;
    let each = |reply: LogsReply| {
        if reply.truncated == Some(true) {
            report(&anyhow!(
                "older lines of the log are left out; this is its newest part"
            ));
        }
        match print_entries(&name, &reply.entries, format) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    };
    s.call_more("Logs", &params, each).await?;
    failed.map_or(Ok(()), Err)
}
