//! `service.*`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `service.advertise` parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdvertiseParams {
    pub name: String,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

/// `service.withdraw` and `service.find` parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NameParams {
    pub name: String,
}

/// `service.find` result entries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Provider {
    pub peer_id: String,
    pub addrs: Vec<String>,
    /// Round trip of the metadata request, in milliseconds.
    pub rtt_ms: f64,
    pub meta: BTreeMap<String, String>,
}

/// `service.ls` result: each service advertised here, with its metadata.
pub type Advertised = BTreeMap<String, BTreeMap<String, String>>;
