//! Namespaces from a directory of Kubernetes YAML (or JSON) files, for an injector that runs
//! without the API (`--namespace-lookup file:DIR`): outside a cluster, or in the testbed, whose
//! cluster directory holds its Namespaces beside the Services, EndpointSlices and Pods that
//! weft-discovery's file source reads. The format is that source's: every `*.yaml`, `*.yml` and
//! `*.json` file not starting with '.' (writers write a temporary name and rename it in), each
//! possibly holding several documents and `List`s; kinds other than Namespace are ignored.
//!
//! Each lookup re-reads only files whose inode, modification time or length changed. A file
//! that does not parse keeps the Namespaces it held before (and is logged once per version), so a
//! half-written file never drops a namespace's annotations.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::Value;

/// A Namespace's name -> its annotations.
type Annotations = BTreeMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("--namespace-lookup file:{dir}: cannot read the directory: {source}")]
    Unreadable {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "Namespace {namespace} is not in --namespace-lookup file:{dir} (no *.yaml, *.yml or *.json file there holds it)"
    )]
    Missing { namespace: String, dir: PathBuf },
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
    /// The Namespaces of the last version that parsed (none if no version did).
    namespaces: BTreeMap<String, Annotations>,
}

pub struct NamespaceDir {
    dir: PathBuf,
    files: Mutex<BTreeMap<PathBuf, FileEntry>>,
}

impl NamespaceDir {
    /// Fails when `dir` cannot be read now (a start-up error naming the flag).
    pub fn new(dir: PathBuf) -> Result<NamespaceDir, DirError> {
        std::fs::read_dir(&dir).map_err(|source| DirError::Unreadable {
            dir: dir.clone(),
            source,
        })?;
        Ok(NamespaceDir {
            dir,
            files: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The annotations of Namespace `name` as the directory holds it now. Blocking (file I/O).
    pub fn annotations(&self, name: &str) -> Result<Annotations, DirError> {
        let stamps = scan(&self.dir).map_err(|source| DirError::Unreadable {
            dir: self.dir.clone(),
            source,
        })?;
        // A poisoned lock only means another lookup panicked mid-refresh; the cache is still a
        // set of whole file entries.
        let mut files = self
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        refresh(&mut files, stamps);
        // Files in name order; a Namespace in several files: the last one counts.
        files
            .values()
            .rev()
            .find_map(|entry| entry.namespaces.get(name).cloned())
            .ok_or_else(|| DirError::Missing {
                namespace: name.to_owned(),
                dir: self.dir.clone(),
            })
    }
}

/// The files to read, with their stamps.
fn scan(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, Stamp>> {
    let mut stamps = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let wanted = !name.starts_with('.')
            && [".yaml", ".yml", ".json"]
                .iter()
                .any(|ext| name.ends_with(ext));
        if !wanted {
            continue;
        }
        let path = entry.path();
        // A file may vanish between listing and stat: it is simply not there this time.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            let stamp = Stamp {
                inode: meta.ino(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                len: meta.len(),
            };
            stamps.insert(path, stamp);
        }
    }
    Ok(stamps)
}

/// Re-reads new and changed files and forgets removed ones.
fn refresh(files: &mut BTreeMap<PathBuf, FileEntry>, stamps: BTreeMap<PathBuf, Stamp>) {
    files.retain(|path, _| stamps.contains_key(path));
    for (path, stamp) in stamps {
        if files.get(&path).is_some_and(|entry| entry.stamp == stamp) {
            continue;
        }
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| namespaces_in(&text));
        let entry = files.entry(path.clone()).or_insert_with(|| FileEntry {
            stamp,
            namespaces: BTreeMap::new(),
        });
        entry.stamp = stamp;
        match parsed {
            Ok(namespaces) => entry.namespaces = namespaces,
            Err(error) => tracing::warn!(
                file = %path.display(),
                %error,
                "skipping the file; the Namespaces it held before stay in use"
            ),
        }
    }
}

/// The Namespaces of one file's text, read as weft-inject reads manifests. All or nothing: a bad
/// document rejects the file.
fn namespaces_in(text: &str) -> Result<BTreeMap<String, Annotations>, String> {
    let docs = weft_inject::parse_manifests(text).map_err(|e| e.to_string())?;
    let mut namespaces = BTreeMap::new();
    for doc in docs {
        let items = match doc.get("kind").and_then(Value::as_str) {
            Some("List") => match doc.get("items") {
                Some(Value::Array(items)) => items.clone(),
                _ => Vec::new(),
            },
            _ => vec![doc],
        };
        for item in items
            .iter()
            .filter(|item| item.get("kind").and_then(Value::as_str) == Some("Namespace"))
        {
            let name = item
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .ok_or("a Namespace has no metadata.name")?;
            let mut annotations = Annotations::new();
            if let Some(map) = item
                .pointer("/metadata/annotations")
                .and_then(Value::as_object)
            {
                for (key, value) in map {
                    let value = value.as_str().ok_or_else(|| {
                        format!("Namespace {name}: annotation {key} is not a string: {value}")
                    })?;
                    annotations.insert(key.clone(), value.to_owned());
                }
            }
            namespaces.insert(name.to_owned(), annotations);
        }
    }
    Ok(namespaces)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(purpose: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "weft-injector-nsdir-{}-{purpose}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("scratch directory");
            Scratch(dir)
        }

        fn write(&self, name: &str, text: &str) {
            // As writers should: a temporary name renamed into place (a new inode).
            let tmp = self.0.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, self.0.join(name)).expect("rename");
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pairs(items: &[(&str, &str)]) -> Annotations {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn namespaces_are_found_among_other_objects_and_lists() {
        let scratch = Scratch::new("find");
        scratch.write(
            "namespace-shop.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  annotations: {weft.io/inject: enabled, weft.io/proxy-log-format: json}\n",
        );
        scratch.write(
            "objects.yml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: plain}}\n",
        );
        scratch.write(
            "ns.json",
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"json","annotations":{"weft.io/inject":"disabled"}}}"#,
        );
        // Not read: a temporary file and another extension.
        std::fs::write(
            scratch.0.join(".namespace-hidden.yaml"),
            "kind: Namespace\nmetadata: {name: hidden}\n",
        )
        .expect("write");
        std::fs::write(
            scratch.0.join("namespace.txt"),
            "kind: Namespace\nmetadata: {name: text}\n",
        )
        .expect("write");

        let dir = NamespaceDir::new(scratch.0.clone()).expect("readable");
        assert_eq!(
            dir.annotations("shop").expect("shop"),
            pairs(&[
                ("weft.io/inject", "enabled"),
                ("weft.io/proxy-log-format", "json")
            ])
        );
        assert_eq!(dir.annotations("plain").expect("plain"), Annotations::new());
        assert_eq!(
            dir.annotations("json").expect("json"),
            pairs(&[("weft.io/inject", "disabled")])
        );
        for absent in ["hidden", "text", "web"] {
            let err = dir.annotations(absent).expect_err(absent).to_string();
            assert!(
                err.contains(&format!("Namespace {absent} is not in")),
                "{err}"
            );
            assert!(err.contains(&scratch.0.display().to_string()), "{err}");
        }
    }

