//! The model types (`jasper-model`) and their `jasper.v1` mirrors, both ways: the functions at
//! the top turn model values into protobuf (what `jasperd` sends), [`from_pb`] turns protobuf
//! back into the model (what clients such as the CLI read, so its `--json` documents are the
//! model's serde form). Written once, next to the wire types, so both ends agree.

use jasper_model as model;

use crate::v1 as pb;

pub fn identity(i: model::IdentityInfo) -> pb::Identity {
    pb::Identity {
        public_key: i.public_key,
        fingerprint: i.fingerprint,
        key_store: i.key_store,
    }
}

pub fn contact(c: model::Contact) -> pb::Contact {
    pb::Contact {
        key: c.key,
        fingerprint: c.fingerprint,
        name: c.name,
        avatar: c.avatar,
        added_at: c.added_at,
    }
}

pub fn conversation(c: model::Conversation) -> pb::Conversation {
    pb::Conversation {
        id: c.id,
        kind: match c.kind {
            model::ConversationKind::Direct => pb::ConversationKind::Direct,
            model::ConversationKind::Group => pb::ConversationKind::Group,
        } as i32,
        channel_id: c.channel_id,
        name: c.name,
        members: c.members,
        admin: c.admin,
        created_at: c.created_at,
        unread: c.unread,
        last_activity_at: c.last_activity_at,
    }
}

pub fn message_state(s: model::MessageState) -> pb::MessageState {
    match s {
        model::MessageState::Queued => pb::MessageState::Queued,
        model::MessageState::Sent => pb::MessageState::Sent,
        model::MessageState::Visible => pb::MessageState::Visible,
        model::MessageState::Unconfirmed => pb::MessageState::Unconfirmed,
        model::MessageState::Waiting => pb::MessageState::Waiting,
        model::MessageState::Failed => pb::MessageState::Failed,
        model::MessageState::Received => pb::MessageState::Received,
    }
}

pub fn message(m: model::Message) -> pb::Message {
    pb::Message {
        id: m.id,
        conversation_id: m.conversation_id,
        sender: m.sender,
        sender_name: m.sender_name,
        outgoing: m.outgoing,
        kind: m.kind,
        content: m.content,
        timestamp: m.timestamp,
        state: message_state(m.state) as i32,
        failure: m.failure,
        edited: m.edited,
        deleted: m.deleted,
        reactions: m
            .reactions
            .into_iter()
            .map(|r| pb::Reaction {
                reactor: r.reactor,
                reaction: r.reaction,
            })
            .collect(),
        history: m.history,
        attachments: m.attachments.into_iter().map(attachment).collect(),
    }
}

pub fn attachment(a: model::Attachment) -> pb::Attachment {
    pb::Attachment {
        name: a.name,
        cid: a.cid,
        key: a.key,
        size: a.size,
        media_type: a.media_type,
        sha256: a.sha256,
        is_image: a.is_image,
    }
}

pub fn relay(r: model::RelayInfo) -> pb::Relay {
    pb::Relay {
        address: r.address,
        origin: r.origin,
        reported_load: r.reported_load,
        latency_ms: r.latency_ms,
        successes: r.successes,
        failures: r.failures,
        forged: r.forged,
        lost: r.lost,
        suspect: r.suspect,
        supports_wait: r.supports_wait,
        roles: r.roles,
    }
}

pub fn anonymity_mode(m: model::AnonymityMode) -> pb::AnonymityMode {
    match m {
        model::AnonymityMode::Strict => pb::AnonymityMode::Strict,
        model::AnonymityMode::Relaxed => pb::AnonymityMode::Relaxed,
    }
}

pub fn relay_role(r: model::RelayRole) -> pb::RelayRole {
    pb::RelayRole {
        kind: match r.kind {
            model::RelayRoleKind::Rx => pb::RelayRoleKind::Rx,
            model::RelayRoleKind::TxSelf => pb::RelayRoleKind::TxSelf,
            model::RelayRoleKind::TxContact => pb::RelayRoleKind::TxContact,
        } as i32,
        key: r.key,
        name: r.name,
        relay: r.relay,
    }
}

pub fn anonymity_report(r: model::AnonymityReport) -> pb::AnonymityReport {
    pb::AnonymityReport {
        mode: anonymity_mode(r.mode) as i32,
        relays_needed: r.relays_needed,
        relays_known: r.relays_known,
        roles: r.roles.into_iter().map(relay_role).collect(),
        waiting: r.waiting.into_iter().map(relay_role).collect(),
        shared: r
            .shared
            .into_iter()
            .map(|s| pb::SharedRelay {
                relay: s.relay,
                roles: s.roles.into_iter().map(relay_role).collect(),
            })
            .collect(),
        witness: r.witness,
        summary: r.summary,
    }
}

