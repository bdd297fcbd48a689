//! The file system, used safely (native only): the files a user hands us are read with a size
//! cap, and checkpoint folders are written so that nothing the user has is ever lost.
//!
//! - [`read_file`] / [`read_text`] read only regular files (never a FIFO, a device such as
//!   `/dev/zero`, or a directory), refuse one over a stated size cap before reading it, and stop
//!   at the cap even if the file grows while read.
//! - [`OutputDir`] writes a checkpoint folder into a hidden temporary sibling and renames it into
//!   place only when it is complete. It refuses an output that is, contains or lies inside one of
//!   the sources (after resolving symlinks and `..`), and a non-empty one unless forced; a failed
//!   or killed run leaves nothing at the output path.
//!
//! May use: `limits` (the size caps and their error) and `error` only; the loaders, the
//! quantizer, `synth` and the CLI use it.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::limits::too_large;
use crate::{Error, Result};

/// Opens `path` for reading if it is a regular file (symlinks followed).
///
/// The file is opened non-blocking, so a FIFO cannot hang the open, and checked on the open handle,
/// so it cannot be swapped after the check.
pub fn open_regular(path: &Path) -> Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let f = opts.open(path).map_err(|e| Error::io(path.display(), e))?;
    let meta = f.metadata().map_err(|e| Error::io(path.display(), e))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "a FIFO, socket or device"
        };
        return Err(Error::file(
            path.display(),
            format!("is {kind}, not a regular file"),
        ));
    }
    Ok(f)
}

/// Reads a whole regular file of at most `max_bytes`.
pub fn read_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let f = open_regular(path)?;
    let len = f
        .metadata()
        .map_err(|e| Error::io(path.display(), e))?
        .len();
    let too_big = |len: u64| too_large(&path.display().to_string(), len, max_bytes);
    if len > max_bytes {
        return Err(too_big(len));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(max_bytes + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path.display(), e))?;
    if buf.len() as u64 > max_bytes {
        return Err(too_big(buf.len() as u64));
    }
    Ok(buf)
}

/// Reads a whole regular UTF-8 text file of at most `max_bytes`.
pub fn read_text(path: &Path, max_bytes: u64) -> Result<String> {
    String::from_utf8(read_file(path, max_bytes)?)
        .map_err(|_| Error::file(path.display(), "is not UTF-8 text"))
}

/// Whether `path` names an existing file system entry (symlinks followed; a broken link is an
/// entry too, so that it is reported rather than skipped).
pub fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// `path` made absolute with symlinks and `..` resolved, also when its last components do not
/// exist yet (they are appended to the longest prefix that does).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io(".", e))?
            .join(path)
    };
    let comps: Vec<Component> = abs.components().collect();
    for split in (1..=comps.len()).rev() {
        let head: PathBuf = comps[..split].iter().collect();
        let Ok(mut real) = head.canonicalize() else {
            continue;
        };
        for c in &comps[split..] {
            match c {
                Component::Normal(n) => real.push(n),
                Component::CurDir => {}
                // `missing/..`: the kernel would fail on the missing part; so do we.
                _ => {
                    return Err(Error::file(
                        path.display(),
                        "cannot be resolved: `..` after a folder that does not exist",
                    ))
                }
            }
        }
        return Ok(real);
    }
    Err(Error::file(path.display(), "cannot be resolved"))
}

/// A checkpoint folder being written: files go into a hidden temporary sibling of the output,
/// which [`OutputDir::commit`] renames into place. Dropped uncommitted, it removes the sibling.
#[derive(Debug)]
pub struct OutputDir {
    out: PathBuf,
    tmp: PathBuf,
    replace: bool,
    committed: bool,
}

const PARTIAL: &str = ".blipq-partial-";

