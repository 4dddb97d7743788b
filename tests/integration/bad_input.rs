//! Bad input, case by case: malformed ids, oversized lists, bad enums, paging and UUIDs, empty scopes, bulk
//! stream misuse, bad metadata headers, several bad fields at once, and raw protobuf frames that do not
//! decode. Each case names the status it expects (for INVALID_ARGUMENT, exactly the fields the
//! google.rpc.BadRequest must list) and must leave every table of the database unchanged. The cases are
//! tables in `bad_input/cases.rs` (raw frames in `bad_input/raw.rs`): adding one is one line.

mod cases;
mod raw;
mod requests;

use assignment_service::pb;
use assignment_service::pb::access_group_service_client::AccessGroupServiceClient;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use assignment_service::pb::directory_service_client::DirectoryServiceClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::StatusExt;

use crate::harness::*;
use crate::snapshot::Snapshot;

/// A request of any RPC, as a case sends it.
pub enum Req {
    Assign(pb::AssignConversationRequest),
    Unassign(pb::UnassignConversationRequest),
    Reassign(pb::ReassignConversationRequest),
    Get(pb::GetConversationRequest),
    List(pb::ListConversationsRequest),
    Resolve(pb::ResolveConversationRequest),
    Reopen(pb::ReopenConversationRequest),
    CheckReply(pb::CheckReplyPermissionRequest),
    History(pb::ListAssignmentHistoryRequest),
    AutoAssign(pb::AutoAssignConversationRequest),
    UpsertUser(pb::UpsertUserRequest),
    DeactivateUser(pb::DeactivateUserRequest),
    UpsertConversation(pb::UpsertConversationRequest),
    CreateGroup(pb::CreateAccessGroupRequest),
    GetGroup(pb::GetAccessGroupRequest),
    ListGroups(pb::ListAccessGroupsRequest),
    UpdateGroup(pb::UpdateAccessGroupRequest),
    DeleteGroup(pb::DeleteAccessGroupRequest),
    AddOrganizers(pb::AddOrganizersRequest),
    RemoveOrganizers(pb::RemoveOrganizersRequest),
    CheckAccess(pb::CheckAccessRequest),
    Eligible(pb::ListEligibleAssigneesRequest),
    BulkAssign(Vec<pb::BulkAssignRequest>),
    BulkReassign(Vec<pb::BulkReassignRequest>),
    BulkUnassign(Vec<pb::BulkUnassignRequest>),
    /// Encoded message bytes sent as they are to a unary RPC (its full path).
    Raw(&'static str, Vec<u8>),
    /// Encoded messages sent as they are on a bidirectional stream.
    RawStream(&'static str, Vec<Vec<u8>>),
}

/// What a case expects.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// INVALID_ARGUMENT whose BadRequest names exactly these fields (in any order).
    Invalid(&'static [&'static str]),
    /// A bulk stream that succeeds and refuses every item with this reason.
    ItemsRefused(&'static str),
    /// This status code.
    Code(Code),
}

pub struct Case {
    pub name: &'static str,
    pub request: Req,
    pub expect: Expect,
    /// Metadata headers; `None` leaves the header out.
    headers: Vec<(&'static str, Option<Vec<u8>>)>,
}

impl Case {
    pub fn new(name: &'static str, request: Req, expect: Expect) -> Self {
        Self {
            name,
            request,
            expect,
            headers: vec![
                ("x-campaign-id", Some(CAMPAIGN.as_bytes().to_vec())),
                ("x-actor-id", Some(b"admin".to_vec())),
            ],
        }
    }

    /// Sends `name` with this value instead.
    pub fn header(mut self, name: &'static str, value: &[u8]) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, Some(value.to_vec())));
        self
    }

