//! What transparent mode puts on the wire: the signaling messages that travel through the
//! relays as sealed inner messages of type [`TYPE_RTC`], and the frames on the data channel.
//! Both are documented in `docs/protocol.md` ("Transparent mode").

use jasper_core::protocol::Packet;
use serde::{Deserialize, Serialize};

/// Inner-message type of WebRTC signaling. Clients without transparent mode ignore it (an
/// unknown type), and it never becomes a conversation message.
pub const TYPE_RTC: &str = "RTC";

/// Version of the signaling content.
pub const SIGNAL_VERSION: u32 = 1;

/// The content of an [`TYPE_RTC`] inner message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalEnvelope {
    pub v: u32,
    /// Unix milliseconds after which the signal is stale and ignored (an offer that sat in
    /// the outbox while the relays were down describes sockets that are gone).
    pub expires_at: i64,
    #[serde(flatten)]
    pub signal: Signal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Signal {
    /// The sender has (or no longer has) transparent mode enabled for the recipient.
    /// `yours_known`: the sender has already heard the recipient's consent (no need to answer
    /// with it).
    Consent {
        enabled: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        yours_known: bool,
    },
    /// The sender (the answering side) has no session with the recipient and wants one: the
    /// offerer drops whatever session it still holds and offers anew.
    Reconnect {
        /// The user asked for it (not a start-up announcement): it overrides a deliberate
        /// close on the recipient's side.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        requested: bool,
    },
    /// A session offer: a complete SDP (ICE candidates included, no trickling needed).
    /// `requested`: the user asked for it, which overrides a deliberate close on the
    /// recipient's side; automatic offers (start-up, reconnects) do not.
    Offer {
        session: String,
        device: String,
        sdp: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        requested: bool,
    },
    /// The answer to `session`, from one login (`device`) of the recipient key.
    Answer {
        session: String,
        device: String,
        sdp: String,
    },
    /// A trickled ICE candidate (accepted; Jasper itself sends complete SDPs).
    Candidate {
        session: String,
        candidate: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mline_index: Option<u16>,
    },
    /// The sender closed `session` on purpose: do not reconnect until asked.
    Bye { session: String },
}

/// Longest SDP accepted in a signal (real ones are 1-3 KB).
pub const MAX_SDP_BYTES: usize = 16 * 1024;
/// Longest session or device identifier accepted.
pub const MAX_ID_BYTES: usize = 64;

impl SignalEnvelope {
    /// Parses and checks a signal's content; `Err` says what is wrong with it.
    pub fn parse(content: &str) -> Result<Self, String> {
        let env: SignalEnvelope =
            serde_json::from_str(content).map_err(|e| format!("not a signal: {e}"))?;
        if env.v != SIGNAL_VERSION {
            return Err(format!("signal version {} is not supported", env.v));
        }
        let id_ok = |s: &str| !s.is_empty() && s.len() <= MAX_ID_BYTES;
        match &env.signal {
            Signal::Consent { .. } | Signal::Reconnect { .. } => {}
            Signal::Offer {
                session,
                device,
                sdp,
                ..
            }
            | Signal::Answer {
                session,
                device,
                sdp,
            } => {
                if !id_ok(session) || !id_ok(device) {
                    return Err("session or device id is empty or too long".into());
                }
                if sdp.is_empty() || sdp.len() > MAX_SDP_BYTES {
                    return Err(format!("SDP of {} bytes", sdp.len()));
                }
            }
            Signal::Candidate {
                session, candidate, ..
            } => {
                if !id_ok(session) || candidate.len() > 1024 {
                    return Err("bad candidate signal".into());
                }
            }
            Signal::Bye { session } => {
                if !id_ok(session) {
                    return Err("bad session id".into());
                }
            }
        }
        Ok(env)
    }
}

/// One frame on the `jasper` data channel, serialised as JSON and cut into chunks by
/// [`chunk_frame`] (the SCTP layer only promises 16 KiB messages).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Frame {
    /// A packet exactly as it would be sent to a relay: sealed and signed.
    Packet { packet: Packet },
    /// The packet `hash` was applied (`ok`) or refused by the recipient.
    Ack { hash: String, ok: bool },
    /// Call control for `call`.
    Call { call: String, op: CallOp },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOp {
    Invite,
    Accept,
    Reject,
    Busy,
    Hangup,
}

/// Largest chunk payload on the data channel.
pub const CHUNK_BYTES: usize = 16 * 1024 - 1;
/// Largest reassembled frame (a sealed 64 KiB message is ~90 KB of JSON).
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// Cuts a frame into data-channel messages: one flag byte (1 = last chunk) and up to
/// [`CHUNK_BYTES`] of the frame's JSON.
pub fn chunk_frame(frame: &Frame) -> Vec<Vec<u8>> {
    let json = serde_json::to_vec(frame).expect("frames serialise");
    let mut out = Vec::with_capacity(json.len() / CHUNK_BYTES + 1);
    let mut chunks = json.chunks(CHUNK_BYTES).peekable();
    while let Some(c) = chunks.next() {
        let mut m = Vec::with_capacity(c.len() + 1);
        m.push(u8::from(chunks.peek().is_none()));
        m.extend_from_slice(c);
        out.push(m);
    }
    out
}

