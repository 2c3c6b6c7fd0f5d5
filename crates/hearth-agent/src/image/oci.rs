//! Container images as microVM root filesystems: an OCI image layout (as `skopeo`, `umoci`
//! or `docker save` write it, or a tar of one), or a plain tar of a root filesystem, becomes
//! an ext4 image plus what to run at boot (the image's entrypoint, cmd, env and working
//! dir).
//!
//! Layers are applied in order, with whiteouts: `.wh.NAME` deletes NAME from the layers
//! below, `.wh..wh..opq` empties its directory. Every blob is checked against its digest
//! and every path stays inside the root (`..`, absolute links through the root and device
//! files are refused or skipped).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// What the guest runs at every boot of an imported image, from the image's config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRun {
    /// The command line: entrypoint then cmd (empty: nothing runs).
    pub argv: Vec<String>,
    /// `KEY=VALUE` pairs.
    pub env: Vec<String>,
    pub workdir: Option<String>,
}

/// How an upload is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An OCI image layout (or a `docker save` archive), as a tar.
    Oci,
    /// A tar of a root filesystem: one layer, nothing to run.
    RootfsTar,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "oci" => Ok(Format::Oci),
            "rootfs-tar" => Ok(Format::RootfsTar),
            _ => Err(format!("format must be oci or rootfs-tar, got {s:?}")),
        }
    }
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// `docker save`'s own manifest.json entries.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    layers: Vec<String>,
}

#[derive(Deserialize, Default)]
struct ImageConfig {
    #[serde(default)]
    config: Option<RunConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
}

/// At most this many bytes unpacked from one upload (a tar bomb stops here).
const MAX_UNPACKED: u64 = 16 << 30;

/// Unpacks `upload` (a tar in `format`) into the root filesystem `root` (which must not
/// exist yet) and returns what to run at boot. `work` is scratch space.
pub fn unpack(upload: &Path, format: Format, work: &Path, root: &Path) -> anyhow::Result<ImageRun> {
    std::fs::create_dir_all(root)?;
    let mut budget = MAX_UNPACKED;
    match format {
        Format::RootfsTar => {
            apply_layer(open_layer(upload)?, root, &mut budget)?;
            Ok(ImageRun::default())
        }
        Format::Oci => {
            let layout = work.join("layout");
            std::fs::create_dir_all(&layout)?;
            let mut ar = tar::Archive::new(std::fs::File::open(upload)?);
            for entry in ar.entries().context("the upload is not a tar archive")? {
                let mut entry = entry.context("the upload is not a readable tar archive")?;
                let path = safe_path(&entry.path()?)?;
                if entry.header().entry_type().is_file() {
                    take(&mut budget, entry.header().size()?)?;
                }
                if !path.as_os_str().is_empty() {
                    let target = layout.join(path);
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    entry.unpack(target)?;
                }
            }
            let (config, layers) = read_layout(&layout)?;
            for layer in layers {
                apply_layer(open_layer(&layer)?, root, &mut budget)?;
            }
            Ok(config)
        }
    }
}

fn take(budget: &mut u64, n: u64) -> anyhow::Result<()> {
    *budget = budget
        .checked_sub(n)
        .with_context(|| format!("the image unpacks to more than {} GiB", MAX_UNPACKED >> 30))?;
    Ok(())
}

/// The config and the layer files of an unpacked layout, OCI's or `docker save`'s.
fn read_layout(dir: &Path) -> anyhow::Result<(ImageRun, Vec<PathBuf>)> {
    let json = |p: &Path| -> anyhow::Result<serde_json::Value> {
        let text = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", p.display()))
    };
    if dir.join("index.json").is_file() {
        let mut desc = pick(serde_json::from_value(json(&dir.join("index.json"))?)?)?;
        // An index may point at another index (a multi-platform image).
        for _ in 0..4 {
            if !desc.media_type.contains("index") {
                break;
            }
            desc = pick(serde_json::from_slice(&blob(dir, &desc.digest)?)?)?;
        }
        let manifest: Manifest = serde_json::from_slice(&blob(dir, &desc.digest)?)
            .context("the manifest is not an OCI image manifest")?;
        let config: ImageConfig = serde_json::from_slice(&blob(dir, &manifest.config.digest)?)
            .context("the image config is not JSON")?;
        let mut layers = Vec::new();
        for l in &manifest.layers {
            blob(dir, &l.digest)?; // checks the digest
            layers.push(blob_path(dir, &l.digest)?);
        }
        return Ok((run_of(config), layers));
    }
    if dir.join("manifest.json").is_file() {
        let entries: Vec<DockerEntry> = serde_json::from_value(json(&dir.join("manifest.json"))?)
            .context("manifest.json is not a docker save manifest")?;
        let e = entries.first().context("manifest.json lists no image")?;
        let config: ImageConfig =
            serde_json::from_slice(&std::fs::read(dir.join(safe_path(Path::new(&e.config))?))?)
                .context("the image config is not JSON")?;
        let layers = e
            .layers
            .iter()
            .map(|l| Ok(dir.join(safe_path(Path::new(l))?)))
            .collect::<anyhow::Result<_>>()?;
        return Ok((run_of(config), layers));
    }
    bail!("not an OCI image layout: it has neither index.json nor manifest.json")
}

