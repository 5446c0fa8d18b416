//! The local-directory backend. Writes are atomic and durable: a staging file
//! is written and fsynced, then renamed (or, for create-if-absent, hard
//! linked, which fails if the name exists) into place, and the directory and
//! its parent are fsynced (the parent holds the directory's own name, which
//! the write may have created). A reader never sees a half-written object.
//!
//! A write of [`Durable::Bytes`] leaves the directory to a later
//! [`Durable::Object`] write into the same folder (or a
//! [`LocalDir::sync_folder`]): a snapshot's parts, whose manifest is written
//! after them beside them, and a part's chunks, whose folder is synced once.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;

use crate::backend::Durable;
use crate::error::{Error, Result};

static STAGING: AtomicU64 = AtomicU64::new(0);

/// A directory holding objects as files, keys as relative paths.
#[derive(Clone, Debug)]
pub struct LocalDir {
    root: PathBuf,
}

fn backend(key: &str, e: std::io::Error) -> Error {
    match e.kind() {
        ErrorKind::NotFound => Error::NotFound {
            key: key.to_string(),
        },
        ErrorKind::AlreadyExists => Error::AlreadyExists {
            key: key.to_string(),
        },
        _ => Error::Backend {
            key: key.to_string(),
            problem: e.to_string(),
        },
    }
}

impl LocalDir {
    /// Objects under `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalDir { root: root.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Writes `bytes` under `key`; with `create_only`, fails with
    /// [`Error::AlreadyExists`] if it is there.
    pub(crate) async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        create_only: bool,
        durable: Durable,
    ) -> Result<()> {
        let path = self.path(key);
        let key = key.to_string();
        run(move || put_blocking(&path, &bytes, create_only, durable).map_err(|e| backend(&key, e)))
            .await
    }

    /// Makes the names written into `folder` durable (and the folder's own
    /// name, in its parent).
    pub(crate) async fn sync_folder(&self, folder: &str) -> Result<()> {
        let path = self.path(folder);
        let key = folder.to_string();
        run(move || sync_dir_and_parent(&path).map_err(|e| backend(&key, e))).await
    }

    /// Reads `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key);
        let key = key.to_string();
        run(move || {
            fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| backend(&key, e))
        })
        .await
    }

    /// Every key under `prefix` (a folder) with its modification time,
    /// staging files left out.
    pub async fn list_meta(&self, prefix: &str) -> Result<Vec<(String, SystemTime)>> {
        let root = self.root.clone();
        let start = self.path(prefix);
        let key = prefix.to_string();
        run(move || {
            let mut out = Vec::new();
            walk(&root, &start, &mut out, false).map_err(|e| backend(&key, e))?;
            out.sort();
            Ok(out)
        })
        .await
    }

    /// Deletes staging files (left by a process killed in the middle of a
    /// write) last modified before `before`. Returns how many.
    pub async fn collect_staging(&self, before: SystemTime) -> Result<usize> {
        let root = self.root.clone();
        run(move || {
            let mut found = Vec::new();
            walk(&root, &root, &mut found, true).map_err(|e| backend("staging files", e))?;
            let mut n = 0;
            for (key, modified) in found {
                if modified < before && fs::remove_file(root.join(&key)).is_ok() {
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }

    /// Deletes `key` (and its folder once empty).
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.delete_all(vec![key.to_string()]).await
    }

    /// Deletes `keys` in order (and each folder once empty), in one blocking
    /// task: a retention pass deletes many, and on a busy machine every
    /// task handed to the blocking pool waits its turn.
    pub async fn delete_all(&self, keys: Vec<String>) -> Result<()> {
        let paths: Vec<(PathBuf, String)> = keys.into_iter().map(|k| (self.path(&k), k)).collect();
        run(move || {
            for (path, key) in paths {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(backend(&key, e)),
                }
                if let Some(dir) = path.parent() {
                    let _ = fs::remove_dir(dir); // only succeeds when empty
                }
            }
            Ok(())
        })
        .await
    }
}

async fn run<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Backend {
            key: "local store".into(),
            problem: e.to_string(),
        })?
}

fn put_blocking(
    path: &Path,
    bytes: &[u8],
    create_only: bool,
    durable: Durable,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("key has no folder"))?;
    create_folders(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("object");
    let n = STAGING.fetch_add(1, Ordering::Relaxed);
    let staging = dir.join(format!(".{name}.{}.{n}.staging", std::process::id()));
    let result = (|| {
        let mut f = File::create(&staging)?;
        crash_hook(path, &mut f, bytes);
        f.write_all(bytes)?;
        f.sync_all()?;
        if create_only {
            fs::hard_link(&staging, path)?;
        } else {
            fs::rename(&staging, path)?;
        }
        match durable {
            Durable::Object => sync_dir_and_parent(dir),
            Durable::Bytes => Ok(()),
        }
    })();
    let _ = fs::remove_file(&staging);
    result
}

/// Creates `dir` and any missing folder above it. The name of `dir` itself
/// is made durable by the durable write into it (which fsyncs its parent);
/// the names of the folders above it that this call created are made
/// durable here, once (the first snapshot, the first chunk of a node).
fn create_folders(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d);
        at = d.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    for created in missing.iter().skip(1) {
        sync_parent(created)?;
    }
    Ok(())
}

