//! What `jasper chat` shows and what a key press asks of the daemon: the state of the screen,
//! changed only by [`App::apply`] (what the daemon reports) and [`App::key`] (what the user
//! types). No I/O here, so every rule of the frontend is a plain function of its inputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jasper_client::ApiError;
use jasper_model::{
    CallInfo, CallState, Conversation, ConversationKind, Event, EventKind, IdentityInfo, Message,
};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// How many messages a page of history asks for.
pub const PAGE: u32 = 100;

/// What the frontend asks of the daemon (carried out by `daemon::Worker`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The newest page of a conversation's history (shown when it arrives).
    Open {
        conversation_id: i64,
    },
    /// The page before `before`.
    Older {
        conversation_id: i64,
        before: String,
    },
    /// A conversation by name, key or `#id` (a DM is created for a key), then opened.
    Resolve {
        target: String,
    },
    Send {
        conversation_id: i64,
        text: String,
        attach: Option<PathBuf>,
    },
    Edit {
        id: String,
        text: String,
    },
    Delete {
        id: String,
    },
    React {
        id: String,
        reaction: String,
    },
    /// Moves the read marker past every message stored: asked while the conversation is
    /// shown, so whatever arrives meanwhile is on screen a moment later anyway. (A `through`
    /// message would leave one that arrived late with an older timestamp unread for ever.)
    MarkRead {
        conversation_id: i64,
    },
    /// A conversation's current figures (unread count, last activity).
    Refresh {
        conversation_id: i64,
    },
    Call {
        contact: String,
    },
    Accept {
        call_id: String,
    },
    Reject {
        call_id: String,
    },
    HangUp {
        call_id: String,
    },
    /// Downloads attachment `index` of message `id` into the file `out`.
    Save {
        id: String,
        index: u32,
        out: PathBuf,
    },
}

/// The connection to the daemon, as the status line shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Up,
    /// Lost or never made; retried until the frontend quits.
    Down(String),
}

/// What the daemon side reports to the frontend.
#[derive(Debug, Clone)]
pub enum Update {
    Link(Link),
    /// Everything shown outside a conversation's history, loaded on every (re)connection.
    Snapshot {
        identity: Option<IdentityInfo>,
        conversations: Vec<Conversation>,
        calls: Vec<CallInfo>,
        anonymity: Option<String>,
    },
    History {
        conversation_id: i64,
        messages: Vec<Message>,
        before: Option<String>,
        /// A page before what is shown (else the newest page, replacing it).
        older: bool,
    },
    /// A conversation `Resolve` found (or created): open it.
    Resolved(Conversation),
    Conversation(Conversation),
    Event(Event),
    /// The message a send, edit, deletion or reaction produced.
    Message(Message),
    Call(CallInfo),
    Notice(String),
    Failed {
        request: Request,
        error: ApiError,
    },
}

/// One line of feedback under the compose line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    None,
    Notice(String),
    Error(String),
}

/// The screen's state.
#[derive(Debug)]
pub struct App {
    pub link: Link,
    pub identity: Option<IdentityInfo>,
    /// Newest activity first.
    pub conversations: Vec<Conversation>,
    /// The conversation shown, by id.
    pub open: Option<i64>,
    /// The open conversation's loaded history, oldest first.
    pub messages: Vec<Message>,
    /// Cursor of the page before the oldest loaded message, if there is one.
    pub before: Option<String>,
    /// Lines scrolled up from the newest message.
    pub scroll: u16,
    /// The compose line and the cursor in it (in characters).
    pub input: String,
    pub cursor: usize,
    pub status: Status,
    pub calls: HashMap<String, CallInfo>,
    pub anonymity: Option<String>,
    /// Last event seq applied (shown, so a user can see the stream is live).
    pub seq: u64,
    pub show_help: bool,
    pub quit: bool,
    /// Message labels (`[1]` = newest) as they were when the user began typing a command, so a
    /// message arriving meanwhile never shifts what `/react 1` means.
    labels: Vec<String>,
    /// The label map is frozen while the compose line holds a command.
    labels_frozen: bool,
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    pub fn new() -> Self {
        Self {
            link: Link::Connecting,
            identity: None,
            conversations: Vec::new(),
            open: None,
            messages: Vec::new(),
            before: None,
            scroll: 0,
            input: String::new(),
            cursor: 0,
            status: Status::None,
            calls: HashMap::new(),
            anonymity: None,
            seq: 0,
            show_help: false,
            quit: false,
            labels: Vec::new(),
            labels_frozen: false,
        }
    }

