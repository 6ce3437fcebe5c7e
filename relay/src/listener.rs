//! The relay's TCP listener: every accepted connection is counted against its address
//! ([`Admission::connect`]) before hyper reads a byte of it, and closed at once when that
//! address already holds its maximum. Rate limits act per request; this bounds what a client
//! can make the relay hold without sending any (sockets, buffers, hyper's per-connection state),
//! and what one that opens a new connection per request costs before its first refusal.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::admission::{Admission, ConnectionSlot};

pub struct AdmittedListener {
    inner: TcpListener,
    admission: Arc<Admission>,
}

impl AdmittedListener {
    pub fn new(inner: TcpListener, admission: Arc<Admission>) -> Self {
        Self { inner, admission }
    }
}

/// An accepted connection with its place in the per-address count, released when hyper drops
/// the connection.
pub struct AdmittedStream {
    stream: TcpStream,
    _slot: ConnectionSlot,
}

impl axum::serve::Listener for AdmittedListener {
    type Io = AdmittedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, remote)) => match self.admission.connect(remote.ip()) {
                    Some(slot) => {
                        return (
                            AdmittedStream {
                                stream,
                                _slot: slot,
                            },
                            remote,
                        );
                    }
                    None => {
                        tracing::debug!(%remote, "too many connections from this address: closed");
                        drop(stream);
                    }
                },
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close instead of
                    // spinning (what axum's own listener does).
                    tracing::error!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

impl AsyncRead for AdmittedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AdmittedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
