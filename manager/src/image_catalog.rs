//! The image verbs besides attach: listing, inspecting, marking read-only, removing and
//! naming an import, and the state an image is in.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use berth_logging::Untrusted;
use berth_protocol::manager::{Image, ImageDetails, ManagerError, UnitFile};

use crate::attach::{Located, ScannedImage, scan_image};
use crate::attachments::AttachmentRecord;
use crate::daemon::Manager;
use crate::image::os_release::OsRelease;
use crate::image::{self, ImageSource, store};

impl Manager {
    /// The listing entry of an image; `os` is its os-release when the caller has it already.
    pub fn image_entry(&self, name: &str, path: &Path, os: Option<&OsRelease>) -> Image {
        let (_, version) = image::image_name_from_path(path);
        let read = || match self.held_images.get(name) {
            Some(held) => held.os_release(),
            None => image::open(ImageSource::Path(path))
                .ok()?
                .root
                .os_release()
                .ok(),
        };
        let pretty = |os: &OsRelease| {
            os.portable_pretty_name()
                .or_else(|| os.pretty_name())
                .map(str::to_string)
        };
        let pretty_name = match os {
            Some(os) => pretty(os),
            None => read().as_ref().and_then(pretty),
        };
        let (size, mtime_usec) = store::usage(path);
        // An image attached by descriptor may be at a path berthd cannot read.
        let format = match self.held_images.get(name) {
            Some(held) => Some(held.format().clone()),
            None => image::format_of(path),
        };
        Image {
            name: name.to_string(),
            path: path.display().to_string(),
            kind: format.map_or("unknown", |f| f.image_type()).into(),
            version,
            pretty_name,
            state: self.image_state(name, path).into(),
            read_only: store::is_read_only(path),
            size: size.and_then(|s| i64::try_from(s).ok()),
            mtime_usec,
        }
    }

    pub fn list_images(&self) -> Vec<Image> {
        let mut images: BTreeMap<String, Image> = BTreeMap::new();
        for found in self.search.list() {
            images
                .entry(found.name.clone())
                .or_insert_with(|| self.image_entry(&found.name, &found.path, None));
        }
        for record in self.attachments.values() {
            images
                .entry(record.image.clone())
                .or_insert_with(|| self.image_entry(&record.image, &record.path, None));
        }
        images.into_values().collect()
    }

    /// The pool image `arg` names, for changing it: it must be in `STATE/images` and not
    /// attached.
    fn changeable_image(&self, arg: &str) -> Result<(String, PathBuf), ManagerError> {
        let (name, path) = self.resolve_image(arg)?;
        if !self.search.is_in_pool(&path) {
            return Err(ManagerError::NotInPool {
                image: name,
                path: path.display().to_string(),
            });
        }
        Ok((name, path))
    }

    /// Checks that image `arg` may be removed, and says which path that removes.
    pub fn removable_image(&self, arg: &str) -> Result<(Image, PathBuf), ManagerError> {
        let (name, path) = self.changeable_image(arg)?;
        let state = self.image_state(&name, &path);
        if state != "detached" {
            return Err(ManagerError::ImageInUse {
                image: name,
                state: state.into(),
            });
        }
        if store::is_read_only(&path) {
            return Err(ManagerError::ImageReadOnly { image: name });
        }
        Ok((self.image_entry(&name, &path, None), path))
    }

    /// `image read-only IMAGE BOOL`.
    pub fn mark_read_only(&self, arg: &str, read_only: bool) -> Result<Image, ManagerError> {
        let (name, path) = self.changeable_image(arg)?;
        store::set_read_only(&path, read_only).map_err(ManagerError::internal)?;
        tracing::info!(image = %Untrusted(&name), read_only, "image marked");
        Ok(self.image_entry(&name, &path, None))
    }

