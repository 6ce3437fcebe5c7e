//! What the engine hands to its shells (gRPC daemon, CLI, mobile bindings): plain data. The
//! types live in `jasper-model`, so clients of the daemon have them without the engine; they are
//! re-exported here so `crate::model::X` and `jasper_engine::X` name them as before.

pub use jasper_model::*;

/// An attachment link parsed from a message's content, as the model shows it. A plain function
/// and not `From`: neither type is this crate's (the orphan rule).
pub(crate) fn attachment_from_link(a: &jasper_core::attachment::Attachment) -> Attachment {
    Attachment {
        name: a.name.clone(),
        cid: a.cid.clone(),
        key: a.key.to_base64url(),
        size: a.size,
        media_type: a.media_type.clone(),
        sha256: hex::encode(a.sha256),
        is_image: a.is_image,
    }
}
