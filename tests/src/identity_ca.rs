//! The testbed's CA state: `weft-identity ca init` in the instance's state directory before the
//! control plane starts, local tokens minted per pod (what TokenReview would vouch for in a
//! cluster), and the trust anchors served as the ConfigMap `weft-trust-anchors`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::TestbedError;
use crate::process::run_checked;
use crate::volumes::VolumeSource;

/// Audience of the tokens the CA accepts (weft_identity_api::TOKEN_AUDIENCE).
const AUDIENCE: &str = "weft-identity";
const ANCHORS_CONFIG_MAP: &str = "weft-trust-anchors";
/// The Secret (namespace `weft`) holding the CA directory for the weft-identity pod.
pub const CA_SECRET: &str = "weft-identity-ca";
/// Files of the CA directory (weft_identity::ca_directory).
const CA_FILES: [&str; 6] = [
    "ca.pem",
    "ca-key.pem",
    "issuer.pem",
    "issuer-key.pem",
    "token-signing-key.pem",
    "trust-domain",
];
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct IdentityCa {
    bin: PathBuf,
    dir: PathBuf,
}

impl IdentityCa {
    /// Creates a CA for `trust_domain` in `dir` (replacing one left there by an earlier run).
    pub fn init(bin: &Path, dir: &Path, trust_domain: &str) -> Result<Self, TestbedError> {
        let mut cmd = Command::new(bin);
        cmd.args([
            "ca",
            "init",
            "--force",
            "--trust-domain",
            trust_domain,
            "--dir",
        ])
        .arg(dir);
        run_checked(cmd, COMMAND_TIMEOUT)?;
        Ok(Self {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
        })
    }

    /// The CA directory (`weft-identity serve --dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The trust anchors, PEM.
    pub fn anchors_pem(&self) -> Result<String, TestbedError> {
        let path = self.dir.join("ca.pem");
        std::fs::read_to_string(&path)
            .map_err(|e| TestbedError::io("reading the trust anchors", &path, e))
    }

    /// A local token proving `namespace`/`service_account`.
    pub fn token(&self, namespace: &str, service_account: &str) -> Result<String, TestbedError> {
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "token",
            "--namespace",
            namespace,
            "--service-account",
            service_account,
            "--dir",
        ])
        .arg(&self.dir);
        let output = run_checked(cmd, COMMAND_TIMEOUT)?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

impl VolumeSource for IdentityCa {
    fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        audience: Option<&str>,
    ) -> Result<String, String> {
        if audience != Some(AUDIENCE) {
            return Err(format!(
                "the testbed mints tokens only for audience {AUDIENCE}, not {audience:?}"
            ));
        }
        self.token(namespace, service_account)
            .map_err(|e| e.to_string())
    }

    fn config_map(&self, _namespace: &str, name: &str) -> Result<BTreeMap<String, String>, String> {
        if name != ANCHORS_CONFIG_MAP {
            return Err(format!(
                "the testbed provides only ConfigMap {ANCHORS_CONFIG_MAP}, not {name}"
            ));
        }
        let pem = self.anchors_pem().map_err(|e| e.to_string())?;
        Ok([("ca.pem".to_owned(), pem)].into())
    }

    fn secret(&self, namespace: &str, name: &str) -> Result<BTreeMap<String, String>, String> {
        if (namespace, name) != ("weft", CA_SECRET) {
            return Err(format!(
                "the testbed provides only Secret weft/{CA_SECRET}, not {namespace}/{name}"
            ));
        }
        CA_FILES
            .iter()
            .map(|file| {
                let path = self.dir.join(file);
                std::fs::read_to_string(&path)
                    .map(|text| ((*file).to_owned(), text))
                    .map_err(|e| format!("reading {}: {e}", path.display()))
            })
            .collect()
    }
}
