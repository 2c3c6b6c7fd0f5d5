//! The host's async client of the guest protocol, over any byte stream.
//!
//! One reader task demultiplexes frames to per-stream channels; one writer task serialises
//! frames onto the stream. A [`GuestClient`] is cheap to clone and serves many concurrent
//! requests. When the connection drops, every open stream ends with an error and the client
//! reports [`GuestClient::is_closed`]; the owner reconnects (a virtio-serial port survives
//! the host side closing).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::frame::{Frame, FrameError, Kind, CHUNK};
use crate::msg::{Hello, Request, Response};
use crate::PROTOCOL_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the guest connection is closed")]
    Closed,
    #[error("the guest did not complete the handshake within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("the guest speaks protocol versions we don't ({0:?})")]
    Version(Vec<u32>),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

type Routes = Arc<Mutex<HashMap<u32, mpsc::Sender<Frame>>>>;

#[derive(Clone)]
pub struct GuestClient {
    out: mpsc::Sender<Frame>,
    routes: Routes,
    next_stream: Arc<AtomicU32>,
    closed: Arc<AtomicBool>,
    pub hello: Arc<Hello>,
}

/// What an exec returned. Output beyond `max_output` bytes per stream is dropped and flagged.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub code: i32,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub truncated: bool,
}

impl GuestClient {
    /// Runs the handshake on `io` and starts the reader and writer tasks.
    pub async fn connect<S>(io: S, timeout: Duration) -> Result<GuestClient, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(io);
        let (out, mut out_rx) = mpsc::channel::<Frame>(256);
        let routes: Routes = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (hello_tx, hello_rx) = oneshot::channel::<Hello>();

        tokio::spawn(async move {
            while let Some(f) = out_rx.recv().await {
                if wr.write_all(&f.encode()).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });

        let r_routes = routes.clone();
        let r_closed = closed.clone();
        tokio::spawn(async move {
            let mut hello_tx = Some(hello_tx);
            let mut buf = Vec::with_capacity(64 * 1024);
            let mut chunk = vec![0u8; 64 * 1024];
            'outer: loop {
                let n = match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    let frame = match Frame::decode(&mut buf) {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(_) => break 'outer, // a peer that breaks framing is dropped
                    };
                    if frame.stream == 0 {
                        if frame.kind == Kind::Hello {
                            if let (Some(tx), Ok(h)) = (hello_tx.take(), frame.parse::<Hello>()) {
                                let _ = tx.send(h);
                            }
                        }
                        continue;
                    }
                    let route = r_routes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&frame.stream)
                        .cloned();
                    if let Some(tx) = route {
                        let _ = tx.send(frame).await;
                    }
                }
            }
            r_closed.store(true, Ordering::SeqCst);
            r_routes.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });

        let hello = Hello {
            versions: vec![PROTOCOL_VERSION],
            agent: format!("hearth-host/{}", env!("CARGO_PKG_VERSION")),
            boot_id: String::new(),
        };
        out.send(Frame::json(0, Kind::Hello, &hello)?)
            .await
            .map_err(|_| ClientError::Closed)?;
        let reply = tokio::time::timeout(timeout, hello_rx)
            .await
            .map_err(|_| ClientError::HandshakeTimeout(timeout))?
            .map_err(|_| ClientError::Closed)?;
        if reply.versions != [PROTOCOL_VERSION] {
            return Err(ClientError::Version(reply.versions));
        }
        Ok(GuestClient {
            out,
            routes,
            next_stream: Arc::new(AtomicU32::new(1)),
            closed,
            hello: Arc::new(reply),
        })
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst) || self.out.is_closed()
    }

    /// Opens a stream with `req`.
    pub async fn open(&self, req: &Request) -> Result<GuestStream, ClientError> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed).max(1);
        let (tx, rx) = mpsc::channel(64);
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let stream = GuestStream {
            id,
            rx,
            client: self.clone(),
        };
        stream
            .send_frame(Frame::json(id, Kind::Request, req)?)
            .await?;
        Ok(stream)
    }

    /// One request, one response; anything else on the stream is ignored.
    pub async fn call(&self, req: &Request) -> Result<Response, ClientError> {
        let mut s = self.open(req).await?;
        loop {
            let f = s.recv().await.ok_or(ClientError::Closed)?;
            if f.kind == Kind::Response {
                return Ok(f.parse()?);
            }
        }
    }

    /// Runs a command to completion, feeding it `stdin` and collecting its output.
    pub async fn exec(
        &self,
        req: &Request,
        stdin: &[u8],
        max_output: usize,
    ) -> Result<ExecOutput, ClientError> {
        let mut s = self.open(req).await?;
        for chunk in stdin.chunks(CHUNK) {
            s.send(Kind::Stdin, chunk.to_vec()).await?;
        }
        s.send(Kind::StdinEof, vec![]).await?;
        let mut out = ExecOutput::default();
        loop {
            let f = s.recv().await.ok_or(ClientError::Closed)?;
            match f.kind {
                Kind::Stdout | Kind::Stderr => {
                    let buf = if f.kind == Kind::Stdout {
                        &mut out.stdout
                    } else {
                        &mut out.stderr
                    };
                    let room = max_output.saturating_sub(buf.len());
                    if f.payload.len() > room {
                        out.truncated = true;
                    }
                    buf.extend_from_slice(&f.payload[..f.payload.len().min(room)]);
                }
                Kind::Response => {
                    return match f.parse::<Response>()? {
                        Response::Exited {
                            code,
                            signal,
                            timed_out,
                        } => {
                            out.code = code;
                            out.signal = signal;
                            out.timed_out = timed_out;
                            Ok(out)
                        }
                        Response::Error { message } => Err(ClientError::Protocol(message)),
                        other => Err(ClientError::Protocol(format!("unexpected reply {other:?}"))),
                    };
                }
                _ => {}
            }
        }
    }
}

/// One open stream. Dropping it forgets the stream (late frames are discarded).
pub struct GuestStream {
    pub id: u32,
    rx: mpsc::Receiver<Frame>,
    client: GuestClient,
}

impl GuestStream {
    async fn send_frame(&self, f: Frame) -> Result<(), ClientError> {
        self.client
            .out
            .send(f)
            .await
            .map_err(|_| ClientError::Closed)
    }

    pub async fn send(&self, kind: Kind, payload: Vec<u8>) -> Result<(), ClientError> {
        self.send_frame(Frame::new(self.id, kind, payload)).await
    }

    /// The next frame of this stream; `None` when the connection closed.
    pub async fn recv(&mut self) -> Option<Frame> {
        self.rx.recv().await
    }
}

impl Drop for GuestStream {
    fn drop(&mut self) {
        self.client
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}