/// The manifest for linux/amd64 (or the only one).
fn pick(index: Index) -> anyhow::Result<Descriptor> {
    let n = index.manifests.len();
    let mut all = index.manifests.into_iter();
    if n == 1 {
        return all.next().context("empty index");
    }
    all.find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
    })
    .context("the image has no linux/amd64 manifest")
}

fn blob_path(dir: &Path, digest: &str) -> anyhow::Result<PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("unsupported digest {digest:?} (sha256 only)"))?;
    Ok(dir.join("blobs/sha256").join(hex))
}

/// A blob's bytes, checked against its digest.
fn blob(dir: &Path, digest: &str) -> anyhow::Result<Vec<u8>> {
    let path = blob_path(dir, digest)?;
    let mut f = std::fs::File::open(&path).with_context(|| format!("blob {digest} is missing"))?;
    let mut h = sha2::Sha256::new();
    let mut small = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        if small.len() < 16 << 20 {
            small.extend_from_slice(&buf[..n]);
        }
    }
    if format!("sha256:{}", hex::encode(h.finalize())) != digest {
        bail!("blob {digest} is corrupt: its content does not match its digest");
    }
    Ok(small)
}

fn run_of(c: ImageConfig) -> ImageRun {
    let c = c.config.unwrap_or_default();
    let mut argv = c.entrypoint.unwrap_or_default();
    argv.extend(c.cmd.unwrap_or_default());
    ImageRun {
        argv,
        env: c.env.unwrap_or_default(),
        workdir: c.working_dir.filter(|w| !w.is_empty()),
    }
}

/// A layer as a tar stream, gunzipped when it is gzip.
fn open_layer(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    let f = std::io::BufReader::new(std::fs::File::open(path)?);
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    })
}

/// A tar entry's path made relative and free of `..`; refused when it would leave the root.
fn safe_path(p: &Path) -> anyhow::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                bail!(
                    "the archive has a path that leaves its root: {}",
                    p.display()
                )
            }
        }
    }
    Ok(out)
}

