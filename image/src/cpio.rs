//! A writer for the "newc" cpio format (`070701`), the format the Linux kernel unpacks as an
//! initramfs.
//!
//! Invariants: pure (bytes in memory, written to any `Write`; no file system access, no
//! clock); reproducible: entries are written sorted by path, every directory is created
//! before what it contains, and mtime, uid, gid and inode numbers are fixed (mtime 0, owner
//! root, inodes numbered in write order), so the same entries always give the same bytes.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// The newc header magic (no checksum).
const MAGIC: &[u8; 6] = b"070701";
/// The name of the entry that ends an archive.
const TRAILER: &str = "TRAILER!!!";

/// Why an entry cannot go into an archive.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpioError {
    /// The path is empty, absolute, or has an empty, `.` or `..` component.
    #[error(
        "cpio entry `{path}`: a path must be relative, without empty, `.` or `..` components (e.g. `lib/modules/load-order`)"
    )]
    BadPath { path: String },
    /// Two entries with one path.
    #[error("cpio entry `{path}` is added twice")]
    Duplicate { path: String },
    /// A parent of the path is already a file, a symlink or a device.
    #[error("cpio entry `{path}`: its parent `{parent}` is not a directory")]
    ParentNotDirectory { path: String, parent: String },
    /// newc stores sizes in 32 bits.
    #[error(
        "cpio entry `{path}` is {size} bytes; the newc format holds at most 4 GiB - 1 per file"
    )]
    TooLarge { path: String, size: u64 },
}

/// What an entry is.
#[derive(Clone, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File(Vec<u8>),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

impl std::fmt::Debug for Kind {
    // File contents are megabytes of binary: show their size, not the bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Directory => write!(f, "Directory"),
            Kind::File(data) => write!(f, "File({} bytes)", data.len()),
            Kind::Symlink(target) => write!(f, "Symlink({target:?})"),
            Kind::CharDevice { major, minor } => write!(f, "CharDevice({major}:{minor})"),
        }
    }
}

/// One archive member: its permission bits (e.g. `0o755`) and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub permissions: u32,
    pub kind: Kind,
}

/// An archive being assembled. Parent directories are added (mode 0755) when missing.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

fn check_path(path: &str) -> Result<(), CpioError> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(CpioError::BadPath {
            path: path.to_owned(),
        });
    }
    Ok(())
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (and its missing parents).
    pub fn add_dir(&mut self, path: &str, permissions: u32) -> Result<(), CpioError> {
        self.add(path, permissions, Kind::Directory)
    }

    /// Adds a regular file with its contents.
    pub fn add_file(
        &mut self,
        path: &str,
        permissions: u32,
        data: Vec<u8>,
    ) -> Result<(), CpioError> {
        if u32::try_from(data.len()).is_err() {
            return Err(CpioError::TooLarge {
                path: path.to_owned(),
                size: data.len() as u64,
            });
        }
        self.add(path, permissions, Kind::File(data))
    }

    /// Adds a symbolic link pointing at `target`.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        self.add(path, 0o777, Kind::Symlink(target.to_owned()))
    }

    /// Adds a character device node (written as data: no root needed).
    pub fn add_char_device(
        &mut self,
        path: &str,
        permissions: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.add(path, permissions, Kind::CharDevice { major, minor })
    }

    /// The entries, sorted by path, in the order they are written.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    fn add(&mut self, path: &str, permissions: u32, kind: Kind) -> Result<(), CpioError> {
        check_path(path)?;
        // Parents first: each must be absent (then created) or a directory.
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            let parent = &path[..end + slash];
            match self.entries.get(parent) {
                Some(Entry {
                    kind: Kind::Directory,
                    ..
                }) => {}
                Some(_) => {
                    return Err(CpioError::ParentNotDirectory {
                        path: path.to_owned(),
                        parent: parent.to_owned(),
                    });
                }
                None => {
                    self.entries.insert(
                        parent.to_owned(),
                        Entry {
                            permissions: 0o755,
                            kind: Kind::Directory,
                        },
                    );
                }
            }
            end += slash + 1;
        }
        match self.entries.get_mut(path) {
            // A directory created as a parent may be declared again with its own mode.
            Some(existing) if existing.kind == Kind::Directory && kind == Kind::Directory => {
                existing.permissions = permissions & 0o7777;
                Ok(())
            }
            Some(_) => Err(CpioError::Duplicate {
                path: path.to_owned(),
            }),
            None => {
                self.entries.insert(
                    path.to_owned(),
                    Entry {
                        permissions: permissions & 0o7777,
                        kind,
                    },
                );
                Ok(())
            }
        }
    }

    /// Writes the archive (entries sorted by path, then the trailer) and returns the number
    /// of bytes written. The kernel accepts the result as an initramfs, compressed or not.
    pub fn write_to<W: Write>(&self, out: &mut W) -> io::Result<u64> {
        let mut written = 0;
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            // Inode 0 is avoided: some readers treat it as "no inode".
            written += write_entry(out, path, entry, ino as u32 + 1)?;
        }
        let trailer = Entry {
            permissions: 0,
            kind: Kind::File(Vec::new()),
        };
        written += write_member(out, TRAILER, 0, &trailer, 0, 1)?;
        Ok(written)
    }

    /// The archive as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to a Vec never fails");
        out
    }
}

