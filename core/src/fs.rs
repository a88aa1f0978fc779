//! Files of the seed's protocol: the atomic `.tmp`-then-rename write, and [`TaskDir`], the one
//! way the agent touches a task directory.
//!
//! A task directory is written by the worker, which runs a model that may be prompt-injected:
//! every file in it is hostile input. [`TaskDir`] holds a descriptor of the directory, reached
//! without following any symbolic link, and resolves every name beneath it with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; one `O_NOFOLLOW` open per path component where the
//! kernel has no `openat2`). It reads only regular files, never more than a limit + 1 bytes,
//! opens with `O_NONBLOCK` (a FIFO cannot block the open) and writes through a temp file
//! created with `O_EXCL`. None of it is async: callers run it off their async runtime.

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Writes `path` the seed's way: to `<path>.tmp`, fsync, then rename over `path`. For files
/// the caller trusts (its own); a task directory goes through [`TaskDir::write_atomic`].
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, data, 0o666)
}

/// [`write_atomic`] of a file only its owner may read (0600): dispatch's own state.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, data, 0o600)
}

/// [`write_atomic`] that keeps the permissions the file has (0600 for a new one): an edit of a
/// file the user may have restricted (a config holding a token) never loosens it.
pub fn write_keep_mode(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    write_atomic_mode(path, data, mode)?;
    // The mode given at creation is filtered by the umask; set it as it was.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Creates `dir` (and missing parents) for dispatch's own state: what it creates is 0700, and a
/// `dir` that already exists with access for others is tightened to 0700.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Opens `path` for appending, creating it readable by its owner only (0600).
pub fn private_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Creates (or truncates) `path` for writing, readable by its owner only (0600).
pub fn private_create(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// `5.0 MiB`, `256 KiB`, `12 bytes`.
pub fn human_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;
    let unit = |d: u64, u: &str| {
        if n.is_multiple_of(d) {
            format!("{} {u}", n / d)
        } else {
            format!("{:.1} {u}", n as f64 / d as f64)
        }
    };
    match n {
        n if n >= GIB => unit(GIB, "GiB"),
        n if n >= MIB => unit(MIB, "MiB"),
        n if n >= KIB => unit(KIB, "KiB"),
        n => format!("{n} bytes"),
    }
}

/// A file in a task directory that breaks a rule, or could not be used. The message names the
/// file and the rule, so it can be shown as the reason a task failed.
#[derive(Debug, Error)]
pub enum TaskFileError {
    /// A symbolic link where the protocol expects a file or directory.
    #[error("{path} is a symbolic link; the agent follows no link in a task directory")]
    Symlink {
        /// The file, as the user would find it.
        path: PathBuf,
    },
    /// A FIFO, device, socket or directory where a regular file belongs (or the reverse).
    #[error("{path} is a {kind}, not a {expected}")]
    WrongType {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// Larger than the protocol allows.
    #[error("{} is {}, over the {} limit", path.display(), human_bytes(*size), human_bytes(*limit))]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (at least limit + 1).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Any other failure.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

impl TaskFileError {
    /// True when the file breaks a rule (as opposed to an I/O failure).
    pub fn is_violation(&self) -> bool {
        !matches!(self, TaskFileError::Io { .. })
    }
}

fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "special file",
    }
}

/// A task directory (`<workdir>/.dispatch/tasks/<id>`), held open.
#[derive(Debug)]
pub struct TaskDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Names the protocol uses: one or two plain components (`plan.md`, `ipc/001.question`).
fn check_rel(rel: &str) -> std::io::Result<()> {
    let ok = !rel.is_empty()
        && !rel.starts_with('/')
        && rel.split('/').count() <= 2
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{rel}` is not a task-directory name"),
        ))
    }
}

impl TaskDir {
    /// Opens (with `create`, making any missing part) `<workdir>/.dispatch/tasks/<task_id>`.
    /// `workdir` is the node's own choice and trusted; nothing below it may be a link.
    pub fn open(workdir: &Path, task_id: &str, create: bool) -> Result<TaskDir, TaskFileError> {
        crate::task_id::validate(task_id).map_err(|e| TaskFileError::Io {
            path: workdir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
        })?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |e: std::io::Error| TaskFileError::Io { path, source: e }
        };
        let mut fd: OwnedFd = rustix::fs::open(
            workdir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(workdir)(e.into()))?;
        let mut path = workdir.to_path_buf();
        for part in [".dispatch", "tasks", task_id] {
            path.push(part);
            if create {
                match rustix::fs::mkdirat(&fd, part, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(io(&path)(e.into())),
                }
            }
            fd = open_dir_nofollow(&fd, part).map_err(|e| classify(&path, e, "directory"))?;
        }
        Ok(TaskDir { fd, path })
    }

    /// Where the directory is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn full(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    fn open_beneath(&self, rel: &str, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat2(
            &self.fd,
            rel,
            flags,
            mode,
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            // No openat2 (before Linux 5.6, or filtered by seccomp): one O_NOFOLLOW open per
            // component, which refuses a link just the same.
            Err(Errno::NOSYS) | Err(Errno::PERM) => {
                let (dir, name) = match rel.split_once('/') {
                    Some((d, n)) => (Some(open_dir_nofollow(&self.fd, d)?), n),
                    None => (None, rel),
                };
                let at = dir.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd());
                rustix::fs::openat(at, name, flags, mode)
            }
            r => r,
        }
    }

    /// Reads a regular file of at most `limit` bytes; `None` when it does not exist. A link,
    /// a FIFO, a device or a larger file is an error (and nothing past limit + 1 is read).
    pub fn read(&self, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, TaskFileError> {
        Ok(self.read_stamped(rel, limit)?.map(|(b, _)| b))
    }

    /// Opens `rel` for reading if it is a regular file: the file, its stat and its path;
    /// `None` when it does not exist. A link, a FIFO or a device is an error.
    fn open_regular(
        &self,
        rel: &str,
    ) -> Result<Option<(std::fs::File, rustix::fs::Stat, PathBuf)>, TaskFileError> {
        let path = self.full(rel);
        check_rel(rel).map_err(|e| TaskFileError::Io {
            path: path.clone(),
            source: e,
        })?;
        let fd = match self.open_beneath(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(classify(&path, e, "regular file")),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| TaskFileError::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            return Err(TaskFileError::WrongType {
                path,
                kind: kind_name(kind),
                expected: "regular file",
            });
        }
        Ok(Some((std::fs::File::from(fd), st, path)))
    }

    /// [`TaskDir::read`], with the file's [`Stamp`] as it was when the read began.
    pub fn read_stamped(
        &self,
        rel: &str,
        limit: u64,
    ) -> Result<Option<(Vec<u8>, Stamp)>, TaskFileError> {
        let Some((f, st, path)) = self.open_regular(rel)? else {
            return Ok(None);
        };
        if st.st_size as u64 > limit {
            return Err(TaskFileError::TooLarge {
                path,
                size: st.st_size as u64,
                limit,
            });
        }
        let mut buf = Vec::with_capacity(st.st_size as usize);
        // The file may grow after fstat: read at most limit + 1 bytes to tell.
        f.take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| TaskFileError::Io {
                path: path.clone(),
                source: e,
            })?;
        if buf.len() as u64 > limit {
            return Err(TaskFileError::TooLarge {
                path,
                size: buf.len() as u64,
                limit,
            });
        }
        Ok(Some((buf, Stamp::of(&st))))
    }

    /// The first `limit` bytes of a regular file and its whole size; `None` when it does not
    /// exist. A link, a FIFO or a device is an error; a larger file is not (it is cut).
    pub fn read_prefix(
        &self,
        rel: &str,
        limit: u64,
    ) -> Result<Option<(Vec<u8>, u64)>, TaskFileError> {
        let Some((f, st, path)) = self.open_regular(rel)? else {
            return Ok(None);
        };
        let size = st.st_size.max(0) as u64;
        let mut buf = Vec::with_capacity(size.min(limit) as usize);
        f.take(limit)
            .read_to_end(&mut buf)
            .map_err(|e| TaskFileError::Io { path, source: e })?;
        let size = size.max(buf.len() as u64);
        Ok(Some((buf, size)))
    }

    /// True when `rel` exists as a regular file (a link or anything else does not count).
    pub fn is_file(&self, rel: &str) -> bool {
        check_rel(rel).is_ok()
            && self
                .open_beneath(rel, OFlags::PATH, Mode::empty())
                .ok()
                .and_then(|fd| rustix::fs::fstat(&fd).ok())
                .is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
    }

    /// Makes the subdirectory `rel` (e.g. `ipc`) unless it exists as a directory.
    pub fn ensure_dir(&self, rel: &str) -> Result<(), TaskFileError> {
        let path = self.full(rel);
        match rustix::fs::mkdirat(&self.fd, rel, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(classify(&path, e, "directory")),
        }
        open_dir_nofollow(&self.fd, rel)
            .map(drop)
            .map_err(|e| classify(&path, e, "directory"))
    }

    /// Names in the subdirectory `rel` with their types (`.` and `..` left out); an empty list
    /// when it does not exist.
    pub fn list(&self, rel: &str) -> Result<Vec<(String, FileType)>, TaskFileError> {
        let path = self.full(rel);
        let dir = match open_dir_nofollow(&self.fd, rel) {
            Ok(d) => d,
            Err(Errno::NOENT) => return Ok(Vec::new()),
            Err(e) => return Err(classify(&path, e, "directory")),
        };
        let entries = rustix::fs::Dir::new(dir).map_err(|e| TaskFileError::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| TaskFileError::Io {
                path: path.clone(),
                source: e.into(),
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                out.push((name, entry.file_type()));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Writes `rel` the seed's way (temp file, fsync, rename), without following any link:
    /// the temp file is created with `O_EXCL` (a leftover or planted one is removed first, the
    /// link itself, never its target) and the rename replaces whatever entry had the name.
    pub fn write_atomic(&self, rel: &str, data: &[u8]) -> Result<(), TaskFileError> {
        self.write_atomic_if(rel, data, None).map(drop)
    }

    /// Rewrites `rel` from what it holds, keeping what another writer does meanwhile. `edit`
    /// gets the bytes and returns the new ones (`None`: nothing to write). When the file
    /// changed after it was read (the worker renamed its own rewrite over it, or wrote in
    /// place), the node's write is dropped and the file read and edited again, up to
    /// [`MAX_REWRITE_TRIES`] times. The worker takes no lock, so a window remains: between
    /// the last check and the rename, microseconds instead of the whole read-edit-fsync.
    pub fn rewrite<E: From<TaskFileError>>(
        &self,
        rel: &str,
        limit: u64,
        mut edit: impl FnMut(&[u8]) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<Rewritten, E> {
        for _ in 0..MAX_REWRITE_TRIES {
            let Some((now, stamp)) = self.read_stamped(rel, limit)? else {
                return Ok(Rewritten::Missing);
            };
            let Some(new) = edit(&now)? else {
                return Ok(Rewritten::Kept(now));
            };
            if self.write_atomic_if(rel, &new, Some((stamp, &now)))? {
                return Ok(Rewritten::Wrote(new));
            }
        }
        Err(TaskFileError::Io {
            path: self.full(rel),
            source: std::io::Error::other(format!(
                "it changed under each of {MAX_REWRITE_TRIES} rewrites by the node"
            )),
        }
        .into())
    }

    /// The atomic write; with `expect` (a stamp and the bytes read with it), only while the
    /// file is still what was read (false when it is not, and nothing was written).
    fn write_atomic_if(
        &self,
        rel: &str,
        data: &[u8],
        expect: Option<(Stamp, &[u8])>,
    ) -> Result<bool, TaskFileError> {
        let path = self.full(rel);
        let err = |e: std::io::Error| TaskFileError::Io {
            path: path.clone(),
            source: e,
        };
        check_rel(rel).map_err(err)?;
        // The node's own temp name, never the worker's `<name>.tmp`: a worker rewriting the
        // same file at that moment keeps its temp file (and its rename works).
        let (dir, name, tmp_name) = match rel.split_once('/') {
            Some((d, n)) => (
                Some(open_dir_nofollow(&self.fd, d).map_err(|e| classify(&path, e, "directory"))?),
                n.to_string(),
                format!(".{n}.dispatch.tmp"),
            ),
            None => (None, rel.to_string(), format!(".{rel}.dispatch.tmp")),
        };
        let at = dir.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd());
        match rustix::fs::unlinkat(at, tmp_name.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(err(e.into())),
        }
        let fd = rustix::fs::openat(
            at,
            tmp_name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| err(e.into()))?;
        let mut f = std::fs::File::from(fd);
        f.write_all(data).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        if let Some((stamp, bytes)) = expect {
            // Checked last, after the slow fsync: the window left is this read and the rename.
            // The bytes too: a write in place within the clock's tick keeps the times.
            let same = match self.read_stamped(rel, bytes.len() as u64) {
                Ok(Some((b, s))) => s == stamp && b == bytes,
                _ => false,
            };
            if !same {
                let _ = rustix::fs::unlinkat(at, tmp_name.as_str(), AtFlags::empty());
                return Ok(false);
            }
        }
        rustix::fs::renameat(at, tmp_name.as_str(), at, name.as_str())
            .map_err(|e| err(e.into()))?;
        Ok(true)
    }
}

/// Times [`TaskDir::rewrite`] reads and edits a file that keeps changing under it.
pub const MAX_REWRITE_TRIES: usize = 20;

/// What a file was when read: its inode and its size and times. A rename over it or a write
/// in place changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    // The stat fields' types differ between targets.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &rustix::fs::Stat) -> Stamp {
        Stamp {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as i64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }
}

/// What [`TaskDir::rewrite`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewritten {
    /// There is no such file.
    Missing,
    /// The edit had nothing to write; the file as read.
    Kept(Vec<u8>),
    /// Written; the new bytes.
    Wrote(Vec<u8>),
}

fn open_dir_nofollow(at: &OwnedFd, name: &str) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Turns an open failure into what the entry is (a link, the wrong type) where that is why.
fn classify(path: &Path, e: Errno, expected: &'static str) -> TaskFileError {
    match e {
        // O_NOFOLLOW on a link gives ELOOP; RESOLVE_NO_SYMLINKS gives ELOOP too.
        Errno::LOOP => TaskFileError::Symlink {
            path: path.to_path_buf(),
        },
        Errno::NOTDIR => {
            let kind = std::fs::symlink_metadata(path)
                .map(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    let t = m.file_type();
                    if t.is_symlink() {
                        "symbolic link"
                    } else if t.is_fifo() {
                        "FIFO"
                    } else if t.is_file() {
                        "regular file"
                    } else {
                        "special file"
                    }
                })
                .unwrap_or("special file");
            if kind == "symbolic link" {
                TaskFileError::Symlink {
                    path: path.to_path_buf(),
                }
            } else {
                TaskFileError::WrongType {
                    path: path.to_path_buf(),
                    kind,
                    expected,
                }
            }
        }
        e => TaskFileError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, TaskDir) {
        let dir = tempfile::tempdir().unwrap();
        let t = TaskDir::open(dir.path(), "t-1", true).unwrap();
        t.ensure_dir("ipc").unwrap();
        (dir, t)
    }

    #[test]
    fn reads_writes_and_lists_regular_files() {
        let (_d, t) = setup();
        t.write_atomic("plan.md", b"- [ ] a\n").unwrap();
        assert_eq!(t.read("plan.md", 100).unwrap().unwrap(), b"- [ ] a\n");
        t.write_atomic("ipc/001.question", b"why?").unwrap();
        assert!(t.is_file("ipc/001.question"));
        assert_eq!(t.read("ipc/002.question", 100).unwrap(), None);
        let names: Vec<String> = t.list("ipc").unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(names, vec!["001.question"]);
        assert!(matches!(
            t.read("plan.md", 3),
            Err(TaskFileError::TooLarge {
                size: 8,
                limit: 3,
                ..
            })
        ));
    }

    #[test]
    fn a_rewrite_keeps_what_the_worker_writes_meanwhile() {
        let (_d, t) = setup();
        t.write_atomic("plan.md", b"- [ ] a\n").unwrap();
        let plan = t.path().join("plan.md");
        // The worker checks its item between the node's read and its rename (by rename, as
        // the seed's workers do, then in place), each once.
        let mut calls = Vec::new();
        let done = t
            .rewrite("plan.md", 100, |now| {
                calls.push(String::from_utf8_lossy(now).into_owned());
                match calls.len() {
                    1 => {
                        let tmp = plan.with_extension("md.tmp");
                        std::fs::write(&tmp, b"- [x] a\n").unwrap();
                        std::fs::rename(&tmp, &plan).unwrap();
                    }
                    2 => std::fs::write(&plan, b"- [x] a\n- [ ] b\n").unwrap(),
                    _ => {}
                }
                let mut next = now.to_vec();
                next.extend_from_slice(b"> note\n");
                Ok::<_, TaskFileError>(Some(next))
            })
            .unwrap();
        assert_eq!(calls.len(), 3, "{calls:?}");
        let want = b"- [x] a\n- [ ] b\n> note\n".to_vec();
        assert_eq!(done, Rewritten::Wrote(want.clone()));
        assert_eq!(std::fs::read(&plan).unwrap(), want);
        assert!(!t.path().join(".plan.md.dispatch.tmp").exists());
        // Nothing to write, a missing file, and a file that never stops changing.
        let kept = t.rewrite("plan.md", 100, |_| Ok::<_, TaskFileError>(None));
        assert_eq!(kept.unwrap(), Rewritten::Kept(want));
        let missing = t.rewrite("nope.md", 100, |_| Ok::<_, TaskFileError>(None));
        assert_eq!(missing.unwrap(), Rewritten::Missing);
        let mut n = 0;
        let busy = t.rewrite("plan.md", 100, |now| {
            n += 1;
            std::fs::write(&plan, format!("- [ ] {n}\n")).unwrap();
            Ok::<_, TaskFileError>(Some(now.to_vec()))
        });
        assert!(
            busy.unwrap_err().to_string().contains("changed under each"),
            "gives up"
        );
        assert_eq!(n, MAX_REWRITE_TRIES);
    }

    #[test]
    fn links_fifos_and_escapes_are_refused() {
        let (d, t) = setup();
        let secret = d.path().join("secret");
        std::fs::write(&secret, "key").unwrap();
        symlink(&secret, t.path().join("plan.md")).unwrap();
        let e = t.read("plan.md", 100).unwrap_err();
        assert!(matches!(e, TaskFileError::Symlink { .. }), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(!t.is_file("plan.md"));
        // A write replaces the link itself and leaves its target alone; a link planted at its
        // temp name is replaced, not followed.
        symlink(&secret, t.path().join(".plan.md.dispatch.tmp")).unwrap();
        t.write_atomic("plan.md", b"mine").unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "key");
        assert_eq!(t.read("plan.md", 100).unwrap().unwrap(), b"mine");
        // The worker's own temp file is never touched.
        std::fs::write(t.path().join("plan.md.tmp"), "the worker's").unwrap();
        t.write_atomic("plan.md", b"mine again").unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("plan.md.tmp")).unwrap(),
            "the worker's"
        );

        nix::unistd::mkfifo(
            &t.path().join("ipc/001.question"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let e = t.read("ipc/001.question", 100).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");

        std::fs::remove_dir_all(t.path().join("ipc")).unwrap();
        symlink(d.path(), t.path().join("ipc")).unwrap();
        assert!(matches!(
            t.read("ipc/secret", 100),
            Err(TaskFileError::Symlink { .. })
        ));
        assert!(t.list("ipc").is_err());
        assert!(t.read("../secret", 100).is_err());
    }

    #[test]
    fn a_planted_link_in_the_path_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        symlink(elsewhere.path(), d.path().join(".dispatch")).unwrap();
        let e = TaskDir::open(d.path(), "t-1", true).unwrap_err();
        assert!(matches!(e, TaskFileError::Symlink { .. }), "{e}");
        assert!(
            std::fs::read_dir(elsewhere.path())
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn dispatch_keeps_its_own_files_private_and_keeps_a_users_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let home = d.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&home.join("a/b")).unwrap();
        assert_eq!(mode(&home.join("a/b")), 0o700);
        private_dir(&home).unwrap();
        assert_eq!(
            mode(&home),
            0o700,
            "a dispatch home others could read is tightened"
        );
        write_private(&home.join("state"), b"x").unwrap();
        assert_eq!(mode(&home.join("state")), 0o600);
        let cfg = home.join("config.yaml");
        write_keep_mode(&cfg, b"token: x\n").unwrap();
        assert_eq!(mode(&cfg), 0o600, "a new config is private");
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_keep_mode(&cfg, b"token: y\n").unwrap();
        assert_eq!(mode(&cfg), 0o640, "an edit keeps the mode the user chose");
        drop(private_append(&home.join("log")).unwrap());
        assert_eq!(mode(&home.join("log")), 0o600);
    }

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(5 * 1024 * 1024), "5 MiB");
        assert_eq!(human_bytes(5_242_880 + 26_214), "5.0 MiB");
        assert_eq!(human_bytes(256 * 1024), "256 KiB");
        assert_eq!(human_bytes(12), "12 bytes");
    }
}