    pub fn open_conversation(&self) -> Option<&Conversation> {
        let id = self.open?;
        self.conversations.iter().find(|c| c.id == id)
    }

    /// The label (`1` = newest) of a message, if it has one in the current label map.
    pub fn label_of(&self, id: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == id).map(|i| i + 1)
    }

    /// The live calls (ringing or active), incoming ringing ones first.
    pub fn live_calls(&self) -> Vec<&CallInfo> {
        let mut calls: Vec<&CallInfo> = self
            .calls
            .values()
            .filter(|c| c.state != CallState::Ended)
            .collect();
        calls.sort_by_key(|c| (c.state != CallState::Ringing || c.outgoing, c.started_at));
        calls
    }

    // ---- what the daemon reports ----------------------------------------------------------

    /// Applies an update; returns what it makes the frontend ask for next.
    pub fn apply(&mut self, update: Update) -> Vec<Request> {
        let mut asks = Vec::new();
        match update {
            Update::Link(link) => {
                if let Link::Down(reason) = &link {
                    self.status = Status::Error(format!("daemon unreachable: {reason}"));
                } else if matches!(link, Link::Up)
                    && matches!(&self.status, Status::Error(e) if e.starts_with("daemon unreachable"))
                {
                    self.status = Status::Notice("reconnected".into());
                }
                self.link = link;
            }
            Update::Snapshot {
                identity,
                conversations,
                calls,
                anonymity,
            } => {
                if identity.is_none() {
                    self.status = Status::Error(
                        "this daemon has no identity yet: run `jasper identity create`".into(),
                    );
                }
                self.identity = identity;
                self.conversations = conversations;
                self.sort_conversations();
                self.calls = calls.into_iter().map(|c| (c.id.clone(), c)).collect();
                self.anonymity = anonymity;
                // What was open stays open (and is reloaded: the daemon may have restarted);
                // else the most recent conversation opens.
                let open = self
                    .open
                    .filter(|id| self.conversations.iter().any(|c| c.id == *id))
                    .or_else(|| self.conversations.first().map(|c| c.id));
                if let Some(id) = open {
                    if self.open != Some(id) {
                        self.show(id);
                    }
                    asks.push(Request::Open {
                        conversation_id: id,
                    });
                }
            }
            Update::History {
                conversation_id,
                messages,
                before,
                older,
            } => {
                if self.open == Some(conversation_id) {
                    if older {
                        for m in messages {
                            self.upsert(m);
                        }
                        self.before = before;
                    } else {
                        // The newest page replaces what is shown, keeping older pages loaded
                        // before (a reload after reconnecting must not drop them).
                        let oldest_new = messages.first().map(order_key);
                        self.messages
                            .retain(|m| oldest_new.as_ref().is_some_and(|k| order_key(m) < *k));
                        let kept_older_pages = !self.messages.is_empty();
                        for m in messages {
                            self.upsert(m);
                        }
                        if !kept_older_pages {
                            self.before = before;
                        }
                    }
                    self.relabel();
                    asks.extend(self.mark_read());
                }
            }
            Update::Resolved(conversation) => {
                let id = conversation.id;
                let _ = self.put_conversation(conversation);
                self.show(id);
                asks.push(Request::Open {
                    conversation_id: id,
                });
            }
            Update::Conversation(conversation) => asks.extend(self.put_conversation(conversation)),
            Update::Event(event) => {
                self.seq = self.seq.max(event.seq);
                asks.extend(self.event(event.kind));
            }
            Update::Message(message) => {
                if self.open == Some(message.conversation_id) {
                    self.upsert(message);
                    self.relabel();
                }
            }
            Update::Call(call) => {
                self.calls.insert(call.id.clone(), call);
            }
            Update::Notice(text) => self.status = Status::Notice(text),
            Update::Failed { request, error } => {
                // A message that could not be handed to the daemon goes back to the compose
                // line, so nothing typed is lost.
                if let Request::Send { text, attach, .. } = &request
                    && self.input.is_empty()
                {
                    self.input = match attach {
                        Some(path) => format!("/attach {} {text}", quote(path)),
                        None => text.clone(),
                    }
                    .trim_end()
                    .to_owned();
                    self.cursor = self.input.chars().count();
                }
                self.status = Status::Error(format!("{}: {}", error.code, error.message));
            }
        }
        asks
    }

    fn event(&mut self, kind: EventKind) -> Vec<Request> {
        let mut asks = Vec::new();
        match kind {
            EventKind::MessageReceived { message }
            | EventKind::MessageSent { message }
            | EventKind::MessageUpdated { message } => {
                // The new counts and order follow as ConversationUpdated (the daemon keeps
                // the read marker); the open conversation is then marked read.
                let conversation_id = message.conversation_id;
                if self.open == Some(conversation_id) {
                    self.upsert(message);
                    if !self.labels_frozen {
                        self.relabel();
                    }
                }
            }
            EventKind::MessageStateChanged {
                conversation_id,
                message_id,
                state,
                failure,
            } => {
                if self.open == Some(conversation_id)
                    && let Some(m) = self.messages.iter_mut().find(|m| m.id == message_id)
                {
                    m.state = state;
                    m.failure = failure;
                }
            }
            EventKind::ConversationUpdated { conversation } => {
                asks.extend(self.put_conversation(conversation))
            }
            EventKind::ContactAdded { .. } => {
                // A contact's name is every DM's name: refresh them all.
                for c in &self.conversations {
                    asks.push(Request::Refresh {
                        conversation_id: c.id,
                    });
                }
            }
            EventKind::IdentityChanged { identity } => {
                if matches!(&self.status, Status::Error(e) if e.contains("no identity")) {
                    self.status = Status::None;
                }
                self.identity = Some(identity);
            }
            // The status line shows live calls (an incoming one with how to answer it).
            EventKind::CallChanged { call } => {
                self.calls.insert(call.id.clone(), call);
            }
            EventKind::AnonymityChanged { report } => self.anonymity = Some(report.summary),
            EventKind::RelayDiscovered { .. } | EventKind::TransparentChanged { .. } => {}
        }
        asks
    }

    /// Stores a conversation's new figures; marks it read if it is the one shown.
    fn put_conversation(&mut self, conversation: Conversation) -> Option<Request> {
        match self
            .conversations
            .iter_mut()
            .find(|c| c.id == conversation.id)
        {
            Some(c) => *c = conversation,
            None => self.conversations.push(conversation),
        }
        self.sort_conversations();
        if self.open.is_none()
            && let Some(c) = self.conversations.first()
        {
            let id = c.id;
            self.show(id);
            return Some(Request::Open {
                conversation_id: id,
            });
        }
        self.mark_read()
    }

    fn sort_conversations(&mut self) {
        self.conversations.sort_by(|a, b| {
            b.last_activity_at
                .cmp(&a.last_activity_at)
                .then(a.id.cmp(&b.id))
        });
    }

    fn upsert(&mut self, message: Message) {
        match self.messages.iter_mut().find(|m| m.id == message.id) {
            Some(m) => *m = message,
            None => {
                let key = order_key(&message);
                let at = self.messages.partition_point(|m| order_key(m) < key);
                self.messages.insert(at, message);
            }
        }
    }

    fn relabel(&mut self) {
        self.labels = self.messages.iter().rev().map(|m| m.id.clone()).collect();
    }

    /// Marks the conversation shown read, if it has unread messages.
    fn mark_read(&self) -> Option<Request> {
        let conversation = self.open_conversation()?;
        (conversation.unread > 0).then_some(Request::MarkRead {
            conversation_id: conversation.id,
        })
    }

    /// Switches the history pane to conversation `id` (its messages arrive with `History`).
    fn show(&mut self, id: i64) {
        self.open = Some(id);
        self.messages.clear();
        self.before = None;
        self.scroll = 0;
        self.relabel();
    }

    fn switch(&mut self, step: isize) -> Vec<Request> {
        if self.conversations.is_empty() {
            return Vec::new();
        }
        let n = self.conversations.len() as isize;
        let at = self
            .open
            .and_then(|id| self.conversations.iter().position(|c| c.id == id))
            .map_or(0, |i| (i as isize + step).rem_euclid(n)) as usize;
        let id = self.conversations[at].id;
        if self.open == Some(id) {
            return Vec::new();
        }
        self.show(id);
        vec![Request::Open {
            conversation_id: id,
        }]
    }

    // ---- what the user types --------------------------------------------------------------

    /// Handles a key press; returns what it asks of the daemon.
    pub fn key(&mut self, key: KeyEvent) -> Vec<Request> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        if self.show_help {
            self.show_help = false;
            return Vec::new();
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let asks = match key.code {
            KeyCode::Char('c') | KeyCode::Char('d') if ctrl => {
                self.quit = true;
                Vec::new()
            }
            KeyCode::Char('a') if ctrl => {
                self.cursor = 0;
                Vec::new()
            }
            KeyCode::Char('e') if ctrl => {
                self.cursor = self.input.chars().count();
                Vec::new()
            }
            KeyCode::Char('u') if ctrl => {
                self.input.clear();
                self.cursor = 0;
                Vec::new()
            }
            KeyCode::Char('w') if ctrl => {
                let chars: Vec<char> = self.input.chars().collect();
                let mut start = self.cursor;
                while start > 0 && chars[start - 1] == ' ' {
                    start -= 1;
                }
                while start > 0 && chars[start - 1] != ' ' {
                    start -= 1;
                }
                self.input = chars[..start].iter().chain(&chars[self.cursor..]).collect();
                self.cursor = start;
                Vec::new()
            }
            KeyCode::Char('n') if ctrl => self.switch(1),
            KeyCode::Char('p') if ctrl => self.switch(-1),
            KeyCode::Down => self.switch(1),
            KeyCode::Up => self.switch(-1),
            KeyCode::Tab => self.next_unread(),
            KeyCode::PageUp => self.scroll_up(10),
            KeyCode::PageDown => {
                self.scroll = self.scroll.saturating_sub(10);
                Vec::new()
            }
            KeyCode::Char(c) if !ctrl => {
                let at = byte_at(&self.input, self.cursor);
                self.input.insert(at, c);
                self.cursor += 1;
                Vec::new()
            }
            KeyCode::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                let at = byte_at(&self.input, self.cursor);
                self.input.remove(at);
                Vec::new()
            }
            KeyCode::Delete if self.cursor < self.input.chars().count() => {
                let at = byte_at(&self.input, self.cursor);
                self.input.remove(at);
                Vec::new()
            }
            KeyCode::Left => {
                self.cursor = self.cursor.saturating_sub(1);
                Vec::new()
            }
            KeyCode::Right => {
                self.cursor = (self.cursor + 1).min(self.input.chars().count());
                Vec::new()
            }
            KeyCode::Home => {
                self.cursor = 0;
                Vec::new()
            }
            KeyCode::End => {
                self.cursor = self.input.chars().count();
                Vec::new()
            }
            // Alt-Enter starts a new line of the same message.
            KeyCode::Enter if key.modifiers.contains(KeyModifiers::ALT) => {
                let at = byte_at(&self.input, self.cursor);
                self.input.insert(at, '\n');
                self.cursor += 1;
                Vec::new()
            }
            KeyCode::Enter => {
                let line = std::mem::take(&mut self.input);
                self.cursor = 0;
                let asks = self.submit(line.trim());
                self.labels_frozen = false;
                self.relabel();
                return asks;
            }
            _ => Vec::new(),
        };
        // Labels freeze while a command is typed, and follow the history otherwise.
        let composing_command = self.input.starts_with('/') && !self.input.starts_with("//");
        if composing_command != self.labels_frozen {
            self.labels_frozen = composing_command;
            if !composing_command {
                self.relabel();
            }
        }
        asks
    }

    /// Pasted text goes into the compose line as it is, newlines included (one message).
    pub fn paste(&mut self, text: &str) {
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let at = byte_at(&self.input, self.cursor);
        self.input.insert_str(at, &text);
        self.cursor += text.chars().count();
    }

    fn next_unread(&mut self) -> Vec<Request> {
        let Some(c) = self
            .conversations
            .iter()
            .find(|c| c.unread > 0 && Some(c.id) != self.open)
        else {
            return Vec::new();
        };
        let id = c.id;
        self.show(id);
        vec![Request::Open {
            conversation_id: id,
        }]
    }

    fn scroll_up(&mut self, lines: u16) -> Vec<Request> {
        self.scroll = self.scroll.saturating_add(lines);
        // Past what is loaded: ask for the page before it (the view clamps the scroll).
        match (&self.before, self.open) {
            (Some(before), Some(conversation_id))
                if self.scroll as usize >= self.messages.len().saturating_sub(5) =>
            {
                vec![Request::Older {
                    conversation_id,
                    before: before.clone(),
                }]
            }
            _ => Vec::new(),
        }
    }

    /// A submitted compose line: a message to the open conversation, or a command.
    fn submit(&mut self, line: &str) -> Vec<Request> {
        if line.is_empty() {
            return Vec::new();
        }
        self.status = Status::None;
        let result = if let Some(text) = line.strip_prefix("//") {
            // `//text` sends `/text`.
            self.send(format!("/{text}"), None)
        } else if let Some(command) = line.strip_prefix('/') {
            self.command(command)
        } else {
            self.send(line.to_owned(), None)
        };
        match result {
            Ok(asks) => asks,
            Err(message) => {
                self.status = Status::Error(message);
                Vec::new()
            }
        }
    }

    fn send(&self, text: String, attach: Option<PathBuf>) -> Result<Vec<Request>, String> {
        let conversation_id = self
            .open
            .ok_or("no conversation is open: /open NAME, or add a contact first")?;
        Ok(vec![Request::Send {
            conversation_id,
            text,
            attach,
        }])
    }

    fn command(&mut self, command: &str) -> Result<Vec<Request>, String> {
        let (name, rest) = match command.split_once(char::is_whitespace) {
            Some((name, rest)) => (name, rest.trim()),
            None => (command, ""),
        };
        match name {
            "help" | "h" | "?" => {
                self.show_help = true;
                Ok(Vec::new())
            }
            "quit" | "q" => {
                self.quit = true;
                Ok(Vec::new())
            }
            "open" | "o" => {
                if rest.is_empty() {
                    return Err("usage: /open NAME (a contact, a group, a key or #id)".into());
                }
                Ok(vec![Request::Resolve {
                    target: rest.to_owned(),
                }])
            }
            "edit" => {
                let (label, text) = split_label(rest);
                if text.is_empty() {
                    return Err("usage: /edit [N] TEXT (N: the message's number; default: \
                                your newest)"
                        .into());
                }
                let m = self.target(label, true, "/edit")?;
                Ok(vec![Request::Edit {
                    id: m.id.clone(),
                    text: text.to_owned(),
                }])
            }
            "delete" => {
                let (label, rest) = split_label(rest);
                if !rest.is_empty() {
                    return Err("usage: /delete [N]".into());
                }
                let m = self.target(label, true, "/delete")?;
                Ok(vec![Request::Delete { id: m.id.clone() }])
            }
            "react" => {
                let (label, reaction) = split_label(rest);
                if reaction.is_empty() || reaction.contains(char::is_whitespace) {
                    return Err(
                        "usage: /react [N] :name: (N: the message's number; default: \
                                the newest)"
                            .into(),
                    );
                }
                let m = self.target(label, false, "/react")?;
                let reaction = if reaction.starts_with(':') {
                    reaction.to_owned()
                } else {
                    format!(":{reaction}:")
                };
                Ok(vec![Request::React {
                    id: m.id.clone(),
                    reaction,
                }])
            }
            "attach" => {
                let (path, text) = split_path(rest)
                    .ok_or("usage: /attach PATH [TEXT] (quote a path with spaces)")?;
                let path =
                    std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                self.send(text.to_owned(), Some(path))
            }
            "save" => {
                let (label, dir) = split_label(rest);
                let m = match label {
                    Some(_) => self.target(label, false, "/save")?,
                    None => self
                        .messages
                        .iter()
                        .rev()
                        .find(|m| !m.attachments.is_empty())
                        .ok_or("no message shown has an attachment")?,
                };
                if m.attachments.is_empty() {
                    return Err("that message has no attachment".into());
                }
                let dir = if dir.is_empty() {
                    PathBuf::from(".")
                } else {
                    PathBuf::from(dir)
                };
                let dir =
                    std::path::absolute(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                Ok(m.attachments
                    .iter()
                    .enumerate()
                    .map(|(i, a)| Request::Save {
                        id: m.id.clone(),
                        index: i as u32,
                        out: dir.join(safe_file_name(&a.name, i)),
                    })
                    .collect())
            }
            "call" => {
                let c = self.open_conversation().ok_or("no conversation is open")?;
                match (c.kind, c.members.as_slice()) {
                    (ConversationKind::Direct, [contact]) => Ok(vec![Request::Call {
                        contact: contact.clone(),
                    }]),
                    _ => Err("calls are with one contact: open a direct conversation".into()),
                }
            }
            "accept" | "reject" => {
                let call = self
                    .live_calls()
                    .into_iter()
                    .find(|c| c.state == CallState::Ringing && !c.outgoing)
                    .ok_or("no call is ringing")?;
                let call_id = call.id.clone();
                Ok(vec![if name == "accept" {
                    Request::Accept { call_id }
                } else {
                    Request::Reject { call_id }
                }])
            }
            "hangup" | "hang" => {
                let call = self.live_calls().into_iter().next().ok_or("no call")?;
                Ok(vec![Request::HangUp {
                    call_id: call.id.clone(),
                }])
            }
            other => Err(format!("unknown command /{other}: /help lists them")),
        }
    }

    /// The message a command acts on: number `label` if given, else the newest one (the
    /// newest of your own with `own`). An own-only command refuses someone else's message
    /// here, before asking the daemon (which refuses it too).
    fn target(&self, label: Option<usize>, own: bool, what: &str) -> Result<&Message, String> {
        match label {
            Some(n) => {
                let id = self
                    .labels
                    .get(n.wrapping_sub(1))
                    .ok_or_else(|| format!("{what}: no message [{n}] is shown"))?;
                let m = self
                    .messages
                    .iter()
                    .find(|m| &m.id == id)
                    .ok_or_else(|| format!("{what}: message [{n}] is no longer shown"))?;
                if own && !m.outgoing {
                    return Err(format!("{what}: [{n}] is not yours"));
                }
                Ok(m)
            }
            None => self
                .messages
                .iter()
                .rev()
                .find(|m| !m.deleted && (!own || m.outgoing))
                .ok_or_else(|| {
                    format!(
                        "{what}: no {}message is shown",
                        if own { "own " } else { "" }
                    )
                }),
        }
    }
}

