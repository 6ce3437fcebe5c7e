//! Relay roles and the anonymity invariant: no relay sees two keys of this client.
//!
//! Every role carries one key (RX and the `SENT` copies carry our own, each contact's TX
//! carries theirs). What a relay has seen it keeps knowing, so each (relay, key) is recorded
//! in `relay_exposure` before the first request that shows it, and a role may only go to a
//! relay that has seen no other key and holds no other role. When none is left, `strict`
//! (the default) leaves the role unfilled and its messages wait; `relaxed` shares a relay and
//! the report says which keys it links. docs/threat-model.md has the whole picture.

use std::collections::{BTreeMap, HashSet};

use parking_lot::Mutex;

use crate::engine::Engine;
use crate::error::Result;
use crate::model::*;
use crate::relays::selection;
use crate::store::{Db, now_ms};

/// What an assignment is for (the `role` column of `assignments` and `relay_exposure`): the
/// relay receives for a key or sends to it. Our own key has one of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Rx,
    Tx,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Rx => "rx",
            Role::Tx => "tx",
        }
    }

    fn other(self) -> Role {
        match self {
            Role::Rx => Role::Tx,
            Role::Tx => Role::Rx,
        }
    }
}

/// The last report published as an event, so that only changes are published.
#[derive(Default)]
pub(crate) struct AnonymityState {
    last: Mutex<Option<AnonymityReport>>,
    /// Held from reading the assignments to writing a new one: copies are sent concurrently,
    /// and two of them must not both take the same free relay.
    assigning: Mutex<()>,
}

impl Engine {
    /// Where this identity stands: roles, relays needed and known, what waits, what is shared.
    pub(crate) fn anonymity_report(&self) -> Result<AnonymityReport> {
        let db = &self.inner.db;
        let me = self.me()?.public_key();
        let own_key = me.to_text().to_owned();
        let own_fp = hex::encode(me.fingerprint());
        let relays = db.relays()?;
        let assignments = db.assignments()?;
        let contacts = db.contacts()?;
        let name_of = |fp: &str| {
            contacts
                .iter()
                .find(|c| c.fingerprint == fp)
                .map(|c| c.name.clone())
        };
        let key_of = |fp: &str, stored: &str| -> String {
            if fp == own_fp {
                own_key.clone()
            } else if !stored.is_empty() {
                stored.to_owned()
            } else if let Some(c) = contacts.iter().find(|c| c.fingerprint == fp) {
                c.key.clone()
            } else {
                db.key_for_fp(fp).ok().flatten().unwrap_or_default()
            }
        };
        let relay_of = |role: Role, fp: &str| {
            assignments
                .iter()
                .find(|(r, k, _)| r == role.as_str() && k == fp)
                .map(|(_, _, relay)| relay.clone())
        };

        // Roles: our RX, our own copies, every contact key written to (assigned or waiting).
        let mut roles = vec![
            RelayRole {
                kind: RelayRoleKind::Rx,
                key: own_key.clone(),
                name: None,
                relay: relay_of(Role::Rx, &own_fp),
            },
            RelayRole {
                kind: RelayRoleKind::TxSelf,
                key: own_key.clone(),
                name: None,
                relay: relay_of(Role::Tx, &own_fp),
            },
        ];
        let mut contact_fps: BTreeMap<String, String> = BTreeMap::new();
        for (role, fp, _) in &assignments {
            if role == Role::Tx.as_str() && *fp != own_fp {
                contact_fps.insert(fp.clone(), String::new());
            }
        }
        for (fp, key) in db.outbox_recipients()? {
            if fp != own_fp {
                contact_fps.insert(fp, key);
            }
        }
        for (fp, key) in &contact_fps {
            roles.push(RelayRole {
                kind: RelayRoleKind::TxContact,
                key: key_of(fp, key),
                name: name_of(fp),
                relay: relay_of(Role::Tx, fp),
            });
        }
        let waiting: Vec<RelayRole> = roles
            .iter()
            .filter(|r| r.relay.is_none())
            .cloned()
            .collect();

        // Shared: relays that have seen two or more distinct keys from us.
        let mut seen: BTreeMap<String, BTreeMap<String, (String, String)>> = BTreeMap::new();
        for (relay, fp, key, kind) in db.exposures()? {
            seen.entry(relay)
                .or_default()
                .entry(fp)
                .or_insert((key, kind));
        }
        let shared: Vec<SharedRelay> = seen
            .into_iter()
            .filter(|(_, keys)| keys.len() > 1)
            .map(|(relay, keys)| SharedRelay {
                relay,
                roles: keys
                    .into_iter()
                    .map(|(fp, (key, kind))| RelayRole {
                        kind: if fp == own_fp {
                            if kind == Role::Rx.as_str() {
                                RelayRoleKind::Rx
                            } else {
                                RelayRoleKind::TxSelf
                            }
                        } else {
                            RelayRoleKind::TxContact
                        },
                        key: key_of(&fp, &key),
                        name: name_of(&fp),
                        relay: None,
                    })
                    .collect(),
            })
            .collect();

        let relays_needed = roles.len() as u32;
        let relays_known = relays.len() as u32;
        let mode = self.inner.config.anonymity;
        let summary = if !shared.is_empty() {
            let links: Vec<String> = shared
                .iter()
                .map(|s| {
                    let who: Vec<String> = s.roles.iter().map(role_label).collect();
                    format!("{} sees {}", s.relay, who.join(" and "))
                })
                .collect();
            format!("shared relays link keys: {}", links.join("; "))
        } else if !waiting.is_empty() {
            let who: Vec<String> = waiting.iter().map(role_label).collect();
            format!(
                "waiting for more relays: {relays_needed} needed, {relays_known} known; \
                 without a relay of their own: {}",
                who.join(", ")
            )
        } else {
            format!(
                "private: every key has a relay of its own ({relays_needed} roles, {relays_known} relays)"
            )
        };
        Ok(AnonymityReport {
            mode,
            relays_needed,
            relays_known,
            roles,
            waiting,
            shared,
            witness: self.witness_relay(),
            summary,
        })
    }

