//! `image list`, `image import`, `image inspect`, `image remove`, `image read-only`.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::anyhow;
use berth_protocol::manager::{
    Empty, Image, ImageParams, ImageReply, ImagesReply, ImportImageParams, ImportImageReply,
    InspectImageParams, InspectImageReply, ReadOnlyParams,
};

use super::{listed, print_text};
use crate::escape::escape;
use crate::local_image::{image_arg, local_image};
use crate::report::{explain, report};
use crate::session::Session;
use crate::{output, progress};

pub(crate) async fn list(s: &mut Session) -> anyhow::Result<()> {
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
pub(crate) fn image_row(i: &Image) -> Vec<String> {
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

pub(crate) async fn image_import(
    s: &mut Session,
    path: &Path,
    name: Option<String>,
) -> anyhow::Result<()> {
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

pub(crate) async fn image_inspect(
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

pub(crate) async fn remove(s: &mut Session, images: Vec<String>) -> anyhow::Result<()> {
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
    Ok(())
}

pub(crate) async fn read_only(
    s: &mut Session,
    image: String,
    read_only: Option<bool>,
) -> anyhow::Result<()> {
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
    Ok(())
}
