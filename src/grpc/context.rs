//! Who is calling, decoded from request metadata: the campaign, the acting user's claimed id and the call's
//! request id. The use cases check the claim against the directory.

use tonic::Request;
use tonic::metadata::MetadataMap;

use super::middleware::{CallerIdentity, REQUEST_ID_HEADER, RequestId};
use crate::auth::CallerScope;
use crate::domain::validate::{self, Violations};
use crate::error::{AppError, AppResult, Reason};
use crate::service::{ActorCall, Caller, SystemCall};

pub const CAMPAIGN_HEADER: &str = "x-campaign-id";
pub const ACTOR_HEADER: &str = "x-actor-id";

/// A call for a user: `x-campaign-id` and `x-actor-id`.
pub fn actor_call<T>(request: &Request<T>) -> AppResult<ActorCall> {
    let metadata = request.metadata();
    // Both headers are checked before either is refused, so one answer names every bad header.
    let mut violations = Violations::default();
    let campaign_id = violations.check(campaign_id(metadata));
    let actor_id = violations.check(actor_header(metadata));
    if let Some(actor_id) = &actor_id {
        violations.check(validate::id(ACTOR_HEADER, actor_id));
    }
    violations.finish()?;
    let actor_id = actor_id.ok_or_else(|| {
        AppError::new(
            Reason::ActorMissing,
            format!(
                "the {ACTOR_HEADER} metadata header is required (and may not be empty): set it to \
                 the acting user's id"
            ),
        )
    })?;
    tracing::Span::current().record("actor", actor_id.as_str());
    Ok(ActorCall {
        campaign_id,
        actor_id,
        request_id: request_id(request),
        idempotency_key: idempotency_key(request),
    })
}

/// A call from a system: `x-campaign-id` only.
pub fn system_call<T>(request: &Request<T>) -> AppResult<SystemCall> {
    Ok(SystemCall {
        campaign_id: campaign_id(request.metadata())?,
        request_id: request_id(request),
    })
}

/// For calls both users and systems make: a user acting when `x-actor-id` is set or the token is
/// user-scoped (such a token must name its actor), else a system.
pub fn caller<T>(request: &Request<T>) -> AppResult<Caller> {
    let user_scoped = request
        .extensions()
        .get::<CallerIdentity>()
        .is_some_and(|identity| identity.scope == CallerScope::User);
    let acting = matches!(actor_header(request.metadata()), Ok(Some(_)) | Err(_));
    if acting || user_scoped {
        Ok(Caller::Actor(actor_call(request)?))
    } else {
        Ok(Caller::System(system_call(request)?))
    }
}

/// The campaign a call acts in.
fn campaign_id(metadata: &MetadataMap) -> AppResult<String> {
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

/// `x-actor-id`; an empty (or blank) one is no actor, exactly as a missing one.
fn actor_header(metadata: &MetadataMap) -> AppResult<Option<String>> {
    Ok(header(metadata, ACTOR_HEADER)?.filter(|actor| !actor.is_empty()))
}

/// The id the middleware gave this call.
fn request_id<T>(request: &Request<T>) -> Option<String> {
    request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
}

/// The request id when the caller sent it: the middleware kept the header's value rather than generating
/// one (a malformed header is replaced, so it keys nothing).
fn idempotency_key<T>(request: &Request<T>) -> Option<String> {
    let sent = request.metadata().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    request_id(request).filter(|kept| kept == sent)
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
            Err(AppError::InvalidArgument(_))
        ));
        metadata.insert(CAMPAIGN_HEADER, "camp-1".parse().unwrap());
        assert_eq!(campaign_id(&metadata).unwrap(), "camp-1");
        metadata.insert(CAMPAIGN_HEADER, "x".repeat(200).parse().unwrap());
        assert!(campaign_id(&metadata).is_err());
    }

    #[test]
    fn actor_header_is_required() {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(CAMPAIGN_HEADER, "camp-1".parse().unwrap());
        assert_eq!(
            actor_call(&request).unwrap_err().reason(),
            Some(Reason::ActorMissing)
        );
        for empty in ["", "  "] {
            request
                .metadata_mut()
                .insert(ACTOR_HEADER, empty.parse().unwrap());
            assert_eq!(
                actor_call(&request).unwrap_err().reason(),
                Some(Reason::ActorMissing),
                "{empty:?} is no actor"
            );
        }
        request
            .metadata_mut()
            .insert(ACTOR_HEADER, "ana".parse().unwrap());
        assert_eq!(actor_call(&request).unwrap().actor_id, "ana");
    }
}
