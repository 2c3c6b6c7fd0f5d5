//! Function runtimes on this host: which root filesystems are built (and bootable as the
//! image `runtime-NAME`), which are building and how far along, and why one failed.
//!
//! Builds run one at a time on a blocking thread (see [`crate::image::rootfs`]); a build
//! outlives the request that started it, and its progress is read with the same RPC.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hearth_agent_api::pb;
use hearth_types::runtime::{self, RuntimeKind};

use crate::image::{rootfs, BootImage, Images};

#[derive(Clone)]
enum State {
    Building {
        message: String,
    },
    Failed {
        error: String,
    },
    /// Built; the image is registered.
    Done,
}

struct Build {
    state: State,
    started: Instant,
    elapsed_ms: u64,
}

#[derive(Clone)]
pub struct Runtimes {
    images_dir: PathBuf,
    images: Images,
    base: Option<BootImage>,
    builds: Arc<Mutex<HashMap<String, Build>>>,
    one_at_a_time: Arc<tokio::sync::Semaphore>,
}

impl Runtimes {
    /// Registers the runtime images already built under `images_dir` as bootable images.
    pub fn new(images_dir: PathBuf, images: Images, base: Option<BootImage>) -> Runtimes {
        let rts = Runtimes {
            images_dir,
            images,
            base,
            builds: Arc::default(),
            one_at_a_time: Arc::new(tokio::sync::Semaphore::new(1)),
        };
        for rt in runtime::RUNTIMES
            .iter()
            .filter(|r| r.kind == RuntimeKind::Image)
        {
            if let Ok(p) = rootfs::image_path(&rts.images_dir, rt) {
                if p.is_file() {
                    rts.register(rt, p);
                }
            }
        }
        rts
    }

