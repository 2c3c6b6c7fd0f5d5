//! The manager's side of the agent contract: the `Registry` gRPC service agents join and
//! heartbeat through. It only translates; the logic is in `app::hosts`.

use hearth_agent_api::{bearer, pb, Registry};
use tonic::{Request, Response, Status};

use crate::app::hosts::RegistryError;
use crate::app::App;

pub struct RegistryService {
    app: App,
}

impl RegistryService {
    pub fn new(app: App) -> RegistryService {
        RegistryService { app }
    }
}

fn status(e: RegistryError) -> Status {
    match e {
        RegistryError::Refused(m) => Status::unauthenticated(m),
        RegistryError::Invalid(m) => Status::invalid_argument(m),
        e @ RegistryError::UnknownHost(_) => Status::not_found(e.to_string()),
        RegistryError::Store(e) => {
            tracing::error!(error = %e, "registry store error");
            Status::unavailable("the manager's database is unavailable; retry")
        }
    }
}

#[tonic::async_trait]
impl Registry for RegistryService {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        self.app
            .register_host(req.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn report_vm(
        &self,
        req: Request<pb::ReportVmRequest>,
    ) -> Result<Response<pb::ReportVmResponse>, Status> {
        let secret = bearer(&req).map(str::to_string);
        self.app
            .report_vm(secret.as_deref(), req.into_inner())
            .await
            .map(|()| Response::new(pb::ReportVmResponse {}))
            .map_err(status)
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let secret = bearer(&req).map(str::to_string);
        self.app
            .heartbeat(secret.as_deref(), req.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }
}
