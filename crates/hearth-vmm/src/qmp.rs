//! A minimal QMP client: connect to QEMU's monitor socket, negotiate capabilities, run one
//! command and read its answer, skipping the asynchronous events QEMU interleaves.
//!
//! Every read is bounded in size (a line longer than [`MAX_LINE`] is an error) and every call
//! in time, so a wedged QEMU cannot hang its owner.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const MAX_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP did not answer within {0:?}")]
    Timeout(Duration),
    #[error("QMP error: {0}")]
    Command(String),
    #[error("QMP protocol: {0}")]
    Protocol(String),
}

pub struct Qmp {
    rd: BufReader<tokio::net::unix::OwnedReadHalf>,
    wr: tokio::net::unix::OwnedWriteHalf,
    timeout: Duration,
}

impl Qmp {
    /// Connects and leaves capability negotiation mode. A refused connection is tried
    /// again within `timeout`: QEMU's socket file appears at bind(), a moment before it
    /// listens.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let fut = async {
            let stream = loop {
                match UnixStream::connect(path).await {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    other => break other?,
                }
            };
            let (rd, wr) = stream.into_split();
            let mut qmp = Qmp {
                rd: BufReader::new(rd),
                wr,
                timeout,
            };
            let greeting = qmp.read_value().await?;
            if greeting.get("QMP").is_none() {
                return Err(QmpError::Protocol(format!(
                    "unexpected greeting {greeting}"
                )));
            }
            qmp.execute_inner("qmp_capabilities", None).await?;
            Ok(qmp)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| QmpError::Timeout(timeout))?
    }

    /// Runs `command` and returns its `return` value.
    pub async fn execute(&mut self, command: &str, args: Option<Value>) -> Result<Value, QmpError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.execute_inner(command, args))
            .await
            .map_err(|_| QmpError::Timeout(timeout))?
    }

    async fn execute_inner(
        &mut self,
        command: &str,
        args: Option<Value>,
    ) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.wr.write_all(line.as_bytes()).await?;
        loop {
            let v = self.read_value().await?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                let desc = e.get("desc").and_then(Value::as_str).unwrap_or("unknown");
                return Err(QmpError::Command(desc.to_string()));
            }
            // An event: not ours.
        }
    }

    async fn read_value(&mut self) -> Result<Value, QmpError> {
        let mut line = Vec::new();
        loop {
            let buf = self.rd.fill_buf().await?;
            if buf.is_empty() {
                return Err(QmpError::Protocol("QEMU closed the QMP socket".into()));
            }
            let (used, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&buf[..i]);
                    (i + 1, true)
                }
                None => {
                    line.extend_from_slice(buf);
                    (buf.len(), false)
                }
            };
            self.rd.consume(used);
            if line.len() > MAX_LINE {
                return Err(QmpError::Protocol("a QMP message exceeded 1 MiB".into()));
            }
            if done {
                return serde_json::from_slice(&line)
                    .map_err(|e| QmpError::Protocol(format!("bad JSON from QMP: {e}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A scripted QMP peer: greets, then answers each command, with an event in between.
    #[tokio::test]
    async fn negotiates_skips_events_and_reports_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"{\"QMP\":{\"version\":{}}}\n").await.unwrap();
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 4096];
            for reply in [
                "{\"return\":{}}\n",
                "{\"event\":\"STOP\"}\n{\"return\":{\"status\":\"running\"}}\n",
                "{\"error\":{\"class\":\"GenericError\",\"desc\":\"nope\"}}\n",
            ] {
                let n = s.read(&mut buf).await.unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
                s.write_all(reply.as_bytes()).await.unwrap();
            }
            seen
        });
        let mut q = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
        let st = q.execute("query-status", None).await.unwrap();
        assert_eq!(st["status"], "running");
        let err = q.execute("bogus", None).await.unwrap_err();
        assert!(err.to_string().contains("nope"));
        let seen = server.await.unwrap();
        assert!(seen[0].contains("qmp_capabilities"));
        assert!(seen[1].contains("query-status"));
    }

    /// A socket file nobody listens on yet (QEMU between bind and listen) is tried again,
    /// within the timeout, and given up on at it.
    #[tokio::test]
    async fn a_refused_connection_is_retried_until_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        // A bound socket dropped leaves its file: connecting is refused.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let err = Qmp::connect(&path, Duration::from_millis(100))
            .await
            .err()
            .expect("nobody listens");
        assert!(matches!(err, QmpError::Timeout(_)), "{err}");

        let p = path.clone();
        let server = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            std::fs::remove_file(&p).unwrap();
            let listener = tokio::net::UnixListener::bind(&p).unwrap();
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"{\"QMP\":{}}\n").await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"{\"return\":{}}\n").await.unwrap();
        });
        Qmp::connect(&path, Duration::from_secs(5))
            .await
            .expect("connects once QEMU listens");
        server.await.unwrap();
    }
}
