//! Trusting a manager that serves TLS: the cluster CA its certificate chains to.
//!
//! In order: `--manager-ca FILE`; the CA saved in the data dir by an earlier join; or the
//! CA fetched from the manager (`GET /v1/cluster/ca`) and accepted only when its SHA-256
//! is the fingerprint the join token carries after its dot. The fetch itself cannot be
//! checked (there is nothing to check it with yet), so the fingerprint is what makes it
//! safe, and the token is sent only after it matched.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hearth_agent_api::tls;
use secrecy::ExposeSecret;

use crate::AgentConfig;

const SAVED: &str = "manager-ca.pem";
const MAX_CA_BYTES: usize = 64 << 10;
/// How long to keep trying to fetch the CA while no manager answers.
const FETCH_FOR: Duration = Duration::from_secs(600);

/// The CA to trust for the managers' URLs, or `None` when none of them is `https`.
pub async fn trust(config: &AgentConfig) -> anyhow::Result<Option<String>> {
    let urls = config.manager_urls();
    if !urls.iter().any(|u| u.starts_with("https://")) {
        return Ok(None);
    }
    if let Some(path) = &config.manager_ca {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("reading --manager-ca {}", path.display()))?;
        tls::fingerprint(&pem).with_context(|| format!("--manager-ca {}", path.display()))?;
        return Ok(Some(pem));
    }
    let pinned = config.join_token.as_ref().and_then(|t| {
        t.expose_secret()
            .split_once('.')
            .map(|(_, fp)| fp.to_ascii_lowercase())
    });
    let saved_path = config.data_dir.join(SAVED);
    if let Ok(pem) = std::fs::read_to_string(&saved_path) {
        let fp = tls::fingerprint(&pem).with_context(|| saved_path.display().to_string())?;
        // A token for another CA (the cluster was made again) means fetching it afresh.
        if pinned.as_ref().is_none_or(|p| *p == fp) {
            return Ok(Some(pem));
        }
    }
    let Some(pinned) = pinned else {
        bail!(
            "the manager serves TLS and this agent does not know its CA: pass a join token from \
             `hearth host join-token` (it carries the CA's fingerprint), or --manager-ca FILE"
        );
    };
    let pem = fetch(&urls, &pinned).await?;
    save(&saved_path, &pem)?;
    Ok(Some(pem))
}

/// Fetches the CA from the first manager that answers, and checks it against `pinned`.
async fn fetch(urls: &[String], pinned: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::builder()
        // Nothing to check the manager's certificate with yet: the fingerprint checks the
        // answer instead.
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let start = Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        for url in urls.iter().filter(|u| u.starts_with("https://")) {
            let url = format!("{url}/v1/cluster/ca");
            let pem = match get_limited(&client, &url).await {
                Ok(pem) => pem,
                Err(e) => {
                    tracing::warn!(%url, error = %format!("{e:#}"), "cannot fetch the cluster CA yet");
                    continue;
                }
            };
            let fp = tls::fingerprint(&pem).with_context(|| format!("the CA from {url}"))?;
            if fp != pinned {
                bail!(
                    "the manager at {url} presented a CA with fingerprint {fp}, not the {pinned} \
                     the join token names: check the URL, or get a new token with \
                     `hearth host join-token`"
                );
            }
            return Ok(pem);
        }
        if start.elapsed() > FETCH_FOR {
            bail!(
                "no manager answered at {} for {} s",
                urls.join(", "),
                FETCH_FOR.as_secs()
            );
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn get_limited(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let mut resp = client.get(url).send().await?.error_for_status()?;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_CA_BYTES {
            bail!("the answer is over {MAX_CA_BYTES} bytes");
        }
    }
    Ok(String::from_utf8(body)?)
}

fn save(path: &Path, pem: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("pem.tmp");
    std::fs::write(&tmp, pem).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