/// How histories are ordered (the author's timestamp, then the id).
fn order_key(m: &Message) -> (String, String) {
    (m.timestamp.clone(), m.id.clone())
}

/// The byte offset of character `index` in `s`.
fn byte_at(s: &str, index: usize) -> usize {
    s.char_indices().nth(index).map_or(s.len(), |(i, _)| i)
}

/// `N rest` → (Some(N), rest); anything else → (None, all).
fn split_label(s: &str) -> (Option<usize>, &str) {
    let (first, rest) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
    match first.parse::<usize>() {
        Ok(n) => (Some(n), rest.trim()),
        Err(_) => (None, s),
    }
}

/// The first word of `s` as a path (`"..."` or `'...'` for a path with spaces) and the rest.
fn split_path(s: &str) -> Option<(PathBuf, &str)> {
    let s = s.trim_start();
    let (path, rest) = match s.chars().next()? {
        q @ ('"' | '\'') => {
            let end = s[1..].find(q)? + 1;
            (&s[1..end], &s[end + 1..])
        }
        _ => s.split_once(char::is_whitespace).unwrap_or((s, "")),
    };
    (!path.is_empty()).then(|| (PathBuf::from(path), rest.trim()))
}

/// A path as `/attach` reads it back.
fn quote(path: &Path) -> String {
    let text = path.display().to_string();
    if text.contains(char::is_whitespace) {
        format!("\"{text}\"")
    } else {
        text
    }
}

