//! A kubelet stand-in for the volumes Weft's injector adds: a projected service-account token and
//! a ConfigMap. Each volume becomes a directory of files in the pod's state directory.
//!
//! Approximation: containers here share the machine's filesystem, so nothing is mounted. Instead,
//! an environment value that names a path under a container's `volumeMounts[].mountPath` is
//! rewritten to the same path under the volume's directory (for the proxy:
//! `WEFT_IDENTITY_TOKEN_FILE` and `WEFT_TRUST_ANCHORS`). Programs that hard-code mount paths
//! would not find their files. Files are written once at pod start (no token refresh) and are
//! world-readable (Secrets: 0600), since the state directory is private to the test run.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Volume {
    pub name: String,
    pub projected: Option<ProjectedVolume>,
    pub config_map: Option<ConfigMapVolume>,
    pub secret: Option<SecretVolume>,
    /// Any other kind (emptyDir, hostPath, ...): accepted, given an empty directory.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProjectedVolume {
    pub sources: Vec<ProjectedSource>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProjectedSource {
    pub service_account_token: Option<TokenProjection>,
    pub config_map: Option<ConfigMapVolume>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TokenProjection {
    pub audience: Option<String>,
    pub expiration_seconds: Option<u64>,
    pub path: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigMapVolume {
    pub name: String,
    pub items: Vec<KeyToPath>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretVolume {
    pub secret_name: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    pub read_only: bool,
}

/// What the "API server" knows: tokens for service accounts and ConfigMaps.
pub trait VolumeSource {
    fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        audience: Option<&str>,
    ) -> Result<String, String>;
    fn config_map(&self, namespace: &str, name: &str) -> Result<BTreeMap<String, String>, String>;
    fn secret(&self, namespace: &str, name: &str) -> Result<BTreeMap<String, String>, String>;
}

/// A source that knows nothing: pods with token or ConfigMap volumes are refused.
pub struct NoVolumeSource;

impl VolumeSource for NoVolumeSource {
    fn service_account_token(&self, _: &str, _: &str, _: Option<&str>) -> Result<String, String> {
        Err("this testbed runs no identity service, so it has no service-account tokens".into())
    }

    fn config_map(&self, _: &str, name: &str) -> Result<BTreeMap<String, String>, String> {
        Err(format!("this testbed has no ConfigMap {name}"))
    }

    fn secret(&self, _: &str, name: &str) -> Result<BTreeMap<String, String>, String> {
        Err(format!("this testbed has no Secret {name}"))
    }
}

/// The directories holding a pod's volumes, by volume name.
#[derive(Debug, Clone, Default)]
pub struct PodVolumes {
    dirs: BTreeMap<String, PathBuf>,
}

impl PodVolumes {
    /// Writes each volume's files under `dir/<volume name>/`.
    pub fn materialise(
        dir: &Path,
        volumes: &[Volume],
        namespace: &str,
        service_account: &str,
        source: &dyn VolumeSource,
    ) -> Result<Self, String> {
        let mut dirs = BTreeMap::new();
        for volume in volumes {
            let volume_dir = dir.join(&volume.name);
            let mut files: Vec<(String, String)> = Vec::new();
            let mut mode = 0o644;
            if let Some(config_map) = &volume.config_map {
                files.extend(config_map_files(config_map, namespace, source)?);
            }
            if let Some(secret) = &volume.secret {
                let data = source
                    .secret(namespace, &secret.secret_name)
                    .map_err(|e| format!("volume {}: {e}", volume.name))?;
                files.extend(data);
                mode = 0o600;
            }
            for projected in volume.projected.iter().flat_map(|p| &p.sources) {
                if let Some(token) = &projected.service_account_token {
                    let value = source
                        .service_account_token(
                            namespace,
                            service_account,
                            token.audience.as_deref(),
                        )
                        .map_err(|e| format!("volume {}: {e}", volume.name))?;
                    files.push((token.path.clone(), value));
                }
                if let Some(config_map) = &projected.config_map {
                    files.extend(config_map_files(config_map, namespace, source)?);
                }
            }
            write_dir(&volume_dir, &files, mode)
                .map_err(|e| format!("volume {}: {e}", volume.name))?;
            dirs.insert(volume.name.clone(), volume_dir);
        }
        Ok(Self { dirs })
    }

    /// The container's environment with mount paths replaced by the volumes' directories.
    pub fn rewrite_env(
        &self,
        mounts: &[VolumeMount],
        env: Vec<(String, String)>,
    ) -> Result<Vec<(String, String)>, String> {
        let mut table = Vec::with_capacity(mounts.len());
        for mount in mounts {
            let dir = self
                .dirs
                .get(&mount.name)
                .ok_or_else(|| format!("volumeMount {} names no volume of the pod", mount.name))?;
            table.push((mount.mount_path.trim_end_matches('/').to_owned(), dir));
        }
        // Longest mount path first, so nested mounts win.
        table.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        Ok(env
            .into_iter()
            .map(|(name, value)| {
                let rewritten = table.iter().find_map(|(mount_path, dir)| {
                    let rest = value.strip_prefix(mount_path.as_str())?;
                    (rest.is_empty() || rest.starts_with('/'))
                        .then(|| format!("{}{rest}", dir.display()))
                });
                (name, rewritten.unwrap_or(value))
            })
            .collect())
    }
}

fn config_map_files(
    config_map: &ConfigMapVolume,
    namespace: &str,
    source: &dyn VolumeSource,
) -> Result<Vec<(String, String)>, String> {
    let data = source.config_map(namespace, &config_map.name)?;
    if config_map.items.is_empty() {
        return Ok(data.into_iter().collect());
    }
    config_map
        .items
        .iter()
        .map(|item| {
            data.get(&item.key)
                .map(|value| (item.path.clone(), value.clone()))
                .ok_or_else(|| format!("ConfigMap {} has no key {}", config_map.name, item.key))
        })
        .collect()
}

fn write_dir(dir: &Path, files: &[(String, String)], mode: u32) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    for (relative, contents) in files {
        if relative
            .split('/')
            .any(|part| part == ".." || part.is_empty())
        {
            return Err(format!(
                "file path {relative:?} must be relative, without '..'"
            ));
        }
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        fs::write(&path, contents).map_err(|e| format!("writing {}: {e}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;

    impl VolumeSource for Fake {
        fn service_account_token(
            &self,
            ns: &str,
            sa: &str,
            aud: Option<&str>,
        ) -> Result<String, String> {
            Ok(format!("token:{ns}:{sa}:{}", aud.unwrap_or("-")))
        }

        fn config_map(&self, _: &str, name: &str) -> Result<BTreeMap<String, String>, String> {
            match name {
                "weft-trust-anchors" => Ok([("ca.pem".to_owned(), "PEM".to_owned())].into()),
                other => Err(format!("no ConfigMap {other}")),
            }
        }

        fn secret(&self, _: &str, name: &str) -> Result<BTreeMap<String, String>, String> {
            Ok([("key.pem".to_owned(), format!("secret {name}"))].into())
        }
    }

    fn injected_volumes() -> Vec<Volume> {
        serde_json::from_value(serde_json::json!([
            {"name": "weft-identity-token", "projected": {"sources": [{"serviceAccountToken": {
                "audience": "weft-identity", "expirationSeconds": 86400, "path": "token"}}]}},
            {"name": "weft-trust-anchors", "configMap": {"name": "weft-trust-anchors",
                "items": [{"key": "ca.pem", "path": "ca.pem"}]}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "keys", "secret": {"secretName": "ca"}},
        ]))
        .unwrap()
    }

    #[test]
    fn writes_tokens_and_config_maps_and_rewrites_env_paths() {
        let dir = std::env::temp_dir().join(format!("weft-testbed-volumes-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let volumes =
            PodVolumes::materialise(&dir, &injected_volumes(), "shop", "web", &Fake).unwrap();
        let token_file = dir.join("weft-identity-token/token");
        assert_eq!(
            fs::read_to_string(&token_file).unwrap(),
            "token:shop:web:weft-identity"
        );
        assert_eq!(
            fs::read_to_string(dir.join("weft-trust-anchors/ca.pem")).unwrap(),
            "PEM"
        );
        assert!(dir.join("scratch").is_dir());
        let key = dir.join("keys/key.pem");
        assert_eq!(fs::read_to_string(&key).unwrap(), "secret ca");
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let mounts: Vec<VolumeMount> = serde_json::from_value(serde_json::json!([
            {"name": "weft-identity-token", "mountPath": "/var/run/secrets/weft.io/identity", "readOnly": true},
            {"name": "weft-trust-anchors", "mountPath": "/var/run/secrets/weft.io/trust-anchors/"},
        ]))
        .unwrap();
        let env = vec![
            (
                "WEFT_IDENTITY_TOKEN_FILE".to_owned(),
                "/var/run/secrets/weft.io/identity/token".to_owned(),
            ),
            (
                "WEFT_TRUST_ANCHORS".to_owned(),
                "/var/run/secrets/weft.io/trust-anchors/ca.pem".to_owned(),
            ),
            (
                "OTHER".to_owned(),
                "/var/run/secrets/weft.io/identity-other".to_owned(),
            ),
        ];
        let env = volumes.rewrite_env(&mounts, env).unwrap();
        assert_eq!(env[0].1, token_file.display().to_string());
        assert_eq!(
            env[1].1,
            dir.join("weft-trust-anchors/ca.pem").display().to_string()
        );
        assert_eq!(
            env[2].1, "/var/run/secrets/weft.io/identity-other",
            "a prefix that is not a path component stays"
        );

        let missing: Vec<VolumeMount> =
            serde_json::from_value(serde_json::json!([{"name": "nope", "mountPath": "/x"}]))
                .unwrap();
        assert!(
            volumes
                .rewrite_env(&missing, vec![])
                .unwrap_err()
                .contains("nope")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_sources_are_errors_naming_the_volume() {
        let dir =
            std::env::temp_dir().join(format!("weft-testbed-novolumes-{}", std::process::id()));
        let err =
            PodVolumes::materialise(&dir, &injected_volumes(), "shop", "web", &NoVolumeSource)
                .unwrap_err();
        assert!(
            err.contains("weft-identity-token") && err.contains("no identity service"),
            "{err}"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
