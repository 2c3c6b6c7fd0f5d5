//! The host side of Firecracker's and Cloud Hypervisor's hybrid vsock: the VMM listens on a
//! Unix socket, and a connection to a guest port starts with `CONNECT <port>\n`, answered
//! by a line starting `OK ` (what follows is the host-side port number, which means
//! nothing to us). After that line, the stream is the guest's.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The longest answer line read.
const MAX_LINE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("connecting to the vsock socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("guest port {port}: {message}")]
    Handshake { port: u32, message: String },
    #[error("guest port {port}: no answer to CONNECT within {secs} s")]
    Timeout { port: u32, secs: u64 },
}

/// A stream to the guest's vsock `port`, through the VMM's socket at `uds`.
pub async fn connect(uds: &Path, port: u32, timeout: Duration) -> Result<UnixStream, VsockError> {
    let mut s = UnixStream::connect(uds)
        .await
        .map_err(|source| VsockError::Connect {
            path: uds.display().to_string(),
            source,
        })?;
    tokio::time::timeout(timeout, handshake(&mut s, port))
        .await
        .map_err(|_| VsockError::Timeout {
            port,
            secs: timeout.as_secs(),
        })??;
    Ok(s)
}

async fn handshake(s: &mut UnixStream, port: u32) -> Result<(), VsockError> {
    let fail = |message: String| VsockError::Handshake { port, message };
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    // Byte by byte: what follows the line is the guest's, and must stay unread.
    let mut line = Vec::new();
    loop {
        let b = s.read_u8().await.map_err(|e| {
            fail(format!(
                "the VMM closed the connection ({e}); is anything listening on that port?"
            ))
        })?;
        if b == b'\n' {
            break;
        }
        line.push(b);
        if line.len() > MAX_LINE {
            return Err(fail("the answer to CONNECT is too long".into()));
        }
    }
    let line = String::from_utf8_lossy(&line);
    if line.starts_with("OK ") {
        Ok(())
    } else {
        Err(fail(format!("the VMM answered {line:?} to CONNECT")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    /// A peer that speaks the VMM's side: reads `CONNECT n`, answers `reply`, then echoes.
    fn vmm(path: &Path, reply: &'static str) -> tokio::task::JoinHandle<String> {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut s = tokio::io::BufReader::new(s);
            let mut line = String::new();
            s.read_line(&mut line).await.unwrap();
            s.get_mut().write_all(reply.as_bytes()).await.unwrap();
            let mut buf = [0u8; 5];
            if s.read_exact(&mut buf).await.is_ok() {
                s.get_mut().write_all(&buf).await.unwrap();
            }
            line
        })
    }

    #[tokio::test]
    async fn connect_then_the_stream_is_the_guests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        // The answer and the guest's first bytes arrive together: none may be lost.
        let peer = vmm(&path, "OK 1073741824\n");
        let mut s = connect(&path, 1024, Duration::from_secs(5)).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        assert_eq!(peer.await.unwrap(), "CONNECT 1024\n");
    }

    #[tokio::test]
    async fn a_refused_or_silent_port_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let _peer = vmm(&path, "NO\n");
        let err = connect(&path, 52, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("\"NO\""), "{err}");

        // Closed without an answer (nothing listens on the guest port).
        let path2 = dir.path().join("v2.sock");
        let listener = tokio::net::UnixListener::bind(&path2).unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        });
        let err = connect(&path2, 52, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");

        // Never answers.
        let path3 = dir.path().join("v3.sock");
        let listener = tokio::net::UnixListener::bind(&path3).unwrap();
        let hold = tokio::spawn(async move { listener.accept().await });
        let err = connect(&path3, 52, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, VsockError::Timeout { .. }), "{err}");
        hold.abort();

        let err = connect(&dir.path().join("none"), 52, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, VsockError::Connect { .. }), "{err}");
    }
}