pub fn event(e: model::Event) -> pb::Event {
    use pb::event::Kind;
    let kind = match e.kind {
        model::EventKind::MessageReceived { message: m } => {
            Kind::MessageReceived(pb::MessageReceived {
                message: Some(message(m)),
            })
        }
        model::EventKind::MessageSent { message: m } => Kind::MessageSent(pb::MessageSent {
            message: Some(message(m)),
        }),
        model::EventKind::MessageUpdated { message: m } => {
            Kind::MessageUpdated(pb::MessageUpdated {
                message: Some(message(m)),
            })
        }
        model::EventKind::MessageStateChanged {
            conversation_id,
            message_id,
            state,
            failure,
        } => Kind::MessageStateChanged(pb::MessageStateChanged {
            conversation_id,
            message_id,
            state: message_state(state) as i32,
            failure,
        }),
        model::EventKind::ConversationUpdated { conversation: c } => {
            Kind::ConversationUpdated(pb::ConversationUpdated {
                conversation: Some(conversation(c)),
            })
        }
        model::EventKind::ContactAdded { contact: c } => Kind::ContactAdded(pb::ContactAdded {
            contact: Some(contact(c)),
        }),
        model::EventKind::IdentityChanged { identity: i } => {
            Kind::IdentityChanged(pb::IdentityChanged {
                identity: Some(identity(i)),
            })
        }
        model::EventKind::RelayDiscovered { address } => {
            Kind::RelayDiscovered(pb::RelayDiscovered { address })
        }
        model::EventKind::TransparentChanged { status } => {
            Kind::TransparentChanged(pb::TransparentChanged {
                status: Some(transparent_status(status)),
            })
        }
        model::EventKind::CallChanged { call: c } => Kind::CallChanged(pb::CallChanged {
            call: Some(call(c)),
        }),
        model::EventKind::AnonymityChanged { report } => {
            Kind::AnonymityChanged(pb::AnonymityChanged {
                report: Some(anonymity_report(report)),
            })
        }
    };
    pb::Event {
        seq: e.seq,
        at: e.at,
        kind: Some(kind),
    }
}

pub fn transparent_status(t: model::TransparentStatus) -> pb::TransparentStatus {
    pb::TransparentStatus {
        contact: t.contact,
        contact_name: t.contact_name,
        local_enabled: t.local_enabled,
        peer_enabled: t.peer_enabled,
        state: match t.state {
            model::TransparentState::Off => pb::TransparentState::Off,
            model::TransparentState::WaitingForPeer => pb::TransparentState::WaitingForPeer,
            model::TransparentState::Idle => pb::TransparentState::Idle,
            model::TransparentState::Connecting => pb::TransparentState::Connecting,
            model::TransparentState::Connected => pb::TransparentState::Connected,
        } as i32,
        session_id: t.session_id,
        direct_sent: t.direct_sent,
        direct_received: t.direct_received,
    }
}

pub fn call(c: model::CallInfo) -> pb::Call {
    pb::Call {
        id: c.id,
        contact: c.contact,
        contact_name: c.contact_name,
        outgoing: c.outgoing,
        state: match c.state {
            model::CallState::Ringing => pb::CallState::Ringing,
            model::CallState::Active => pb::CallState::Active,
            model::CallState::Ended => pb::CallState::Ended,
        } as i32,
        end_reason: c.end_reason,
        started_at: c.started_at,
        answered_at: c.answered_at,
        ended_at: c.ended_at,
    }
}

pub fn audio_frame(f: model::AudioFrame) -> pb::AudioFrame {
    pb::AudioFrame {
        opus: f.data,
        duration_us: f.duration_us,
        sequence: f.sequence,
        rtp_timestamp: f.rtp_timestamp,
    }
}