impl OutputDir {
    /// Prepares to write the folder `out`. It must not be, contain or lie inside any of
    /// `sources` (which exist); if it exists it must be a directory, and an empty one unless
    /// `force` (then its old contents are replaced, at commit only). Nothing is written at `out`
    /// before [`OutputDir::commit`].
    pub fn create(out: &Path, sources: &[&Path], force: bool) -> Result<Self> {
        let shown = out.display().to_string();
        let shown = shown.as_str();
        let real = resolve(out)?;
        for src in sources {
            let src_real = resolve(src)?;
            let why = if real == src_real {
                Some("is the source")
            } else if real.starts_with(&src_real) {
                Some("lies inside the source")
            } else if src_real.starts_with(&real) {
                Some("contains the source")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(Error::file(
                    shown,
                    format!(
                        "{why} {}: write the output to a separate folder",
                        src.display()
                    ),
                ));
            }
        }
        let mut replace = false;
        if exists(&real) {
            if !real.is_dir() {
                return Err(Error::file(shown, "exists and is not a directory"));
            }
            let non_empty = std::fs::read_dir(&real)
                .map_err(|e| Error::io(shown, e))?
                .next()
                .is_some();
            if non_empty && !force {
                return Err(Error::file(
                    shown,
                    "is not empty: choose a new folder, or pass --force (force=True in Python) to \
                     replace its contents",
                ));
            }
            replace = non_empty;
        }
        let (Some(parent), Some(name)) = (real.parent(), real.file_name()) else {
            return Err(Error::file(shown, "is not a folder that can be written"));
        };
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent.display(), e))?;
        let name = name.to_string_lossy();
        remove_stale_partials(parent, &name);
        let tmp = parent.join(format!(".{name}{PARTIAL}{}", std::process::id()));
        if exists(&tmp) {
            // Another job of this process (a thread of the Python package) is writing it.
            return Err(Error::file(
                shown,
                "is being written by another job of this process: wait for it, or choose \
                 another folder",
            ));
        }
        std::fs::create_dir(&tmp).map_err(|e| Error::io(tmp.display(), e))?;
        Ok(Self {
            out: real,
            tmp,
            replace,
            committed: false,
        })
    }

    /// The folder to write into until [`OutputDir::commit`].
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Where the folder will be once committed.
    pub fn final_path(&self) -> &Path {
        &self.out
    }

    /// Writes one file of the folder, flushed to disk.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let p = self.tmp.join(name);
        let mut f = File::create(&p).map_err(|e| Error::io(p.display(), e))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(p.display(), e))
    }

    /// Copies the regular file `from` into the folder as `name`.
    pub fn copy(&self, from: &Path, name: &str) -> Result<()> {
        open_regular(from)?;
        let to = self.tmp.join(name);
        std::fs::copy(from, &to).map_err(|e| Error::io(to.display(), e))?;
        Ok(())
    }

    /// Moves the finished folder into place (replacing an empty output folder, or with `force`
    /// a non-empty one, whose old contents are removed only after the new folder is in place).
    pub fn commit(mut self) -> Result<PathBuf> {
        if let Ok(d) = File::open(&self.tmp) {
            let _ = d.sync_all();
        }
        let shown = self.out.display().to_string();
        if self.replace {
            let old = self.tmp.with_file_name(format!(
                ".{}.blipq-old-{}",
                self.out.file_name().unwrap_or_default().to_string_lossy(),
                std::process::id()
            ));
            std::fs::rename(&self.out, &old).map_err(|e| Error::io(&shown, e))?;
            if let Err(e) = std::fs::rename(&self.tmp, &self.out) {
                // Put the old folder back: nothing is lost.
                let _ = std::fs::rename(&old, &self.out);
                return Err(Error::io(&shown, e));
            }
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&self.tmp, &self.out).map_err(|e| Error::io(&shown, e))?;
        }
        self.committed = true;
        Ok(self.out.clone())
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Removes temporary siblings `.NAME.blipq-partial-PID` left by killed runs whose process is gone.
fn remove_stale_partials(parent: &Path, name: &str) {
    let prefix = format!(".{name}{PARTIAL}");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let file_name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let alive = pid.parse::<u32>().is_ok_and(|pid| {
            pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
        });
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("blipq-fsio-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn read_file_refuses_non_regular_and_oversized_files() {
        let d = tempdir("read");
        let e = read_file(&d, 10).unwrap_err().to_string();
        assert!(e.contains("is a directory, not a regular file"), "{e}");
        let e = read_file(Path::new("/dev/zero"), 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("FIFO, socket or device"), "{e}");
        let f = d.join("f.json");
        std::fs::write(&f, vec![b'x'; 2_000_001]).unwrap();
        let e = read_file(&f, 2_000_000).unwrap_err().to_string();
        assert!(
            e.contains("is 2000001 bytes, over the limit of 2000000 bytes"),
            "{e}"
        );
        assert_eq!(read_file(&f, 2_000_001).unwrap().len(), 2_000_001);
        std::fs::write(&f, [0xff, 0xfe]).unwrap();
        assert!(read_text(&f, 10)
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn output_dir_refuses_sources_and_non_empty_folders() {
        let d = tempdir("out");
        let src = d.join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("model.safetensors"), b"keep").unwrap();
        std::os::unix::fs::symlink(&src, d.join("link")).unwrap();
        for (out, why) in [
            (src.clone(), "is the source"),
            (src.join("."), "is the source"),
            (d.join("link"), "is the source"),
            (d.join("other/../src"), "cannot be resolved"),
            (d.join("src/sub/../../src/"), "is the source"),
            (src.join("sub/new"), "lies inside the source"),
            (d.clone(), "contains the source"),
        ] {
            let e = OutputDir::create(&out, &[&src], true)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{}: {e}", out.display());
        }
        let e = OutputDir::create(&d.join("src/model.safetensors"), &[], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("exists and is not a directory"), "{e}");
        let full = d.join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("old.txt"), b"old").unwrap();
        let e = OutputDir::create(&full, &[&src], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not empty") && e.contains("--force"), "{e}");
        assert_eq!(
            std::fs::read(src.join("model.safetensors")).unwrap(),
            b"keep"
        );
        // Forced: the old contents go only at commit.
        let o = OutputDir::create(&full, &[&src], true).unwrap();
        o.write("new.txt", b"new").unwrap();
        assert!(full.join("old.txt").exists() && !full.join("new.txt").exists());
        o.commit().unwrap();
        assert!(!full.join("old.txt").exists());
        assert_eq!(std::fs::read(full.join("new.txt")).unwrap(), b"new");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn output_dir_leaves_nothing_when_not_committed() {
        let d = tempdir("drop");
        let out = d.join("out");
        {
            let o = OutputDir::create(&out, &[], false).unwrap();
            o.write("model.safetensors", b"partial").unwrap();
            assert!(!out.exists());
        }
        assert!(!out.exists());
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            0,
            "temporary sibling removed"
        );
        // A stale sibling of a dead process is cleaned up by the next run.
        std::fs::create_dir(d.join(format!(".out{PARTIAL}999999999"))).unwrap();
        let o = OutputDir::create(&out, &[], false).unwrap();
        o.write("a", b"a").unwrap();
        o.commit().unwrap();
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["out"]);
        // An existing empty folder is replaced.
        let empty = d.join("empty");
        std::fs::create_dir(&empty).unwrap();
        let o = OutputDir::create(&empty, &[], false).unwrap();
        o.write("a", b"a").unwrap();
        o.commit().unwrap();
        assert!(empty.join("a").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
