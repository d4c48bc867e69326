//! The file source: a directory of YAML (or JSON) files holding Services, EndpointSlices and Pods,
//! polled for changes. Each file is all-or-nothing: one that does not parse keeps its previous
//! objects (and is reported), so a half-written file never blanks the index. Writers should still
//! write a temporary name and rename it into place; names starting with '.' are ignored for that.
//!
//! An optional file `revision` holds a number the writer raises after each complete batch; it is
//! read before the objects, so a revision seen implies every file written before it was seen
//! too. The admin server's `/synced?revision=N` then tells the writer when discovery serves it.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::{ObjectSink, Source};
use crate::objects::ClusterObjects;

/// How often the directory is checked; cheap (one `stat` per file).
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The writer's revision file (see the module docs).
pub const REVISION_FILE: &str = "revision";

#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    #[error("--dir {dir}: cannot read the directory: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

pub struct FileSource {
    dir: PathBuf,
    interval: Duration,
}

/// What identifies one version of a file: a rename gives a new inode, an in-place write a new
/// mtime or length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    modified: SystemTime,
    len: u64,
}

struct FileEntry {
    stamp: Stamp,
    /// The last good objects of this file (empty if it never parsed).
    objects: ClusterObjects,
}

impl FileSource {
    /// Fails when `dir` cannot be read now (a start-up error naming --dir).
    pub fn new(dir: PathBuf) -> Result<FileSource, FileSourceError> {
        std::fs::read_dir(&dir).map_err(|source| FileSourceError::Dir {
            dir: dir.clone(),
            source,
        })?;
        Ok(FileSource {
            dir,
            interval: POLL_INTERVAL,
        })
    }

    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }
}

impl Source for FileSource {
    type Error = FileSourceError;

    async fn run(self, sink: ObjectSink) -> Result<(), FileSourceError> {
        info!(dir = %self.dir.display(), "watching the directory for Services, EndpointSlices and Pods");
        let mut files: BTreeMap<PathBuf, FileEntry> = BTreeMap::new();
        let mut dir_error: Option<String> = None;
        let mut first = true;
        let mut revision = None;
        loop {
            // Before the listing: a revision read implies the files written before it are listed.
            let read_revision = read_revision(&self.dir.join(REVISION_FILE), &sink);
            match scan(&self.dir) {
                Ok(stamps) => {
                    if dir_error.take().is_some() {
                        info!(dir = %self.dir.display(), "the directory is readable again");
                    }
                    let changed = refresh(&mut files, stamps, &sink);
                    if changed || first || read_revision != revision {
                        revision = read_revision;
                        let mut objects = merge(&files);
                        objects.revision = revision;
                        sink.publish(objects);
                        first = false;
                    }
                }
                Err(err) => {
                    sink.error();
                    let message = err.to_string();
                    // Once per distinct failure, not every poll.
                    if dir_error.as_ref() != Some(&message) {
                        warn!(dir = %self.dir.display(), error = %message, "cannot read the directory; keeping the last objects");
                        dir_error = Some(message);
                    }
                }
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}

/// The writer's revision; a missing file is no revision, an unreadable one is reported and
/// treated as none.
fn read_revision(path: &Path, sink: &ObjectSink) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    match text.trim().parse() {
        Ok(revision) => Some(revision),
        Err(_) => {
            sink.error();
            warn!(file = %path.display(), content = %text.trim(), "the revision file does not hold a number; ignored");
            None
        }
    }
}

/// The files to read, with their stamps.
fn scan(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, Stamp>> {
    let mut stamps = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let wanted = !name.starts_with('.')
            && [".yaml", ".yml", ".json"]
                .iter()
                .any(|ext| name.ends_with(ext));
        if !wanted {
            continue;
        }
        // A file may vanish between listing and stat: it is simply not there this round.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        stamps.insert(
            path,
            Stamp {
                inode: meta.ino(),
                modified,
                len: meta.len(),
            },
        );
    }
    Ok(stamps)
}

/// Re-reads new and changed files, forgets removed ones; true if any file's objects changed.
fn refresh(
    files: &mut BTreeMap<PathBuf, FileEntry>,
    stamps: BTreeMap<PathBuf, Stamp>,
    sink: &ObjectSink,
) -> bool {
    let before = files.len();
    files.retain(|path, _| stamps.contains_key(path));
    let mut changed = files.len() != before;
    for (path, stamp) in stamps {
        if files.get(&path).is_some_and(|entry| entry.stamp == stamp) {
            continue;
        }
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| ClusterObjects::from_yaml(&text).map_err(|e| e.to_string()));
        let entry = files.entry(path.clone()).or_insert_with(|| FileEntry {
            stamp,
            objects: ClusterObjects::default(),
        });
        entry.stamp = stamp;
        match parsed {
            Ok(objects) => {
                if entry.objects != objects {
                    entry.objects = objects;
                    changed = true;
                }
            }
            Err(error) => {
                sink.error();
                warn!(file = %path.display(), %error, "skipping the file; its previous objects stay in use");
            }
        }
    }
    changed
}

fn merge(files: &BTreeMap<PathBuf, FileEntry>) -> ClusterObjects {
    let mut all = ClusterObjects::default();
    for entry in files.values() {
        all.extend(&entry.objects);
    }
    all
}
