//! The node's configuration file (`config.toml` in the data dir, or any file given with
//! `--config`): where it listens, how it finds peers, and the Raft tunables.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use causeway_raft::RaftSettings;
use serde::{Deserialize, Serialize};

/// Port used when `--bind` is not given.
pub const DEFAULT_PORT: u16 = 7465;

/// How a node finds the addresses of peers it dials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discovery {
    /// Explicit addresses only: tests and air-gapped sites. Relays are disabled.
    Static,
    /// iroh's public address lookup and relays (production default).
    #[default]
    N0,
    /// Mainline DHT. Accepted in config so sites can state intent; iroh 1.x ships no DHT
    /// lookup, so starting with it fails with a clear message.
    Dht,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Data directory. Optional in a file found inside the data dir itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The node's UDP bind address.
    pub bind: SocketAddr,
    #[serde(default)]
    pub discovery: Discovery,
    /// Control socket path; relative paths are inside the data dir.
    #[serde(default = "default_socket")]
    pub control_socket: PathBuf,
    #[serde(default)]
    pub raft: RaftSettings,
    #[serde(default)]
    pub federation: crate::federation::health::HealthConfig,
    #[serde(default)]
    pub sync: crate::transfer::SyncConfig,
}

fn default_socket() -> PathBuf {
    PathBuf::from("control.sock")
}

impl Config {
    pub fn new(bind: SocketAddr, discovery: Discovery) -> Self {
        Self {
            data_dir: None,
            bind,
            discovery,
            control_socket: default_socket(),
            raft: RaftSettings::default(),
            federation: Default::default(),
            sync: Default::default(),
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Keys this version ignores, with what to do instead; the daemon logs them at start.
    pub fn warnings(&self) -> Vec<String> {
        self.federation.warnings()
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), String> {
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_min_ms <= r.heartbeat_ms || r.election_max_ms <= r.election_min_ms {
            return Err("raft timing must satisfy 0 < heartbeat_ms < election_min_ms < election_max_ms".into());
        }
        if self.federation.heartbeat_ms == 0 || self.federation.failure_threshold == 0 {
            return Err("federation.heartbeat_ms and federation.failure_threshold must be at least 1".into());
        }
        if r.snapshot_logs == 0 {
            return Err("raft.snapshot_logs must be at least 1".into());
        }
        Ok(())
    }

    /// The control socket's absolute path for a given data dir.
    pub fn socket_path(&self, data_dir: &Path) -> PathBuf {
        if self.control_socket.is_absolute() {
            self.control_socket.clone()
        } else {
            data_dir.join(&self.control_socket)
        }
    }
}

/// Parses `IP:PORT` for `--bind`, naming the problem when it is wrong.
pub fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("invalid bind address {s:?}: expected IP:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_defaults() {
        let c = Config::new("127.0.0.1:9000".parse().unwrap(), Discovery::Static);
        let back = Config::parse(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        let minimal = Config::parse("bind = \"127.0.0.1:1\"").unwrap();
        assert_eq!(minimal.discovery, Discovery::N0);
        assert_eq!(minimal.raft, RaftSettings::default());
    }

    #[test]
    fn bad_config_is_named() {
        assert!(Config::parse("bind = \"nope\"").is_err());
        assert!(Config::parse("bind = \"127.0.0.1:1\"\nbogus = 1").is_err());
        assert!(Config::parse("bind = \"127.0.0.1:1\"\n[raft]\nheartbeat_ms = 5000").is_err());
        assert!(parse_bind("1.2.3.4").unwrap_err().contains("IP:PORT"));
    }

    #[test]
    fn the_removed_accept_pushes_key_loads_with_a_warning() {
        let c = Config::parse("bind = \"127.0.0.1:1\"\n[federation]\naccept_pushes = true").unwrap();
        let warnings = c.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("link set PEER --accept-pushes on"), "{warnings:?}");
        assert!(!c.to_toml().contains("accept_pushes"), "never written back");
        assert!(Config::parse("bind = \"127.0.0.1:1\"").unwrap().warnings().is_empty());
    }
}

#[cfg(test)]
mod example {
    /// The shipped example config must stay loadable.
    #[test]
    fn packaged_example_parses() {
        let text = include_str!("../../packaging/config.example.toml");
        let c = super::Config::parse(text).expect("example config");
        assert_eq!(c.data_dir.as_deref(), Some(std::path::Path::new("/var/lib/causeway")));
    }
}