    /// What an import of `source` (a file name) as `name` stores: the file name in the pool.
    pub fn import_file_name(
        &self,
        source: &str,
        name: Option<&str>,
        format: &image::Format,
    ) -> Result<String, ManagerError> {
        let invalid = |reason: String| ManagerError::InvalidImage {
            image: source.to_string(),
            reason,
        };
        // A tarball becomes a directory image: `foo_1.2.tar.gz` is `foo_1.2/`.
        let tarball = [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"]
            .iter()
            .find_map(|suffix| source.strip_suffix(suffix));
        let stem_source = tarball.unwrap_or(source);
        let (source_name, version) = image::image_name_from_path(Path::new(stem_source));
        let name = name.unwrap_or(&source_name);
        image::validate_image_name(name).map_err(|e| invalid(e.to_string()))?;
        let suffix = match format {
            image::Format::Directory
            | image::Format::Tar
            | image::Format::Gzip
            | image::Format::Zstd => "",
            image::Format::Squashfs
            | image::Format::Erofs
            | image::Format::Ext4
            | image::Format::Gpt => ".raw",
            other => {
                return Err(invalid(format!("unsupported image format: {other}")));
            }
        };
        let stem = match version {
            Some(version) => format!("{name}_{version}"),
            None => name.to_string(),
        };
        let file_name = format!("{stem}{suffix}");
        // The version comes from the caller: the whole file name must stay one plain name.
        berth_protocol::names::check_image_name(&stem).map_err(|e| invalid(e.to_string()))?;
        Ok(file_name)
    }

    /// `fd`: the image, opened by the client (see [`Self::locate`]).
    pub fn inspect_image(
        &self,
        arg: &str,
        fd: Option<OwnedFd>,
        prefixes: &[String],
        cat: bool,
    ) -> Result<ImageDetails, ManagerError> {
        let Located {
            name, path, opened, ..
        } = self.locate(arg, fd)?;
        let ScannedImage {
            os_release,
            os,
            units,
            ..
        } = scan_image(&name, &opened.root, prefixes, &[])?;
        let partition = opened.partition.as_ref();
        Ok(ImageDetails {
            partition: partition.map(|p| p.details()),
            verity: partition.and_then(|p| p.verity()),
            image: self.image_entry(&name, &path, Some(&os)),
            os_release: cat.then_some(os_release),
            os_pretty_name: os.pretty_name().map(str::to_string),
            portable_prefixes: os.portable_prefixes(),
            units: units
                .into_iter()
                .scan(MAX_CAT_BYTES, |budget, u| {
                    let contents = cat.then(|| shown_contents(u.contents, budget));
                    Some(UnitFile {
                        name: u.name,
                        path: u.path_in_image,
                        contents,
                    })
                })
                .collect(),
        })
    }

    /// What `image list` shows of image `name` at `path`: `running` or `attached` when it is
    /// attached, or is an extension of an attachment (whichever extension list), else
    /// `detached`.
    pub fn image_state(&self, name: &str, path: &Path) -> &'static str {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let users: Vec<&AttachmentRecord> = self
            .attachments
            .values()
            .filter(|r| r.image == name || r.extensions.iter().any(|e| e.path == path))
            .collect();
        if users.is_empty() {
            "detached"
        } else if users
            .iter()
            .any(|r| self.active_unit_of(&r.image).is_some())
        {
            "running"
        } else {
            "attached"
        }
    }
}

/// Unit file bytes one `InspectImage --cat` reply shows. Inspecting pool images is open to
/// every user, and an image may hold 16 MiB of unit files: the reply stays well within what a
/// slow reader's connection may have queued.
pub const MAX_CAT_BYTES: usize = 256 * 1024;

/// `contents` if it fits in what is left of `budget`, else a line saying it was left out.
pub fn shown_contents(contents: String, budget: &mut usize) -> String {
    if contents.len() <= *budget {
        *budget -= contents.len();
        return contents;
    }
    *budget = 0;
    format!(
        "# berth: {} bytes not shown; --cat shows at most {MAX_CAT_BYTES} bytes per image\n",
        contents.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cat_shows_files_while_the_budget_lasts() {
        let mut budget = 10;

        let first = shown_contents("12345".into(), &mut budget);
        let second = shown_contents("1234567".into(), &mut budget);
        let third = shown_contents("1".into(), &mut budget);

        assert_eq!(first, "12345");
        assert!(second.starts_with("# berth: 7 bytes not shown"), "{second}");
        assert!(third.starts_with("# berth: 1 bytes not shown"), "{third}");
    }
}
