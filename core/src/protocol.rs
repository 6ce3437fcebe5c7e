//! Wire types of Jasper v1.0.0: the bodies of `/send`, `/fetch`, `/sync/servers` and
//! `/sync/hashes`, and the inner message that travels encrypted inside a packet.
//!
//! We send exactly the spec's shapes (every field present, ports as strings) and accept what
//! the reference relay actually sends (bare arrays, `null` entries, `{}`, numeric ports): the
//! `parse_*_response` functions are the lenient side and never fail on a merely odd answer.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use jasper_model::PROTOCOL_VERSION;

use crate::error::{Error, Result};
use crate::hash::MessageHash;

/// Extension fields are additive: relays that do not know them ignore them.
pub mod extension {
    /// Unix time (seconds) at which a packet expires everywhere, carried across hops so a
    /// synced copy never outlives the original.
    pub const EXPIRES_AT: &str = "expires_at";
}

/// A packet: the body of `POST /send`, and one entry of a `/fetch` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    /// Canonical text form of the recipient's public key.
    pub recipient: String,
    /// The sealed inner message, base64.
    pub message: String,
    /// Lowercase hex SHA-256 of `message` as sent.
    pub hash: String,
    /// The separately encrypted signature, base64.
    pub signature: String,
    /// Extension: global expiry (unix seconds). Absent from packets clients send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// Size limits a receiver applies to a packet's fields.
#[derive(Debug, Clone, Copy)]
pub struct PacketLimits {
    /// Longest `message` (base64 characters).
    pub max_message_len: usize,
    /// Longest `signature` (base64 characters).
    pub max_signature_len: usize,
}

impl Default for PacketLimits {
    fn default() -> Self {
        // A sealed 64 KiB inner message is ~88 KB of base64: under the 100 kB body limit.
        Self {
            max_message_len: 100_000,
            max_signature_len: 8_192,
        }
    }
}

impl Packet {
    /// Checks everything about a packet except the recipient key (which callers may cache):
    /// fields present and within limits, `message` and `signature` valid base64, and `hash`
    /// the SHA-256 of `message`. Returns the verified hash.
    pub fn check_fields(&self, limits: &PacketLimits) -> Result<MessageHash> {
        use base64::Engine as _;
        for (field, value) in [
            ("recipient", &self.recipient),
            ("message", &self.message),
            ("hash", &self.hash),
            ("signature", &self.signature),
        ] {
            if value.is_empty() {
                return Err(Error::EmptyField { field });
            }
        }
        if self.message.len() > limits.max_message_len {
            return Err(Error::FieldTooLong {
                field: "message",
                len: self.message.len(),
                max: limits.max_message_len,
            });
        }
        if self.signature.len() > limits.max_signature_len {
            return Err(Error::FieldTooLong {
                field: "signature",
                len: self.signature.len(),
                max: limits.max_signature_len,
            });
        }
        let hash = MessageHash::verify(&self.message, &self.hash)?;
        let engine = &base64::engine::general_purpose::STANDARD;
        if engine.decode(&self.message).is_err() {
            return Err(Error::InvalidBase64 { field: "message" });
        }
        if engine.decode(&self.signature).is_err() {
            return Err(Error::InvalidBase64 { field: "signature" });
        }
        Ok(hash)
    }
}

/// Body of `POST /fetch`: either `recipient` (clients) or `hashes` (relays).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes: Option<Vec<String>>,
    /// Extension (long-poll): seconds to hold the request open until a message arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
    /// Extension (cursor): only messages that arrived at this relay after this cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

/// Answer of `POST /fetch`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchResponse {
    /// For a hashes request: one entry per requested hash, `null` where unknown (as the
    /// reference relay does). For a recipient request: the messages, oldest first.
    pub messages: Vec<Option<Packet>>,
    /// Extension: the relay-local cursor to pass as `since` next time (recipient requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
}

