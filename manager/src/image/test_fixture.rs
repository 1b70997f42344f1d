//! A temporary image directory for the image module's unit tests.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use super::ImageRoot;

/// A temporary image directory, plus a sibling "host" directory outside the image.
pub struct Fixture {
    _tmp: tempfile::TempDir,
    pub image: PathBuf,
    pub host: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("image");
        let host = tmp.path().join("host");
        fs::create_dir(&image).unwrap();
        fs::create_dir(&host).unwrap();
        Fixture {
            _tmp: tmp,
            image,
            host,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.image.join(rel.trim_start_matches('/'))
    }

    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    pub fn link(&self, rel: &str, target: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink(target, path).unwrap();
    }

    pub fn root(&self) -> ImageRoot {
        ImageRoot::open(&self.image).unwrap()
    }
}