/// A response from a newer or broken daemon lacked a field this client needs.
#[derive(Debug, thiserror::Error)]
#[error("the daemon's answer lacks {0}")]
pub struct Missing(pub &'static str);

/// protobuf → model, for clients (the CLI's JSON output).
pub mod from_pb {
    use super::*;

    pub fn identity(i: pb::Identity) -> model::IdentityInfo {
        model::IdentityInfo {
            public_key: i.public_key,
            fingerprint: i.fingerprint,
            key_store: i.key_store,
        }
    }

    pub fn transparent_status(t: pb::TransparentStatus) -> model::TransparentStatus {
        model::TransparentStatus {
            state: match t.state() {
                pb::TransparentState::WaitingForPeer => model::TransparentState::WaitingForPeer,
                pb::TransparentState::Idle => model::TransparentState::Idle,
                pb::TransparentState::Connecting => model::TransparentState::Connecting,
                pb::TransparentState::Connected => model::TransparentState::Connected,
                pb::TransparentState::Off | pb::TransparentState::Unspecified => {
                    model::TransparentState::Off
                }
            },
            contact: t.contact,
            contact_name: t.contact_name,
            local_enabled: t.local_enabled,
            peer_enabled: t.peer_enabled,
            session_id: t.session_id,
            direct_sent: t.direct_sent,
            direct_received: t.direct_received,
        }
    }

    pub fn call(c: pb::Call) -> model::CallInfo {
        model::CallInfo {
            state: match c.state() {
                pb::CallState::Ringing => model::CallState::Ringing,
                pb::CallState::Active => model::CallState::Active,
                pb::CallState::Ended | pb::CallState::Unspecified => model::CallState::Ended,
            },
            id: c.id,
            contact: c.contact,
            contact_name: c.contact_name,
            outgoing: c.outgoing,
            end_reason: c.end_reason,
            started_at: c.started_at,
            answered_at: c.answered_at,
            ended_at: c.ended_at,
        }
    }

    pub fn contact(c: pb::Contact) -> model::Contact {
        model::Contact {
            key: c.key,
            fingerprint: c.fingerprint,
            name: c.name,
            avatar: c.avatar,
            added_at: c.added_at,
        }
    }

    pub fn conversation(c: pb::Conversation) -> model::Conversation {
        model::Conversation {
            id: c.id,
            kind: match c.kind() {
                pb::ConversationKind::Group => model::ConversationKind::Group,
                pb::ConversationKind::Direct | pb::ConversationKind::Unspecified => {
                    model::ConversationKind::Direct
                }
            },
            channel_id: c.channel_id,
            name: c.name,
            members: c.members,
            admin: c.admin,
            created_at: c.created_at,
            unread: c.unread,
            last_activity_at: c.last_activity_at,
        }
    }

    pub fn message_state(s: pb::MessageState) -> model::MessageState {
        match s {
            pb::MessageState::Queued | pb::MessageState::Unspecified => model::MessageState::Queued,
            pb::MessageState::Sent => model::MessageState::Sent,
            pb::MessageState::Visible => model::MessageState::Visible,
            pb::MessageState::Unconfirmed => model::MessageState::Unconfirmed,
            pb::MessageState::Waiting => model::MessageState::Waiting,
            pb::MessageState::Failed => model::MessageState::Failed,
            pb::MessageState::Received => model::MessageState::Received,
        }
    }

    pub fn message(m: pb::Message) -> model::Message {
        let state = message_state(m.state());
        model::Message {
            id: m.id,
            conversation_id: m.conversation_id,
            sender: m.sender,
            sender_name: m.sender_name,
            outgoing: m.outgoing,
            kind: m.kind,
            content: m.content,
            timestamp: m.timestamp,
            state,
            failure: m.failure,
            edited: m.edited,
            deleted: m.deleted,
            reactions: m
                .reactions
                .into_iter()
                .map(|r| model::Reaction {
                    reactor: r.reactor,
                    reaction: r.reaction,
                })
                .collect(),
            history: m.history,
            attachments: m
                .attachments
                .into_iter()
                .map(|a| model::Attachment {
                    name: a.name,
                    cid: a.cid,
                    key: a.key,
                    size: a.size,
                    media_type: a.media_type,
                    sha256: a.sha256,
                    is_image: a.is_image,
                })
                .collect(),
        }
    }

    pub fn relay(r: pb::Relay) -> model::RelayInfo {
        model::RelayInfo {
            address: r.address,
            origin: r.origin,
            reported_load: r.reported_load,
            latency_ms: r.latency_ms,
            successes: r.successes,
            failures: r.failures,
            forged: r.forged,
            lost: r.lost,
            suspect: r.suspect,
            supports_wait: r.supports_wait,
            roles: r.roles,
        }
    }

    pub fn anonymity_mode(m: pb::AnonymityMode) -> model::AnonymityMode {
        match m {
            pb::AnonymityMode::Relaxed => model::AnonymityMode::Relaxed,
            pb::AnonymityMode::Strict | pb::AnonymityMode::Unspecified => {
                model::AnonymityMode::Strict
            }
        }
    }

    pub fn relay_role(r: pb::RelayRole) -> model::RelayRole {
        model::RelayRole {
            kind: match r.kind() {
                pb::RelayRoleKind::TxSelf => model::RelayRoleKind::TxSelf,
                pb::RelayRoleKind::TxContact => model::RelayRoleKind::TxContact,
                pb::RelayRoleKind::Rx | pb::RelayRoleKind::Unspecified => model::RelayRoleKind::Rx,
            },
            key: r.key,
            name: r.name,
            relay: r.relay,
        }
    }

    pub fn anonymity_report(r: pb::AnonymityReport) -> model::AnonymityReport {
        model::AnonymityReport {
            mode: anonymity_mode(r.mode()),
            relays_needed: r.relays_needed,
            relays_known: r.relays_known,
            roles: r.roles.into_iter().map(relay_role).collect(),
            waiting: r.waiting.into_iter().map(relay_role).collect(),
            shared: r
                .shared
                .into_iter()
                .map(|s| model::SharedRelay {
                    relay: s.relay,
                    roles: s.roles.into_iter().map(relay_role).collect(),
                })
                .collect(),
            witness: r.witness,
            summary: r.summary,
        }
    }

    pub fn event(e: pb::Event) -> Result<model::Event, Missing> {
        use pb::event::Kind;
        let kind = match e.kind.ok_or(Missing("the event's kind"))? {
            Kind::MessageReceived(k) => model::EventKind::MessageReceived {
                message: message(k.message.ok_or(Missing("the event's message"))?),
            },
            Kind::MessageSent(k) => model::EventKind::MessageSent {
                message: message(k.message.ok_or(Missing("the event's message"))?),
            },
            Kind::MessageUpdated(k) => model::EventKind::MessageUpdated {
                message: message(k.message.ok_or(Missing("the event's message"))?),
            },
            Kind::MessageStateChanged(k) => {
                let state = message_state(k.state());
                model::EventKind::MessageStateChanged {
                    conversation_id: k.conversation_id,
                    message_id: k.message_id,
                    state,
                    failure: k.failure,
                }
            }
            Kind::ConversationUpdated(k) => model::EventKind::ConversationUpdated {
                conversation: conversation(
                    k.conversation.ok_or(Missing("the event's conversation"))?,
                ),
            },
            Kind::ContactAdded(k) => model::EventKind::ContactAdded {
                contact: contact(k.contact.ok_or(Missing("the event's contact"))?),
            },
            Kind::IdentityChanged(k) => model::EventKind::IdentityChanged {
                identity: identity(k.identity.ok_or(Missing("the event's identity"))?),
            },
            Kind::RelayDiscovered(k) => model::EventKind::RelayDiscovered { address: k.address },
            Kind::TransparentChanged(k) => model::EventKind::TransparentChanged {
                status: transparent_status(k.status.ok_or(Missing("the event's status"))?),
            },
            Kind::CallChanged(k) => model::EventKind::CallChanged {
                call: call(k.call.ok_or(Missing("the event's call"))?),
            },
            Kind::AnonymityChanged(k) => model::EventKind::AnonymityChanged {
                report: anonymity_report(k.report.ok_or(Missing("the event's report"))?),
            },
        };
        Ok(model::Event {
            seq: e.seq,
            at: e.at,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_message() -> model::Message {
        model::Message {
            id: "5d1c".into(),
            conversation_id: 3,
            sender: "KEY".into(),
            sender_name: Some("alice".into()),
            outgoing: false,
            kind: "MESSAGE".into(),
            content: "hi".into(),
            timestamp: "2026-01-01T00:00:00Z".into(),
            state: model::MessageState::Visible,
            failure: None,
            edited: true,
            deleted: false,
            reactions: vec![model::Reaction {
                reactor: "KEY2".into(),
                reaction: ":+1:".into(),
            }],
            history: vec!["hello".into()],
            attachments: vec![model::Attachment {
                name: "a.png".into(),
                cid: "bafk".into(),
                key: "AAEC".into(),
                size: 3,
                media_type: "image/png".into(),
                sha256: "00".into(),
                is_image: true,
            }],
        }
    }

    fn sample_report() -> model::AnonymityReport {
        let role = |kind, name: Option<&str>, relay: Option<&str>| model::RelayRole {
            kind,
            key: "KEY".into(),
            name: name.map(Into::into),
            relay: relay.map(Into::into),
        };
        model::AnonymityReport {
            mode: model::AnonymityMode::Relaxed,
            relays_needed: 3,
            relays_known: 2,
            roles: vec![
                role(model::RelayRoleKind::Rx, None, Some("127.0.0.1:1")),
                role(model::RelayRoleKind::TxSelf, None, Some("127.0.0.1:2")),
                role(model::RelayRoleKind::TxContact, Some("bob"), None),
            ],
            waiting: vec![role(model::RelayRoleKind::TxContact, Some("bob"), None)],
            shared: vec![model::SharedRelay {
                relay: "127.0.0.1:2".into(),
                roles: vec![
                    role(model::RelayRoleKind::TxSelf, None, None),
                    role(model::RelayRoleKind::TxContact, None, None),
                ],
            }],
            witness: Some("127.0.0.1:1".into()),
            summary: "shared relays link keys".into(),
        }
    }

    #[test]
    fn the_anonymity_report_round_trips_and_keeps_its_json_shape() {
        for mode in [model::AnonymityMode::Strict, model::AnonymityMode::Relaxed] {
            let report = model::AnonymityReport {
                mode,
                ..sample_report()
            };
            assert_eq!(
                from_pb::anonymity_report(anonymity_report(report.clone())),
                report
            );
        }
        let json = serde_json::to_value(sample_report()).unwrap();
        assert_eq!(json["mode"], "relaxed");
        assert_eq!(json["roles"][0]["kind"], "rx");
        assert_eq!(json["roles"][1]["kind"], "tx_self");
        assert_eq!(json["roles"][2]["kind"], "tx_contact");
        assert_eq!(json["roles"][2]["name"], "bob");
        assert!(json["roles"][2]["relay"].is_null());
        assert!(json["roles"][0]["name"].is_null());
        assert_eq!(json["shared"][0]["relay"], "127.0.0.1:2");
        assert_eq!(json["witness"], "127.0.0.1:1");
        for state in [
            model::MessageState::Unconfirmed,
            model::MessageState::Waiting,
        ] {
            assert_eq!(from_pb::message_state(message_state(state.clone())), state);
        }
    }

    #[test]
    fn events_round_trip_through_protobuf() {
        let conv = model::Conversation {
            id: 4,
            kind: model::ConversationKind::Group,
            channel_id: "c".into(),
            name: "team".into(),
            members: vec!["a".into(), "b".into()],
            admin: Some("a".into()),
            created_at: 7,
            unread: 3,
            last_activity_at: 9,
        };
        let kinds = vec![
            model::EventKind::MessageReceived {
                message: sample_message(),
            },
            model::EventKind::MessageSent {
                message: sample_message(),
            },
            model::EventKind::MessageUpdated {
                message: sample_message(),
            },
            model::EventKind::MessageStateChanged {
                conversation_id: 3,
                message_id: "m".into(),
                state: model::MessageState::Failed,
                failure: Some("no relay".into()),
            },
            model::EventKind::ConversationUpdated { conversation: conv },
            model::EventKind::ContactAdded {
                contact: model::Contact {
                    key: "k".into(),
                    fingerprint: "f".into(),
                    name: "n".into(),
                    avatar: None,
                    added_at: 1,
                },
            },
            model::EventKind::IdentityChanged {
                identity: model::IdentityInfo {
                    public_key: "k".into(),
                    fingerprint: "f".into(),
                    key_store: "keyutils".into(),
                },
            },
            model::EventKind::RelayDiscovered {
                address: "127.0.0.1:1".into(),
            },
            model::EventKind::TransparentChanged {
                status: model::TransparentStatus {
                    contact: "k".into(),
                    contact_name: Some("bob".into()),
                    local_enabled: true,
                    peer_enabled: false,
                    state: model::TransparentState::WaitingForPeer,
                    session_id: None,
                    direct_sent: 3,
                    direct_received: 4,
                },
            },
            model::EventKind::CallChanged {
                call: model::CallInfo {
                    id: "c".into(),
                    contact: "k".into(),
                    contact_name: None,
                    outgoing: true,
                    state: model::CallState::Ended,
                    end_reason: Some("busy".into()),
                    started_at: 1,
                    answered_at: Some(2),
                    ended_at: Some(3),
                },
            },
            model::EventKind::AnonymityChanged {
                report: sample_report(),
            },
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let e = model::Event {
                seq: i as u64 + 1,
                at: 1000,
                kind,
            };
            assert_eq!(from_pb::event(event(e.clone())).unwrap(), e);
        }
    }
}