/// Body and answer of `POST /sync/hashes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashList {
    pub hashes: Vec<String>,
    /// Extension: the request covers only hashes starting with this lowercase hex prefix
    /// (lets a relay with very many messages sync in slices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// One relay address as exchanged by `/sync/servers`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerEntry {
    /// IPv4, IPv6 or domain name.
    pub ip: String,
    /// The spec shows a string; the reference relay sends a number. We send strings and
    /// accept both.
    #[serde(
        deserialize_with = "port_from_string_or_number",
        serialize_with = "port_as_string"
    )]
    pub port: u16,
}

/// Body and answer of `POST /sync/servers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerList {
    pub servers: Vec<ServerEntry>,
}

fn port_as_string<S: serde::Serializer>(port: &u16, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&port.to_string())
}

fn port_from_string_or_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<u16, D::Error> {
    let v = Value::deserialize(d)?;
    port_from_value(&v).ok_or_else(|| serde::de::Error::custom("port must be 1..65535"))
}

fn port_from_value(v: &Value) -> Option<u16> {
    let n = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse::<u64>().ok()?,
        _ => return None,
    };
    u16::try_from(n).ok().filter(|p| *p != 0)
}

impl ServerEntry {
    /// `host:port`, with IPv6 literals bracketed.
    pub fn authority(&self) -> String {
        if self.ip.contains(':') && !self.ip.starts_with('[') {
            format!("[{}]:{}", self.ip, self.port)
        } else {
            format!("{}:{}", self.ip, self.port)
        }
    }
}

/// Why a peer's answer could not be used at all (as opposed to entries that were skipped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unusable answer: {0}")]
pub struct GarbageAnswer(pub String);

fn parse_json(body: &[u8]) -> std::result::Result<Value, GarbageAnswer> {
    serde_json::from_slice(body).map_err(|e| {
        let start = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        GarbageAnswer(format!("not JSON ({e}); starts with {start:?}"))
    })
}

/// Parses a `/fetch` answer from any relay: `{"messages":[...]}`, a bare array (an older
/// draft), `{}` (empty), with `null` or malformed entries kept as `None`.
pub fn parse_fetch_response(
    body: &[u8],
) -> std::result::Result<Vec<Option<Packet>>, GarbageAnswer> {
    let value = parse_json(body)?;
    let entries = match value {
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove("messages") {
            Some(Value::Array(items)) => items,
            None | Some(Value::Null) => Vec::new(),
            Some(other) => return Err(GarbageAnswer(format!("messages is {}", kind(&other)))),
        },
        other => return Err(GarbageAnswer(format!("answer is {}", kind(&other)))),
    };
    Ok(entries
        .into_iter()
        .map(|entry| serde_json::from_value::<Packet>(entry).ok())
        .collect())
}

/// Parses a `/sync/hashes` answer: `{"hashes":[...]}`, a bare array, or `{}`. Entries that are
/// not valid hashes are dropped; the count of dropped entries is returned beside the list.
pub fn parse_hashes_response(
    body: &[u8],
) -> std::result::Result<(Vec<MessageHash>, usize), GarbageAnswer> {
    let value = parse_json(body)?;
    let entries = match value {
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove("hashes") {
            Some(Value::Array(items)) => items,
            None | Some(Value::Null) => Vec::new(),
            Some(other) => return Err(GarbageAnswer(format!("hashes is {}", kind(&other)))),
        },
        other => return Err(GarbageAnswer(format!("answer is {}", kind(&other)))),
    };
    let mut dropped = 0;
    let hashes = entries
        .into_iter()
        .filter_map(|v| {
            let parsed = v.as_str().and_then(|s| MessageHash::parse(s, "hash").ok());
            if parsed.is_none() {
                dropped += 1;
            }
            parsed
        })
        .collect();
    Ok((hashes, dropped))
}

