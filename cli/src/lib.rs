//! `jasper`, the command line client: one call to the daemon per command, human output or
//! `--json` (one JSON document, JSON lines for `watch`). Errors go to stderr as
//! `error: <code>: <message>` (or `{"error":{"code":...,"message":...}}` with `--json`); the exit
//! status is 2 for invalid input and 1 for every other failure.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use jasper_client::{ApiError, Client, default_socket_path};
use jasper_model as model;
use jasper_proto::convert::from_pb;
use jasper_proto::v1 as pb;
use serde::Serialize;
use serde_json::{Value, json};
use tonic::Code;

pub mod chat;

#[derive(Debug, Parser)]
#[command(
    name = "jasper",
    version = jasper_model::version_text!(),
    about = "Command line client of jasperd, the Jasper daemon"
)]
pub struct Cli {
    /// The daemon's socket [default: $XDG_RUNTIME_DIR/jasper/jasperd.sock].
    #[arg(long, global = true, env = "JASPER_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Machine output: one JSON document (JSON lines for `watch`), errors as JSON on stderr.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// This daemon's identity (its RSA-4096 key).
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// The local contact list.
    #[command(subcommand)]
    Contact(ContactCommand),
    /// Sends a text message to a contact (name or key) or a conversation (`#id`), optionally
    /// with a file encrypted onto the daemon's IPFS node and linked after the text.
    Send {
        #[arg(long)]
        to: String,
        #[arg(default_value = "")]
        text: String,
        /// A file to attach (encrypted with a fresh key; needs `ipfs_api` in jasperd's config).
        #[arg(long)]
        attach: Option<PathBuf>,
    },
    /// Downloads a message's attachment from IPFS, verified and decrypted, into `--out`.
    Download {
        id: String,
        /// Which attachment of the message, from 0.
        #[arg(long, default_value_t = 0)]
        index: u32,
        #[arg(long)]
        out: PathBuf,
    },
    /// Groups: create, change members, send.
    #[command(subcommand)]
    Group(GroupCommand),
    /// One page of a conversation's history, oldest first.
    Messages {
        /// Contact name, key, group name or `#id`.
        #[arg(long = "with")]
        with: String,
        /// Page size (1-500, default 50).
        #[arg(long)]
        limit: Option<u32>,
        /// Cursor from a previous page: show the messages before it.
        #[arg(long)]
        before: Option<String>,
    },
    /// Replaces the text of a message you wrote.
    Edit { id: String, text: String },
    /// Deletes a message you wrote.
    Delete { id: String },
    /// Reacts to a message, e.g. `:thumbsup:`.
    React { id: String, reaction: String },
    /// The TX relays that carried a message's copies.
    Routes { id: String },
    /// Known relays and their figures (`list` without a subcommand), and where this identity
    /// stands on anonymity.
    Relays {
        #[command(subcommand)]
        command: Option<RelayCommand>,
    },
    /// Streams events (from the durable log after SEQ, then live).
    Watch {
        /// The last seq already seen (0: from the beginning).
        #[arg(long = "from", default_value_t = 0)]
        from: u64,
    },
    /// Every conversation (direct and group), with its unread count.
    Conversations,
    /// Marks a conversation read through a message (default: its newest); the marker only
    /// moves forward. Prints the conversation with its new unread count.
    Read {
        /// Contact name, key, group name or `#id`.
        target: String,
        /// The id of the last message read.
        #[arg(long)]
        through: Option<String>,
    },
    /// Transparent mode: direct WebRTC sessions with a contact (both sides must enable it;
    /// the contact and the STUN operators then learn your IP address).
    #[command(subcommand)]
    Transparent(TransparentCommand),
    /// Voice calls over a transparent session (audio flows through the gRPC `Audio` stream).
    #[command(subcommand)]
    Call(CallCommand),
    /// The terminal chat frontend: conversations with unread counts, history with edits,
    /// reactions and delivery states, and a compose line (`/help` lists its commands). It
    /// follows the daemon live and reconnects by itself when the daemon restarts.
    Chat,
    /// Prints the shell completion script for SHELL (no daemon needed), e.g.
    /// `jasper completions bash > ~/.local/share/bash-completion/completions/jasper`,
    /// `jasper completions zsh > ~/.zfunc/_jasper`,
    /// `jasper completions fish > ~/.config/fish/completions/jasper.fish`.
    Completions { shell: clap_complete::Shell },
    /// Writes the man pages, `jasper.1` and one per command (`jasper-send.1`,
    /// `jasper-identity-create.1`, ...), into DIR (no daemon needed); read them with
    /// `man -l DIR/jasper.1` or install them under a `man1` directory of MANPATH.
    Manpages { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum TransparentCommand {
    /// Shows what transparent mode gives up.
    Warning,
    /// Enables transparent mode for a contact (name or key).
    Enable { contact: String },
    /// Disables it (closes the session, ends calls).
    Disable { contact: String },
    /// One contact's status, or every contact where either side enabled it.
    Status { contact: Option<String> },
    /// Brings the session up and waits for it (up to --wait-ms, default 10 s).
    Open {
        contact: String,
        #[arg(long, default_value_t = 10_000)]
        wait_ms: u32,
    },
    /// Closes the session on purpose: messages use the relays until it is opened again.
    Close { contact: String },
}

#[derive(Debug, Subcommand)]
pub enum CallCommand {
    /// Rings a contact.
    Start { contact: String },
    /// Accepts a ringing incoming call.
    Accept { id: String },
    /// Rejects a ringing incoming call.
    Reject { id: String },
    /// Ends a call.
    Hangup { id: String },
    /// Live and recent calls.
    List,
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Generates a new RSA-4096 identity (the private key goes to the OS key store).
    Create,
    /// Shows the public key and its fingerprint.
    Show,
    /// Logs in with an existing private key (PKCS#8 PEM) from FILE, or stdin with `-`.
    Import {
        #[arg(default_value = "-")]
        file: String,
    },
    /// Prints the private key (PKCS#8 PEM). Keep it secret.
    Export,
}

#[derive(Debug, Subcommand)]
pub enum ContactCommand {
    /// Adds a contact (or renames the one with that key).
    Add {
        key: String,
        #[arg(long)]
        name: String,
    },
    /// Lists contacts.
    List,
}

#[derive(Debug, Args)]
pub struct GroupMembers {
    /// The group's name (or `#id`).
    pub name: String,
    /// A member's contact name or key (repeatable).
    #[arg(long = "member", required = true)]
    pub members: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Creates a group with the given members.
    Create(GroupMembers),
    /// Adds members (creator only).
    Add(GroupMembers),
    /// Removes members (creator only).
    Remove(GroupMembers),
    /// Sends a text message to the group.
    Send { name: String, text: String },
}

#[derive(Debug, Subcommand)]
pub enum RelayCommand {
    /// Lists known relays.
    List,
    /// Adds a relay HOST:PORT.
    Add { address: String },
    /// Removes a relay HOST:PORT.
    Remove { address: String },
    /// Shows the relay this identity receives on.
    Rx,
    /// Where this identity stands on anonymity: relays needed and known, every role's relay,
    /// what waits for a relay of its own, which relays are shared.
    Anonymity,
}

/// Runs the CLI on the process's arguments; the `main` of the `jasper` binary.
pub fn main() -> ExitCode {
    let json_requested = std::env::args().any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if json_requested && e.use_stderr() => {
            let message = e.kind().to_string();
            let detail = e.to_string();
            let detail = detail
                .lines()
                .find(|l| l.starts_with("error:"))
                .map(|l| l.trim_start_matches("error:").trim().to_owned())
                .unwrap_or(message);
            print_error(
                true,
                &ApiError {
                    code: "invalid_argument".into(),
                    message: detail,
                    grpc_code: Code::InvalidArgument,
                },
            );
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: internal: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(json, &e);
            ExitCode::from(if e.is_invalid_input() { 2 } else { 1 })
        }
    }
}

/// `jasper manpages DIR`: the whole command tree, one page per command.
fn write_manpages(dir: &std::path::Path) -> Result<(), ApiError> {
    let failed = |e: io::Error| ApiError {
        code: "failed_precondition".into(),
        message: format!("cannot write man pages into {}: {e}", dir.display()),
        grpc_code: Code::FailedPrecondition,
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), dir).map_err(failed)
}