/// A file name for an attachment's name, which its sender chose: its last component only, so
/// a name like `../../.bashrc` can never write outside the chosen directory.
pub fn safe_file_name(name: &str, index: usize) -> String {
    let base = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .trim()
        .trim_start_matches('.');
    if base.is_empty() || base.chars().any(char::is_control) {
        format!("attachment-{index}")
    } else {
        base.to_owned()
    }
}

/// The first characters of a key's body, for display where a name is missing.
pub fn short_key(key: &str) -> String {
    let body: String = key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    let body = if body.is_empty() { key } else { &body };
    body.chars().skip(32).take(12).collect()
}

#[cfg(test)]
mod tests {
    use jasper_model::MessageState;

    use super::*;

    fn conversation(id: i64, name: &str, unread: u32, last: i64) -> Conversation {
        Conversation {
            id,
            kind: ConversationKind::Direct,
            channel_id: format!("c{id}"),
            name: name.into(),
            members: vec![format!("key-{name}")],
            admin: None,
            created_at: 1,
            unread,
            last_activity_at: last,
        }
    }

    fn message(id: &str, conversation_id: i64, ts: &str, outgoing: bool) -> Message {
        Message {
            id: id.into(),
            conversation_id,
            sender: "k".into(),
            sender_name: None,
            outgoing,
            kind: "MESSAGE".into(),
            content: format!("text {id}"),
            timestamp: ts.into(),
            state: MessageState::Received,
            failure: None,
            edited: false,
            deleted: false,
            reactions: Vec::new(),
            history: Vec::new(),
            attachments: Vec::new(),
        }
    }