fn write_entry<W: Write>(out: &mut W, path: &str, entry: &Entry, ino: u32) -> io::Result<u64> {
    let (type_bits, nlink) = match entry.kind {
        Kind::Directory => (0o040000, 2),
        Kind::File(_) => (0o100000, 1),
        Kind::Symlink(_) => (0o120000, 1),
        Kind::CharDevice { .. } => (0o020000, 1),
    };
    write_member(out, path, type_bits | entry.permissions, entry, ino, nlink)
}

fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn write_member<W: Write>(
    out: &mut W,
    name: &str,
    mode: u32,
    entry: &Entry,
    ino: u32,
    nlink: u32,
) -> io::Result<u64> {
    let data: &[u8] = match &entry.kind {
        Kind::File(data) => data,
        Kind::Symlink(target) => target.as_bytes(),
        Kind::Directory | Kind::CharDevice { .. } => &[],
    };
    let (rmajor, rminor) = match entry.kind {
        Kind::CharDevice { major, minor } => (major, minor),
        _ => (0, 0),
    };
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        rmajor,
        rminor,
        name.len() as u32 + 1, // the name's NUL counts
        0,                     // check (unused by newc)
    ];
    let mut header = Vec::with_capacity(110 + name.len() + 4);
    header.extend_from_slice(MAGIC);
    for field in fields {
        header.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    header.extend_from_slice(name.as_bytes());
    header.push(0);
    header.resize(header.len() + padding(header.len()), 0);
    out.write_all(&header)?;
    out.write_all(data)?;
    let pad = padding(data.len());
    out.write_all(&[0; 3][..pad])?;
    Ok((header.len() + data.len() + pad) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parents_are_created_and_sorted_first() {
        let mut a = Archive::new();
        a.add_file("lib/modules/x.ko", 0o644, b"ko".to_vec())
            .unwrap();
        a.add_file("init", 0o755, b"#!".to_vec()).unwrap();
        a.add_dir("lib", 0o700).unwrap();
        let paths: Vec<_> = a.entries().map(|(p, e)| (p, e.permissions)).collect();
        assert_eq!(
            paths,
            [
                ("init", 0o755),
                ("lib", 0o700),
                ("lib/modules", 0o755),
                ("lib/modules/x.ko", 0o644)
            ]
        );
    }

    #[test]
    fn bad_paths_and_duplicates_are_refused() {
        let mut a = Archive::new();
        for bad in ["", "/init", "a//b", "a/../b", "./a", "a/"] {
            assert_eq!(
                a.add_dir(bad, 0o755),
                Err(CpioError::BadPath { path: bad.into() }),
                "{bad:?}"
            );
        }
        a.add_file("init", 0o755, vec![]).unwrap();
        assert_eq!(
            a.add_file("init", 0o755, vec![]),
            Err(CpioError::Duplicate {
                path: "init".into()
            })
        );
        assert_eq!(
            a.add_file("init/x", 0o644, vec![]),
            Err(CpioError::ParentNotDirectory {
                path: "init/x".into(),
                parent: "init".into()
            })
        );
    }

    #[test]
    fn header_layout_matches_newc() {
        let mut a = Archive::new();
        a.add_file("ab", 0o644, b"hello".to_vec()).unwrap();
        let bytes = a.to_bytes();
        // 110-byte header + "ab\0" = 113, padded to 116; 5 data bytes padded to 8.
        let first = &bytes[..116 + 8];
        assert_eq!(&first[..6], b"070701");
        assert_eq!(&first[6..14], b"00000001"); // ino
        assert_eq!(&first[14..22], b"000081A4"); // regular file, 0644
        assert_eq!(&first[54..62], b"00000005"); // size
        assert_eq!(&first[94..102], b"00000003"); // name size with NUL
        assert_eq!(&first[110..116], b"ab\0\0\0\0");
        assert_eq!(&first[116..124], b"hello\0\0\0");
        assert!(bytes[124..].starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        let tail = String::from_utf8_lossy(&bytes[124..]);
        assert!(tail.contains("TRAILER!!!"), "{tail}");
    }

    proptest! {
        /// Same entries, any insertion order: the same bytes.
        #[test]
        fn insertion_order_does_not_matter(
            files in proptest::collection::btree_map("[a-c]{1,2}(/[a-c]{1,2}){0,2}", proptest::collection::vec(any::<u8>(), 0..9), 1..12),
            seed in any::<u64>(),
        ) {
            let mut forward = Archive::new();
            let mut ok = Vec::new();
            for (path, data) in &files {
                if forward.add_file(path, 0o644, data.clone()).is_ok() {
                    ok.push((path.clone(), data.clone()));
                }
            }
            // Replay the accepted files in a shuffled order.
            let mut shuffled = ok.clone();
            let n = shuffled.len();
            for i in 0..n {
                let j = (seed.rotate_left(i as u32) as usize) % n;
                shuffled.swap(i, j);
            }
            let mut backward = Archive::new();
            for (path, data) in &shuffled {
                backward.add_file(path, 0o644, data.clone()).unwrap();
            }
            prop_assert_eq!(forward.to_bytes(), backward.to_bytes());
        }
    }
}
