//! The CLI's HTTP client for the manager's REST API, and the saved login.
//!
//! The login is kept in `<config dir>/hearth/credentials.json` with mode 0600.
//! `HEARTH_URL` and `HEARTH_TOKEN` override it (handy for scripts and API keys).
//!
//! A manager serving TLS has a certificate from its cluster CA: `hearth login --ca-cert
//! FILE` saves that CA with the login, and `HEARTH_CA_CERT=FILE` names one for any command.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use hearth_types::ErrorBody;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub const DEFAULT_URL: &str = "http://127.0.0.1:18080";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Credentials {
    pub url: String,
    pub token: String,
    /// The CA (PEM) the manager's certificate chains to, when it is not a public one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_pem: Option<String>,
}

pub fn credentials_path() -> PathBuf {
    dirs::config_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("hearth")
        .join("credentials.json")
}

impl Credentials {
    pub fn load() -> Option<Credentials> {
        serde_json::from_slice(&std::fs::read(credentials_path()).ok()?).ok()
    }

    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = credentials_path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(&serde_json::to_vec_pretty(self)?)?;
        Ok(path)
    }
}

/// An API error the server answered with; the CLI prints its message.
#[derive(Debug, thiserror::Error)]
#[error("{message} ({status})")]
pub struct ApiFailure {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

pub struct Client {
    http: reqwest::Client,
    pub url: String,
    token: Option<String>,
    /// The CA to trust besides the public ones.
    pub ca_cert_pem: Option<String>,
}

/// Reads a CA certificate file, checking that it holds a PEM certificate.
pub fn read_ca_cert(path: &std::path::Path) -> anyhow::Result<String> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("reading the CA certificate {}", path.display()))?;
    reqwest::Certificate::from_pem(pem.as_bytes())
        .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
    Ok(pem)
}

impl Client {
    /// A client for `url` (or the saved/environment one), with the saved token when it was
    /// issued by that same server.
    pub fn new(url: Option<String>) -> anyhow::Result<Client> {
        Client::with_ca(url, None)
    }