/// Parses a `/sync/servers` answer: `{"servers":[...]}`, a bare array, or `{}`. Entries with
/// a missing host or an invalid port are dropped and counted.
pub fn parse_servers_response(
    body: &[u8],
) -> std::result::Result<(Vec<ServerEntry>, usize), GarbageAnswer> {
    let value = parse_json(body)?;
    let entries = match value {
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove("servers") {
            Some(Value::Array(items)) => items,
            None | Some(Value::Null) => Vec::new(),
            Some(other) => return Err(GarbageAnswer(format!("servers is {}", kind(&other)))),
        },
        other => return Err(GarbageAnswer(format!("answer is {}", kind(&other)))),
    };
    let mut dropped = 0;
    let servers = entries
        .into_iter()
        .filter_map(|v| {
            let parsed = serde_json::from_value::<ServerEntry>(v).ok();
            if parsed.is_none() {
                dropped += 1;
            }
            parsed
        })
        .collect();
    Ok((servers, dropped))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The `type` of an inner message. Unknown types are kept verbatim and surfaced, so a newer
/// client's message types reach the application instead of failing to parse.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Message,
    Edit,
    Delete,
    React,
    Other(String),
}

impl MessageKind {
    pub fn as_str(&self) -> &str {
        match self {
            MessageKind::Message => "MESSAGE",
            MessageKind::Edit => "EDIT",
            MessageKind::Delete => "DELETE",
            MessageKind::React => "REACT",
            MessageKind::Other(s) => s,
        }
    }
}

impl From<&str> for MessageKind {
    fn from(s: &str) -> Self {
        match s {
            "MESSAGE" => MessageKind::Message,
            "EDIT" => MessageKind::Edit,
            "DELETE" => MessageKind::Delete,
            "REACT" => MessageKind::React,
            other => MessageKind::Other(other.to_owned()),
        }
    }
}

impl Serialize for MessageKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MessageKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(MessageKind::from(s.as_ref()))
    }
}

/// The inner message, encrypted inside a packet's `message` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InnerMessage {
    /// Canonical text form of the sender's public key.
    pub sender: String,
    /// UUID of the conversation; generated with its first message.
    pub channel_id: String,
    #[serde(rename = "type")]
    pub kind: MessageKind,
    /// Text (GitHub-flavoured Markdown); a `:reaction:` for REACT; ignored for DELETE.
    pub content: String,
    /// Message id: new for MESSAGE, the target message's id for EDIT, DELETE and REACT.
    pub id: String,
    /// ISO 8601 / RFC 3339 time of writing.
    pub timestamp: String,
}

impl InnerMessage {
    /// Parses the decrypted JSON of an inner message.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::MalformedMessage(e.to_string()))
    }

    /// The exact JSON bytes that get sealed (field order as in the spec).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("InnerMessage always serialises")
    }

    /// The timestamp as a point in time, if it parses as RFC 3339.
    pub fn parsed_timestamp(&self) -> Option<time::OffsetDateTime> {
        time::OffsetDateTime::parse(
            &self.timestamp,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()
    }
}

