//! A control-socket client made of raw frames, for tests that speak the protocol as any
//! other program would (and as a hostile one might).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Writes one control frame.
pub fn frame(s: &mut UnixStream, value: &serde_cbor::Value) {
    let bytes = serde_cbor::to_vec(value).unwrap();
    s.write_all(&(bytes.len() as u32).to_be_bytes()).unwrap();
    s.write_all(&bytes).unwrap();
}

/// Reads one control frame, or `None` if the daemon closed the connection.
pub fn read_frame(s: &mut UnixStream) -> Option<serde_cbor::Value> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(serde_cbor::from_slice(&buf).unwrap())
}

pub fn cbor(json: Value) -> serde_cbor::Value {
    serde_cbor::value::to_value(json).unwrap()
}

pub fn connect_with_hello(socket: &Path) -> UnixStream {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    frame(
        &mut s,
        &cbor(serde_json::json!({"protocol_version": 1, "agent": "test"})),
    );
    let hello = read_frame(&mut s).expect("hello back");
    assert_eq!(
        hello,
        cbor(
            serde_json::json!({"protocol_version": 1, "agent": format!("lattice/{}", env!("CARGO_PKG_VERSION"))})
        )
    );
    s
}

pub fn error_code(v: &serde_cbor::Value) -> Option<String> {
    let j: Value = serde_cbor::value::from_value(v.clone()).ok()?;
    j["error"]["code"].as_str().map(str::to_owned)
}

/// True once the daemon has closed `s`: EOF, or a reset if our bytes were left unread.
pub fn closed(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => {
            e.kind() == std::io::ErrorKind::ConnectionReset
                || e.kind() == std::io::ErrorKind::BrokenPipe
        }
    }
}

/// Sends a request and reads frames until the one answering it (skipping none).
pub fn call(s: &mut UnixStream, id: u64, method: &str, params: Value) -> Value {
    frame(
        s,
        &cbor(serde_json::json!({"id": id, "method": method, "params": params})),
    );
    let r = read_frame(s).expect("an answer");
    serde_cbor::value::from_value(r).unwrap()
}
