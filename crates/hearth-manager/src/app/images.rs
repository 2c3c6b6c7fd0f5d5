//! Images users add. Uploads: the body is streamed to a file under the data dir (bounded,
//! hashed as it comes), then streamed to every host that is up, whose agent unpacks it into
//! a root filesystem; nothing is kept when any step fails, and the file goes either way.
//! Builds: every host that is up builds a minimal Debian with the packages asked for, in
//! the background; their progress is asked for with the same call.

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use hearth_agent_api::pb;
use hearth_types::function::RuntimeHost;
use hearth_types::host::HostStatus;
use hearth_types::vm::{check_user_image_name, BuildImage, Image, ImageBuild, ImportImage};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::App;
use crate::error::{ApiError, ApiResult};

const FORMATS: [&str; 5] = ["oci", "rootfs-tar", "ext4", "kernel", "initrd"];
const CHUNK: usize = 1 << 20;

impl App {
    pub async fn import_image<S, E>(&self, q: ImportImage, body: S) -> ApiResult<Image>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        check_user_image_name(&q.name).map_err(ApiError::BadRequest)?;
        let format = q.format.unwrap_or_else(|| "oci".into());
        if !FORMATS.contains(&format.as_str()) {
            return Err(ApiError::bad_request(format!(
                "format must be oci, rootfs-tar, ext4, kernel or initrd, got {format:?}"
            )));
        }
        let want = q.sha256.map(|s| s.to_ascii_lowercase());
        if want
            .as_ref()
            .is_some_and(|s| s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(ApiError::bad_request("sha256 must be 64 hex digits"));
        }
        let hosts = self.up_hosts("take the image").await?;
        let dir = self.config().data_dir.join("uploads");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(anyhow::Error::from)?;
        let file = dir.join(format!("image-{}", hearth_types::short_suffix()));
        let res = async {
            let (size, sha) = self.receive(body, &file).await?;
            if let Some(w) = &want {
                if *w != sha {
                    return Err(ApiError::bad_request(format!(
                        "the upload's SHA-256 is {sha}, not {w}: it was damaged or is another file"
                    )));
                }
            }
            let header = pb::ImportHeader {
                name: q.name.clone(),
                format: format.clone(),
                size_bytes: size,
                sha256: sha,
            };
            let mut image: Option<Image> = None;
            for h in &hosts {
                let info = self.send_image(&h.id, &file, &header).await?;
                // So that the image is listed as soon as this answers, not at the host's
                // next heartbeat.
                self.refresh_host_info(&h.id).await;
                let i = image.get_or_insert_with(|| Image {
                    name: info.name.clone(),
                    kind: info.kind.clone(),
                    kernel_version: info.kernel_version.clone(),
                    size_bytes: info.size_bytes,
                    hosts: vec![],
                });
                i.hosts.push(h.name.clone());
            }
            Ok(image.expect("at least one host"))
        }
        .await;
        let _ = tokio::fs::remove_file(&file).await;
        res
    }

    /// The hosts that are up, or a 409 saying there is none to `what`.
    async fn up_hosts(&self, what: &str) -> ApiResult<Vec<hearth_types::host::Host>> {
        let hosts: Vec<_> = self
            .hosts_for_placement()
            .await?
            .into_iter()
            .filter(|h| h.status == HostStatus::Up)
            .collect();
        if hosts.is_empty() {
            return Err(ApiError::Conflict(format!(
                "no host is up to {what}: start an agent"
            )));
        }
        Ok(hosts)
    }

    /// Writes the body to `file`, refusing it past the configured size; returns its size
    /// and SHA-256.
    async fn receive<S, E>(&self, mut body: S, file: &std::path::Path) -> ApiResult<(u64, String)>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let max = self.config().max_image_bytes;
        let mut f = tokio::fs::File::create(file)
            .await
            .map_err(anyhow::Error::from)?;
        let mut hash = sha2::Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
            n += chunk.len() as u64;
            if n > max {
                return Err(ApiError::PayloadTooLarge(format!(
                    "images are at most {max} bytes (max_image_bytes)"
                )));
            }
            hash.update(&chunk);
            f.write_all(&chunk).await.map_err(anyhow::Error::from)?;
        }
        f.flush().await.map_err(anyhow::Error::from)?;
        if n == 0 {
            return Err(ApiError::bad_request("the upload is empty"));
        }
        Ok((n, hex::encode(hash.finalize())))
    }

    /// Streams `file` to a host's agent, which imports it.
    async fn send_image(
        &self,
        host_id: &str,
        file: &std::path::Path,
        header: &pb::ImportHeader,
    ) -> ApiResult<pb::ImageInfo> {
        let agent = self.host_client(host_id).await?;
        let mut f = tokio::fs::File::open(file)
            .await
            .map_err(anyhow::Error::from)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImageChunk>(4);
        let header = header.clone();
        let reader = tokio::spawn(async move {
            let mut first = Some(header);
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = match f.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.truncate(n);
                let msg = pb::ImageChunk {
                    header: first.take(),
                    data: buf,
                };
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let mut req = agent.request(tokio_stream::wrappers::ReceiverStream::new(rx));
        req.set_timeout(std::time::Duration::from_secs(600));
        let res = agent.rpc().import_image(req).await;
        reader.abort();
        Ok(res?.into_inner())
    }
}

const MAX_PACKAGES: usize = 64;

impl App {
    /// Starts building a Debian image on every host that is up (each builds its own; a
    /// host that has it with these packages says ready at once).
    pub async fn build_image(&self, req: BuildImage) -> ApiResult<ImageBuild> {
        check_user_image_name(&req.name).map_err(ApiError::BadRequest)?;
        match req.base.as_deref() {
            None | Some("debian") => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "base must be debian, got {other:?}"
                )))
            }
        }
        if req.packages.len() > MAX_PACKAGES {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_PACKAGES} packages"
            )));
        }
        self.image_build_on_hosts(&req.name, req.packages, true)
            .await
    }

    /// A build's state on every host that is up.
    pub async fn image_build(&self, name: &str) -> ApiResult<ImageBuild> {
        self.image_build_on_hosts(name, Vec::new(), false).await
    }

    async fn image_build_on_hosts(
        &self,
        name: &str,
        packages: Vec<String>,
        start: bool,
    ) -> ApiResult<ImageBuild> {
        let hosts = self.up_hosts("build on").await?;
        let asks = hosts.iter().map(|h| {
            let packages = packages.clone();
            async move {
                let agent = self.host_client(&h.id).await?;
                let st = agent
                    .rpc()
                    .build_image(agent.request(pb::BuildImageRequest {
                        name: name.into(),
                        packages,
                        start,
                    }))
                    .await?
                    .into_inner();
                Ok::<_, ApiError>(RuntimeHost {
                    host_id: h.id.clone(),
                    host: h.name.clone(),
                    state: st.state,
                    message: (!st.message.is_empty()).then_some(st.message),
                    error: (!st.error.is_empty()).then_some(st.error),
                    size_bytes: st.size_bytes,
                    elapsed_ms: st.elapsed_ms,
                })
            }
        });
        let mut out = Vec::new();
        for r in futures_util::future::join_all(asks).await {
            // A bad name or package is the same answer from every host: say it.
            out.push(r?);
        }
        Ok(ImageBuild {
            name: name.into(),
            hosts: out,
        })
    }
}
