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

/// Most entries `dht_bootstrap` may list.
pub const MAX_DHT_BOOTSTRAP: usize = 64;

/// How a node finds the addresses of peers it dials, and where it publishes its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discovery {
    /// Explicit addresses only: tests and air-gapped sites. Relays are disabled.
    Static,
    /// iroh's public address lookup and relays (production default).
    #[default]
    N0,
    /// The BitTorrent Mainline DHT only: the node publishes its direct addresses there,
    /// signed by its endpoint key, and looks peers up there. Relays are disabled.
    Dht,
    /// Both `n0` and `dht`: relays, and lookups in both places.
    #[serde(rename = "n0+dht", alias = "dht+n0")]
    N0Dht,
}

impl Discovery {
    /// Whether this mode uses iroh's public lookup and relays.
    pub fn uses_n0(self) -> bool {
        matches!(self, Self::N0 | Self::N0Dht)
    }

    /// Whether this mode publishes to and looks up in the Mainline DHT.
    pub fn uses_dht(self) -> bool {
        matches!(self, Self::Dht | Self::N0Dht)
    }

    /// The mode as the config file and `--discovery` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::N0 => "n0",
            Self::Dht => "dht",
            Self::N0Dht => "n0+dht",
        }
    }

    /// The same mode without the DHT: for the short-lived endpoints of `init` and `join`,
    /// which dial only addresses they were given and end before a DHT would bootstrap.
    pub fn without_dht(self) -> Self {
        match self {
            Self::Dht => Self::Static,
            Self::N0Dht => Self::N0,
            other => other,
        }
    }
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
    /// Mainline DHT bootstrap nodes (`host:port`, IPv4), used when `discovery` includes
    /// `dht`. Absent: the DHT client's default public bootstrap nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dht_bootstrap: Option<Vec<String>>,
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
            dht_bootstrap: None,
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
        let mut warnings = self.federation.warnings();
        if self.dht_bootstrap.is_some() && !self.discovery.uses_dht() {
            warnings.push(format!(
                "dht_bootstrap is ignored: discovery is \"{}\"; set discovery = \"dht\" or \"n0+dht\" to use the DHT",
                self.discovery.as_str()
            ));
        }
        warnings
    }

    /// What the endpoint needs to know about discovery.
    pub fn discovery_options(&self) -> crate::endpoint::DiscoveryOptions {
        crate::endpoint::DiscoveryOptions {
            mode: self.discovery,
            dht_bootstrap: self.dht_bootstrap.clone(),
        }
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
        if let Some(nodes) = &self.dht_bootstrap {
            validate_dht_bootstrap(nodes)?;
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

/// A bootstrap list must be usable as written: an empty list would leave the DHT without a
/// way in (leave the key out for the default nodes), and the DHT client speaks IPv4 only.
fn validate_dht_bootstrap(nodes: &[String]) -> Result<(), String> {
    if nodes.is_empty() {
        return Err("dht_bootstrap is empty: list at least one host:port, or leave it out for the default public bootstrap nodes".into());
    }
    if nodes.len() > MAX_DHT_BOOTSTRAP {
        return Err(format!(
            "dht_bootstrap lists {} nodes; at most {MAX_DHT_BOOTSTRAP}",
            nodes.len()
        ));
    }
    for node in nodes {
        if let Ok(addr) = node.parse::<SocketAddr>() {
            if addr.is_ipv6() {
                return Err(format!(
                    "dht_bootstrap entry {node:?}: the Mainline DHT client speaks IPv4 only"
                ));
            }
            continue;
        }
        let valid = node
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && !host.contains(':') && port.parse::<u16>().is_ok());
        if !valid {
            return Err(format!(
                "dht_bootstrap entry {node:?}: expected host:port, e.g. 127.0.0.1:6881"
            ));
        }
    }
    Ok(())
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
    fn discovery_modes_and_old_configs_load() {
        for (text, mode) in [
            ("static", Discovery::Static),
            ("n0", Discovery::N0),
            ("dht", Discovery::Dht),
            ("n0+dht", Discovery::N0Dht),
            ("dht+n0", Discovery::N0Dht),
        ] {
            let c = Config::parse(&format!("bind = \"127.0.0.1:1\"\ndiscovery = \"{text}\"")).unwrap();
            assert_eq!(c.discovery, mode, "{text}");
            assert_eq!(c.dht_bootstrap, None);
            assert_eq!(Config::parse(&c.to_toml()).unwrap(), c, "{text} round-trips");
        }
        assert_eq!(Discovery::N0Dht.without_dht(), Discovery::N0);
        assert_eq!(Discovery::Dht.without_dht(), Discovery::Static);
        assert!(Discovery::N0Dht.uses_n0() && Discovery::N0Dht.uses_dht());
        assert!(!Discovery::Static.uses_dht() && !Discovery::Dht.uses_n0());
    }

    #[test]
    fn dht_bootstrap_is_checked_and_round_trips() {
        let base = "bind = \"127.0.0.1:1\"\ndiscovery = \"dht\"\n";
        let c = Config::parse(&format!(
            "{base}dht_bootstrap = [\"127.0.0.1:6881\", \"router.example:6881\"]"
        ))
        .unwrap();
        assert_eq!(c.dht_bootstrap.as_deref().map(<[String]>::len), Some(2));
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
        assert!(c.warnings().is_empty());
        for bad in [
            "[]",
            "[\"nope\"]",
            "[\"host:99999\"]",
            "[\":6881\"]",
            "[\"[::1]:6881\"]",
        ] {
            let e = Config::parse(&format!("{base}dht_bootstrap = {bad}")).unwrap_err();
            assert!(e.contains("dht_bootstrap"), "{bad}: {e}");
        }
        let too_many: Vec<String> = (0..=MAX_DHT_BOOTSTRAP)
            .map(|i| format!("\"10.0.0.1:{}\"", i + 1))
            .collect();
        assert!(Config::parse(&format!("{base}dht_bootstrap = [{}]", too_many.join(","))).is_err());
        let ignored =
            Config::parse("bind = \"127.0.0.1:1\"\ndiscovery = \"static\"\ndht_bootstrap = [\"127.0.0.1:6881\"]")
                .unwrap();
        assert!(
            ignored.warnings()[0].contains("dht_bootstrap is ignored"),
            "{:?}",
            ignored.warnings()
        );
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
