//! One WebRTC session with one contact: a peer connection carrying the `jasper` data channel
//! and one Opus audio transceiver (silent until a call is active, so a call needs no
//! renegotiation). Everything it observes goes to the engine as a [`SessionEvent`]; it holds
//! no reference to the engine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use jasper_core::PublicKey;
use parking_lot::Mutex;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState,
    RTCSessionDescription, Registry, register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

use super::wire::{Frame, Reassembler, chunk_frame};
use crate::model::AudioFrame;

/// The data channel's label.
pub const CHANNEL_LABEL: &str = "jasper";
/// Opus as every browser offers it: 48 kHz, stereo signalled, in-band FEC.
const OPUS_PAYLOAD_TYPE: u8 = 111;

/// What a session reports to the engine.
#[derive(Debug)]
pub enum SessionEvent {
    /// The data channel opened: the session is usable.
    Open { session: String, peer: PublicKey },
    /// The session is gone (ICE failed, DTLS closed, the channel closed).
    Down {
        session: String,
        peer: PublicKey,
        why: String,
    },
    /// A frame other than an acknowledgement arrived on the data channel.
    Frame {
        session: String,
        peer: PublicKey,
        frame: Frame,
    },
    /// An RTP packet of the peer's audio track.
    Audio {
        session: String,
        peer: PublicKey,
        frame: AudioFrame,
    },
}

/// Things a session needs that come from the engine's configuration.
#[derive(Clone)]
pub struct SessionSettings {
    pub stun_servers: Vec<String>,
    pub bind_addrs: Vec<String>,
}

struct Shared {
    id: String,
    peer: PublicKey,
    events: mpsc::UnboundedSender<SessionEvent>,
    gathered: watch::Sender<bool>,
    open: watch::Sender<bool>,
    channel: Mutex<Option<Arc<dyn DataChannel>>>,
    acks: Mutex<HashMap<String, oneshot::Sender<bool>>>,
    down: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn report_down(&self, why: impl Into<String>) {
        if !self.down.swap(true, Ordering::SeqCst) {
            self.open.send_replace(false);
            // Anyone waiting for an ack now falls back to the relays.
            self.acks.lock().clear();
            let _ = self.events.send(SessionEvent::Down {
                session: self.id.clone(),
                peer: self.peer.clone(),
                why: why.into(),
            });
        }
    }

    /// Reads the data channel until it closes.
    fn attach_channel(self: &Arc<Self>, channel: Arc<dyn DataChannel>) {
        *self.channel.lock() = Some(channel.clone());
        let shared = self.clone();
        tokio::spawn(async move {
            let mut reassembler = Reassembler::default();
            while let Some(event) = channel.poll().await {
                match event {
                    DataChannelEvent::OnOpen => {
                        shared.open.send_replace(true);
                        let _ = shared.events.send(SessionEvent::Open {
                            session: shared.id.clone(),
                            peer: shared.peer.clone(),
                        });
                    }
                    DataChannelEvent::OnMessage(message) => match reassembler.push(&message.data) {
                        Ok(None) => {}
                        Ok(Some(Frame::Ack { hash, ok })) => {
                            let waiter = shared.acks.lock().remove(&hash);
                            if let Some(w) = waiter {
                                let _ = w.send(ok);
                            }
                        }
                        Ok(Some(frame)) => {
                            let _ = shared.events.send(SessionEvent::Frame {
                                session: shared.id.clone(),
                                peer: shared.peer.clone(),
                                frame,
                            });
                        }
                        Err(e) => {
                            tracing::warn!(
                                session = shared.id,
                                error = e,
                                "bad data-channel frame"
                            );
                        }
                    },
                    DataChannelEvent::OnClose | DataChannelEvent::OnError => break,
                    _ => {}
                }
            }
            shared.report_down("the data channel closed");
        });
    }
}