    /// Publishes an `AnonymityChanged` event when the report differs from the last one.
    pub(crate) fn publish_anonymity(&self) {
        let Ok(report) = self.anonymity_report() else {
            return;
        };
        let mut last = self.inner.anonymity.last.lock();
        if last.as_ref() == Some(&report) {
            return;
        }
        *last = Some(report.clone());
        drop(last);
        let _ = self.commit(|tx| {
            Db::push_event(tx, &EventKind::AnonymityChanged { report })?;
            Ok(())
        });
    }

    /// The relay assigned to (`role`, key), choosing one if there is none, it was removed, or
    /// it is in `replace` (then it is excluded from the new choice). `None` when no relay may
    /// take the role without seeing a second key of ours (strict mode) or none is known.
    pub(crate) fn assigned(
        &self,
        role: Role,
        key_fp: &str,
        key: &str,
        replace: Option<&HashSet<String>>,
    ) -> Result<Option<String>> {
        let role_name = role.as_str();
        let db = &self.inner.db;
        let guard = self.inner.anonymity.assigning.lock();
        let rows = db.relays()?;
        let current = db.assignment(role_name, key_fp)?;
        if let Some(c) = &current {
            let still_known = rows.iter().any(|r| &r.info.address == c);
            let replacing = replace.is_some_and(|r| r.contains(c));
            if still_known && !replacing {
                return Ok(current);
            }
        }
        let all = db.assignments()?;
        // Relays holding another role now, or that have seen another key: not private.
        let mut taken: HashSet<String> = all
            .iter()
            .filter(|(r, k, _)| !(r == role_name && k == key_fp))
            .map(|(_, _, relay)| relay.clone())
            .collect();
        taken.extend(
            db.exposures()?
                .into_iter()
                .filter(|(_, fp, _, _)| fp != key_fp)
                .map(|(relay, ..)| relay),
        );
        let exclude = replace.cloned().unwrap_or_default();
        // A TX relay cannot witness its own copies, so the relay whose feed is being read is
        // left out while another private one exists (it has seen no key: the feed names none).
        let witness = (role == Role::Tx)
            .then(|| self.reading_witness())
            .flatten()
            .filter(|w| !exclude.contains(w));
        let private = witness
            .and_then(|w| {
                let mut also = exclude.clone();
                also.insert(w);
                selection::choose(&rows, &taken, &taken, &also, false)
            })
            .or_else(|| selection::choose(&rows, &taken, &taken, &exclude, false));
        let (choice, shared) = match private {
            Some(c) => (c, false),
            None if self.inner.config.anonymity == AnonymityMode::Relaxed => {
                let other_role = role.other().as_str();
                let forbidden: HashSet<String> = all
                    .iter()
                    .filter(|(r, _, _)| r == other_role)
                    .map(|(_, _, relay)| relay.clone())
                    .collect();
                match selection::choose(&rows, &taken, &forbidden, &exclude, true) {
                    Some(c) => (c, true),
                    None => return Ok(None),
                }
            }
            None => {
                // Strict: a relay that saw only this key stays better than none, even when
                // it was to be replaced (re-sending through it reveals nothing new).
                let keep = current.filter(|c| rows.iter().any(|r| &r.info.address == c));
                drop(guard);
                if keep.is_none() {
                    self.publish_anonymity();
                }
                return Ok(keep);
            }
        };
        // Recorded before the relay sees the key: a crash in between over-counts, never under.
        db.expose(&choice, key_fp, key, role_name)?;
        db.set_assignment(role_name, key_fp, &choice)?;
        drop(guard);
        if shared {
            tracing::warn!(
                role = role_name,
                relay = choice,
                "relay shared with another key of this identity (anonymity = relaxed)"
            );
        } else {
            tracing::info!(role = role_name, relay = choice, "relay assigned");
        }
        self.publish_anonymity();
        Ok(Some(choice))
    }

