//! Contacts: the keys this identity knows by name.

use jasper_core::PublicKey;

use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::model::*;
use crate::store::{Db, now_ms};

/// `engine.contacts()`: add, list and resolve contacts.
#[derive(Clone)]
pub struct Contacts {
    pub(crate) engine: Engine,
}

impl Contacts {
    pub async fn add(&self, key: &str, name: &str, avatar: Option<String>) -> Result<Contact> {
        let (key, name) = (key.to_owned(), name.to_owned());
        self.engine
            .off_runtime(move |engine| engine.contacts().add_blocking(&key, &name, avatar))
            .await
    }

    fn add_blocking(&self, key: &str, name: &str, avatar: Option<String>) -> Result<Contact> {
        let key =
            PublicKey::from_text(key.trim()).map_err(|e| EngineError::InvalidKey(e.to_string()))?;
        let name = name.trim();
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(EngineError::InvalidArgument(
                "a contact name is 1-200 printable characters".into(),
            ));
        }
        if let Some(existing) = self.engine.inner.db.contact_by_name(name)?
            && existing.key != key.to_text()
        {
            return Err(EngineError::NameTaken(name.to_owned()));
        }
        let contact = Contact {
            key: key.to_text().to_owned(),
            fingerprint: hex::encode(key.fingerprint()),
            name: name.to_owned(),
            avatar,
            added_at: now_ms(),
        };
        self.engine.commit(|tx| {
            Db::upsert_contact(tx, &contact)?;
            Db::push_event(
                tx,
                &EventKind::ContactAdded {
                    contact: contact.clone(),
                },
            )?;
            Ok(())
        })?;
        Ok(contact)
    }

    pub fn list(&self) -> Result<Vec<Contact>> {
        self.engine.inner.db.contacts()
    }

    /// A contact by name, or any valid key (known or not), parsed once here: callers pass the
    /// key on as a [`PublicKey`] (`key.to_text()` is its canonical text).
    pub fn resolve_key(&self, name_or_key: &str) -> Result<PublicKey> {
        if let Some(c) = self.engine.inner.db.contact_by_name(name_or_key)? {
            return parse_key(&c.key);
        }
        match PublicKey::from_text(name_or_key.trim()) {
            Ok(k) => Ok(k),
            Err(_) if name_or_key.len() > 200 => Err(EngineError::InvalidKey(format!(
                "{name_or_key:.40}... is not a contact name nor a valid key"
            ))),
            Err(_) => Err(EngineError::UnknownContact(name_or_key.to_owned())),
        }
    }
}

/// A key from the store or from a peer's message; `InvalidKey` when it does not parse.
pub(crate) fn parse_key(text: &str) -> Result<PublicKey> {
    PublicKey::from_text(text).map_err(|e| EngineError::InvalidKey(e.to_string()))
}

/// [`parse_key`] for each.
pub(crate) fn parse_keys(texts: &[String]) -> Result<Vec<PublicKey>> {
    texts.iter().map(|k| parse_key(k)).collect()
}
