//! The agent's identity, kept in `<data dir>/identity.json` (mode 0600): the host id and
//! host secret it proves itself with, and the agent token the manager must present to us.
//! All three are chosen here and saved *before* the first registration, so an agent killed
//! at any point of joining comes back as the same host, never as a second one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
pub struct Identity {
    pub host_id: String,
    pub host_secret: String,
    /// The manager must present it on every call to this agent.
    pub agent_token: String,
    /// Whether a manager has accepted this identity (after which no join token is needed).
    #[serde(default)]
    pub joined: bool,
    #[serde(skip)]
    path: PathBuf,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("host_id", &self.host_id)
            .finish_non_exhaustive()
    }
}

pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

impl Identity {
    pub fn load_or_new(data_dir: &Path) -> anyhow::Result<Identity> {
        let path = data_dir.join("identity.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                let mut id: Identity = serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "{} is not valid; move it away to join as a new host",
                        path.display()
                    )
                })?;
                id.path = path;
                Ok(id)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Identity {
                    host_id: hearth_types::new_id(),
                    host_secret: format!("hh_{}", random_token(32)),
                    agent_token: random_token(32),
                    joined: false,
                    path,
                };
                id.save()?;
                Ok(id)
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the identity atomically with mode 0600.
    pub fn save(&self) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(self)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn identity_survives_a_reload_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let mut id = Identity::load_or_new(dir.path()).unwrap();
        assert!(!id.joined);
        // Saved before any registration: a crash while joining keeps the same host.
        let again = Identity::load_or_new(dir.path()).unwrap();
        assert_eq!(again.host_id, id.host_id);
        assert_eq!(again.host_secret, id.host_secret);
        id.joined = true;
        id.save().unwrap();
        let again = Identity::load_or_new(dir.path()).unwrap();
        assert!(again.joined);
        assert_eq!(again.agent_token, id.agent_token);
        let mode = std::fs::metadata(dir.path().join("identity.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
