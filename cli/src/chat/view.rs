//! How `jasper chat` draws its state: conversations on the left (unread counts, newest activity
//! first), the open conversation's history on the right (edits, reactions, attachments,
//! delivery states), the compose line, and a status line (connection, anonymity, calls,
//! the last notice or error).

use jasper_model::{CallState, ConversationKind, Message, MessageState};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use time::UtcOffset;
use time::format_description::well_known::Rfc3339;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::app::{App, Link, Status, short_key};

/// What `/help` shows.
pub const HELP: &[(&str, &str)] = &[
    (
        "TEXT",
        "send TEXT to the open conversation (//TEXT sends /TEXT)",
    ),
    ("/open NAME", "open a contact, group, key or #id"),
    (
        "/edit [N] TEXT",
        "replace your message N (default: your newest)",
    ),
    (
        "/delete [N]",
        "delete your message N (default: your newest)",
    ),
    (
        "/react [N] :name:",
        "react to message N (default: the newest)",
    ),
    ("/attach PATH [TEXT]", "send a file, encrypted onto IPFS"),
    (
        "/save [N] [DIR]",
        "download message N's attachments into DIR",
    ),
    (
        "/call",
        "ring the open contact (transparent mode on both sides)",
    ),
    ("/accept  /reject", "answer or refuse a ringing call"),
    ("/hangup", "end the call"),
    ("/quit", "leave (also Ctrl-C)"),
    ("Up/Down, Ctrl-P/N", "previous/next conversation"),
    ("Tab", "next conversation with unread messages"),
    (
        "Alt-Enter",
        "a new line in the message (a paste keeps its lines)",
    ),
    (
        "PgUp/PgDn",
        "scroll the history (older pages load by themselves)",
    ),
];

/// Draws the whole screen. `offset` turns the authors' UTC timestamps into local time.
pub fn draw(frame: &mut Frame, app: &App, offset: UtcOffset) {
    let [main, compose, status] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let list_width = (main.width / 4).clamp(16, 32);
    let [list, history] =
        Layout::horizontal([Constraint::Length(list_width), Constraint::Min(10)]).areas(main);
    draw_conversations(frame, app, list);
    draw_history(frame, app, history, offset);
    draw_compose(frame, app, compose);
    draw_status(frame, app, status);
    if app.show_help {
        draw_help(frame, frame.area());
    }
}