    fn register(&self, rt: &runtime::Runtime, path: PathBuf) {
        if let Some(base) = &self.base {
            self.images.insert(
                &runtime::image_name(rt),
                BootImage {
                    rootfs: Some(path),
                    run: None,
                    ..base.clone()
                },
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Build>> {
        self.builds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The runtime's state here; with `start`, begins building it when it is neither built
    /// nor building (again after a failure).
    pub fn status(&self, name: &str, start: bool) -> Result<pb::RuntimeStatus, String> {
        let rt = runtime::find(name).ok_or_else(|| {
            format!(
                "unknown runtime {name:?}; the runtimes are: {}",
                runtime::names()
            )
        })?;
        if rt.kind != RuntimeKind::Image {
            return Err(format!("the {name} runtime needs no image"));
        }
        let image = runtime::image_name(rt);
        if let Some(i) = self.images.get(&image) {
            let size = i
                .rootfs
                .as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
                .map_or(0, |m| m.len());
            let elapsed_ms = self.lock().get(name).map_or(0, |b| b.elapsed_ms);
            return Ok(status(name, "ready", "", "", size, elapsed_ms));
        }
        let mut builds = self.lock();
        let building = matches!(
            builds.get(name),
            Some(Build {
                state: State::Building { .. },
                ..
            })
        );
        if start && !building {
            if self.base.is_none() {
                return Err("this host has no default image to boot runtimes with".into());
            }
            builds.insert(
                name.to_string(),
                Build {
                    state: State::Building {
                        message: "waiting for another build".into(),
                    },
                    started: Instant::now(),
                    elapsed_ms: 0,
                },
            );
            let this = self.clone();
            let (dir, key) = (self.images_dir.clone(), name.to_string());
            tokio::spawn(self.clone().run_build(key, move |progress| {
                let path = rootfs::build(&dir, rt, progress)?;
                this.register(rt, path);
                Ok(())
            }));
        }
        Ok(state_of(name, builds.get(name)))
    }

    /// The image `name`, a minimal Debian with `packages` (imported images live in `dir`):
    /// with `start`, a build begins when it is neither built with these packages nor
    /// building (one of that name is replaced when it is done). Without, its last build's
    /// state, or ready when an image of that name exists.
    pub fn image_build(
        &self,
        name: &str,
        packages: Vec<String>,
        start: bool,
        dir: PathBuf,
    ) -> Result<pb::RuntimeStatus, String> {
        hearth_types::vm::check_user_image_name(name)?;
        if let Some(bad) = packages.iter().find(|p| !rootfs::is_package_name(p)) {
            return Err(format!("{bad:?} is not a Debian package name"));
        }
        let key = format!("image:{name}");
        let mut builds = self.lock();
        let building = matches!(
            builds.get(&key),
            Some(Build {
                state: State::Building { .. },
                ..
            })
        );
        let built = self.images.get(name).is_some()
            && (!start
                || crate::image::imported::built_with(&dir, name).as_ref() == Some(&packages));
        let size = std::fs::metadata(dir.join(name).join("rootfs.ext4")).map_or(0, |m| m.len());
        if !start && builds.contains_key(&key) {
            let mut st = state_of(name, builds.get(&key));
            if st.state == "ready" {
                st.size_bytes = size;
            }
            return Ok(st);
        }
        if built && !building {
            let elapsed_ms = builds.get(&key).map_or(0, |b| b.elapsed_ms);
            return Ok(status(name, "ready", "", "", size, elapsed_ms));
        }
        if start && !building {
            builds.insert(
                key.clone(),
                Build {
                    state: State::Building {
                        message: "waiting for another build".into(),
                    },
                    started: Instant::now(),
                    elapsed_ms: 0,
                },
            );
            let (images_dir, images, image) = (
                self.images_dir.clone(),
                self.images.clone(),
                name.to_string(),
            );
            tokio::spawn(self.clone().run_build(key.clone(), move |progress| {
                crate::image::imported::build_debian(
                    &images_dir,
                    &dir,
                    &image,
                    &packages,
                    &images,
                    progress,
                )
                .map(|_| ())
            }));
        }
        Ok(state_of(name, builds.get(&key)))
    }

    /// Runs `job` (a blocking build) when no other build runs, recording its progress and
    /// its end under `key`.
    async fn run_build(
        self,
        key: String,
        job: impl FnOnce(&mut dyn FnMut(&str)) -> anyhow::Result<()> + Send + 'static,
    ) {
        let _turn = self.one_at_a_time.clone().acquire_owned().await;
        tracing::info!(build = %key, "building an image");
        let (progress, k) = (self.clone(), key.clone());
        let result = tokio::task::spawn_blocking(move || {
            job(&mut |line| {
                if let Some(b) = progress.lock().get_mut(&k) {
                    b.state = State::Building {
                        message: line.chars().take(200).collect(),
                    };
                }
            })
        })
        .await
        .map_err(|e| anyhow::anyhow!("the build task failed: {e}"))
        .and_then(|r| r);
        let mut builds = self.lock();
        let b = builds.get_mut(&key).expect("inserted before the build");
        b.elapsed_ms = b.started.elapsed().as_millis() as u64;
        match result {
            Ok(()) => {
                tracing::info!(build = %key, ms = b.elapsed_ms, "image built");
                b.state = State::Done;
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(build = %key, %error, "building an image failed");
                b.state = State::Failed { error };
            }
        }
    }
}

/// What a build's record says, for `name`.
fn state_of(name: &str, b: Option<&Build>) -> pb::RuntimeStatus {
    match b {
        None => status(name, "absent", "", "", 0, 0),
        Some(b) => {
            let ms = b.started.elapsed().as_millis() as u64;
            match &b.state {
                State::Building { message } => status(name, "building", message, "", 0, ms),
                State::Failed { error } => status(name, "failed", "", error, 0, b.elapsed_ms),
                State::Done => status(name, "ready", "", "", 0, b.elapsed_ms),
            }
        }
    }
}

fn status(
    name: &str,
    state: &str,
    message: &str,
    error: &str,
    size_bytes: u64,
    elapsed_ms: u64,
) -> pb::RuntimeStatus {
    pb::RuntimeStatus {
        name: name.into(),
        state: state.into(),
        message: message.into(),
        error: error.into(),
        size_bytes,
        elapsed_ms,
    }
}