fn print_error(json: bool, e: &ApiError) {
    let mut err = io::stderr().lock();
    let _ = if json {
        writeln!(
            err,
            "{}",
            json!({"error": {"code": e.code, "message": e.message}})
        )
    } else {
        writeln!(err, "error: {}: {}", e.code, e.message)
    };
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError {
        code: "invalid_argument".into(),
        message: message.into(),
        grpc_code: Code::InvalidArgument,
    }
}

fn status(s: tonic::Status) -> ApiError {
    ApiError::from_status(&s)
}

fn missing(what: &'static str) -> ApiError {
    ApiError {
        code: "internal".into(),
        message: format!("the daemon's answer lacks {what}"),
        grpc_code: Code::Internal,
    }
}

/// Connects and runs one command.
pub async fn run(cli: Cli) -> Result<(), ApiError> {
    // What the CLI answers from its own definitions, without a daemon.
    match &cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "jasper", &mut io::stdout());
            return Ok(());
        }
        Command::Manpages { dir } => return write_manpages(dir),
        _ => {}
    }
    let socket = match cli.socket.or_else(|| default_socket_path(None)) {
        Some(s) => s,
        None => {
            return Err(invalid(
                "no socket: pass --socket or set JASPER_SOCKET (XDG_RUNTIME_DIR is unset)",
            ));
        }
    };
    if let Command::Chat = cli.command {
        return chat::run(socket).await;
    }
    // Read local input before connecting, so bad input is reported as such.
    let import_pem = match &cli.command {
        Command::Identity(IdentityCommand::Import { file }) => Some(read_input(file)?),
        _ => None,
    };
    let mut c = Client::connect(&socket).await?;
    let out = Output { json: cli.json };
    match cli.command {
        Command::Identity(cmd) => identity(&mut c, &out, cmd, import_pem).await,
        Command::Contact(ContactCommand::Add { key, name }) => {
            let r = c
                .contacts
                .add(pb::AddContactRequest {
                    key,
                    name,
                    avatar: None,
                })
                .await
                .map_err(status)?
                .into_inner();
            let contact = from_pb::contact(r.contact.ok_or_else(|| missing("the contact"))?);
            out.print(&contact, || {
                format!("added {} ({})", contact.name, short(&contact.fingerprint))
            })
        }
        Command::Contact(ContactCommand::List) => {
            let r = c
                .contacts
                .list(pb::ListContactsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let contacts: Vec<model::Contact> =
                r.contacts.into_iter().map(from_pb::contact).collect();
            out.print(&contacts, || {
                contacts
                    .iter()
                    .map(|c| format!("{}\t{}\t{}", c.name, short(&c.fingerprint), c.key))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Send { to, text, attach } => {
            let attach = attach.map(absolute).transpose()?;
            if text.is_empty() && attach.is_none() {
                return Err(invalid("nothing to send: give a text or --attach FILE"));
            }
            send(&mut c, &out, to, text, attach).await
        }
        Command::Download {
            id,
            index,
            out: dest,
        } => download(&mut c, &out, id, index, absolute(dest)?).await,
        Command::Group(cmd) => group(&mut c, &out, cmd).await,
        Command::Messages {
            with,
            limit,
            before,
        } => {
            let r = c
                .messages
                .list(pb::ListMessagesRequest {
                    with,
                    before,
                    limit: limit.unwrap_or(0),
                })
                .await
                .map_err(status)?
                .into_inner();
            let page = model::MessagePage {
                messages: r.messages.into_iter().map(from_pb::message).collect(),
                before: r.before,
            };
            out.print(&page, || {
                let mut lines: Vec<String> = page.messages.iter().map(message_line).collect();
                if let Some(cursor) = &page.before {
                    lines.push(format!("(older messages: --before {cursor})"));
                }
                lines.join("\n")
            })
        }
        Command::Edit { id, text } => {
            let r = c
                .messages
                .edit(pb::EditMessageRequest { id, text })
                .await
                .map_err(status)?
                .into_inner();
            print_message(&out, r.message, "edited")
        }
        Command::Delete { id } => {
            let r = c
                .messages
                .delete(pb::DeleteMessageRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            print_message(&out, r.message, "deleted")
        }
        Command::React { id, reaction } => {
            let r = c
                .messages
                .react(pb::ReactRequest { id, reaction })
                .await
                .map_err(status)?
                .into_inner();
            print_message(&out, r.message, "reacted to")
        }
        Command::Routes { id } => {
            let r = c
                .messages
                .routes(pb::MessageRoutesRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            let routes: Vec<Value> = r
                .routes
                .iter()
                .map(|r| json!({"recipient": r.recipient, "relay": r.relay}))
                .collect();
            out.print(&routes, || {
                r.routes
                    .iter()
                    .map(|r| {
                        format!(
                            "{}\t{}",
                            short(&r.recipient),
                            r.relay.as_deref().unwrap_or("(not sent yet)")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Relays { command } => {
            relays(&mut c, &out, command.unwrap_or(RelayCommand::List)).await
        }
        Command::Transparent(cmd) => transparent(&mut c, &out, cmd).await,
        Command::Call(cmd) => call(&mut c, &out, cmd).await,
        Command::Watch { from } => watch(&mut c, &out, from).await,
        // Answered above, before connecting.
        Command::Completions { .. } | Command::Manpages { .. } | Command::Chat => Ok(()),
        Command::Conversations => {
            let r = c
                .conversations
                .list(pb::ListConversationsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let list: Vec<model::Conversation> = r
                .conversations
                .into_iter()
                .map(from_pb::conversation)
                .collect();
            out.print(&list, || {
                list.iter()
                    .map(conversation_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Read { target, through } => {
            let r = c
                .conversations
                .mark_read(pb::MarkReadRequest { target, through })
                .await
                .map_err(status)?
                .into_inner();
            let conversation =
                from_pb::conversation(r.conversation.ok_or_else(|| missing("the conversation"))?);
            out.print(&conversation, || conversation_line(&conversation))
        }
    }
}

async fn transparent(
    c: &mut Client,
    out: &Output,
    cmd: TransparentCommand,
) -> Result<(), ApiError> {
    let t = &mut c.transparent;
    let statuses = match cmd {
        TransparentCommand::Warning => {
            let text = t
                .warning(pb::TransparentWarningRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .text;
            return out.print(&json!({ "warning": text }), || text.clone());
        }
        TransparentCommand::Enable { contact } => {
            let r = t
                .set(pb::SetTransparentRequest {
                    contact,
                    enabled: true,
                })
                .await
                .map_err(status)?
                .into_inner();
            if !out.json {
                eprintln!("{}", r.warning);
            }
            vec![r.status.ok_or_else(|| missing("the status"))?]
        }
        TransparentCommand::Disable { contact } => {
            let r = t
                .set(pb::SetTransparentRequest {
                    contact,
                    enabled: false,
                })
                .await
                .map_err(status)?
                .into_inner();
            vec![r.status.ok_or_else(|| missing("the status"))?]
        }
        TransparentCommand::Status { contact } => {
            t.status(pb::TransparentStatusRequest { contact })
                .await
                .map_err(status)?
                .into_inner()
                .statuses
        }
        TransparentCommand::Open { contact, wait_ms } => {
            let r = t
                .open_session(pb::OpenSessionRequest { contact, wait_ms })
                .await
                .map_err(status)?
                .into_inner();
            vec![r.status.ok_or_else(|| missing("the status"))?]
        }
        TransparentCommand::Close { contact } => {
            let r = t
                .close_session(pb::CloseSessionRequest { contact })
                .await
                .map_err(status)?
                .into_inner();
            vec![r.status.ok_or_else(|| missing("the status"))?]
        }
    };
    let statuses: Vec<model::TransparentStatus> = statuses
        .into_iter()
        .map(from_pb::transparent_status)
        .collect();
    out.print(&statuses, || {
        statuses
            .iter()
            .map(transparent_line)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

async fn call(c: &mut Client, out: &Output, cmd: CallCommand) -> Result<(), ApiError> {
    let calls = &mut c.calls;
    let list = match cmd {
        CallCommand::Start { contact } => vec![
            calls
                .start(pb::StartCallRequest { contact })
                .await
                .map_err(status)?
                .into_inner()
                .call,
        ],
        CallCommand::Accept { id } => vec![
            calls
                .accept(pb::AcceptCallRequest { call_id: id })
                .await
                .map_err(status)?
                .into_inner()
                .call,
        ],
        CallCommand::Reject { id } => vec![
            calls
                .reject(pb::RejectCallRequest { call_id: id })
                .await
                .map_err(status)?
                .into_inner()
                .call,
        ],
        CallCommand::Hangup { id } => vec![
            calls
                .hang_up(pb::HangUpRequest { call_id: id })
                .await
                .map_err(status)?
                .into_inner()
                .call,
        ],
        CallCommand::List => calls
            .list(pb::ListCallsRequest {})
            .await
            .map_err(status)?
            .into_inner()
            .calls
            .into_iter()
            .map(Some)
            .collect(),
    };
    let list: Vec<model::CallInfo> = list
        .into_iter()
        .map(|c| c.map(from_pb::call).ok_or_else(|| missing("the call")))
        .collect::<Result<_, _>>()?;
    out.print(&list, || {
        list.iter().map(call_line).collect::<Vec<_>>().join("\n")
    })
}

fn transparent_line(t: &model::TransparentStatus) -> String {
    let state = match t.state {
        model::TransparentState::Off => "off",
        model::TransparentState::WaitingForPeer => "waiting for the contact",
        model::TransparentState::Idle => "idle",
        model::TransparentState::Connecting => "connecting",
        model::TransparentState::Connected => "connected",
    };
    format!(
        "{}\t{state}\there {} / contact {}\tdirect sent {} / received {}",
        t.contact_name
            .as_deref()
            .unwrap_or_else(|| short(&t.contact)),
        if t.local_enabled { "on" } else { "off" },
        if t.peer_enabled { "on" } else { "off" },
        t.direct_sent,
        t.direct_received
    )
}

fn call_line(c: &model::CallInfo) -> String {
    let state = match c.state {
        model::CallState::Ringing => "ringing".to_owned(),
        model::CallState::Active => "active".to_owned(),
        model::CallState::Ended => {
            format!("ended ({})", c.end_reason.as_deref().unwrap_or("unknown"))
        }
    };
    format!(
        "{}\t{}\t{}\t{state}",
        c.id,
        if c.outgoing { "to" } else { "from" },
        c.contact_name
            .as_deref()
            .unwrap_or_else(|| short(&c.contact)),
    )
}

async fn identity(
    c: &mut Client,
    out: &Output,
    cmd: IdentityCommand,
    import_pem: Option<String>,
) -> Result<(), ApiError> {
    let info = match cmd {
        IdentityCommand::Create => {
            c.identity
                .create(pb::CreateIdentityRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .identity
        }
        IdentityCommand::Show => {
            c.identity
                .show(pb::ShowIdentityRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .identity
        }
        IdentityCommand::Import { .. } => {
            c.identity
                .import(pb::ImportIdentityRequest {
                    pkcs8_pem: import_pem.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner()
                .identity
        }
        IdentityCommand::Export => {
            let pem = c
                .identity
                .export(pb::ExportIdentityRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .pkcs8_pem;
            return out.print(&json!({ "pkcs8_pem": pem }), || pem.trim_end().to_owned());
        }
    };
    let info = from_pb::identity(info.ok_or_else(|| missing("the identity"))?);
    out.print(&info, || {
        format!(
            "public key:  {}\nfingerprint: {}\nkey store:   {}",
            info.public_key, info.fingerprint, info.key_store
        )
    })
}

async fn send(
    c: &mut Client,
    out: &Output,
    to: String,
    text: String,
    attach: Option<String>,
) -> Result<(), ApiError> {
    let r = c
        .messages
        .send(pb::SendMessageRequest { to, text, attach })
        .await
        .map_err(status)?
        .into_inner();
    print_message(out, r.message, "queued")
}

/// The daemon resolves paths from its own working directory: send it absolute ones.
fn absolute(path: PathBuf) -> Result<String, ApiError> {
    std::path::absolute(&path)
        .map(|p| p.display().to_string())
        .map_err(|e| invalid(format!("{}: {e}", path.display())))
}

async fn download(
    c: &mut Client,
    out: &Output,
    id: String,
    index: u32,
    dest: String,
) -> Result<(), ApiError> {
    let mut updates = c
        .messages
        .download(pb::DownloadRequest {
            id,
            index,
            out: dest,
        })
        .await
        .map_err(status)?
        .into_inner();
    while let Some(update) = updates.next().await {
        match update.map_err(status)?.update {
            Some(pb::download_update::Update::Progress(p)) if !out.json => {
                eprint!("\r{} / {} bytes", p.received, p.total);
            }
            Some(pb::download_update::Update::Done(d)) => {
                if !out.json {
                    eprintln!();
                }
                let result = model::DownloadResult {
                    path: d.path,
                    size: d.size,
                    sha256: d.sha256,
                    media_type: d.media_type,
                };
                return out.print(&result, || {
                    format!(
                        "saved {} ({} bytes, sha256 {})",
                        result.path, result.size, result.sha256
                    )
                });
            }
            _ => {}
        }
    }
    Err(missing("the download's result"))
}

async fn group(c: &mut Client, out: &Output, cmd: GroupCommand) -> Result<(), ApiError> {
    let conversation = match cmd {
        GroupCommand::Create(g) => {
            c.conversations
                .create_group(pb::CreateGroupRequest {
                    name: g.name,
                    members: g.members,
                })
                .await
                .map_err(status)?
                .into_inner()
                .conversation
        }
        GroupCommand::Add(g) => {
            c.conversations
                .add_members(pb::AddMembersRequest {
                    group: g.name,
                    members: g.members,
                })
                .await
                .map_err(status)?
                .into_inner()
                .conversation
        }
        GroupCommand::Remove(g) => {
            c.conversations
                .remove_members(pb::RemoveMembersRequest {
                    group: g.name,
                    members: g.members,
                })
                .await
                .map_err(status)?
                .into_inner()
                .conversation
        }
        GroupCommand::Send { name, text } => {
            // The daemon refuses a target that is not a group (never a contact of that name).
            let r = c
                .conversations
                .send_to_group(pb::SendToGroupRequest { group: name, text })
                .await
                .map_err(status)?
                .into_inner();
            return print_message(out, r.message, "queued");
        }
    };
    let conversation = from_pb::conversation(conversation.ok_or_else(|| missing("the group"))?);
    out.print(&conversation, || conversation_line(&conversation))
}

async fn relays(c: &mut Client, out: &Output, cmd: RelayCommand) -> Result<(), ApiError> {
    match cmd {
        RelayCommand::List => {
            let r = c
                .relays
                .list(pb::ListRelaysRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let relays: Vec<model::RelayInfo> = r.relays.into_iter().map(from_pb::relay).collect();
            // Human output ends with the anonymity summary (none before an identity exists).
            let summary = if out.json {
                None
            } else {
                match anonymity(c).await {
                    Ok(report) => Some(report.summary),
                    Err(e) if e.code == "no_identity" => None,
                    Err(e) => return Err(e),
                }
            };
            out.print(&relays, || {
                relays
                    .iter()
                    .map(relay_line)
                    .chain(summary)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        RelayCommand::Add { address } => {
            let r = c
                .relays
                .add(pb::AddRelayRequest { address })
                .await
                .map_err(status)?
                .into_inner();
            let relay = from_pb::relay(r.relay.ok_or_else(|| missing("the relay"))?);
            out.print(&relay, || relay_line(&relay))
        }
        RelayCommand::Remove { address } => {
            c.relays
                .remove(pb::RemoveRelayRequest {
                    address: address.clone(),
                })
                .await
                .map_err(status)?;
            out.print(&json!({ "removed": address }), || {
                format!("removed {address}")
            })
        }
        RelayCommand::Rx => {
            let r = c
                .relays
                .rx_relay(pb::RxRelayRequest {})
                .await
                .map_err(status)?
                .into_inner();
            out.print(&json!({ "address": r.address }), || {
                r.address
                    .clone()
                    .unwrap_or_else(|| "(none assigned yet)".into())
            })
        }
        RelayCommand::Anonymity => {
            let report = anonymity(c).await?;
            out.print(&report, || anonymity_text(&report))
        }
    }
}

async fn anonymity(c: &mut Client) -> Result<model::AnonymityReport, ApiError> {
    let r = c
        .relays
        .get_anonymity(pb::GetAnonymityRequest {})
        .await
        .map_err(status)?
        .into_inner();
    Ok(from_pb::anonymity_report(
        r.report.ok_or_else(|| missing("the anonymity report"))?,
    ))
}

/// The report for people: the summary line, then every role with its relay, what waits, what
/// is shared, and the witness.
fn anonymity_text(r: &model::AnonymityReport) -> String {
    let mut lines = vec![
        r.summary.clone(),
        format!(
            "mode {}: {} relay(s) needed, {} known",
            r.mode.as_str(),
            r.relays_needed,
            r.relays_known
        ),
        "roles:".to_owned(),
    ];
    for role in &r.roles {
        lines.push(format!(
            "  {}\t{}",
            role_label(role),
            role.relay.as_deref().unwrap_or("(waiting for a relay)")
        ));
    }
    if !r.waiting.is_empty() {
        lines.push("waiting:".to_owned());
        lines.extend(r.waiting.iter().map(|w| format!("  {}", role_label(w))));
    }
    if !r.shared.is_empty() {
        lines.push("shared:".to_owned());
        for s in &r.shared {
            let who: Vec<String> = s.roles.iter().map(role_label).collect();
            lines.push(format!("  {}\tsees {}", s.relay, who.join(", ")));
        }
    }
    lines.push(format!(
        "witness: {}",
        r.witness
            .as_deref()
            .unwrap_or("(none: sent messages end unconfirmed)")
    ));
    lines.join("\n")
}

/// `rx`, `tx_self`, or `tx_contact bob` (the contact's name, else the start of its key).
fn role_label(r: &model::RelayRole) -> String {
    match r.kind {
        model::RelayRoleKind::TxContact => format!(
            "{} {}",
            r.kind.as_str(),
            r.name.as_deref().unwrap_or_else(|| short(&r.key))
        ),
        kind => kind.as_str().to_owned(),
    }
}

async fn watch(c: &mut Client, out: &Output, from: u64) -> Result<(), ApiError> {
    let mut stream = c
        .events
        .subscribe(pb::SubscribeRequest { from_seq: from })
        .await
        .map_err(status)?
        .into_inner();
    while let Some(item) = stream.next().await {
        let event = from_pb::event(item.map_err(status)?).map_err(|e| ApiError {
            code: "internal".into(),
            message: e.to_string(),
            grpc_code: Code::Internal,
        })?;
        let line = if out.json {
            serde_json::to_string(&event).map_err(|e| invalid(e.to_string()))?
        } else {
            event_line(&event)
        };
        let mut stdout = io::stdout().lock();
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            // The reader went away (`jasper watch | head`): nothing left to do.
            return Ok(());
        }
    }
    Ok(())
}

fn read_input(file: &str) -> Result<String, ApiError> {
    let text = if file == "-" {
        io::read_to_string(io::stdin()).map_err(|e| invalid(format!("reading stdin: {e}")))?
    } else {
        std::fs::read_to_string(file).map_err(|e| invalid(format!("reading {file}: {e}")))?
    };
    Ok(text)
}

fn print_message(out: &Output, m: Option<pb::Message>, verb: &str) -> Result<(), ApiError> {
    let message = from_pb::message(m.ok_or_else(|| missing("the message"))?);
    out.print(&message, || format!("{verb} {}", message.id))
}

/// Where a command's result goes: JSON, or the human text.
struct Output {
    json: bool,
}

impl Output {
    fn print<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce() -> String,
    ) -> Result<(), ApiError> {
        let text = if self.json {
            serde_json::to_string_pretty(value).map_err(|e| invalid(e.to_string()))?
        } else {
            human()
        };
        let mut stdout = io::stdout().lock();
        if !text.is_empty() {
            let _ = writeln!(stdout, "{text}");
        }
        let _ = stdout.flush();
        Ok(())
    }
}

fn short(text: &str) -> &str {
    text.get(..12).unwrap_or(text)
}

fn state_name(state: &model::MessageState) -> &'static str {
    match state {
        model::MessageState::Queued => "queued",
        model::MessageState::Sent => "sent",
        model::MessageState::Visible => "visible",
        model::MessageState::Unconfirmed => "unconfirmed",
        model::MessageState::Waiting => "waiting",
        model::MessageState::Failed => "failed",
        model::MessageState::Received => "received",
    }
}

fn message_line(m: &model::Message) -> String {
    let who = if m.outgoing {
        "me".to_owned()
    } else {
        m.sender_name
            .clone()
            .unwrap_or_else(|| short(&m.sender).to_owned())
    };
    let mut text = if m.deleted {
        "(deleted)".to_owned()
    } else {
        m.content.clone()
    };
    if m.edited && !m.deleted {
        text.push_str(" (edited)");
    }
    let reactions: Vec<&str> = m.reactions.iter().map(|r| r.reaction.as_str()).collect();
    if !reactions.is_empty() {
        text.push_str(&format!(" [{}]", reactions.join(" ")));
    }
    let failure = m
        .failure
        .as_deref()
        .map(|f| format!(": {f}"))
        .unwrap_or_default();
    format!(
        "{}  {who}: {text}  ({}{failure}, {})",
        m.timestamp,
        state_name(&m.state),
        m.id
    )
}

fn conversation_line(c: &model::Conversation) -> String {
    let kind = match c.kind {
        model::ConversationKind::Direct => "direct",
        model::ConversationKind::Group => "group",
    };
    let unread = match c.unread {
        0 => String::new(),
        n => format!("\t{n} unread"),
    };
    format!(
        "#{}\t{kind}\t{}\t{} member(s){unread}",
        c.id,
        c.name,
        c.members.len()
    )
}

fn relay_line(r: &model::RelayInfo) -> String {
    let latency = r
        .latency_ms
        .map(|l| format!("{l:.0} ms"))
        .unwrap_or_else(|| "-".into());
    let load = r
        .reported_load
        .map(|l| format!("{l:.2}"))
        .unwrap_or_else(|| "-".into());
    format!(
        "{}\t{}\tlatency {latency}\tload {load}\tok {} / failed {}{}{}",
        r.address,
        r.origin,
        r.successes,
        r.failures,
        if r.suspect { "\tSUSPECT" } else { "" },
        if r.roles.is_empty() {
            String::new()
        } else {
            format!("\t[{}]", r.roles.join(","))
        }
    )
}

fn event_line(e: &model::Event) -> String {
    let what = match &e.kind {
        model::EventKind::MessageReceived { message } => {
            format!("received {}", message_line(message))
        }
        model::EventKind::MessageSent { message } => format!("sent {}", message_line(message)),
        model::EventKind::MessageUpdated { message } => {
            format!("updated {}", message_line(message))
        }
        model::EventKind::MessageStateChanged {
            message_id,
            state,
            failure,
            ..
        } => format!(
            "state {message_id} {}{}",
            state_name(state),
            failure
                .as_deref()
                .map(|f| format!(": {f}"))
                .unwrap_or_default()
        ),
        model::EventKind::ConversationUpdated { conversation } => {
            format!("conversation {}", conversation_line(conversation))
        }
        model::EventKind::ContactAdded { contact } => format!("contact {}", contact.name),
        model::EventKind::IdentityChanged { identity } => {
            format!("identity {}", short(&identity.fingerprint))
        }
        model::EventKind::RelayDiscovered { address } => format!("relay {address}"),
        model::EventKind::TransparentChanged { status } => {
            format!("transparent {}", transparent_line(status))
        }
        model::EventKind::CallChanged { call } => format!("call {}", call_line(call)),
        model::EventKind::AnonymityChanged { report } => format!("anonymity {}", report.summary),
    };
    format!("#{} {what}", e.seq)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere_and_relays_defaults_to_list() {
        let cli =
            Cli::try_parse_from(["jasper", "relays", "--json", "--socket", "/tmp/s"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.socket, Some(PathBuf::from("/tmp/s")));
        assert!(matches!(cli.command, Command::Relays { command: None }));
    }
}
