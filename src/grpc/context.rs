//! Who is calling: campaign and actor from request metadata, the actor's role from the directory.

use tonic::Request;
use tonic::metadata::MetadataMap;

use super::middleware::RequestId;

use crate::domain::actor::authenticate;
use crate::domain::model::Actor;
use crate::domain::validate;
use crate::error::{AppError, AppResult};
use crate::store::{ChangeContext, Store};

pub const CAMPAIGN_HEADER: &str = "x-campaign-id";
pub const ACTOR_HEADER: &str = "x-actor-id";

/// The campaign a call acts in.
pub fn campaign_id(metadata: &MetadataMap) -> AppResult<String> {
    let value = header(metadata, CAMPAIGN_HEADER)?.ok_or_else(|| {
        AppError::invalid(
            CAMPAIGN_HEADER,
            format!(
                "the {CAMPAIGN_HEADER} metadata header is required: set it to the campaign's id"
            ),
        )
    })?;
    validate::id(CAMPAIGN_HEADER, &value)?;
    tracing::Span::current().record("campaign", value.as_str());
    Ok(value)
}

/// An authenticated caller: the campaign, the active user acting in it, and the call's request id.
#[derive(Debug, Clone)]
pub struct Caller {
    pub campaign_id: String,
    pub actor: Actor,
    pub request_id: Option<String>,
}

/// The id the middleware gave this call.
pub fn request_id<T>(request: &Request<T>) -> Option<String> {
    request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
}

impl Caller {
    /// Who is changing what, for the store's history events.
    pub fn change_context(&self) -> ChangeContext<'_> {
        ChangeContext {
            campaign_id: &self.campaign_id,
            actor_id: &self.actor.user_id,
            request_id: self.request_id.as_deref(),
        }
    }

    pub async fn from_request<T>(store: &Store, request: &Request<T>) -> AppResult<Self> {
        let metadata = request.metadata();
        let campaign_id = campaign_id(metadata)?;
        let actor_id =
            header(metadata, ACTOR_HEADER)?.ok_or_else(|| AppError::Unauthenticated {
                reason: "ACTOR_MISSING",
                message: format!(
                    "the {ACTOR_HEADER} metadata header is required: set it to the acting user's id"
                ),
            })?;
        validate::id(ACTOR_HEADER, &actor_id)?;
        tracing::Span::current().record("actor", actor_id.as_str());
        let user = store.find_user(&campaign_id, &actor_id).await?;
        let actor = authenticate(&campaign_id, &actor_id, user.map(|u| u.to_ref()))?;
        Ok(Self {
            campaign_id,
            actor,
            request_id: request_id(request),
        })
    }
}

fn header(metadata: &MetadataMap, name: &str) -> AppResult<Option<String>> {
    match metadata.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|v| Some(v.trim().to_owned()))
            .map_err(|_| {
                AppError::invalid(
                    name,
                    format!("the {name} metadata header must be printable ASCII"),
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaign_header_is_required_and_validated() {
        let mut metadata = MetadataMap::new();
        assert!(matches!(
            campaign_id(&metadata),
            Err(AppError::InvalidArgument { .. })
        ));
        metadata.insert(CAMPAIGN_HEADER, "camp-1".parse().unwrap());
        assert_eq!(campaign_id(&metadata).unwrap(), "camp-1");
        metadata.insert(CAMPAIGN_HEADER, "x".repeat(200).parse().unwrap());
        assert!(campaign_id(&metadata).is_err());
    }
}
