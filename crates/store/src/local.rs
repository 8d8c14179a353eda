//! The local-folder store, on `std::fs` directly. object_store's local backend runs every file
//! operation on a tokio blocking thread; a run reads thousands of small files from many worker
//! threads at once, and the hand-offs (hundreds of thousands of futex calls per run) cost more
//! than the reads themselves. Here each call is plain blocking I/O on the caller's thread.
//!
//! Keys map to files verbatim below the root. A write goes to a hidden temporary file beside
//! its target and is renamed over it, so readers see the old object or the new one, never a
//! part; listings skip those temporary files.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::{Entry, Error, Result};

/// Temporary files start with this, so a listing can tell them from objects.
const TEMP_PREFIX: &str = ".fleetscore-tmp-";

/// A folder holding one object per file.
#[derive(Debug)]
pub(crate) struct LocalDir {
    root: PathBuf,
}

/// Distinguishes the temporary files of concurrent writers within one process.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

fn io_error(key: &str, e: &std::io::Error) -> Error {
    if e.kind() == ErrorKind::NotFound {
        Error::NotFound(key.to_string())
    } else {
        Error::Store {
            key: key.to_string(),
            message: e.to_string(),
        }
    }
}

impl LocalDir {
    /// The folder `root`, created if missing.
    pub(crate) fn open(root: &Path) -> std::io::Result<LocalDir> {
        fs::create_dir_all(root)?;
        Ok(LocalDir {
            root: fs::canonicalize(root)?,
        })
    }

    /// The file of `key`; keys are `/`-separated segments, none of them empty, `.` or `..`.
    fn file(&self, key: &str) -> Result<PathBuf> {
        let mut path = self.root.clone();
        for part in key.split('/').filter(|p| !p.is_empty()) {
            if part == "." || part == ".." || part.starts_with(TEMP_PREFIX) {
                return Err(Error::Store {
                    key: key.to_string(),
                    message: format!("`{part}` is not allowed in a key"),
                });
            }
            path.push(part);
        }
        Ok(path)
    }

    /// Writes `bytes` to a new temporary file in the target's folder (created if missing: the
    /// folders are made only when creating the file fails for want of them, so that writing
    /// into an existing folder costs no extra calls).
    fn temp_file(&self, key: &str, target: &Path, bytes: &[u8]) -> Result<PathBuf> {
        let dir = target.parent().unwrap_or(&self.root);
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{}-{}",
            std::process::id(),
            NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
        ));
        let file = match fs::File::create(&temp) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(|e| io_error(key, &e))?;
                fs::File::create(&temp)
            }
            file => file,
        };
        let written = file.and_then(|mut f| f.write_all(bytes));
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(io_error(key, &e));
        }
        Ok(temp)
    }

    pub(crate) fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let target = self.file(key)?;
        let temp = self.temp_file(key, &target, bytes)?;
        fs::rename(&temp, &target).map_err(|e| {
            let _ = fs::remove_file(&temp);
            io_error(key, &e)
        })
    }

    /// Links the complete temporary file in under the key's name: linking fails if the name is
    /// taken, so of two writers exactly one wins and nobody sees a partial object.
    pub(crate) fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        let target = self.file(key)?;
        let temp = self.temp_file(key, &target, bytes)?;
        let linked = fs::hard_link(&temp, &target);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_error(key, &e)),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.file(key)?;
        match fs::read(&path) {
            Ok(b) => Ok(Bytes::from(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::NotFound(key.to_string())),
            // A folder is a key prefix, not an object.
            Err(_) if path.is_dir() => Err(Error::NotFound(key.to_string())),
            Err(e) => Err(io_error(key, &e)),
        }
    }

    pub(crate) fn get_ranges(
        &self,
        key: &str,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<Bytes>> {
        use std::os::unix::fs::FileExt;
        let file = fs::File::open(self.file(key)?).map_err(|e| io_error(key, &e))?;
        let size = file.metadata().map_err(|e| io_error(key, &e))?.len();
        ranges
            .iter()
            .map(|r| {
                if r.start > r.end || r.end > size {
                    return Err(Error::Store {
                        key: key.to_string(),
                        message: format!(
                            "range {}..{} is outside its {size} bytes",
                            r.start, r.end
                        ),
                    });
                }
                let mut buf = vec![0; (r.end - r.start) as usize];
                file.read_exact_at(&mut buf, r.start)
                    .map_err(|e| io_error(key, &e))?;
                Ok(Bytes::from(buf))
            })
            .collect()
    }

    /// Every file under the folder of `prefix`, with keys relative to the root.
    pub(crate) fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        let dir = self.file(prefix)?;
        let mut out = Vec::new();
        let base: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
        let mut stack = vec![(dir, base.join("/"))];
        while let Some((dir, key)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    continue;
                }
                Err(e) => return Err(io_error(prefix, &e)),
            };
            for entry in entries {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error(prefix, &e)),
                };
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if name.starts_with(TEMP_PREFIX) {
                    continue;
                }
                let child = if key.is_empty() {
                    name
                } else {
                    format!("{key}/{name}")
                };
                let meta = match fs::metadata(entry.path()) {
                    Ok(meta) => meta,
                    // Deleted since the folder was read: not part of the listing.
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error(&child, &e)),
                };
                if meta.is_dir() {
                    stack.push((entry.path(), child));
                } else {
                    out.push(Entry {
                        key: child,
                        size: meta.len(),
                    });
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn delete(&self, key: &str) -> Result<()> {
        match fs::remove_file(self.file(key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(key, &e)),
        }
    }
}
