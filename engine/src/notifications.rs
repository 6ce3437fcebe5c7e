//! Desktop notifications (freedesktop, through notify-rust) for incoming messages and calls.

use crate::engine::Engine;
use crate::model::Message;
use crate::store;

impl Engine {
    pub(crate) fn notify_desktop(&self, message: &Message) {
        if message.outgoing {
            return;
        }
        let title = message
            .sender_name
            .clone()
            .unwrap_or_else(|| store::short_key(&message.sender));
        let body: String = message.content.chars().take(200).collect();
        self.notify_text(&title, &body);
    }

    /// Raises a desktop notification when enabled and a session bus exists.
    pub(crate) fn notify_text(&self, title: &str, body: &str) {
        let wanted = self.inner.config.notifications
            && std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some();
        #[cfg(feature = "notifications")]
        if wanted {
            let (title, body) = (title.to_owned(), body.to_owned());
            tokio::task::spawn_blocking(move || {
                if let Err(e) = notify_rust::Notification::new()
                    .appname("Jasper")
                    .summary(&title)
                    .body(&body)
                    .show()
                {
                    tracing::debug!(error = %e, "desktop notification failed");
                }
            });
        }
        #[cfg(not(feature = "notifications"))]
        let _ = (wanted, title, body);
    }
}
