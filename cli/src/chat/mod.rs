//! `jasper chat`: a terminal chat frontend over the same gRPC API a desktop frontend uses.
//!
//! Three parts: [`app`] is the screen's state and what keys and daemon reports do to it (no
//! I/O); [`daemon`] is the one task that talks to `jasperd` and outlives its restarts; [`view`]
//! draws the state with ratatui. This module only wires them to the terminal.

mod app;
mod daemon;
mod view;

use std::io::{self, IsTerminal};
use std::path::PathBuf;

use jasper_client::ApiError;
use ratatui::crossterm::event::{self, DisableBracketedPaste, EnableBracketedPaste, Event};
use ratatui::crossterm::execute;
use tokio::sync::mpsc;
use tonic::Code;

pub use app::{App, Request, Update};

/// Runs the frontend on the terminal until the user quits.
pub async fn run(socket: PathBuf) -> Result<(), ApiError> {
    // Checked first: drawn into a pipe or a file, the screen would be escape codes for nobody.
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        return Err(terminal_error(io::Error::other(
            "its input and output are not a terminal (for scripts: the other commands, --json)",
        )));
    }
    // Read while the process has one thread: the only time `time` can ask the OS safely.
    let offset = time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC);
    let (requests, request_rx) = mpsc::unbounded_channel();
    let (update_tx, mut updates) = mpsc::unbounded_channel();
    let worker = tokio::spawn(daemon::run(socket, request_rx, update_tx));
    let mut terminal = ratatui::try_init().map_err(terminal_error)?;
    // A paste arrives as one piece (newlines included) instead of keys, Enter among them.
    let _ = execute!(io::stdout(), EnableBracketedPaste);
    // Terminal input blocks, so it is read on a thread of its own and handed over.
    let (input_tx, mut input) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(event) = event::read() {
            if input_tx.send(event).is_err() {
                break;
            }
        }
    });
    let mut app = App::new();
    let result = loop {
        if let Err(e) = terminal.draw(|frame| view::draw(frame, &app, offset)) {
            break Err(terminal_error(e));
        }
        tokio::select! {
            event = input.recv() => match event {
                Some(event) => handle_input(&mut app, event, &requests),
                None => break Ok(()),
            },
            update = updates.recv() => match update {
                Some(update) => ask(&requests, app.apply(update)),
                None => break Ok(()),
            },
        }
        // Take everything already waiting before drawing again.
        while let Ok(update) = updates.try_recv() {
            ask(&requests, app.apply(update));
        }
        while let Ok(event) = input.try_recv() {
            handle_input(&mut app, event, &requests);
        }
        if app.quit {
            break Ok(());
        }
    };
    let _ = execute!(io::stdout(), DisableBracketedPaste);
    ratatui::restore();
    worker.abort();
    result
}

fn handle_input(app: &mut App, event: Event, requests: &mpsc::UnboundedSender<Request>) {
    match event {
        Event::Key(key) => ask(requests, app.key(key)),
        Event::Paste(text) => app.paste(&text),
        _ => {}
    }
}

fn ask(requests: &mpsc::UnboundedSender<Request>, asks: Vec<Request>) {
    for request in asks {
        let _ = requests.send(request);
    }
}

fn terminal_error(e: io::Error) -> ApiError {
    ApiError {
        code: "failed_precondition".into(),
        message: format!("jasper chat needs a terminal: {e}"),
        grpc_code: Code::FailedPrecondition,
    }
}