/// RFC 3339 UTC timestamp for `now`, as written into new inner messages.
pub fn timestamp_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("UTC time formats as RFC 3339")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_answers_of_every_observed_shape_parse() {
        let p = r#"{"recipient":"r","message":"m","hash":"h","signature":"s"}"#;
        let wrapped = format!(r#"{{"messages":[{p},null]}}"#);
        let parsed = parse_fetch_response(wrapped.as_bytes()).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].as_ref().unwrap().recipient, "r");
        assert!(parsed[1].is_none());

        let bare = format!("[{p}]");
        assert_eq!(parse_fetch_response(bare.as_bytes()).unwrap().len(), 1);
        assert!(parse_fetch_response(b"{}").unwrap().is_empty());
        assert!(parse_fetch_response(b"<html>500</html>").is_err());
        assert!(parse_fetch_response(b"\"ok\"").is_err());
    }

    #[test]
    fn server_ports_accept_strings_and_numbers_and_serialise_as_strings() {
        let body = br#"{"servers":[{"ip":"10.0.0.1","port":8080},{"ip":"a.example","port":"9090"},{"ip":"x","port":0},{"port":1}]}"#;
        let (servers, dropped) = parse_servers_response(body).unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(dropped, 2);
        assert_eq!(servers[0].port, 8080);
        assert_eq!(servers[1].port, 9090);
        let out = serde_json::to_string(&servers[0]).unwrap();
        assert_eq!(out, r#"{"ip":"10.0.0.1","port":"8080"}"#);
        assert_eq!(parse_servers_response(b"{}").unwrap().0.len(), 0);
    }

    #[test]
    fn ipv6_authority_is_bracketed() {
        let e = ServerEntry {
            ip: "::1".into(),
            port: 80,
        };
        assert_eq!(e.authority(), "[::1]:80");
    }

    #[test]
    fn hashes_answer_drops_invalid_entries() {
        let good = MessageHash::of_message("x").to_string();
        let body = format!(r#"{{"hashes":["{good}","nope",3]}}"#);
        let (hashes, dropped) = parse_hashes_response(body.as_bytes()).unwrap();
        assert_eq!(hashes.len(), 1);
        assert_eq!(dropped, 2);
        assert!(parse_hashes_response(b"{}").unwrap().0.is_empty());
    }

    #[test]
    fn unknown_message_types_are_kept() {
        let json = br#"{"sender":"k","channel_id":"c","type":"CALL_OFFER","content":"x","id":"1","timestamp":"2026-11-25T10:00:00Z"}"#;
        let m = InnerMessage::from_json(json).unwrap();
        assert_eq!(m.kind, MessageKind::Other("CALL_OFFER".into()));
        assert!(m.parsed_timestamp().is_some());
        let again = InnerMessage::from_json(&m.to_json()).unwrap();
        assert_eq!(again, m);
    }

    fn packet(message: &str) -> Packet {
        Packet {
            recipient: "r".into(),
            message: message.into(),
            hash: MessageHash::of_message(message).to_string(),
            signature: "c2ln".into(),
            expires_at: None,
        }
    }

    #[test]
    fn check_fields_names_each_problem() {
        let limits = PacketLimits::default();
        assert_eq!(
            packet("aGVsbG8=").check_fields(&limits),
            Ok(MessageHash::of_message("aGVsbG8="))
        );
        let mut p = packet("not base64!");
        assert_eq!(
            p.check_fields(&limits),
            Err(Error::InvalidBase64 { field: "message" })
        );
        p = packet("aGVsbG8=");
        p.signature = "%%".into();
        assert_eq!(
            p.check_fields(&limits),
            Err(Error::InvalidBase64 { field: "signature" })
        );
        p = packet("aGVsbG8=");
        p.hash = MessageHash::of_message("other").to_string();
        assert!(matches!(
            p.check_fields(&limits),
            Err(Error::HashMismatch { .. })
        ));
        p.hash = "xyz".into();
        assert_eq!(
            p.check_fields(&limits),
            Err(Error::InvalidHash { field: "hash" })
        );
        p = packet("aGVsbG8=");
        p.recipient.clear();
        assert_eq!(
            p.check_fields(&limits),
            Err(Error::EmptyField { field: "recipient" })
        );
        let big = "A".repeat(limits.max_message_len + 4);
        assert!(matches!(
            packet(&big).check_fields(&limits),
            Err(Error::FieldTooLong {
                field: "message",
                ..
            })
        ));
    }

    #[test]
    fn send_body_has_exactly_the_spec_fields_unless_extended() {
        let p = Packet {
            recipient: "r".into(),
            message: "m".into(),
            hash: "h".into(),
            signature: "s".into(),
            expires_at: None,
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"recipient":"r","message":"m","hash":"h","signature":"s"}"#
        );
    }
}
