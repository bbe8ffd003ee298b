//! `node-agent inspect --record DIR`: copies every host path the inspection
//! touched into `DIR`, so the same inspection can run later on the copy
//! (test fixtures recorded in lab VMs).
//!
//! Symlinks are recreated with their target text, and paths through them
//! are recorded at their real location, so the copy has the same shape as
//! sysfs (class entries link into `/sys/devices/...`) and other readers of
//! the tree (hwloc) see it as they would see the host. A listed directory
//! gets its entries: links as links, subdirectories empty, readable files
//! with their contents. Nothing outside `DIR` is written.

use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::Access;

/// A failure to write the recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Reading the source or writing the copy failed.
    #[error("cannot record {path}: check that the destination is writable")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A chain of symlinks that does not end.
    #[error("{path}: too many levels of symlinks")]
    Loop { path: String },
}

/// Largest file copied when a listed directory's entries are recorded.
const MAX_LISTED_FILE: u64 = 1 << 20;

/// Copies every path in `accesses` from the tree under `src` (the sysroot)
/// into `dst`.
pub fn record(src: &Path, dst: &Path, accesses: &BTreeSet<Access>) -> Result<(), RecordError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| RecordError::Io { path, source }
    };
    fs::create_dir_all(dst).map_err(io(dst))?;
    for access in accesses {
        match access {
            Access::File(p) => {
                copy_path(src, dst, p, Follow::Yes)?;
            }
            Access::Link(p) | Access::Exists(p) => {
                copy_path(src, dst, p, Follow::No)?;
            }
            Access::Dir(p) => {
                let Some(real) = copy_path(src, dst, p, Follow::Yes)? else {
                    continue;
                };
                let entries = match fs::read_dir(src.join(&real)) {
                    Ok(entries) => entries,
                    Err(_) => continue,
                };
                for entry in entries.flatten() {
                    let rel = real.join(entry.file_name());
                    let (from, to) = (src.join(&rel), dst.join(&rel));
                    let Ok(meta) = fs::symlink_metadata(&from) else {
                        continue;
                    };
                    if meta.is_symlink() {
                        let target = fs::read_link(&from).map_err(io(&from))?;
                        make_link(&to, &target)?;
                    } else if meta.is_dir() {
                        fs::create_dir_all(&to).map_err(io(&to))?;
                    } else if meta.len() <= MAX_LISTED_FILE && !to.exists() {
                        // Unreadable attributes (write-only, refused) are skipped.
                        if let Ok(bytes) = fs::read(&from) {
                            fs::write(&to, bytes).map_err(io(&to))?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    Yes,
    No,
}

/// Copies host path `host` (and every symlink on the way) from `src` to
/// `dst`; returns its real path relative to the root, `None` when it does
/// not exist.
fn copy_path(
    src: &Path,
    dst: &Path,
    host: &str,
    follow_last: Follow,
) -> Result<Option<PathBuf>, RecordError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| RecordError::Io { path, source }
    };
    let mut pending: VecDeque<OsString> = names(Path::new(host));
    let mut cur = PathBuf::new();
    let mut hops = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&name);
        let from = src.join(&next);
        let meta = match fs::symlink_metadata(&from) {
            Ok(m) => m,
            Err(_) => return Ok(None),
        };
        if meta.is_symlink() {
            let target = fs::read_link(&from).map_err(io(&from))?;
            make_link(&dst.join(&next), &target)?;
            if pending.is_empty() && follow_last == Follow::No {
                return Ok(Some(next));
            }
            hops += 1;
            if hops > 40 {
                return Err(RecordError::Loop {
                    path: host.to_owned(),
                });
            }
            if target.is_absolute() {
                cur = PathBuf::new();
            }
            for n in names(&target).into_iter().rev() {
                pending.push_front(n);
            }
            continue;
        }
        cur = next;
        let to = dst.join(&cur);
        if meta.is_dir() {
            fs::create_dir_all(&to).map_err(io(&to))?;
        } else if pending.is_empty() {
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(io(parent))?;
            }
            // Unreadable attributes (refused by the kernel) are not recorded:
            // the inspection saw them as unreadable too.
            if let Ok(bytes) = fs::read(&from) {
                fs::write(&to, bytes).map_err(io(&to))?;
            }
        } else {
            return Ok(None);
        }
    }
    Ok(Some(cur))
}

/// The normal components and `..` of a path (root and `.` dropped).
fn names(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

fn make_link(at: &Path, target: &Path) -> Result<(), RecordError> {
    if fs::symlink_metadata(at).is_ok() {
        return Ok(());
    }
    let io = |source| RecordError::Io {
        path: at.to_owned(),
        source,
    };
    if let Some(parent) = at.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    std::os::unix::fs::symlink(target, at).map_err(io)
}
