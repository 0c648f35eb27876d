//! The table of control methods: the one list the server, the daemon's routing, the
//! metrics and (checked by a test) docs/control-protocol.md agree on.

use super::api::method;

/// Which part of the daemon answers a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// The node and its network: `node/src/daemon.rs`.
    Net,
    /// `node/src/docs/control.rs`.
    Doc,
    /// `node/src/blobs/control.rs`.
    Blob,
    /// `node/src/services.rs`.
    Service,
    /// `node/src/topics.rs`.
    Topic,
}

/// One control method. The server answers exactly the methods of [`METHODS`]; metrics
/// are labelled by them; docs/control-protocol.md lists the same (a test checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Method {
    pub name: &'static str,
    pub family: Family,
    /// Answered with events and an `end`, not one result.
    pub streams: bool,
}

/// Every control method.
pub const METHODS: &[Method] = &[
    Method {
        name: method::ID,
        family: Family::Net,
        streams: false,
    },
    Method {
        name: method::STATUS,
        family: Family::Net,
        streams: false,
    },
    Method {
        name: method::PEERS,
        family: Family::Net,
        streams: false,
    },
    Method {
        name: method::DIAL,
        family: Family::Net,
        streams: false,
    },
    Method {
        name: method::NET_BLOCK,
        family: Family::Net,
        streams: false,
    },
    Method {
        name: method::NET_UNBLOCK,
        family: Family::Net,
        streams: false,
    },
    Method {
        name: method::NET_ALLOW_ONLY,
        family: Family::Net,
        streams: false,
    },
    Method {
        name: method::NET_ALLOW_ALL,
        family: Family::Net,
        streams: false,
    },
    Method {
        name: method::DOC_CREATE,
        family: Family::Doc,
        streams: false,
    },
    Method {
        name: method::DOC_JOIN,
        family: Family::Doc,
        streams: false,
    },
    Method {
        name: method::DOC_LS,
        family: Family::Doc,
        streams: false,
    },
    Method {
        name: method::DOC_INFO,
        family: Family::Doc,
        streams: false,
    },
    Method {
        name: method::DOC_GET,
        family: Family::Doc,
        streams: false,
    },
    Method {
        name: method::DOC_SET,
        family: Family::Doc,
        streams: false,
    },
    Method {
        name: method::DOC_DEL,
        family: Family::Doc,
        streams: false,
    },
    Method {
        name: method::DOC_INCR,
        family: Family::Doc,
        streams: false,
    },
    Method {
        name: method::DOC_ADD,
        family: Family::Doc,
        streams: false,
    },
    Method {
        name: method::DOC_RM,
        family: Family::Doc,
        streams: false,
    },
    Method {
        name: method::DOC_WATCH,
        family: Family::Doc,
        streams: true,
    },
    Method {
        name: method::DOC_WRITERS,
        family: Family::Doc,
        streams: false,
    },
    Method {
        name: method::BLOB_ADD,
        family: Family::Blob,
        streams: false,
    },
    Method {
        name: method::BLOB_GET,
        family: Family::Blob,
        streams: true,
    },
    Method {
        name: method::BLOB_LS,
        family: Family::Blob,
        streams: false,
    },
    Method {
        name: method::BLOB_RM,
        family: Family::Blob,
        streams: false,
    },
    Method {
        name: method::BLOB_PIN,
        family: Family::Blob,
        streams: false,
    },
    Method {
        name: method::BLOB_UNPIN,
        family: Family::Blob,
        streams: false,
    },
    Method {
        name: method::BLOB_PROVIDERS,
        family: Family::Blob,
        streams: false,
    },
    Method {
        name: method::SERVICE_ADVERTISE,
        family: Family::Service,
        streams: false,
    },
    Method {
        name: method::SERVICE_WITHDRAW,
        family: Family::Service,
        streams: false,
    },
    Method {
        name: method::SERVICE_FIND,
        family: Family::Service,
        streams: false,
    },
    Method {
        name: method::SERVICE_LS,
        family: Family::Service,
        streams: false,
    },
    Method {
        name: method::TOPIC_PUBLISH,
        family: Family::Topic,
        streams: false,
    },
    Method {
        name: method::TOPIC_SUBSCRIBE,
        family: Family::Topic,
        streams: true,
    },
    Method {
        name: method::TOPIC_PEERS,
        family: Family::Topic,
        streams: false,
    },
];

impl Method {
    /// The method called `name`, if there is one.
    pub fn named(name: &str) -> Option<&'static Method> {
        METHODS.iter().find(|m| m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The methods docs/control-protocol.md lists in its method tables, with whether
    /// their row says they stream.
    fn documented() -> Vec<(String, bool)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/control-protocol.md");
        let text = std::fs::read_to_string(path).expect("docs/control-protocol.md");
        let methods = text.split("## Methods").nth(1).expect("a Methods section");
        let methods = methods.split("\n## ").next().unwrap_or_default();
        let mut out = Vec::new();
        for line in methods.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split(" | ").collect();
            // The result column of a streaming method begins with the word.
            let streams = cells.get(2).is_some_and(|c| c.starts_with("streaming"));
            for name in cells[0].trim_start_matches("| ").split(", ") {
                out.push((name.trim_matches('`').to_owned(), streams));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn the_protocol_document_lists_exactly_the_methods_of_the_table() {
        let mut table: Vec<(String, bool)> = METHODS
            .iter()
            .map(|m| (m.name.to_owned(), m.streams))
            .collect();
        table.sort();
        assert_eq!(documented(), table);
        for m in METHODS {
            assert_eq!(Method::named(m.name), Some(m));
        }
    }
}