struct Handler {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.shared.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(session = self.shared.id, %state, "peer connection state");
        match state {
            RTCPeerConnectionState::Failed => self.shared.report_down("ICE or DTLS failed"),
            RTCPeerConnectionState::Closed => self.shared.report_down("the connection closed"),
            _ => {}
        }
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        // Only the channel Jasper opens is read; anything else the peer opens is ignored.
        if channel.label().await.is_ok_and(|l| l == CHANNEL_LABEL) {
            self.shared.attach_channel(channel);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut sequence = SequenceExtender::default();
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    if packet.payload.is_empty() {
                        continue;
                    }
                    let frame = AudioFrame {
                        data: packet.payload.to_vec(),
                        duration_us: 0,
                        sequence: sequence.extend(packet.header.sequence_number),
                        rtp_timestamp: packet.header.timestamp,
                    };
                    let _ = shared.events.send(SessionEvent::Audio {
                        session: shared.id.clone(),
                        peer: shared.peer.clone(),
                        frame,
                    });
                }
            }
        });
    }
}

/// Extends 16-bit RTP sequence numbers across wrap-arounds.
#[derive(Default)]
struct SequenceExtender {
    last: Option<u64>,
}

impl SequenceExtender {
    fn extend(&mut self, seq: u16) -> u64 {
        let value = match self.last {
            None => u64::from(seq) + (1 << 16),
            Some(last) => {
                let base = last & !0xffff;
                let candidates = [base.wrapping_sub(1 << 16), base, base + (1 << 16)];
                candidates
                    .iter()
                    .map(|b| b + u64::from(seq))
                    .min_by_key(|v| v.abs_diff(last))
                    .expect("three candidates")
            }
        };
        self.last = Some(self.last.map_or(value, |l| l.max(value)));
        value
    }
}

/// A live session.
pub struct Session {
    pub id: String,
    pub peer: PublicKey,
    pub offerer: bool,
    pub started: Instant,
    pc: Arc<dyn PeerConnection>,
    shared: Arc<Shared>,
    /// Serialises frames: a frame's chunks must not interleave with another's.
    send_lock: tokio::sync::Mutex<()>,
    audio: Arc<TrackLocalStaticSample>,
    audio_ssrc: u32,
    audio_sender: OnceLock<Arc<dyn RtpSender>>,
    audio_payload_type: OnceLock<u8>,
    pub direct_sent: AtomicU64,
    pub direct_received: AtomicU64,
}

