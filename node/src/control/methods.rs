//! The table of control methods: each method once, with its name, the part of the daemon
//! that answers it, its parameter and result types, whether it streams, and the error
//! codes it may answer besides the [`COMMON_ERRORS`]. The server parses requests with it
//! ([`Command::parse`]), the daemon routes by its [`Family`], the client's typed calls
//! ([`super::Client::call`]) take its types, metrics are labelled by its names, and a test
//! keeps docs/control-protocol.md in step with it.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::api::*;

/// Which part of the daemon answers a method: `node/src/control/handle/<family>.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Net,
    Doc,
    Blob,
    Service,
    Topic,
}

/// One control method, as data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Method {
    pub name: &'static str,
    pub family: Family,
    /// Answered with events and an `end`, not one result.
    pub streams: bool,
    /// Codes this method may answer besides the [`COMMON_ERRORS`].
    pub errors: &'static [ErrorCode],
}

/// Codes any method may answer: parameters that do not fit, too much in flight, a daemon
/// shutting down, a bug.
pub const COMMON_ERRORS: &[ErrorCode] = &[
    ErrorCode::BadRequest,
    ErrorCode::Busy,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
];

/// A control method as a type, for typed calls: `client.call::<method::DocSet>(&params)`.
pub trait Call {
    const METHOD: Method;
    type Params: Serialize + DeserializeOwned + Send + 'static;
    /// The result, or for a streaming method each event.
    type Result: Serialize + DeserializeOwned + Send + 'static;
}