    /// Like [`Client::new`], trusting `ca_cert_pem` (else `HEARTH_CA_CERT`, else the one
    /// saved with the login).
    pub fn with_ca(url: Option<String>, ca_cert_pem: Option<String>) -> anyhow::Result<Client> {
        let saved = Credentials::load();
        let url = url
            .or_else(|| std::env::var("HEARTH_URL").ok())
            .or_else(|| saved.as_ref().map(|c| c.url.clone()))
            .unwrap_or_else(|| DEFAULT_URL.to_string());
        let url = url.trim_end_matches('/').to_string();
        let saved = saved.filter(|c| c.url.trim_end_matches('/') == url);
        let token = std::env::var("HEARTH_TOKEN")
            .ok()
            .or_else(|| saved.as_ref().map(|c| c.token.clone()));
        let ca_cert_pem = match (ca_cert_pem, std::env::var_os("HEARTH_CA_CERT")) {
            (Some(pem), _) => Some(pem),
            (None, Some(path)) => Some(read_ca_cert(std::path::Path::new(&path))?),
            (None, None) => saved.and_then(|c| c.ca_cert_pem),
        };
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(5));
        if let Some(pem) = &ca_cert_pem {
            http = http.add_root_certificate(
                reqwest::Certificate::from_pem(pem.as_bytes())
                    .context("the CA certificate is not PEM")?,
            );
        }
        Ok(Client {
            http: http.build()?,
            url,
            token,
            ca_cert_pem,
        })
    }

    pub async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<T> {
        let mut req = self.builder(method.clone(), path);
        if let Some(b) = body {
            req = req.json(b);
        }
        self.finish(req, &method, path).await
    }

    fn builder(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{}", self.url, path));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// POSTs a file as the body, streamed, showing how much went on stderr (`progress`).
    pub async fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        file: &std::path::Path,
        progress: bool,
    ) -> anyhow::Result<T> {
        use futures_util::StreamExt;
        let f = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("opening {}", file.display()))?;
        let total = f.metadata().await?.len();
        let mut sent = 0u64;
        let mut shown = 0u64;
        let stream = tokio_util::io::ReaderStream::with_capacity(f, 1 << 20).inspect(move |c| {
            if let (true, Ok(c)) = (progress, c) {
                sent += c.len() as u64;
                if sent - shown >= 4 << 20 || sent == total {
                    shown = sent;
                    let mib = |b: u64| b as f64 / 1048576.0;
                    eprint!(
                        "\ruploading {:.1} of {:.1} MiB ({:.0}%)",
                        mib(sent),
                        mib(total),
                        sent as f64 * 100.0 / total.max(1) as f64
                    );
                    if sent == total {
                        eprintln!("; the hosts are unpacking it…");
                    }
                }
            }
        });
        let req = self
            .builder(Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, total)
            .timeout(Duration::from_secs(3600))
            .body(reqwest::Body::wrap_stream(stream));
        self.finish(req, &Method::POST, path).await
    }

    async fn finish<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        method: &Method,
        path: &str,
    ) -> anyhow::Result<T> {
        let resp = req.send().await.map_err(|e| {
            let chain = format!("{:?}", anyhow::Error::from(e));
            let hint = if chain.contains("UnknownIssuer") || chain.contains("certificate") {
                "the manager's certificate is not trusted: pass --ca-cert to `hearth login` \
                 (a manager keeps its CA in <data dir>/ca.pem), or set HEARTH_CA_CERT"
            } else {
                "is it running? start it with `hearth up`, or pass --url"
            };
            anyhow::anyhow!("cannot reach Hearth at {}: {chain}\n  {hint}", self.url)
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the response")?;
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => (e.error.code.as_str().to_string(), e.error.message),
                Err(_) => (
                    "unknown".into(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ),
            };
            let message = if status == StatusCode::UNAUTHORIZED && self.token.is_none() {
                format!("{message}\n  log in first: hearth login --url {}", self.url)
            } else {
                message
            };
            return Err(ApiFailure {
                status,
                code,
                message,
            }
            .into());
        }
        if bytes.is_empty() {
            return serde_json::from_slice(b"null").context("empty response");
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("unexpected response from {method} {path}"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.request(Method::GET, path, None).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<T> {
        self.request(Method::POST, path, Some(&body)).await
    }

    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<T> {
        self.request(Method::PATCH, path, Some(&body)).await
    }

    /// A plain-text answer (the console log).
    pub async fn text(&self, path: &str) -> anyhow::Result<String> {
        let mut req = self.http.get(format!("{}{}", self.url, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach Hearth at {}: {e}", self.url))?;
        let status = resp.status();
        let text = resp.text().await.context("reading the response")?;
        if !status.is_success() {
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|e| e.error.message)
                .unwrap_or(text);
            return Err(ApiFailure {
                status,
                code: "error".into(),
                message,
            }
            .into());
        }
        Ok(text)
    }

    /// Opens a WebSocket to `path`, authenticated like every other call.
    pub async fn websocket(
        &self,
        path: &str,
    ) -> anyhow::Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    > {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let ws_url = if let Some(rest) = self.url.strip_prefix("https://") {
            format!("wss://{rest}{path}")
        } else {
            format!("ws://{}{path}", self.url.trim_start_matches("http://"))
        };
        let mut req = ws_url.into_client_request()?;
        if let Some(t) = &self.token {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse()?);
        }
        let connector = match &self.ca_cert_pem {
            Some(pem) if self.url.starts_with("https://") => Some(ws_tls(pem)?),
            _ => None,
        };
        match tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector).await {
            Ok((s, _)) => Ok(s),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status();
                let message = resp
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<ErrorBody>(b).ok())
                    .map(|e| e.error.message)
                    .unwrap_or_else(|| format!("the server refused the WebSocket ({status})"));
                Err(ApiFailure {
                    status: StatusCode::from_u16(status.as_u16())
                        .unwrap_or(StatusCode::BAD_GATEWAY),
                    code: "error".into(),
                    message,
                }
                .into())
            }
            Err(e) => Err(anyhow::anyhow!(
                "cannot open a WebSocket to {}: {e}",
                self.url
            )),
        }
    }

    /// A DELETE that answers with a body.
    pub async fn delete_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> anyhow::Result<T> {
        self.request(Method::DELETE, path, None).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        let _: serde_json::Value = self.request(Method::DELETE, path, None).await?;
        Ok(())
    }
}

/// Percent-encodes one path segment (ids and names are plain, but be safe).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a secret: from stdin when asked, else by prompting on the terminal.
pub fn read_secret(prompt: &str, from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s)?;
        let s = s.trim_end_matches(['\n', '\r']).to_string();
        if s.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(s);
    }
    rpassword::prompt_password(prompt)
        .context("reading the password (use --password-stdin when not on a terminal)")
}

/// A TLS connector for WebSockets that trusts `ca_pem` (besides nothing else: a manager
/// with a private CA has no public certificate).
fn ws_tls(ca_pem: &str) -> anyhow::Result<tokio_tungstenite::Connector> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("reading the CA certificate")?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
        config,
    )))
}