    #[test]
    fn changes_are_seen_and_a_broken_file_keeps_its_last_namespaces() {
        let scratch = Scratch::new("change");
        scratch.write(
            "namespace-shop.yaml",
            "kind: Namespace\nmetadata: {name: shop, annotations: {weft.io/inject: enabled}}\n",
        );
        let dir = NamespaceDir::new(scratch.0.clone()).expect("readable");
        assert_eq!(
            dir.annotations("shop").expect("shop"),
            pairs(&[("weft.io/inject", "enabled")])
        );

        scratch.write(
            "namespace-shop.yaml",
            "kind: Namespace\nmetadata: {name: shop, annotations: {weft.io/inject: disabled}}\n",
        );
        assert_eq!(
            dir.annotations("shop").expect("shop"),
            pairs(&[("weft.io/inject", "disabled")])
        );

        scratch.write("namespace-shop.yaml", "kind: Namespace\nmetadata: [half");
        assert_eq!(
            dir.annotations("shop").expect("the previous version"),
            pairs(&[("weft.io/inject", "disabled")])
        );

        std::fs::remove_file(scratch.0.join("namespace-shop.yaml")).expect("remove");
        assert!(dir.annotations("shop").is_err(), "removed with its file");
    }

    #[test]
    fn a_missing_directory_is_refused_naming_the_flag() {
        let err = NamespaceDir::new(PathBuf::from("/nonexistent/weft-namespaces"))
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("--namespace-lookup file:/nonexistent/weft-namespaces"),
            "{err}"
        );
    }

    #[test]
    fn a_namespace_without_a_name_or_with_a_non_string_annotation_rejects_the_file() {
        assert!(namespaces_in("kind: Namespace\nmetadata: {}\n").is_err());
        let err = namespaces_in("kind: Namespace\nmetadata: {name: a, annotations: {x: [1]}}\n")
            .expect_err("not a string");
        assert!(err.contains("Namespace a: annotation x"), "{err}");
    }
}
