//! `POST /sync/reconcile` (extension `sync.reconcile`): the wire form of set reconciliation
//! between our relays, shared by the endpoint and the peer client. The request is JSON, like
//! every other endpoint; the answer is raw bytes, since it is nothing but fixed-size symbols.
//!
//! Request: `{"from": <u64>, "count": <u64>, "snapshot": "<16 hex digits>",
//! "range": [<u64>, <u64>], "prefix": "<hex>"}`, every field optional: symbols
//! `from..from + count` (default 0 and 256, `from + count` at most [`SKETCH_SYMBOLS`]) of the
//! snapshot named, or of a new one without `snapshot`: of the whole live set, or with `range`
//! and/or `prefix` (extension `sync.reconcile.range`) of the live packets whose `expires_at`
//! is in `range[0]..range[1]` and whose hash starts with `prefix` (1 to 16 hex digits), built
//! from the store's expiry index on demand (at most [`MAX_RANGE_ITEMS`] packets in the range).
//! Answer: `200`, `application/octet-stream`: the snapshot id (8 bytes, big-endian), the
//! number of live packets it holds (8 bytes, big-endian), then the symbols, 44 bytes each
//! (`jasper_core::reconcile::SYMBOL_BYTES`). docs/protocol.md has the whole description.

use jasper_core::reconcile::{SYMBOL_BYTES, decode_symbols, encode_symbols};
use serde::Deserialize;
use serde_json::Value;

use super::sketch::{HashPrefix, SKETCH_SYMBOLS, SetSlice, SketchAnswer};
use crate::error::RelayError;
use crate::http::optional_u64;

/// Symbols asked for when the request does not say.
pub const DEFAULT_COUNT: u64 = 256;
/// Bytes before the symbols in an answer.
pub const ANSWER_HEADER_BYTES: usize = 16;
/// Most packets a ranged sketch is built of (`limits.reconcile_range_items`): 40 MB of
/// entries read and about 0.2 s of work; a peer asks for narrower ranges beyond it.
pub const MAX_RANGE_ITEMS: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileRequest {
    pub from: u64,
    pub count: u64,
    pub snapshot: Option<u64>,
    pub range: Option<SetSlice>,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    range: Option<Value>,
    #[serde(default)]
    prefix: Option<Value>,
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
        let range = match &body.range {
            None | Some(Value::Null) => None,
            Some(Value::Array(bounds)) if bounds.len() == 2 => {
                match (bounds[0].as_u64(), bounds[1].as_u64()) {
                    (Some(from), Some(to)) if from < to => Some((from, to)),
                    (Some(_), Some(_)) => {
                        return Err(RelayError::MalformedRequest(
                            "`range` must be [from, to] with from below to".into(),
                        ));
                    }
                    _ => {
                        return Err(RelayError::MalformedRequest(
                            "`range` bounds must be whole numbers 0 or more (unix seconds)".into(),
                        ));
                    }
                }
            }
            Some(_) => {
                return Err(RelayError::MalformedRequest(
                    "`range` must be [from, to]: two expires_at bounds, to excluded".into(),
                ));
            }
        };
        let prefix = match &body.prefix {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) if HashPrefix::parse(p).is_some() => HashPrefix::parse(p),
            Some(_) => {
                return Err(RelayError::MalformedRequest(
                    "`prefix` must be 1 to 16 hex digits of a hash".into(),
                ));
            }
        };
        let range = match (range, prefix) {
            (None, None) => None,
            (bounds, prefix) => {
                let (from, to) = bounds.unwrap_or((0, u64::MAX));
                Some(SetSlice {
                    from,
                    to,
                    prefix: prefix.unwrap_or_default(),
                })
            }
        };
        Ok(Self {
            from,
            count,
            snapshot,
            range,
        })
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::json!({ "from": self.from, "count": self.count });
        if let Some(s) = self.snapshot {
            v["snapshot"] = Value::String(format!("{s:016x}"));
        }
        if let Some(r) = self.range {
            v["range"] = serde_json::json!([r.from, r.to]);
            if r.prefix.len > 0 {
                v["prefix"] = Value::String(r.prefix.to_hex());
            }
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
        let ranged = ReconcileRequest::parse(br#"{"range": [10, 20], "count": 8}"#).unwrap();
        let slice = |from, to, prefix: &str| SetSlice {
            from,
            to,
            prefix: HashPrefix::parse(prefix).unwrap_or_default(),
        };
        assert_eq!(ranged.range, Some(slice(10, 20, "")));
        assert_eq!(ReconcileRequest::parse(&ranged.to_json()).unwrap(), ranged);
        let both = ReconcileRequest::parse(br#"{"range": [10, 20], "prefix": "a0F"}"#).unwrap();
        assert_eq!(both.range, Some(slice(10, 20, "a0f")));
        assert_eq!(ReconcileRequest::parse(&both.to_json()).unwrap(), both);
        let prefix_only = ReconcileRequest::parse(br#"{"prefix": "7"}"#).unwrap();
        assert_eq!(prefix_only.range, Some(slice(0, u64::MAX, "7")));
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
            (b"{\"range\": 5}", "malformed_request", "[from, to]"),
            (b"{\"range\": [1, 2, 3]}", "malformed_request", "[from, to]"),
            (b"{\"range\": [5, 5]}", "malformed_request", "below"),
            (
                b"{\"range\": [-1, 5]}",
                "malformed_request",
                "whole numbers",
            ),
            (
                b"{\"range\": [1, \"x\"]}",
                "malformed_request",
                "whole numbers",
            ),
            (b"{\"prefix\": \"\"}", "malformed_request", "`prefix`"),
            (b"{\"prefix\": \"g\"}", "malformed_request", "`prefix`"),
            (b"{\"prefix\": 7}", "malformed_request", "`prefix`"),
            (
                b"{\"prefix\": \"00000000000000000\"}",
                "malformed_request",
                "`prefix`",
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
        let answer = sketch.answer(0, 10);
        let bytes = encode_answer(&answer);
        assert_eq!(bytes.len(), ANSWER_HEADER_BYTES + 10 * SYMBOL_BYTES);
        let back = decode_answer(&bytes).unwrap();
        assert_eq!((back.snapshot, back.items), (answer.snapshot, 20));
        assert_eq!(back.symbols, answer.symbols);
        assert!(decode_answer(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode_answer(&bytes[..15]).is_none());
    }
}