    fn typed(app: &mut App, text: &str) -> Vec<Request> {
        for c in text.chars() {
            app.key(KeyEvent::from(KeyCode::Char(c)));
        }
        app.key(KeyEvent::from(KeyCode::Enter))
    }

    fn loaded() -> App {
        let mut app = App::new();
        let asks = app.apply(Update::Snapshot {
            identity: None,
            conversations: vec![conversation(1, "bob", 0, 5), conversation(2, "carol", 2, 9)],
            calls: Vec::new(),
            anonymity: None,
        });
        // The most recent conversation opens.
        assert_eq!(asks, vec![Request::Open { conversation_id: 2 }]);
        app.apply(carols_history());
        app
    }

    /// Conversation 2's newest page: one message of ours, then one of carol's.
    fn carols_history() -> Update {
        Update::History {
            conversation_id: 2,
            messages: vec![
                message("m1", 2, "2026-01-01T00:00:01Z", true),
                message("m2", 2, "2026-01-01T00:00:02Z", false),
            ],
            before: None,
            older: false,
        }
    }

    #[test]
    fn opening_marks_the_newest_message_read_and_labels_count_from_the_newest() {
        let mut app = App::new();
        app.apply(Update::Snapshot {
            identity: None,
            conversations: vec![conversation(2, "carol", 2, 9)],
            calls: Vec::new(),
            anonymity: None,
        });
        let asks = app.apply(carols_history());
        assert_eq!(asks, vec![Request::MarkRead { conversation_id: 2 }]);
        assert_eq!(app.label_of("m2"), Some(1));
        assert_eq!(app.label_of("m1"), Some(2));
    }