impl Session {
    /// Builds the peer connection with its audio track (and, for the offerer, the channel).
    async fn build(
        settings: &SessionSettings,
        id: String,
        peer: PublicKey,
        offerer: bool,
        events: mpsc::UnboundedSender<SessionEvent>,
    ) -> Result<Session, String> {
        let shared = Arc::new(Shared {
            id: id.clone(),
            peer: peer.clone(),
            events,
            gathered: watch::channel(false).0,
            open: watch::channel(false).0,
            channel: Mutex::new(None),
            acks: Mutex::new(HashMap::new()),
            down: Default::default(),
        });
        let opus = RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: "audio/opus".to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: OPUS_PAYLOAD_TYPE,
        };
        let mut media = MediaEngine::default();
        media
            .register_codec(opus.clone(), RtpCodecKind::Audio)
            .map_err(|e| format!("opus codec: {e}"))?;
        let registry = register_default_interceptors(Registry::new(), &mut media)
            .map_err(|e| format!("interceptors: {e}"))?;
        let mut config = RTCConfigurationBuilder::new();
        if !settings.stun_servers.is_empty() {
            config = config.with_ice_servers(vec![RTCIceServer {
                urls: settings.stun_servers.clone(),
                ..Default::default()
            }]);
        }
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config.build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                shared: shared.clone(),
            }))
            .with_udp_addrs(settings.bind_addrs.clone())
            .build()
            .await
            .map_err(|e| format!("cannot create a peer connection: {e}"))?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let audio_ssrc = rand::random::<u32>();
        let audio = Arc::new(
            TrackLocalStaticSample::new(
                Instant::now(),
                MediaStreamTrack::new(
                    format!("jasper-{id}"),
                    "audio".to_owned(),
                    "jasper-audio".to_owned(),
                    RtpCodecKind::Audio,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(audio_ssrc),
                            ..Default::default()
                        },
                        codec: opus.rtp_codec.clone(),
                        ..Default::default()
                    }],
                ),
            )
            .map_err(|e| format!("audio track: {e}"))?,
        );
        let session = Session {
            id,
            peer,
            offerer,
            started: Instant::now(),
            pc,
            shared,
            send_lock: tokio::sync::Mutex::new(()),
            audio,
            audio_ssrc,
            audio_sender: OnceLock::new(),
            audio_payload_type: OnceLock::new(),
            direct_sent: AtomicU64::new(0),
            direct_received: AtomicU64::new(0),
        };
        if offerer {
            session.add_audio().await?;
            let channel = session
                .pc
                .create_data_channel(CHANNEL_LABEL, None)
                .await
                .map_err(|e| format!("data channel: {e}"))?;
            session.shared.attach_channel(channel);
        }
        Ok(session)
    }

    async fn add_audio(&self) -> Result<(), String> {
        let sender = self
            .pc
            .add_track(self.audio.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| format!("audio transceiver: {e}"))?;
        let _ = self.audio_sender.set(sender);
        Ok(())
    }

    /// The local description once ICE gathering is complete (a complete SDP: no trickling).
    async fn gathered_sdp(&self) -> Result<String, String> {
        let mut gathered = self.shared.gathered.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), gathered.wait_for(|g| *g)).await;
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| "no local description".to_owned())
    }

    /// Starts a session as the offerer; returns it with the offer SDP to signal.
    pub async fn offer(
        settings: &SessionSettings,
        id: String,
        peer: PublicKey,
        events: mpsc::UnboundedSender<SessionEvent>,
    ) -> Result<(Session, String), String> {
        let session = Self::build(settings, id, peer, true, events).await?;
        let offer = session
            .pc
            .create_offer(None)
            .await
            .map_err(|e| format!("create offer: {e}"))?;
        session
            .pc
            .set_local_description(offer)
            .await
            .map_err(|e| format!("set local offer: {e}"))?;
        let sdp = session.gathered_sdp().await?;
        Ok((session, sdp))
    }

    /// Answers an offer; returns the session with the answer SDP to signal.
    pub async fn answer(
        settings: &SessionSettings,
        id: String,
        peer: PublicKey,
        offer_sdp: String,
        events: mpsc::UnboundedSender<SessionEvent>,
    ) -> Result<(Session, String), String> {
        let session = Self::build(settings, id, peer, false, events).await?;
        let offer = RTCSessionDescription::offer(offer_sdp).map_err(|e| format!("offer: {e}"))?;
        session
            .pc
            .set_remote_description(offer)
            .await
            .map_err(|e| format!("the offer does not apply: {e}"))?;
        // Added after the offer so it takes the offered audio transceiver (sendrecv).
        session.add_audio().await?;
        let answer = session
            .pc
            .create_answer(None)
            .await
            .map_err(|e| format!("create answer: {e}"))?;
        session
            .pc
            .set_local_description(answer)
            .await
            .map_err(|e| format!("set local answer: {e}"))?;
        let sdp = session.gathered_sdp().await?;
        Ok((session, sdp))
    }

    /// Applies the peer's answer (offerer side).
    pub async fn accept_answer(&self, sdp: String) -> Result<(), String> {
        let answer = RTCSessionDescription::answer(sdp).map_err(|e| format!("answer: {e}"))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| format!("the answer does not apply: {e}"))
    }

    pub async fn has_remote_description(&self) -> bool {
        self.pc.remote_description().await.is_some()
    }

    pub async fn add_candidate(
        &self,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u16>,
    ) -> Result<(), String> {
        self.pc
            .add_ice_candidate(webrtc::peer_connection::RTCIceCandidateInit {
                candidate,
                sdp_mid,
                sdp_mline_index,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("candidate: {e}"))
    }

    pub fn is_open(&self) -> bool {
        *self.shared.open.borrow() && !self.shared.down.load(Ordering::SeqCst)
    }

    /// Waits until the data channel is open, or `timeout`.
    pub async fn wait_open(&self, timeout: Duration) -> bool {
        let mut open = self.shared.open.subscribe();
        tokio::time::timeout(timeout, open.wait_for(|o| *o))
            .await
            .is_ok_and(|r| r.is_ok())
            && self.is_open()
    }

    /// Sends one frame.
    pub async fn send_frame(&self, frame: &Frame) -> Result<(), String> {
        let channel = self
            .shared
            .channel
            .lock()
            .clone()
            .ok_or("no data channel")?;
        if !self.is_open() {
            return Err("the data channel is not open".into());
        }
        let _order = self.send_lock.lock().await;
        for chunk in chunk_frame(frame) {
            channel
                .send(BytesMut::from(&chunk[..]))
                .await
                .map_err(|e| format!("data channel send: {e}"))?;
        }
        Ok(())
    }

    /// Sends a sealed packet and waits for the peer to say it applied it. `Ok(false)`: the
    /// peer refused it; `Err`: no answer in time or the channel is down (use the relays).
    pub async fn send_packet(
        &self,
        packet: jasper_core::protocol::Packet,
        timeout: Duration,
    ) -> Result<bool, String> {
        let hash = packet.hash.to_ascii_lowercase();
        let (tx, rx) = oneshot::channel();
        self.shared.acks.lock().insert(hash.clone(), tx);
        let result = async {
            self.send_frame(&Frame::Packet { packet }).await?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(ok)) => Ok(ok),
                Ok(Err(_)) => Err("the session went down".to_owned()),
                Err(_) => Err(format!("no acknowledgement within {timeout:?}")),
            }
        }
        .await;
        self.shared.acks.lock().remove(&hash);
        if result == Ok(true) {
            self.direct_sent.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Sends one Opus frame on the audio track.
    pub async fn send_audio(&self, data: Vec<u8>, duration: Duration) -> Result<(), String> {
        let payload_type = match self.audio_payload_type.get() {
            Some(pt) => *pt,
            None => {
                let sender = self.audio_sender.get().ok_or("no audio transceiver")?;
                let params = sender
                    .get_parameters()
                    .await
                    .map_err(|e| format!("audio parameters: {e}"))?;
                let pt = params
                    .rtp_parameters
                    .codecs
                    .first()
                    .map(|c| c.payload_type)
                    .ok_or("the peer negotiated no audio codec")?;
                *self.audio_payload_type.get_or_init(|| pt)
            }
        };
        self.audio
            .sample_writer(self.audio_ssrc, payload_type)
            .write_sample(&Sample {
                data: data.into(),
                duration,
                ..Sample::new(Instant::now())
            })
            .await
            .map_err(|e| format!("audio write: {e}"))
    }

    /// Closes the connection (idempotent); the engine is told through a `Down` event.
    pub async fn close(&self, why: &str) {
        self.shared.report_down(why);
        let _ = self.pc.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::SequenceExtender;

    #[test]
    fn sequence_numbers_extend_across_wraparound() {
        let mut x = SequenceExtender::default();
        let a = x.extend(65_534);
        assert_eq!(x.extend(65_535), a + 1);
        assert_eq!(x.extend(0), a + 2);
        assert_eq!(x.extend(1), a + 3);
        // A late packet from before the wrap stays before it.
        assert_eq!(x.extend(65_535), a + 1);
    }
}
