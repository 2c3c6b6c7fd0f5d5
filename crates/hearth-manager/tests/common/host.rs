//! A real agent joined to a test manager, whose QEMUs are killed when it goes, even when the
//! test panicked.

use std::path::PathBuf;
use std::time::Duration;

use hearth_agent::accel::AccelMode;
use hearth_agent::{AgentConfig, RunningAgent};

use super::TestApp;

/// Kills whatever QEMU the agent left in its run dirs, even when the test panicked.
pub struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        hearth_agent::vm::reap_leftovers(&self.0);
    }
}

// Fields drop in order: the reaper must read the run dirs before the temp dir goes (VMs
// outlive their agent, so nothing else would kill them).
pub struct Host {
    _reaper: Reaper,
    pub agent: Option<RunningAgent>,
    pub dir: tempfile::TempDir,
}

impl Host {
    pub fn run_dir(&self, vm_id: &str) -> PathBuf {
        self.dir.path().join("run").join("vms").join(vm_id)
    }

    pub async fn shutdown(mut self) {
        if let Some(a) = self.agent.take() {
            a.shutdown().await;
        }
    }
}

pub async fn start_host(t: &TestApp, boot_timeout: Duration) -> Host {
    start_host_with(t, boot_timeout, |_| {}).await
}

/// A host whose agent's config `tweak` changes first.
pub async fn start_host_with(
    t: &TestApp,
    boot_timeout: Duration,
    tweak: impl FnOnce(&mut AgentConfig),
) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let reaper = Reaper(dir.path().join("run").join("vms"));
    let mut config = AgentConfig {
        manager_url: t.url.clone(),
        join_token: Some(t.join_token().await.into()),
        data_dir: dir.path().to_path_buf(),
        images_dir: Some(super::shared_images_dir()),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        manager_ca: None,
        boot_timeout,
        accel: AccelMode::Tcg,
        manage_networks: false,
        netns: None,
        labels: Default::default(),
    };
    tweak(&mut config);
    let agent = hearth_agent::start(config).await.expect("agent starts");
    // The host counts once its first heartbeat lists the default image.
    super::eventually(Duration::from_secs(20), "the host's images", || async {
        let (_, b) = t.get("/v1/images").await;
        b["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;
    Host {
        agent: Some(agent),
        dir,
        _reaper: reaper,
    }
}
