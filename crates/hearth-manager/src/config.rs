//! The manager's configuration, layered: built-in defaults → `hearth.toml` → `HEARTH_*`
//! environment variables → command-line flags (each layer overrides the one before).
//! Secrets are [`SecretString`]s, so a config printed to a log never shows them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
pub struct ManagerConfig {
    /// Where the REST API (and the agents' registry RPC) listens.
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…`; defaults to `<data_dir>/hearth.db`.
    pub database_url: Option<SecretString>,
    /// The first admin's password; a random one is written to `<data_dir>/admin-password`
    /// when unset.
    pub admin_password: Option<SecretString>,
    pub session_ttl_s: u64,
    pub heartbeat_interval_ms: u32,
    /// A host whose last heartbeat is older than this is `down`.
    pub host_down_after_ms: u64,
    /// A running VM on a `down` host is `unknown`, and `lost` once the host has been down
    /// this long.
    pub vm_lost_after_ms: u64,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How many vCPUs may be promised per host CPU.
    pub cpu_overcommit: f64,
    /// How much memory may be promised per MiB a host has.
    pub memory_overcommit: f64,
    /// The key that encrypts secrets (32 bytes, base64). Managers sharing a database must
    /// share it; when unset, one is generated in `<data_dir>/secrets.key` (0600).
    pub secrets_key: Option<SecretString>,
    /// Function invocations per second one caller (user or API key) may make (0: no limit).
    pub invoke_rate_limit_per_s: u32,
    /// The largest image upload taken (`POST /v1/images`), in bytes.
    pub max_image_bytes: u64,
    /// Serve HTTPS, with a certificate from the cluster CA. Unset: `hearth manager` does,
    /// `hearth up` (on loopback, with its agent in-process) does not.
    #[serde(default)]
    pub tls: Option<bool>,
    /// More names (DNS names or IP addresses) for the manager's certificate, besides
    /// `localhost`, the host name and the host's addresses.
    #[serde(default)]
    pub tls_names: Vec<String>,
}

/// The defaults, as the first configuration layer.
#[derive(Serialize)]
struct Defaults {
    listen: SocketAddr,
    data_dir: PathBuf,
    session_ttl_s: u64,
    heartbeat_interval_ms: u32,
    host_down_after_ms: u64,
    vm_lost_after_ms: u64,
    max_body_bytes: usize,
    cpu_overcommit: f64,
    memory_overcommit: f64,
    invoke_rate_limit_per_s: u32,
    max_image_bytes: u64,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:18080";

pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("hearth")
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            data_dir: default_data_dir(),
            session_ttl_s: 12 * 3600,
            heartbeat_interval_ms: 5_000,
            host_down_after_ms: 15_000,
            vm_lost_after_ms: 300_000,
            max_body_bytes: 1024 * 1024,
            cpu_overcommit: 4.0,
            memory_overcommit: 1.0,
            invoke_rate_limit_per_s: 200,
            max_image_bytes: 8 << 30,
        }
    }
}

/// Values given on the command line: the last and strongest layer. Unset ones are skipped.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls_names: Vec<String>,
}

impl ManagerConfig {
    /// Loads the layers. The file is `config_file` when given, else `./hearth.toml` when it
    /// exists.
    pub fn load(config_file: Option<&Path>, flags: &Overrides) -> anyhow::Result<ManagerConfig> {
        let mut fig = Figment::from(Serialized::defaults(Defaults::default()));
        match config_file {
            Some(path) => {
                anyhow::ensure!(
                    path.exists(),
                    "config file {} does not exist",
                    path.display()
                );
                fig = fig.merge(Toml::file(path));
            }
            None => fig = fig.merge(Toml::file("hearth.toml")),
        }
        let fig = fig
            .merge(Env::prefixed("HEARTH_").only(&[
                "listen",
                "data_dir",
                "database_url",
                "admin_password",
                "session_ttl_s",
                "heartbeat_interval_ms",
                "host_down_after_ms",
                "vm_lost_after_ms",
                "max_body_bytes",
                "max_image_bytes",
                "secrets_key",
                "cpu_overcommit",
                "memory_overcommit",
                "tls",
            ]))
            .merge(Serialized::defaults(flags));
        let config: ManagerConfig = fig
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        anyhow::ensure!(
            config.heartbeat_interval_ms >= 100,
            "heartbeat_interval_ms must be at least 100"
        );
        anyhow::ensure!(
            config.host_down_after_ms > u64::from(config.heartbeat_interval_ms),
            "host_down_after_ms must exceed heartbeat_interval_ms"
        );
        Ok(config)
    }

    /// A configuration for tests and `hearth up`-style embedding: defaults, nothing read.
    pub fn for_data_dir(data_dir: &Path) -> ManagerConfig {
        let d = Defaults::default();
        ManagerConfig {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            data_dir: data_dir.to_path_buf(),
            database_url: None,
            admin_password: None,
            session_ttl_s: d.session_ttl_s,
            heartbeat_interval_ms: d.heartbeat_interval_ms,
            host_down_after_ms: d.host_down_after_ms,
            vm_lost_after_ms: d.vm_lost_after_ms,
            max_body_bytes: d.max_body_bytes,
            cpu_overcommit: d.cpu_overcommit,
            memory_overcommit: d.memory_overcommit,
            secrets_key: None,
            invoke_rate_limit_per_s: d.invoke_rate_limit_per_s,
            max_image_bytes: d.max_image_bytes,
            tls: Some(false),
            tls_names: Vec::new(),
        }
    }

    /// Whether the manager serves HTTPS (`default` when the configuration does not say).
    pub fn serves_tls(&self) -> bool {
        self.tls == Some(true)
    }

    pub fn database_url(&self) -> String {
        use secrecy::ExposeSecret;
        match &self.database_url {
            Some(url) => url.expose_secret().to_string(),
            None => format!("sqlite://{}", self.data_dir.join("hearth.db").display()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "hearth.toml",
                "listen = \"127.0.0.1:1000\"\nsession_ttl_s = 60\nmax_body_bytes = 10",
            )?;
            jail.set_env("HEARTH_SESSION_TTL_S", "120");
            jail.set_env("HEARTH_ADMIN_PASSWORD", "from-env");
            let flags = Overrides {
                listen: Some("127.0.0.1:2000".parse().unwrap()),
                ..Default::default()
            };
            let c = ManagerConfig::load(None, &flags).unwrap();
            assert_eq!(c.listen.port(), 2000, "flags beat the file");
            assert_eq!(c.session_ttl_s, 120, "env beats the file");
            assert_eq!(c.max_body_bytes, 10, "the file beats defaults");
            assert_eq!(c.heartbeat_interval_ms, 5000, "defaults fill the rest");
            assert!(
                !format!("{c:?}").contains("from-env"),
                "secrets never print"
            );
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_reported() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HEARTH_LISTEN", "not an address");
            let err = ManagerConfig::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().to_lowercase().contains("listen"), "{err}");
            Ok(())
        });
    }
}
