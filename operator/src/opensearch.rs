//! The OpenSearch side of a `StreamingEnrichment`: index template, first index and aliases,
//! rollover (ISM when the cluster has it, the core `_rollover` API otherwise), retention, and
//! with the security plugin the writer and reader roles.
//!
//! Pure builders (`template`, `roles`, `rollover`) make the bodies; `client` talks HTTP;
//! `reconcile` runs the steps against a cluster. OpenSearch trouble never fails the job's
//! reconcile: the controller records it in the IndexTemplateReady condition and backs off.

pub mod client;
pub mod reconcile;
pub mod roles;
pub mod rollover;
pub mod template;

pub use reconcile::{Report, cleanup, ensure};

/// What can go wrong talking to OpenSearch for one resource.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("OpenSearch at {endpoint} is unreachable: {message}")]
    Unreachable { endpoint: String, message: String },
    #[error("OpenSearch refused the operator's credentials (401) on {what}")]
    Unauthorized { what: String },
    #[error("OpenSearch forbids the operator (403) {what}: {message}")]
    Forbidden { what: String, message: String },
    #[error("OpenSearch answered {status} to {what}: {message}")]
    Api {
        status: u16,
        what: String,
        message: String,
    },
    #[error(
        "index template {name} exists and is not managed by this resource ({owner}); \
         set sinks.opensearch.template.adopt to take it over"
    )]
    NotOwned { name: String, owner: String },
    #[error("index {index} exists without the write alias {alias}; attach it or delete the index")]
    Orphan { index: String, alias: String },
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("client configuration: {0}")]
    Config(String),
}

impl Error {
    /// Machine-readable reason for the IndexTemplateReady condition and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "OpenSearchUnreachable",
            Self::Unauthorized { .. } => "OpenSearchUnauthorized",
            Self::Forbidden { .. } => "OpenSearchForbidden",
            Self::Api { .. } => "OpenSearchError",
            Self::NotOwned { .. } => "TemplateNotOwned",
            Self::Orphan { .. } => "IndexWithoutAlias",
            Self::Credentials(_) => "CredentialsUnavailable",
            Self::Config(_) => "InvalidClientConfig",
        }
    }

    /// Needs a human (credentials, ownership): the Degraded condition says so.
    pub fn degrades(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized { .. }
                | Self::Forbidden { .. }
                | Self::NotOwned { .. }
                | Self::Orphan { .. }
                | Self::Credentials(_)
                | Self::Config(_)
        )
    }
}