    /// Sends no `name` header.
    pub fn without(mut self, name: &'static str) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, None));
        self
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        for (name, value) in &self.headers {
            if let Some(value) = value {
                let value = AsciiMetadataValue::try_from(value.as_slice())
                    .unwrap_or_else(|e| panic!("{}: header {name} cannot be sent: {e}", self.name));
                request.metadata_mut().insert(*name, value);
            }
        }
        request
    }
}

/// What a call answered: the items of a bulk stream (none for a unary call), or its error.
type Answer = Result<Vec<pb::BulkItemResult>, Status>;

fn unary<T>(result: Result<Response<T>, Status>) -> Answer {
    result.map(|_| Vec::new())
}

async fn stream<R>(
    result: Result<Response<Streaming<R>>, Status>,
    items: fn(R) -> Vec<pb::BulkItemResult>,
) -> Answer {
    let mut stream = result?.into_inner();
    let mut all = Vec::new();
    while let Some(message) = stream.message().await? {
        all.extend(items(message));
    }
    Ok(all)
}

async fn send(channel: &Channel, case: &Case) -> Answer {
    let mut assignments = AssignmentServiceClient::new(channel.clone());
    let mut groups = AccessGroupServiceClient::new(channel.clone());
    let mut directory = DirectoryServiceClient::new(channel.clone());
    match &case.request {
        Req::Assign(m) => unary(
            assignments
                .assign_conversation(case.request(m.clone()))
                .await,
        ),
        Req::Unassign(m) => unary(
            assignments
                .unassign_conversation(case.request(m.clone()))
                .await,
        ),
        Req::Reassign(m) => unary(
            assignments
                .reassign_conversation(case.request(m.clone()))
                .await,
        ),
        Req::Get(m) => unary(assignments.get_conversation(case.request(m.clone())).await),
        Req::List(m) => unary(
            assignments
                .list_conversations(case.request(m.clone()))
                .await,
        ),
        Req::Resolve(m) => unary(
            assignments
                .resolve_conversation(case.request(m.clone()))
                .await,
        ),
        Req::Reopen(m) => unary(
            assignments
                .reopen_conversation(case.request(m.clone()))
                .await,
        ),
        Req::CheckReply(m) => unary(
            assignments
                .check_reply_permission(case.request(m.clone()))
                .await,
        ),
        Req::History(m) => unary(
            assignments
                .list_assignment_history(case.request(m.clone()))
                .await,
        ),
        Req::AutoAssign(m) => unary(
            assignments
                .auto_assign_conversation(case.request(m.clone()))
                .await,
        ),
        Req::UpsertUser(m) => unary(directory.upsert_user(case.request(m.clone())).await),
        Req::DeactivateUser(m) => unary(directory.deactivate_user(case.request(m.clone())).await),
        Req::UpsertConversation(m) => {
            unary(directory.upsert_conversation(case.request(m.clone())).await)
        }
        Req::CreateGroup(m) => unary(groups.create_access_group(case.request(m.clone())).await),
        Req::GetGroup(m) => unary(groups.get_access_group(case.request(m.clone())).await),
        Req::ListGroups(m) => unary(groups.list_access_groups(case.request(m.clone())).await),
        Req::UpdateGroup(m) => unary(groups.update_access_group(case.request(m.clone())).await),
        Req::DeleteGroup(m) => unary(groups.delete_access_group(case.request(m.clone())).await),
        Req::AddOrganizers(m) => unary(groups.add_organizers(case.request(m.clone())).await),
        Req::RemoveOrganizers(m) => unary(groups.remove_organizers(case.request(m.clone())).await),
        Req::CheckAccess(m) => unary(groups.check_access(case.request(m.clone())).await),
        Req::Eligible(m) => unary(
            groups
                .list_eligible_assignees(case.request(m.clone()))
                .await,
        ),
        Req::BulkAssign(m) => {
            let result = assignments
                .bulk_assign(case.request(tokio_stream::iter(m.clone())))
                .await;
            stream(result, |m| match m.payload {
                Some(pb::bulk_assign_response::Payload::Results(r)) => r.items,
                _ => Vec::new(),
            })
            .await
        }
        Req::BulkReassign(m) => {
            let result = assignments
                .bulk_reassign(case.request(tokio_stream::iter(m.clone())))
                .await;
            stream(result, |m| match m.payload {
                Some(pb::bulk_reassign_response::Payload::Results(r)) => r.items,
                _ => Vec::new(),
            })
            .await
        }
        Req::BulkUnassign(m) => {
            let result = assignments
                .bulk_unassign(case.request(tokio_stream::iter(m.clone())))
                .await;
            stream(result, |m| match m.payload {
                Some(pb::bulk_unassign_response::Payload::Results(r)) => r.items,
                _ => Vec::new(),
            })
            .await
        }
        Req::Raw(path, bytes) => raw::unary(channel, case.request(bytes.clone()), path).await,
        Req::RawStream(path, frames) => {
            raw::streaming(channel, case.request(frames.clone()), path).await
        }
    }
}

/// Whether the answer is what the case expects.
fn check(expect: Expect, answer: &Answer) -> Result<(), String> {
    match (expect, answer) {
        (Expect::Invalid(fields), Err(status)) if status.code() == Code::InvalidArgument => {
            let details = status.get_error_details();
            let Some(bad_request) = details.bad_request() else {
                return Err(format!("no BadRequest details: {status:?}"));
            };
            let mut named: Vec<&str> = bad_request
                .field_violations
                .iter()
                .map(|v| v.field.as_str())
                .collect();
            let mut wanted = fields.to_vec();
            named.sort();
            wanted.sort();
            if named != wanted {
                return Err(format!(
                    "BadRequest names {named:?}, expected {wanted:?} ({:?})",
                    status.message()
                ));
            }
            if let Some(v) = bad_request
                .field_violations
                .iter()
                .find(|v| v.description.is_empty())
            {
                return Err(format!("the violation of {} says nothing", v.field));
            }
            Ok(())
        }
        (Expect::ItemsRefused(reason), Ok(items)) if !items.is_empty() => {
            match items.iter().find(|item| {
                item.outcome() != pb::BulkItemOutcome::Refused || item.reason != reason
            }) {
                None => Ok(()),
                Some(item) => Err(format!("item {item:?}, expected REFUSED {reason}")),
            }
        }
        (Expect::Code(code), Err(status)) if status.code() == code => Ok(()),
        (expect, Err(status)) => Err(format!(
            "expected {expect:?}, got {:?} {:?}",
            status.code(),
            status.message()
        )),
        (expect, Ok(items)) => Err(format!("expected {expect:?}, got success: {items:?}")),
    }
}

/// An admin, an organizer in a group that may view and reply to everything, and conversations c1
/// (assigned to the organizer) and c2; returns the server and the group's id.
async fn seeded() -> (TestApp, String) {
    // No periodic sweep during the cases: it folds organizers' load changes, which would show as a
    // refused case's change between its snapshots.
    let app = TestApp::start_configured(&["--waiting-sweep-interval", "1h"]).await;
    app.admin("admin").await;
    app.organizer("org").await;
    let group = app
        .group("admin", "Team", &["org"], true, scope_all())
        .await;
    app.conversation("c1", &["volunteer"]).await;
    app.conversation("c2", &[]).await;
    app.assignments()
        .await
        .assign_conversation(as_actor(
            "admin",
            pb::AssignConversationRequest {
                conversation_id: "c1".into(),
                assignee_id: "org".into(),
                expected_version: None,
            },
        ))
        .await
        .unwrap();
    (app, group.access_group_id)
}

/// Sends every case, each between two snapshots of the database, and fails naming every case whose
/// answer is not the one expected or that changed the database.
async fn run(app: &TestApp, cases: Vec<Case>) {
    let channel = app.channel().await;
    let total = cases.len();
    let mut failures = Vec::new();
    for case in cases {
        let (name, expect) = (case.name, case.expect);
        let before = Snapshot::take(app.store.pool()).await;
        let answer = send(&channel, &case).await;
        if let Err(why) = check(expect, &answer) {
            failures.push(format!("{name}: {why}"));
        }
        let after = Snapshot::take(app.store.pool()).await;
        if let Some(changed) = after.changes_since(&before) {
            failures.push(format!("{name}: changed {changed}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} bad-input cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let (app, group) = seeded().await;
    let cases = cases::cases(&group);
    assert!(cases.len() >= 50, "{} cases", cases.len());
    run(&app, cases).await;
}

#[tokio::test]
async fn several_bad_fields_are_all_named() {
    let (app, _) = seeded().await;
    run(&app, cases::several_bad_fields()).await;
}

/// The headers say where and for whom a call acts; they are checked (together) before the message, so a
/// bad header is answered with the other bad headers but without the message's bad fields.
#[tokio::test]
async fn bad_headers_are_answered_before_the_fields() {
    let (app, _) = seeded().await;
    run(&app, cases::bad_header_and_more()).await;
}

#[tokio::test]
async fn malformed_protobuf_frames_are_invalid_arguments() {
    let (app, _) = seeded().await;
    run(&app, raw::frames()).await;
}
