//! `attach`, `detach`, `reattach`, `is-attached`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::anyhow;
use berth_protocol::manager::{
    AttachParams, AttachReply, DetachParams, DetachReply, ImageParams, IsAttachedReply,
    ReattachParams, ReattachReply,
};

use super::units::{act_on_each, exit_for};
use crate::escape::escape;
use crate::local_image::{image_arg, image_args, local_image};
use crate::report::report;
use crate::session::Session;

/// `attach`'s flags.
pub(crate) struct How {
    pub(crate) now: bool,
    pub(crate) enable: bool,
    pub(crate) force: bool,
    /// `--port`: the privileged ports granted.
    pub(crate) ports: Vec<u16>,
}

pub(crate) async fn attach(
    s: &mut Session,
    image: String,
    prefixes: Vec<String>,
    profile: Option<String>,
    how: How,
    extensions: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let How {
        now,
        enable,
        force,
        ports,
    } = how;
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
        enable: Some(enable),
        ports: Some(ports.into_iter().map(i64::from).collect()),
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
    // A template only describes its instances: there is nothing of it to start.
    let startable = reply
        .units
        .into_iter()
        .filter(|u| !berth_protocol::names::is_template(u))
        .collect();
    let (_, failed) = act_on_each(s, "Start", startable).await?;
    Ok(exit_for(failed))
}

pub(crate) async fn detach(
    s: &mut Session,
    image: String,
    now: bool,
    clean: bool,
    extensions: Vec<String>,
) -> anyhow::Result<()> {
    let params = DetachParams {
        image: image_arg(&image)?,
        now: Some(now),
        extensions: Some(image_args(&extensions)?),
        clean: clean.then_some(true),
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

pub(crate) async fn reattach(s: &mut Session, image: String, now: bool) -> anyhow::Result<()> {
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

pub(crate) async fn is_attached(
    s: &mut Session,
    image: String,
    extensions: Vec<String>,
) -> anyhow::Result<ExitCode> {
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
    Ok(ExitCode::SUCCESS)
}
