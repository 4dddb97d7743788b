//! Who is calling: campaign and actor from request metadata, the actor's role from the directory.

use tonic::metadata::MetadataMap;

use crate::domain::actor::authenticate;
use crate::domain::model::Actor;
use crate::domain::validate;
use crate::error::{AppError, AppResult};
use crate::store::Store;

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

/// An authenticated caller: the campaign and the active user acting in it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub campaign_id: String,
    pub actor: Actor,
}

impl Caller {
    pub async fn from_metadata(store: &Store, metadata: &MetadataMap) -> AppResult<Self> {
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
        Ok(Self { campaign_id, actor })
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