    /// The TX relay for a copy to `key`. This identity's own roles (RX, then its own copies'
    /// TX) are filled before any contact's: they are needed whatever it sends, so with too few
    /// relays it is a contact's copy that waits, never the identity's own roles, whichever copy
    /// happens to be sent first.
    pub(crate) fn tx_relay_for(&self, key_fp: &str, key: &str) -> Result<Option<String>> {
        let me = self.me()?.public_key();
        let own_fp = hex::encode(me.fingerprint());
        if key_fp != own_fp {
            self.assigned(Role::Rx, &own_fp, me.to_text(), None)?;
            self.assigned(Role::Tx, &own_fp, me.to_text(), None)?;
        }
        self.assigned(Role::Tx, key_fp, key, None)
    }

    /// Moves an assignment off a relay that keeps failing.
    pub(crate) fn maybe_move(&self, role: Role, key_fp: &str, key: &str, relay: &str) {
        let failing = self
            .inner
            .db
            .relays()
            .ok()
            .and_then(|rs| rs.into_iter().find(|r| r.info.address == relay))
            .is_some_and(|r| r.info.failures >= 3 && r.info.failures > r.info.successes / 2);
        if failing {
            let _ = self.inner.db.relay_suspect(
                relay,
                "lost",
                now_ms() + crate::engine::SUSPECT_FOR_MS / 6,
            );
            let exclude: HashSet<String> = [relay.to_owned()].into();
            let _ = self.assigned(role, key_fp, key, Some(&exclude));
        }
    }

    /// Why a copy waits: the counts, for the message's `failure` text.
    pub(crate) fn waiting_reason(&self) -> String {
        match self.anonymity_report() {
            Ok(r) => format!(
                "waiting for a relay no other key of this identity uses (anonymity = strict): \
                 {} relays needed, {} known",
                r.relays_needed, r.relays_known
            ),
            Err(_) => "waiting for a relay of its own (anonymity = strict)".into(),
        }
    }
}

fn role_label(r: &RelayRole) -> String {
    match r.kind {
        RelayRoleKind::Rx => "your key (receiving)".into(),
        RelayRoleKind::TxSelf => "your key (copies for your other logins)".into(),
        RelayRoleKind::TxContact => match &r.name {
            Some(n) => format!("{n}'s key"),
            None => crate::store::short_key(&r.key),
        },
    }
}
