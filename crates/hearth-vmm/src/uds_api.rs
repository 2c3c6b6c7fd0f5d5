//! The REST APIs Firecracker and Cloud Hypervisor serve on a Unix socket: one [`ApiCall`] is
//! one HTTP/1.1 request with a JSON body, sent by [`UdsApi`]. The drivers build their calls
//! as data (so tests can check every body against the VMMs' specifications) and send them
//! here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// The longest a VMM may take to answer one call (a snapshot of a large guest is the
/// slowest).
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest answer read.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// One request to a VMM's API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    pub method: &'static str,
    /// The path, e.g. `/boot-source` or `/api/v1/vm.create`.
    pub path: String,
    pub body: Option<serde_json::Value>,
}

impl ApiCall {
    pub fn put(path: impl Into<String>, body: serde_json::Value) -> ApiCall {
        ApiCall {
            method: "PUT",
            path: path.into(),
            body: Some(body),
        }
    }

    pub fn patch(path: impl Into<String>, body: serde_json::Value) -> ApiCall {
        ApiCall {
            method: "PATCH",
            path: path.into(),
            body: Some(body),
        }
    }

    /// A PUT with no body (Cloud Hypervisor's `vm.boot`, `vm.pause`, …).
    pub fn put_empty(path: impl Into<String>) -> ApiCall {
        ApiCall {
            method: "PUT",
            path: path.into(),
            body: None,
        }
    }

    pub fn get(path: impl Into<String>) -> ApiCall {
        ApiCall {
            method: "GET",
            path: path.into(),
            body: None,
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("connecting to {socket}: {source}")]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("{method} {path}: {message}")]
    Http {
        method: &'static str,
        path: String,
        message: String,
    },
    /// The VMM answered with an error status; `body` is what it said (its `fault_message`).
    #[error("{method} {path} answered {status}: {body}")]
    Refused {
        method: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    #[error("{method} {path}: no answer within {secs} s")]
    Timeout {
        method: &'static str,
        path: String,
        secs: u64,
    },
}

/// A VMM's API socket.
#[derive(Debug, Clone)]
pub struct UdsApi {
    socket: PathBuf,
}

impl UdsApi {
    pub fn new(socket: impl AsRef<Path>) -> UdsApi {
        UdsApi {
            socket: socket.as_ref().to_path_buf(),
        }
    }

    /// Sends `call` on a connection of its own and returns the answer's body (empty for a
    /// 204).
    pub async fn send(&self, call: &ApiCall) -> Result<String, ApiError> {
        tokio::time::timeout(CALL_TIMEOUT, self.send_now(call))
            .await
            .map_err(|_| ApiError::Timeout {
                method: call.method,
                path: call.path.clone(),
                secs: CALL_TIMEOUT.as_secs(),
            })?
    }

    /// Sends each call in turn, stopping at the first that fails.
    pub async fn send_all(&self, calls: &[ApiCall]) -> Result<(), ApiError> {
        for c in calls {
            self.send(c).await?;
        }
        Ok(())
    }

    async fn send_now(&self, call: &ApiCall) -> Result<String, ApiError> {
        let http = |message: String| ApiError::Http {
            method: call.method,
            path: call.path.clone(),
            message,
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ApiError::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(e.to_string()))?;
        let conn = tokio::spawn(conn);
        let body = match &call.body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| http(e.to_string()))?),
            None => Bytes::new(),
        };
        let mut req = hyper::Request::builder()
            .method(call.method)
            .uri(&call.path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::ACCEPT, "application/json");
        if call.body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body)).map_err(|e| http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| http(e.to_string()))?;
        let status = resp.status();
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES);
        let bytes = limited
            .collect()
            .await
            .map_err(|e| http(e.to_string()))?
            .to_bytes();
        conn.abort();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if !status.is_success() {
            return Err(ApiError::Refused {
                method: call.method,
                path: call.path.clone(),
                status: status.as_u16(),
                body: text,
            });
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP peer on a Unix socket: returns what it was sent, answers `answer`.
    async fn peer(dir: &Path, answer: &'static str) -> (UdsApi, tokio::task::JoinHandle<String>) {
        let path = dir.join("api.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let mut got = Vec::new();
            // Headers, then as much body as Content-Length says.
            loop {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            s.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(got).unwrap()
        });
        (UdsApi::new(&path), task)
    }

    #[tokio::test]
    async fn a_call_is_an_http_request_on_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let (api, seen) = peer(dir.path(), "HTTP/1.1 204 No Content\r\n\r\n").await;
        let call = ApiCall::put("/machine-config", serde_json::json!({"vcpu_count": 2}));
        assert_eq!(api.send(&call).await.unwrap(), "");
        let seen = seen.await.unwrap();
        assert!(
            seen.starts_with("PUT /machine-config HTTP/1.1\r\n"),
            "{seen}"
        );
        assert!(seen
            .to_ascii_lowercase()
            .contains("content-type: application/json"));
        assert!(seen.ends_with(r#"{"vcpu_count":2}"#), "{seen}");
    }

    #[tokio::test]
    async fn a_refusal_carries_what_the_vmm_said() {
        let dir = tempfile::tempdir().unwrap();
        let (api, _) = peer(
            dir.path(),
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 29\r\n\r\n{\"fault_message\":\"bad vcpus\"}",
        )
        .await;
        let err = api
            .send(&ApiCall::put("/machine-config", serde_json::json!({})))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ApiError::Refused { status: 400, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("bad vcpus"), "{err}");
        let gone = UdsApi::new(dir.path().join("none.sock"));
        assert!(matches!(
            gone.send(&ApiCall::get("/")).await,
            Err(ApiError::Connect { .. })
        ));
    }
}
