//! `POST /sync/reconcile` (extension `sync.reconcile`): the wire form of set reconciliation
//! between our relays, shared by the endpoint and the peer client. The request is JSON, like
//! every other endpoint; the answer is raw bytes, since it is nothing but fixed-size symbols.
//!
//! Request: `{"from": <u64>, "count": <u64>, "snapshot": "<16 hex digits>"}`, every field
//! optional: symbols `from..from + count` (default 0 and 256, `from + count` at most
//! [`SKETCH_SYMBOLS`]) of the snapshot named, or of a new one without `snapshot`.
//! Answer: `200`, `application/octet-stream`: the snapshot id (8 bytes, big-endian), the
//! number of live packets it holds (8 bytes, big-endian), then the symbols, 44 bytes each
//! (`jasper_core::reconcile::SYMBOL_BYTES`). docs/protocol.md has the whole description.

use jasper_core::reconcile::{SYMBOL_BYTES, decode_symbols, encode_symbols};
use serde::Deserialize;
use serde_json::Value;

use super::sketch::{SKETCH_SYMBOLS, SketchAnswer};
use crate::error::RelayError;
use crate::http::optional_u64;

/// Symbols asked for when the request does not say.
pub const DEFAULT_COUNT: u64 = 256;
/// Bytes before the symbols in an answer.
pub const ANSWER_HEADER_BYTES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileRequest {
    pub from: u64,
    pub count: u64,
    pub snapshot: Option<u64>,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    from: Option<Value>,
    #[serde(default)]
    count: Option<Value>,
    #[serde(default)]
    snapshot: Option<Value>,
}

impl ReconcileRequest {
    /// Parses and checks a request body, each wrong field with its own message.
    pub fn parse(bytes: &[u8]) -> Result<Self, RelayError> {
        let body: Body = serde_json::from_slice(bytes)
            .map_err(|e| RelayError::MalformedRequest(format!("body is not a JSON object: {e}")))?;
        let whole = |v: &Option<Value>, name: &str| {
            optional_u64(v.as_ref()).map_err(|()| {
                RelayError::MalformedRequest(format!("`{name}` must be a whole number 0 or more"))
            })
        };
        let from = whole(&body.from, "from")?.unwrap_or(0);
        let count = whole(&body.count, "count")?.unwrap_or(DEFAULT_COUNT);
        if count == 0 {
            return Err(RelayError::MalformedRequest(
                "`count` must be 1 or more symbols".into(),
            ));
        }
        let max = SKETCH_SYMBOLS as u64;
        if from.saturating_add(count) > max {
            return Err(RelayError::TooLarge(format!(
                "`from` + `count` is {}; this relay keeps {max} symbols",
                from.saturating_add(count)
            )));
        }
        let snapshot = match &body.snapshot {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(u64::from_str_radix(s, 16).expect("16 hex digits"))
            }
            Some(_) => {
                return Err(RelayError::MalformedRequest(
                    "`snapshot` must be the 16 hex digits of an earlier answer, or absent".into(),
                ));
            }
        };
        Ok(Self {
            from,
            count,
            snapshot,
        })
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::json!({ "from": self.from, "count": self.count });
        if let Some(s) = self.snapshot {
            v["snapshot"] = Value::String(format!("{s:016x}"));
        }
        serde_json::to_vec(&v).expect("serialises")
    }
}

pub fn encode_answer(answer: &SketchAnswer) -> Vec<u8> {
    let mut out = Vec::with_capacity(ANSWER_HEADER_BYTES + answer.symbols.len() * SYMBOL_BYTES);
    out.extend_from_slice(&answer.snapshot.to_be_bytes());
    out.extend_from_slice(&(answer.items.max(0) as u64).to_be_bytes());
    out.extend_from_slice(&encode_symbols(&answer.symbols));
    out
}

/// An answer's parts; `None` when it is not the header and whole symbols.
pub fn decode_answer(bytes: &[u8]) -> Option<SketchAnswer> {
    if bytes.len() < ANSWER_HEADER_BYTES {
        return None;
    }
    let snapshot = u64::from_be_bytes(bytes[..8].try_into().ok()?);
    let items = u64::from_be_bytes(bytes[8..16].try_into().ok()?);
    Some(SketchAnswer {
        snapshot,
        items: i64::try_from(items).ok()?,
        symbols: decode_symbols(&bytes[ANSWER_HEADER_BYTES..])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::sketch::LiveSketch;

    #[test]
    fn requests_parse_with_precise_errors() {
        let ok = ReconcileRequest::parse(
            br#"{"from": 256, "count": 512, "snapshot": "00000000000000ff"}"#,
        )
        .unwrap();
        assert_eq!((ok.from, ok.count, ok.snapshot), (256, 512, Some(255)));
        assert_eq!(ReconcileRequest::parse(&ok.to_json()).unwrap(), ok);
        let empty = ReconcileRequest::parse(b"{}").unwrap();
        assert_eq!(
            (empty.from, empty.count, empty.snapshot),
            (0, DEFAULT_COUNT, None)
        );
        for (body, code, says) in [
            (&b"\"all\""[..], "malformed_request", "JSON object"),
            (b"{\"from\": -1}", "malformed_request", "`from`"),
            (b"{\"count\": 1.5}", "malformed_request", "`count`"),
            (b"{\"count\": 0}", "malformed_request", "1 or more"),
            (b"{\"count\": 5000}", "too_large", "4096"),
            (b"{\"from\": 4000, \"count\": 100}", "too_large", "4096"),
            (b"{\"snapshot\": 12}", "malformed_request", "`snapshot`"),
            (
                b"{\"snapshot\": \"xyz\"}",
                "malformed_request",
                "`snapshot`",
            ),
        ] {
            let e = ReconcileRequest::parse(body).unwrap_err();
            assert_eq!(
                e.status_and_code().1,
                code,
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn answers_round_trip_and_broken_ones_are_refused() {
        let sketch = LiveSketch::of((0..20u64).map(|n| {
            (
                jasper_core::MessageHash::of_message(&n.to_string()),
                u64::MAX,
            )
        }));
        let answer = sketch.answer(None, 0, 10).unwrap();
        let bytes = encode_answer(&answer);
        assert_eq!(bytes.len(), ANSWER_HEADER_BYTES + 10 * SYMBOL_BYTES);
        let back = decode_answer(&bytes).unwrap();
        assert_eq!((back.snapshot, back.items), (answer.snapshot, 20));
        assert_eq!(back.symbols, answer.symbols);
        assert!(decode_answer(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode_answer(&bytes[..15]).is_none());
    }
}