/// Reassembles frames from data-channel messages.
#[derive(Default)]
pub struct Reassembler {
    buf: Vec<u8>,
}

impl Reassembler {
    /// Feeds one data-channel message; returns a frame when it was the last chunk.
    pub fn push(&mut self, message: &[u8]) -> Result<Option<Frame>, String> {
        let (&flag, body) = message.split_first().ok_or("empty data-channel message")?;
        if flag > 1 {
            self.buf.clear();
            return Err(format!("unknown chunk flag {flag}"));
        }
        if self.buf.len() + body.len() > MAX_FRAME_BYTES {
            self.buf.clear();
            return Err("frame larger than 256 KiB".into());
        }
        self.buf.extend_from_slice(body);
        if flag == 0 {
            return Ok(None);
        }
        let frame = serde_json::from_slice(&self.buf).map_err(|e| format!("bad frame: {e}"));
        self.buf.clear();
        frame.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_chunking() {
        let packet = Packet {
            recipient: "k".repeat(700),
            message: "m".repeat(90_000),
            hash: "a".repeat(64),
            signature: "s".repeat(700),
            expires_at: None,
        };
        let chunks = chunk_frame(&Frame::Packet { packet });
        assert!(chunks.len() >= 6);
        assert!(chunks.iter().all(|c| c.len() <= CHUNK_BYTES + 1));
        let mut r = Reassembler::default();
        let mut got = None;
        for (i, c) in chunks.iter().enumerate() {
            let f = r.push(c).unwrap();
            assert_eq!(f.is_some(), i == chunks.len() - 1);
            got = got.or(f);
        }
        match got.unwrap() {
            Frame::Packet { packet } => assert_eq!(packet.message.len(), 90_000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let mut r = Reassembler::default();
        let big = vec![0u8; CHUNK_BYTES + 1];
        let mut err = None;
        for _ in 0..20 {
            if let Err(e) = r.push(&big) {
                err = Some(e);
                break;
            }
        }
        assert!(err.unwrap().contains("256 KiB"));
        assert!(r.push(b"\x01{not json").unwrap_err().contains("bad frame"));
        assert!(r.push(b"").is_err());
        assert!(r.push(b"\x07x").unwrap_err().contains("flag"));
    }

    /// The vectors in docs/protocol.md ("Transparent mode"), byte for byte.
    #[test]
    fn documented_vectors() {
        let consent = SignalEnvelope {
            v: 1,
            expires_at: 1_764_115_200_000,
            signal: Signal::Consent {
                enabled: true,
                yours_known: false,
            },
        };
        let text = r#"{"v":1,"expires_at":1764115200000,"type":"consent","enabled":true}"#;
        assert_eq!(serde_json::to_string(&consent).unwrap(), text);
        assert_eq!(SignalEnvelope::parse(text).unwrap(), consent);
        let bye = r#"{"v":1,"expires_at":1764115200000,"type":"bye","session":"7f0c5a52-1f7e-4b8e-9d51-0c6a1f3e2b10"}"#;
        assert!(matches!(
            SignalEnvelope::parse(bye).unwrap().signal,
            Signal::Bye { .. }
        ));
        let ack = Frame::Ack {
            hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            ok: true,
        };
        let chunks = chunk_frame(&ack);
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            chunks[0],
            b"\x01{\"t\":\"ack\",\"hash\":\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\",\"ok\":true}"
        );
        let invite = Frame::Call {
            call: "c1".into(),
            op: CallOp::Invite,
        };
        assert_eq!(
            serde_json::to_string(&invite).unwrap(),
            r#"{"t":"call","call":"c1","op":"invite"}"#
        );
    }

    #[test]
    fn signals_are_checked() {
        let ok = r#"{"v":1,"expires_at":5,"type":"offer","session":"s","device":"d","sdp":"v=0"}"#;
        assert!(matches!(
            SignalEnvelope::parse(ok).unwrap().signal,
            Signal::Offer { .. }
        ));
        let v2 = r#"{"v":2,"expires_at":5,"type":"consent","enabled":true}"#;
        assert!(SignalEnvelope::parse(v2).unwrap_err().contains("version"));
        let empty_sdp =
            r#"{"v":1,"expires_at":5,"type":"answer","session":"s","device":"d","sdp":""}"#;
        assert!(SignalEnvelope::parse(empty_sdp).is_err());
        assert!(SignalEnvelope::parse(r#"{"v":1,"expires_at":5,"type":"dance"}"#).is_err());
    }
}