fn draw_conversations(frame: &mut Frame, app: &App, area: Rect) {
    let width = area.width.saturating_sub(2) as usize;
    let lines: Vec<Line> = app
        .conversations
        .iter()
        .map(|c| {
            let name = match c.kind {
                ConversationKind::Group => format!("# {}", c.name),
                ConversationKind::Direct => c.name.clone(),
            };
            let count = if c.unread > 0 {
                format!(" ({})", c.unread)
            } else {
                String::new()
            };
            let room = width.saturating_sub(count.width());
            let (mut text, _) = split_at_width(&name, room);
            let pad = room.saturating_sub(text.width());
            text.push_str(&" ".repeat(pad));
            text.push_str(&count);
            let mut style = Style::default();
            if c.unread > 0 {
                style = style.add_modifier(Modifier::BOLD);
            }
            if app.open == Some(c.id) {
                style = style.add_modifier(Modifier::REVERSED);
            }
            Line::styled(text, style)
        })
        .collect();
    let block = Block::default().borders(Borders::ALL).title(" Chats ");
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_history(frame: &mut Frame, app: &App, area: Rect, offset: UtcOffset) {
    let title = match app.open_conversation() {
        Some(c) => match c.kind {
            ConversationKind::Direct => format!(" {} ", c.name),
            ConversationKind::Group => {
                format!(" # {} · {} members ", c.name, c.members.len() + 1)
            }
        },
        None => " no conversation: add a contact with `jasper contact add` ".into(),
    };
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width.max(1) as usize;
    let mut lines: Vec<Line> = Vec::new();
    if app.before.is_some() {
        lines.push(Line::styled(
            "  ↑ older messages: PgUp",
            Style::default().fg(Color::DarkGray),
        ));
    }
    for m in &app.messages {
        message_lines(app, m, width, offset, &mut lines);
    }
    let height = inner.height as usize;
    let scroll = (app.scroll as usize).min(lines.len().saturating_sub(height));
    let end = lines.len() - scroll;
    let start = end.saturating_sub(height);
    let shown: Vec<Line> = lines.drain(start..end).collect();
    frame.render_widget(Paragraph::new(shown), inner);
}

/// The lines of one message, wrapped to `width`.
fn message_lines(
    app: &App,
    m: &Message,
    width: usize,
    offset: UtcOffset,
    out: &mut Vec<Line<'static>>,
) {
    let dim = Style::default().fg(Color::DarkGray);
    let label = match app.label_of(&m.id) {
        Some(n) => format!("[{n}]"),
        None => "[·]".into(),
    };
    let sender = if m.outgoing {
        "you".to_owned()
    } else {
        m.sender_name
            .clone()
            .unwrap_or_else(|| short_key(&m.sender))
    };
    let (text, text_style) = if m.deleted {
        ("(deleted)".to_owned(), dim.add_modifier(Modifier::ITALIC))
    } else {
        (without_attachment_links(&m.content), Style::default())
    };
    let mut head = vec![
        Span::styled(format!("{label} {} ", clock(&m.timestamp, offset)), dim),
        Span::styled(
            format!("{sender}: "),
            Style::default()
                .fg(if m.outgoing {
                    Color::Cyan
                } else {
                    Color::Yellow
                })
                .add_modifier(Modifier::BOLD),
        ),
    ];
    let indent = head.iter().map(|s| s.content.width()).sum::<usize>();
    let mut first = true;
    for paragraph in text.split('\n') {
        for chunk in wrap(paragraph, width.saturating_sub(indent).max(8)) {
            let mut spans = if first {
                std::mem::take(&mut head)
            } else {
                vec![Span::raw(" ".repeat(indent))]
            };
            first = false;
            spans.push(Span::styled(chunk, text_style));
            out.push(Line::from(spans));
        }
    }
    // Marks after the text: edited, and the delivery state of one's own messages.
    let last = out.last_mut().expect("a message has a line");
    if m.edited && !m.deleted {
        last.spans.push(Span::styled(" (edited)", dim));
    }
    if let Some((mark, color)) = state_mark(&m.state) {
        last.spans
            .push(Span::styled(format!(" {mark}"), Style::default().fg(color)));
    }
    let pad = " ".repeat(indent);
    if let Some(failure) = &m.failure
        && matches!(
            m.state,
            MessageState::Failed | MessageState::Unconfirmed | MessageState::Waiting
        )
    {
        out.push(Line::styled(
            format!("{pad}{}", failure),
            Style::default().fg(Color::Red),
        ));
    }
    if !m.deleted {
        for a in &m.attachments {
            out.push(Line::styled(
                format!("{pad}📎 {} · {} · {}", a.name, size(a.size), a.media_type),
                Style::default().fg(Color::Magenta),
            ));
        }
    }
    if !m.reactions.is_empty() {
        // One entry per reaction, with who gave it.
        let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
        for r in &m.reactions {
            let who = if app.identity.as_ref().map(|i| &i.public_key) == Some(&r.reactor) {
                "you".to_owned()
            } else if r.reactor == m.sender {
                sender.clone()
            } else {
                app.conversations
                    .iter()
                    .find(|c| {
                        c.kind == ConversationKind::Direct && c.members == [r.reactor.clone()]
                    })
                    .map(|c| c.name.clone())
                    .unwrap_or_else(|| short_key(&r.reactor))
            };
            match grouped.iter_mut().find(|(name, _)| *name == r.reaction) {
                Some((_, people)) => people.push(who),
                None => grouped.push((r.reaction.clone(), vec![who])),
            }
        }
        let text = grouped
            .iter()
            .map(|(reaction, people)| format!("{reaction} {}", people.join(", ")))
            .collect::<Vec<_>>()
            .join("  ");
        out.push(Line::styled(
            format!("{pad}{text}"),
            Style::default().fg(Color::Green),
        ));
    }
}

/// The mark of a delivery state, shown after the text (none for received messages).
pub fn state_mark(state: &MessageState) -> Option<(&'static str, Color)> {
    Some(match state {
        MessageState::Queued => ("…", Color::DarkGray),
        MessageState::Waiting => ("⏸ waiting for a relay", Color::Yellow),
        MessageState::Sent => ("✓", Color::DarkGray),
        MessageState::Visible => ("✓✓", Color::Green),
        MessageState::Unconfirmed => ("✓?", Color::Yellow),
        MessageState::Failed => ("✗ failed", Color::Red),
        MessageState::Received => return None,
    })
}

fn draw_compose(frame: &mut Frame, app: &App, area: Rect) {
    let to = app
        .open_conversation()
        .map(|c| format!(" to {} ", c.name))
        .unwrap_or_else(|| " ".into());
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!("{to}· /help "));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    // The line scrolls sideways so the cursor stays in view. A newline of a multi-line
    // message shows as ⏎ (one column, one character, as the newline is).
    let width = inner.width.max(1) as usize;
    let shown: Vec<char> = app
        .input
        .chars()
        .map(|c| if c == '\n' { '⏎' } else { c })
        .collect();
    let columns = |chars: &[char]| chars.iter().map(|c| c.width().unwrap_or(0)).sum::<usize>();
    let mut skip = 0;
    while skip < app.cursor && columns(&shown[skip..app.cursor]) > width - 1 {
        skip += 1;
    }
    let (visible, _) = split_at_width(&shown[skip..].iter().collect::<String>(), width);
    frame.render_widget(Paragraph::new(visible), inner);
    if !app.show_help {
        frame.set_cursor_position(Position::new(
            inner.x + columns(&shown[skip..app.cursor]) as u16,
            inner.y,
        ));
    }
}