/// Fsyncs `dir`, then its parent: the first makes the names in it durable,
/// the second the name of `dir` itself, which `create_dir_all` may just have
/// made. On a journalling file system the second costs next to nothing: the
/// first already committed the journal that holds it.
fn sync_dir_and_parent(dir: &Path) -> std::io::Result<()> {
    sync_dir(dir)?;
    sync_parent(dir)
}

/// Fsyncs the folder that holds `dir`'s name (none for a bare relative name).
fn sync_parent(dir: &Path) -> std::io::Result<()> {
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    tests::DIR_SYNCS.with(|n| n.set(n.get() + 1));
    File::open(dir)?.sync_all()
}

/// A test hook for crash tests: when `CAIRN_TEST_CRASH_WRITING` names the end
/// of this object's path, write half of it to the staging file and abort the
/// process, as a `kill -9` in the middle of a write would.
fn crash_hook(path: &Path, f: &mut File, bytes: &[u8]) {
    let Ok(target) = std::env::var("CAIRN_TEST_CRASH_WRITING") else {
        return;
    };
    if !target.is_empty() && path.to_string_lossy().ends_with(&target) {
        let _ = f.write_all(&bytes[..bytes.len() / 2]);
        let _ = f.sync_all();
        std::process::abort();
    }
}

/// Collects the files under `dir` (keys relative to `root`) with their
/// modification times: the objects, or with `staging` only the staging files.
fn walk(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, SystemTime)>,
    staging: bool,
) -> std::io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        // Retention (or another process) may delete what was just listed:
        // a file gone by the time it is looked at is simply not there.
        let Some(is_dir) = gone_is_none(entry.file_type().map(|t| t.is_dir()))? else {
            continue;
        };
        if is_dir {
            walk(root, &path, out, staging)?;
        } else if entry.file_name().to_string_lossy().ends_with(".staging") == staging {
            if let Ok(rel) = path.strip_prefix(root) {
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                let Some(modified) = gone_is_none(entry.metadata().and_then(|m| m.modified()))?
                else {
                    continue;
                };
                out.push((parts.join("/"), modified));
            }
        }
    }
    Ok(())
}

/// A "not found" (the file was deleted meanwhile) as `None`; other errors stay errors.
fn gone_is_none<T>(r: std::io::Result<T>) -> std::io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Directory fsyncs made on this thread.
        pub(super) static DIR_SYNCS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }

    fn dir_syncs_during(f: impl FnOnce()) -> u32 {
        let before = DIR_SYNCS.with(|n| n.get());
        f();
        DIR_SYNCS.with(|n| n.get()) - before
    }

    /// Invariant: a durable object's name survives a crash, and so does
    /// every folder name on its path. A write of `Durable::Object` fsyncs its
    /// folder and the folder's parent (which holds the folder's name, maybe
    /// created by this write); one of `Durable::Bytes` leaves that to the next
    /// durable write into the same folder or to `sync_folder`; and a write
    /// that creates folders above its own syncs their names at once.
    #[test]
    fn durable_writes_sync_every_folder_name_on_their_path() {
        let root = std::env::temp_dir().join(format!("cairn-sync-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        let dir = root.join("snapshots/00000000000000000001");
        let part = dir.join("part-p.cbor");
        let n = dir_syncs_during(|| put_blocking(&part, b"part", true, Durable::Bytes).unwrap());
        assert_eq!(
            n, 1,
            "the first part created snapshots/ and syncs its name, leaving its own folder to the manifest"
        );
        assert_eq!(fs::read(&part).unwrap(), b"part");
        let other = dir.join("part-q.cbor");
        let n = dir_syncs_during(|| put_blocking(&other, b"part", true, Durable::Bytes).unwrap());
        assert_eq!(n, 0, "a part leaves its folder to the manifest");
        let manifest = dir.join("MANIFEST");
        let n = dir_syncs_during(|| put_blocking(&manifest, b"m", true, Durable::Object).unwrap());
        assert_eq!(n, 2, "the manifest syncs its folder and the folder's name");
        let n = dir_syncs_during(|| sync_dir_and_parent(&dir).unwrap());
        assert_eq!(n, 2);
        // Create-if-absent still refuses a second object under the name.
        let again = put_blocking(&part, b"other", true, Durable::Bytes).unwrap_err();
        assert_eq!(again.kind(), ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&part).unwrap(), b"part");
        fs::remove_dir_all(&root).unwrap();
    }

    /// A file listed and then deleted (as retention does while a reader
    /// lists) is left out of the listing, not an error.
    #[test]
    fn a_file_deleted_while_listed_is_left_out() {
        let dir = std::env::temp_dir().join(format!("cairn-walk-{}", std::process::id()));
        fs::create_dir_all(dir.join("snapshots/1")).unwrap();
        fs::write(dir.join("snapshots/1/MANIFEST"), b"m").unwrap();
        let entries: Vec<fs::DirEntry> = fs::read_dir(dir.join("snapshots/1"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        fs::remove_file(dir.join("snapshots/1/MANIFEST")).unwrap();
        let e = &entries[0];
        assert!(e.metadata().is_err(), "the stale entry must fail to stat");
        assert!(gone_is_none(e.metadata()).unwrap().is_none());
        let mut out = Vec::new();
        walk(&dir, &dir.join("snapshots"), &mut out, false).unwrap();
        assert!(out.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
