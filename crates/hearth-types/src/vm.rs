//! The VM state machine of PRODUCT.md, in one place, so the agent's per-VM owner and the
//! manager agree on which transitions are legal.
//!
//! ```text
//! creating → starting → running ⇄ paused
//! running → stopping → stopped → starting
//! any → failed, any → deleting
//! ```

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Creating,
    Starting,
    Running,
    Paused,
    Stopping,
    Stopped,
    Failed,
    Deleting,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Failed => "failed",
            VmState::Deleting => "deleting",
        }
    }

    /// Whether `self → to` is a legal transition. Illegal ones are answered with 409.
    pub fn can_become(self, to: VmState) -> bool {
        use VmState::*;
        matches!(
            (self, to),
            (Creating, Starting)
                | (Creating, Stopped)
                | (Starting, Running)
                | (Running, Paused)
                | (Paused, Running)
                | (Running, Stopping)
                | (Paused, Stopping)
                | (Stopping, Stopped)
                | (Stopped, Starting)
                | (Failed, Starting)
                | (_, Failed)
                | (_, Deleting)
        ) && self != Deleting
    }
}

impl std::str::FromStr for VmState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use VmState::*;
        Ok(match s {
            "creating" => Creating,
            "starting" => Starting,
            "running" => Running,
            "paused" => Paused,
            "stopping" => Stopping,
            "stopped" => Stopped,
            "failed" => Failed,
            "deleting" => Deleting,
            other => return Err(format!("unknown VM state {other:?}")),
        })
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::VmState::*;

    #[test]
    fn legal_and_illegal_transitions() {
        assert!(Creating.can_become(Starting));
        assert!(Running.can_become(Paused));
        assert!(Paused.can_become(Running));
        assert!(Stopped.can_become(Starting));
        assert!(Running.can_become(Failed));
        assert!(Stopped.can_become(Deleting));
        assert!(!Stopped.can_become(Paused));
        assert!(!Running.can_become(Starting));
        assert!(!Deleting.can_become(Running));
        assert!(!Deleting.can_become(Failed));
    }

    #[test]
    fn states_round_trip_through_strings() {
        for s in [
            Creating, Starting, Running, Paused, Stopping, Stopped, Failed, Deleting,
        ] {
            assert_eq!(s.as_str().parse::<super::VmState>().unwrap(), s);
        }
    }
}
