//! The agent's side of the RPC contract. Every call must carry the agent token this agent
//! gave the manager at registration.

use std::sync::Arc;

use hearth_agent_api::{bearer, pb, Agent};
use tonic::{Request, Response, Status};

use crate::host_info::HostProbe;
use crate::identity::Identity;

pub struct AgentService {
    identity: Arc<Identity>,
    probe: HostProbe,
}

impl AgentService {
    pub fn new(identity: Arc<Identity>, probe: HostProbe) -> AgentService {
        AgentService { identity, probe }
    }

    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match bearer(req) {
            Some(t) if constant_time_eq(t.as_bytes(), self.identity.agent_token.as_bytes()) => {
                Ok(())
            }
            Some(_) => Err(Status::unauthenticated("wrong agent token")),
            None => Err(Status::unauthenticated("missing agent token")),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn get_host_info(
        &self,
        req: Request<pb::GetHostInfoRequest>,
    ) -> Result<Response<pb::HostInfo>, Status> {
        self.authorize(&req)?;
        Ok(Response::new(self.probe.report().await))
    }
}
