//! The Identity service: who the plugin is and which services this process serves.

use crate::proto::identity::identity_server::Identity;
use crate::proto::identity::plugin_capability::service::Type as ServiceType;
use crate::proto::identity::plugin_capability::{Service, Type as CapabilityType};
use crate::proto::identity::*;
use crate::PLUGIN_NAME;
use tonic::{Request, Response, Status};

pub struct PluginIdentity {
    /// The services this process serves, advertised in GetPluginCapabilities.
    pub services: Vec<ServiceType>,
}

#[tonic::async_trait]
impl Identity for PluginIdentity {
    async fn get_plugin_metadata(
        &self,
        _: Request<GetPluginMetadataRequest>,
    ) -> Result<Response<GetPluginMetadataResponse>, Status> {
        Ok(Response::new(GetPluginMetadataResponse {
            name: PLUGIN_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            display_name: "pgops".into(),
            description:
                "WAL archiving, base backups and recovery to S3-compatible object storage, in Barman Cloud's layout"
                    .into(),
            project_url: "https://github.com/pgops/pgops".into(),
            repository_url: "https://github.com/pgops/pgops".into(),
            license: "PostgreSQL".into(),
            license_url: "https://opensource.org/license/postgresql".into(),
            maturity: "alpha".into(),
            vendor: "pgops".into(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let capabilities = self
            .services
            .iter()
            .map(|service| PluginCapability {
                r#type: Some(CapabilityType::Service(Service { r#type: *service as i32 })),
            })
            .collect();
        Ok(Response::new(GetPluginCapabilitiesResponse { capabilities }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse { ready: true }))
    }
}