    #[test]
    fn commands_name_messages_by_label_and_check_ownership() {
        let mut app = loaded();
        assert_eq!(
            typed(&mut app, "/react 2 heart"),
            vec![Request::React {
                id: "m1".into(),
                reaction: ":heart:".into()
            }]
        );
        assert_eq!(
            typed(&mut app, "/edit better words"),
            vec![Request::Edit {
                id: "m1".into(),
                text: "better words".into()
            }]
        );
        assert!(typed(&mut app, "/edit 1 not mine").is_empty());
        assert_eq!(app.status, Status::Error("/edit: [1] is not yours".into()));
        assert!(typed(&mut app, "/frobnicate").is_empty());
        assert!(matches!(&app.status, Status::Error(e) if e.contains("/help")));
        assert_eq!(
            typed(&mut app, "//slash"),
            vec![Request::Send {
                conversation_id: 2,
                text: "/slash".into(),
                attach: None
            }]
        );
    }

    #[test]
    fn labels_stay_put_while_a_command_is_typed() {
        let mut app = loaded();
        for c in "/react 1 ".chars() {
            app.key(KeyEvent::from(KeyCode::Char(c)));
        }
        // A message arrives while the command is being typed.
        app.apply(Update::Event(Event {
            seq: 7,
            at: 0,
            kind: EventKind::MessageReceived {
                message: message("m3", 2, "2026-01-01T00:00:03Z", false),
            },
        }));
        let asks = typed(&mut app, "wave");
        assert_eq!(
            asks,
            vec![Request::React {
                id: "m2".into(),
                reaction: ":wave:".into()
            }]
        );
        // Afterwards [1] is the new message.
        assert_eq!(app.label_of("m3"), Some(1));
    }