macro_rules! methods {
    ($(
        $(#[$doc:meta])*
        $ty:ident $name:literal $family:ident ($params:ty) -> $kind:ident $result:ty
            $(, $code:ident)*;
    )*) => {
        /// The methods as types, for [`Call`].
        pub mod method {
            $(
                $(#[$doc])*
                #[derive(Clone, Copy, Debug)]
                pub struct $ty;
            )*
        }

        $(
            impl Call for method::$ty {
                const METHOD: Method = Method {
                    name: $name,
                    family: Family::$family,
                    streams: methods!(@streams $kind),
                    errors: &[$(ErrorCode::$code),*],
                };
                type Params = $params;
                type Result = $result;
            }
        )*

        /// Every control method.
        pub const METHODS: &[Method] = &[$(<method::$ty as Call>::METHOD),*];

        /// A request whose method is known and whose parameters decoded: what handlers
        /// match on.
        #[derive(Debug)]
        pub enum Command {
            $($ty($params)),*
        }

        impl Command {
            /// Decodes `params` as the parameters of the method called `name`.
            pub fn parse(name: &str, params: serde_cbor::Value) -> Result<Command, ApiError> {
                match name {
                    $($name => Ok(Command::$ty(super::params(params)?)),)*
                    other => Err(super::unknown_method(other)),
                }
            }

            pub fn method(&self) -> &'static Method {
                match self {
                    $(Command::$ty(_) => {
                        const M: &Method = &<method::$ty as Call>::METHOD;
                        M
                    })*
                }
            }
        }
    };
    (@streams result) => { false };
    (@streams events) => { true };
}

methods! {
    /// This node's peer id and listen addresses.
    Id "id" Net (NoParams) -> result IdInfo, Timeout;
    Status "status" Net (NoParams) -> result Status, Timeout;
    /// Connected peers, then peers known only from the DHT.
    Peers "peers" Net (NoParams) -> result Vec<Peer>, Timeout;
    Dial "dial" Net (DialParams) -> result Dialed, NetworkError, Timeout;
    NetBlock "net.block" Net (PeersParams) -> result Done, Timeout;
    NetUnblock "net.unblock" Net (PeersParams) -> result Done, Timeout;
    NetAllowOnly "net.allow_only" Net (PeersParams) -> result Done, Timeout;
    NetAllowAll "net.allow_all" Net (NoParams) -> result Done, Timeout;

    DocCreate "doc.create" Doc (CreateParams) -> result DocInfo, Storage;
    DocJoin "doc.join" Doc (DocParams) -> result DocInfo, NotFound, Storage;
    DocLs "doc.ls" Doc (NoParams) -> result Vec<DocInfo>;
    DocInfo "doc.info" Doc (DocParams) -> result DocInfo, NotFound;
    /// A cut for a consistent snapshot: the node's clock passes `at_ms`, then it says
    /// which writes it held at or before it (`lattice testnet snapshot`).
    DocCut "doc.cut" Doc (CutParams) -> result DocCut, NotFound;
    /// The whole document as JSON, or one key's value.
    DocGet "doc.get" Doc (GetParams) -> result serde_json::Value, NotFound;
    DocSet "doc.set" Doc (SetParams) -> result Written, NotFound, NotAWriter, Storage;
    DocDel "doc.del" Doc (KeyParams) -> result Written, NotFound, NotAWriter, Storage;
    DocIncr "doc.incr" Doc (IncrParams) -> result Written, NotFound, NotAWriter, Storage;
    DocAdd "doc.add" Doc (MembersParams) -> result Written, NotFound, NotAWriter, Storage;
    DocRm "doc.rm" Doc (MembersParams) -> result Written, NotFound, NotAWriter, Storage;
    /// One event per applied change, until the client closes.
    DocWatch "doc.watch" Doc (DocParams) -> events WatchEvent, NotFound;
    DocWriters "doc.writers" Doc (WritersParams) -> result Writers, NotFound, NotAWriter, Storage;

    BlobAdd "blob.add" Blob (AddParams) -> result BlobInfo, Storage;
    /// Progress events, then `done` or `failed`: failures once the fetch has started come
    /// as a `failed` event.
    BlobGet "blob.get" Blob (FetchParams) -> events FetchEvent;
    BlobLs "blob.ls" Blob (NoParams) -> result Vec<BlobInfo>;
    BlobRm "blob.rm" Blob (HashParams) -> result BlobInfo, NotFound, Storage;
    BlobPin "blob.pin" Blob (HashParams) -> result BlobInfo, NotFound, Storage;
    BlobUnpin "blob.unpin" Blob (HashParams) -> result BlobInfo, NotFound, Storage;
    BlobProviders "blob.providers" Blob (HashParams) -> result Vec<ProviderInfo>, NotFound, Timeout, NetworkError;

    ServiceAdvertise "service.advertise" Service (AdvertiseParams) -> result Done, Storage, NetworkError, Timeout;
    ServiceWithdraw "service.withdraw" Service (NameParams) -> result Done, NotFound, Storage, NetworkError, Timeout;
    ServiceFind "service.find" Service (NameParams) -> result Vec<Provider>;
    ServiceLs "service.ls" Service (NoParams) -> result Advertised;

    TopicPublish "topic.publish" Topic (PublishParams) -> result Done, NetworkError, Timeout;
    /// One event per message, until the client closes.
    TopicSubscribe "topic.subscribe" Topic (SubscribeParams) -> events TopicMessage, NetworkError, Timeout;
    /// Connected peers known to subscribe to a topic.
    TopicPeers "topic.peers" Topic (SubscribeParams) -> result Vec<String>;
}

impl Method {
    /// The method called `name`, if there is one.
    pub fn named(name: &str) -> Option<&'static Method> {
        METHODS.iter().find(|m| m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A method as a row of docs/control-protocol.md shows it: name, whether it streams,
    /// its own error codes.
    type Row = (String, bool, Vec<String>);

    /// The rows of the document's method tables.
    fn documented() -> Vec<Row> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/control-protocol.md");
        let text = std::fs::read_to_string(path).expect("docs/control-protocol.md");
        let methods = text.split("## Methods").nth(1).expect("a Methods section");
        let methods = methods.split("\n## ").next().unwrap_or_default();
        let mut out = Vec::new();
        for line in methods.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split(" | ").collect();
            assert_eq!(cells.len(), 4, "a method row has four cells: {line}");
            // The result column of a streaming method begins with the word.
            let streams = cells[2].starts_with("streaming");
            let errors: Vec<String> = cells[3]
                .trim_end_matches(" |")
                .split(", ")
                .filter(|c| *c != "—")
                .map(|c| c.trim_matches('`').to_owned())
                .collect();
            for name in cells[0].trim_start_matches("| ").split(", ") {
                out.push((name.trim_matches('`').to_owned(), streams, errors.clone()));
            }
        }
        out.sort();
        out
    }

    /// An error code as the wire spells it.
    fn code(c: ErrorCode) -> String {
        match serde_cbor::value::to_value(c) {
            Ok(serde_cbor::Value::Text(t)) => t,
            other => panic!("{c:?} encodes as {other:?}"),
        }
    }

    #[test]
    fn the_protocol_document_lists_exactly_the_methods_of_the_table() {
        let mut table: Vec<Row> = METHODS
            .iter()
            .map(|m| {
                let errors = m.errors.iter().map(|c| code(*c)).collect();
                (m.name.to_owned(), m.streams, errors)
            })
            .collect();
        table.sort();
        assert_eq!(documented(), table);
    }

    #[test]
    fn every_method_parses_and_routes_to_itself() {
        for m in METHODS {
            assert_eq!(Method::named(m.name), Some(m));
            assert!(m.errors.iter().all(|c| !COMMON_ERRORS.contains(c)));
        }
        let c = Command::parse(
            "doc.info",
            serde_cbor::value::to_value(DocParams { doc: "d".into() }).unwrap(),
        )
        .unwrap();
        assert_eq!(c.method().name, "doc.info");
        let c = Command::parse("status", serde_cbor::Value::Null).unwrap();
        assert_eq!(c.method().family, Family::Net);
        let e = Command::parse("doc.info", serde_cbor::Value::Null).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = Command::parse("doc.nope", serde_cbor::Value::Null).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownMethod);
    }
}