/// Applies one layer onto `root`, whiteouts included.
fn apply_layer(layer: Box<dyn Read>, root: &Path, budget: &mut u64) -> anyhow::Result<()> {
    let mut ar = tar::Archive::new(layer);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_unpack_xattrs(false);
    ar.set_overwrite(true);
    for entry in ar.entries().context("a layer is not a tar archive")? {
        let mut entry = entry.context("a layer is not a readable tar archive")?;
        let rel = safe_path(&entry.path()?)?;
        let Some(name) = rel.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue; // the root itself
        };
        let parent = root.join(rel.parent().unwrap_or(Path::new("")));
        refuse_symlinked_parent(root, &parent)?;
        if name == ".wh..wh..opq" {
            if let Ok(rd) = std::fs::read_dir(&parent) {
                for e in rd.flatten() {
                    remove(&e.path());
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            remove(&parent.join(hidden));
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_block_special() || kind.is_character_special() || kind.is_fifo() {
            continue; // the guest's devtmpfs has its devices
        }
        if kind.is_file() {
            take(budget, entry.header().size()?)?;
        }
        let target = root.join(&rel);
        // A file replaces whatever a lower layer had there, a directory merges.
        if !kind.is_dir() {
            if let Ok(m) = std::fs::symlink_metadata(&target) {
                if m.is_dir() && !m.file_type().is_symlink() {
                    let _ = std::fs::remove_dir_all(&target);
                }
            }
        }
        if kind.is_hard_link() {
            let link = entry.link_name()?.context("a hard link without a target")?;
            let src = root.join(safe_path(&link)?);
            let _ = std::fs::remove_file(&target);
            std::fs::hard_link(&src, &target)
                .with_context(|| format!("hard link {}", rel.display()))?;
            continue;
        }
        std::fs::create_dir_all(&parent)?;
        entry
            .unpack(&target)
            .with_context(|| format!("unpacking {}", rel.display()))?;
    }
    Ok(())
}

/// Refuses to write through a symlink a layer planted on the way to `dir` (it could point
/// out of the root).
fn refuse_symlinked_parent(root: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut p = dir.to_path_buf();
    while p.starts_with(root) && p != root {
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            let target = std::fs::canonicalize(&p).unwrap_or_default();
            if !target.starts_with(std::fs::canonicalize(root)?) {
                bail!(
                    "the image writes through a link that leaves its root: {}",
                    p.display()
                );
            }
        }
        if !p.pop() {
            break;
        }
    }
    Ok(())
}

fn remove(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tar (gzipped when `gz`) of `(path, contents)` files; contents `None` is a directory.
    pub fn layer(files: &[(&str, Option<&str>)], gz: bool) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, body) in files {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match body {
                Some(text) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(text.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, text.as_bytes()).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, std::io::empty()).unwrap();
                }
            }
        }
        let raw = b.into_inner().unwrap();
        if !gz {
            return raw;
        }
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &raw).unwrap();
        e.finish().unwrap()
    }

    fn digest(b: &[u8]) -> String {
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
    }

    /// An OCI layout tar with these layers and config.
    pub fn layout(layers: &[Vec<u8>], config: &serde_json::Value) -> Vec<u8> {
        let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
        let config = serde_json::to_vec(config).unwrap();
        blobs.push((digest(&config), config.clone()));
        let mut descs = Vec::new();
        for l in layers {
            blobs.push((digest(l), l.clone()));
            descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(l), "size": l.len()}));
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
            "layers": descs,
        }))
        .unwrap();
        blobs.push((digest(&manifest), manifest.clone()));
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest), "size": manifest.len()}],
        }))
        .unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, data).unwrap();
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        add("index.json", &index);
        for (d, data) in &blobs {
            add(&format!("blobs/sha256/{}", &d[7..]), data);
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts_and_the_config_is_read() {
        let base = layer(
            &[
                ("etc", None),
                ("etc/keep", Some("kept")),
                ("etc/gone", Some("deleted above")),
                ("var/cache", None),
                ("var/cache/a", Some("emptied above")),
            ],
            true,
        );
        let top = layer(
            &[
                ("etc/.wh.gone", Some("")),
                ("var/cache/.wh..wh..opq", Some("")),
                ("var/cache/b", Some("new")),
                ("etc/keep", Some("replaced")),
            ],
            false,
        );
        let config = serde_json::json!({"config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "Env": ["A=1"], "WorkingDir": "/app"}});
        let dir = tempfile::tempdir().unwrap();
        let upload = dir.path().join("upload.tar");
        std::fs::write(&upload, layout(&[base, top], &config)).unwrap();
        let root = dir.path().join("root");
        let run = unpack(&upload, Format::Oci, &dir.path().join("work"), &root).unwrap();
        assert_eq!(run.argv, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(run.env, ["A=1"]);
        assert_eq!(run.workdir.as_deref(), Some("/app"));
        assert_eq!(
            std::fs::read_to_string(root.join("etc/keep")).unwrap(),
            "replaced"
        );
        assert!(!root.join("etc/gone").exists());
        assert!(!root.join("var/cache/a").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("var/cache/b")).unwrap(),
            "new"
        );
    }

    #[test]
    fn a_corrupt_or_hostile_archive_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let try_unpack = |name: &str, bytes: Vec<u8>, format: Format| {
            let upload = dir.path().join(name);
            std::fs::write(&upload, bytes).unwrap();
            unpack(
                &upload,
                format,
                &dir.path().join(format!("{name}-work")),
                &dir.path().join(format!("{name}-root")),
            )
            .map(|_| ())
            .unwrap_err()
            .to_string()
        };
        // Not a tar at all.
        let e = try_unpack(
            "junk",
            b"this is not a tar archive, not at all".repeat(40),
            Format::Oci,
        );
        assert!(e.contains("not") || e.contains("layout"), "{e}");
        // A layer whose bytes do not match its digest.
        let mut tar = layout(&[layer(&[("a", Some("x"))], true)], &serde_json::json!({}));
        let l = layer(&[("a", Some("x"))], true);
        let at = tar
            .windows(l.len())
            .position(|w| w == l.as_slice())
            .unwrap();
        tar[at + l.len() / 2] ^= 0xff;
        let e = try_unpack("corrupt", tar, Format::Oci);
        assert!(e.contains("corrupt") || e.contains("not"), "{e}");
        // A path that climbs out of the root.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let e = try_unpack("climb", b.into_inner().unwrap(), Format::RootfsTar);
        assert!(e.contains("leaves its root"), "{e}");
        assert!(!dir.path().join("escape").exists());
    }
}