fn draw_status(frame: &mut Frame, app: &App, area: Rect) {
    let mut spans = vec![match &app.link {
        Link::Up => Span::styled("● connected", Style::default().fg(Color::Green)),
        Link::Connecting => Span::styled("○ connecting", Style::default().fg(Color::Yellow)),
        Link::Down(_) => Span::styled("○ reconnecting", Style::default().fg(Color::Red)),
    }];
    // Most urgent first: the line is cut at the terminal's width.
    for call in app.live_calls() {
        let who = call
            .contact_name
            .clone()
            .unwrap_or_else(|| short_key(&call.contact));
        let text = match (call.state, call.outgoing) {
            (CallState::Ringing, false) => format!(" · 📞 {who} is calling: /accept /reject"),
            (CallState::Ringing, true) => format!(" · 📞 ringing {who}: /hangup"),
            _ => format!(" · 📞 in a call with {who}: /hangup"),
        };
        spans.push(Span::styled(text, Style::default().fg(Color::Magenta)));
    }
    match &app.status {
        Status::None => {}
        Status::Notice(text) => spans.push(Span::raw(format!(" · {text}"))),
        Status::Error(text) => spans.push(Span::styled(
            format!(" · {text}"),
            Style::default().fg(Color::Red),
        )),
    }
    if let Some(summary) = &app.anonymity {
        spans.push(Span::raw(format!(" · anonymity: {summary}")));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let width = 78.min(area.width);
    let height = (HELP.len() as u16 + 3).min(area.height);
    let popup = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(what, does)| {
            Line::from(vec![
                Span::styled(format!("{what:<20}"), Style::default().fg(Color::Cyan)),
                Span::raw(*does),
            ])
        })
        .collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" jasper chat · any key closes "),
        ),
        popup,
    );
}

/// `HH:MM` of an RFC 3339 timestamp in local time, with the date when it is not today's.
fn clock(timestamp: &str, offset: UtcOffset) -> String {
    let Ok(at) = time::OffsetDateTime::parse(timestamp, &Rfc3339) else {
        return "--:--".into();
    };
    let at = at.to_offset(offset);
    let today = time::OffsetDateTime::now_utc().to_offset(offset).date();
    if at.date() == today {
        format!("{:02}:{:02}", at.hour(), at.minute())
    } else {
        format!("{} {:02}:{:02}", at.date(), at.hour(), at.minute())
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

/// Splits `text` into pieces at most `width` terminal columns wide (wide characters such as
/// CJK and most emoji take two), at spaces where it can.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let needed = line.width() + usize::from(!line.is_empty()) + word.width();
        if needed > width && !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        // A word wider than the line is cut.
        while line.width() > width {
            let (head, rest) = split_at_width(&line, width);
            lines.push(head);
            line = rest;
        }
    }
    lines.push(line);
    lines
}

/// The longest start of `text` at most `width` columns wide (at least one character, so a
/// wide character in a one-column space still moves on), and the rest.
fn split_at_width(text: &str, width: usize) -> (String, String) {
    let mut used = 0;
    for (i, c) in text.char_indices() {
        let w = c.width().unwrap_or(0);
        if used + w > width && i > 0 {
            return (text[..i].to_owned(), text[i..].to_owned());
        }
        used += w;
    }
    (text.to_owned(), String::new())
}

/// The text of a message without its attachment links (`[name](ipfs://…#jasper=v1;…)`, shown
/// as attachment lines instead: the link holds the file's key, which is never shown).
pub fn without_attachment_links(content: &str) -> String {
    let mut out = String::new();
    let mut rest = content;
    while let Some(at) = rest.find("](ipfs://") {
        let Some(close) = rest[at..].find(')') else {
            break;
        };
        // The link's `[`: the nearest one before that is not backslash-escaped.
        let bytes = rest.as_bytes();
        let mut open = None;
        let mut i = at;
        while i > 0 {
            i -= 1;
            if bytes[i] == b'[' && (i == 0 || bytes[i - 1] != b'\\') {
                open = Some(i);
                break;
            }
        }
        let Some(mut open) = open else {
            out.push_str(&rest[..at + close + 1]);
            rest = &rest[at + close + 1..];
            continue;
        };
        if open > 0 && bytes[open - 1] == b'!' {
            open -= 1;
        }
        out.push_str(&rest[..open]);
        rest = &rest[at + close + 1..];
    }
    out.push_str(rest);
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_links_are_cut_from_the_text() {
        let content = "look\n\n![a \\[1\\].png](ipfs://bafy#jasper=v1;k=K;s=3;t=image/png;h=H)\n\
                       [b.txt](ipfs://bafk#jasper=v1;k=K2;s=1;t=text/plain;h=H2)";
        assert_eq!(without_attachment_links(content), "look");
        assert_eq!(without_attachment_links("no links"), "no links");
    }

    #[test]
    fn long_lines_wrap_at_spaces_and_long_words_are_cut() {
        assert_eq!(wrap("aaa bbb ccc", 7), vec!["aaa bbb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), vec![""]);
        // Wide characters take two columns each.
        assert_eq!(wrap("日本語 テキスト", 6), vec!["日本語", "テキス", "ト"]);
        assert_eq!(split_at_width("😀x", 1), ("😀".to_owned(), "x".to_owned()));
    }
}