    #[test]
    fn a_send_that_fails_goes_back_to_the_compose_line() {
        let mut app = loaded();
        let asks = typed(&mut app, "hello there");
        let request = asks.into_iter().next().unwrap();
        app.apply(Update::Failed {
            request,
            error: ApiError {
                code: "unavailable".into(),
                message: "down".into(),
                grpc_code: tonic::Code::Unavailable,
            },
        });
        assert_eq!(app.input, "hello there");
        assert_eq!(app.status, Status::Error("unavailable: down".into()));
    }

    #[test]
    fn a_paste_and_alt_enter_make_one_message_of_several_lines() {
        let mut app = loaded();
        app.paste("one\r\ntwo");
        app.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT));
        let asks = typed(&mut app, "three");
        assert_eq!(
            asks,
            vec![Request::Send {
                conversation_id: 2,
                text: "one\ntwo\nthree".into(),
                attach: None
            }]
        );
    }

    #[test]
    fn attachment_names_cannot_leave_the_chosen_directory() {
        assert_eq!(safe_file_name("../../.bashrc", 0), "bashrc");
        assert_eq!(safe_file_name("dir\\evil.txt", 0), "evil.txt");
        assert_eq!(safe_file_name("..", 3), "attachment-3");
        assert_eq!(safe_file_name("a\u{7}b", 1), "attachment-1");
        assert_eq!(safe_file_name("photo.png", 0), "photo.png");
    }

    #[test]
    fn paths_may_be_quoted() {
        assert_eq!(
            split_path("\"/tmp/a b.txt\" look"),
            Some((PathBuf::from("/tmp/a b.txt"), "look"))
        );
        assert_eq!(split_path("/tmp/x"), Some((PathBuf::from("/tmp/x"), "")));
        assert_eq!(split_path("  "), None);
    }

    #[test]
    fn conversations_sort_by_activity_and_tab_goes_to_the_next_unread() {
        let mut app = loaded();
        assert_eq!(app.conversations[0].name, "carol");
        app.apply(Update::Conversation(conversation(1, "bob", 4, 20)));
        assert_eq!(app.conversations[0].name, "bob");
        let asks = app.key(KeyEvent::from(KeyCode::Tab));
        assert_eq!(asks, vec![Request::Open { conversation_id: 1 }]);
        assert_eq!(app.open, Some(1));
    }
}
