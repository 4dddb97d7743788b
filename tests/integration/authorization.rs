//! The authorization matrix: every RPC of `assignment.v1` (read from the service descriptors, so a new RPC
//! without a row fails) against every way a caller can be wrong or limited. Each table row names the RPC
//! and, per cell, the answer the contract asks for; `NA` marks a cell that does not apply to the RPC
//! (actor cells on system RPCs, "user token on a system RPC" on user RPCs). Every cell runs against a
//! conversation of its own; a refused call must leave every table unchanged.

mod calls;
mod fixture;
mod judge;

use assignment_service::pb;
use assignment_service::pb::BulkItemOutcome::{
    Assigned, Reassigned, Refused, Unassigned, Unchanged,
};
use assignment_service::pb::ReplyPermissionReason as Why;
use calls::{CallMetadata, VIEWABLE_TAG};
use fixture::Fixture;
use prost::Message;
use tonic::Code;

use crate::harness::{CAMPAIGN, TestApp, reason};

const OTHER_CAMPAIGN: &str = "camp-2";
const SYSTEM_TOKEN: &str = "flow-builder-secret";
const USER_TOKEN: &str = "messaging-secret";

/// The users of the campaign; `admin-elsewhere` is an admin of another campaign only.
const USERS: &[(&str, pb::Role)] = &[
    ("admin", pb::Role::Admin),
    (calls::REASSIGN_TO, pb::Role::Admin),
    ("admin-inactive", pb::Role::Admin),
    ("org-none", pb::Role::Organizer),
    ("org-view", pb::Role::Organizer),
    ("org-holder", pb::Role::Organizer),
    (calls::DEACTIVATED, pb::Role::Organizer),
];

/// One way of calling: the columns of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    NoToken,
    WrongToken,
    UserTokenOnSystemRpc,
    /// Control: a system token on a system RPC, a user token on the others.
    ValidToken,
    NoActor,
    ActorOfAnotherCampaign,
    UnknownActor,
    InactiveActor,
    /// An organizer in no access group, about a conversation someone else holds.
    OrganizerWithoutView,
    /// An organizer whose group grants view (not reply), about an unassigned conversation.
    ViewOnlyOrganizer,
    /// The same organizer, about a conversation they may view that another organizer holds.
    OrganizerOnAnothers,
    /// Control: an active admin on user RPCs, the system on system RPCs.
    Control,
    /// A valid token, then the other scope's: which one authenticated would be a guess.
    DuplicateToken,
    /// This campaign, then another.
    DuplicateCampaign,
    /// `x-actor-id: admin`, then an organizer without access: the first must not silently win.
    DuplicateActor,
    DuplicateRequestId,
}

impl Cell {
    fn applies_to(self, system_rpc: bool) -> bool {
        use Cell::*;
        match self {
            NoToken | WrongToken | ValidToken | Control => true,
            UserTokenOnSystemRpc => system_rpc,
            NoActor | ActorOfAnotherCampaign | UnknownActor | InactiveActor => !system_rpc,
            OrganizerWithoutView | ViewOnlyOrganizer | OrganizerOnAnothers => !system_rpc,
            DuplicateToken | DuplicateCampaign | DuplicateActor | DuplicateRequestId => true,
        }
    }

    /// Who claims to act (system RPCs send no actor).
    fn actor(self) -> Option<&'static str> {
        use Cell::*;
        match self {
            NoActor => None,
            ActorOfAnotherCampaign => Some("admin-elsewhere"),
            UnknownActor => Some("ghost"),
            InactiveActor => Some("admin-inactive"),
            OrganizerWithoutView => Some("org-none"),
            ViewOnlyOrganizer | OrganizerOnAnothers => Some("org-view"),
            NoToken | WrongToken | UserTokenOnSystemRpc | ValidToken | Control => Some("admin"),
            DuplicateToken | DuplicateCampaign | DuplicateActor | DuplicateRequestId => {
                Some("admin")
            }
        }
    }

    fn caller(self, system_rpc: bool) -> CallMetadata {
        use Cell::*;
        let (valid, other) = match system_rpc {
            true => (SYSTEM_TOKEN, USER_TOKEN),
            false => (USER_TOKEN, SYSTEM_TOKEN),
        };
        let token = match self {
            WrongToken => Some("not-the-token"),
            UserTokenOnSystemRpc => Some(USER_TOKEN),
            ValidToken | DuplicateToken | DuplicateCampaign | DuplicateActor
            | DuplicateRequestId => Some(valid),
            _ => None,
        };
        let twice = |name, first: &str, second: &str| Some((name, [first.into(), second.into()]));
        let repeated = match self {
            DuplicateToken => twice(
                "authorization",
                &format!("Bearer {valid}"),
                &format!("Bearer {other}"),
            ),
            DuplicateCampaign => twice("x-campaign-id", CAMPAIGN, OTHER_CAMPAIGN),
            DuplicateActor => twice("x-actor-id", "admin", "org-none"),
            DuplicateRequestId => twice("x-request-id", "request-1", "request-2"),
            _ => None,
        };
        CallMetadata {
            campaign: CAMPAIGN,
            actor: self.actor().filter(|_| !system_rpc).map(str::to_owned),
            token: token.map(str::to_owned),
            repeated,
        }
    }

    /// The cell's conversation: its tags, who holds it, and the expected_version calls pass.
    fn conversation(self) -> (&'static [&'static str], Option<&'static str>, Option<i64>) {
        match self {
            // Hidden, held by someone else, and asked about with a stale version: visibility comes first.
            Cell::OrganizerWithoutView => (&[], Some("org-holder"), Some(999)),
            Cell::ViewOnlyOrganizer => (&[VIEWABLE_TAG], None, None),
            Cell::OrganizerOnAnothers => (&[VIEWABLE_TAG], Some("org-holder"), None),
            _ => (&[VIEWABLE_TAG], Some("admin"), None),
        }
    }
}

/// The answer a cell expects.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The cell does not apply to this RPC.
    NotApplicable,
    /// The call succeeds (a bulk stream ends without error).
    Ok,
    /// This code, with this `ErrorInfo.reason`.
    Refused(Code, &'static str),
    /// Exactly the answer for a conversation id that does not exist: NOT_FOUND CONVERSATION_NOT_FOUND
    /// (for a bulk stream, that item outcome), same message and metadata once the id is swapped.
    Hidden,
    /// Exactly the answer for a nonexistent id, which is this refusal (it comes before any conversation).
    HiddenAs(Code, &'static str),
    /// A bulk stream answers the conversation with this outcome and reason ("" for none).
    Item(pb::BulkItemOutcome, &'static str),
    /// ListConversations lists the cell's conversation, or not.
    Listed(bool),
    /// CheckReplyPermission answers with this reason.
    Reply(Why),
    /// CheckAccess answers can_view and can_reply.
    Access(bool, bool),
}

use Expect::{Access, HiddenAs, Item, Listed, Reply};

const NA: Expect = Expect::NotApplicable;
const OK: Expect = Expect::Ok;
const HIDDEN: Expect = Expect::Hidden;
const TOKEN_MISSING: Expect = Expect::Refused(Code::Unauthenticated, "TOKEN_MISSING");
const TOKEN_INVALID: Expect = Expect::Refused(Code::Unauthenticated, "TOKEN_INVALID");
const SYSTEM_ONLY: Expect = Expect::Refused(Code::PermissionDenied, "SYSTEM_SCOPE_REQUIRED");
const NO_ACTOR: Expect = Expect::Refused(Code::Unauthenticated, "ACTOR_MISSING");
const UNKNOWN: Expect = Expect::Refused(Code::Unauthenticated, "ACTOR_UNKNOWN");
const INACTIVE: Expect = Expect::Refused(Code::PermissionDenied, "ACTOR_INACTIVE");
const ADMINS: Expect = Expect::Refused(Code::PermissionDenied, "ADMIN_REQUIRED");
const NOT_MEMBER: Expect = Expect::Refused(Code::PermissionDenied, "NOT_A_MEMBER");
const NO_REASSIGN: Expect = Expect::Refused(Code::PermissionDenied, "ORGANIZERS_CANNOT_REASSIGN");
const OWN_ONLY: Expect = Expect::Refused(Code::PermissionDenied, "ORGANIZER_UNASSIGNS_OWN_ONLY");
const OTHERS: Expect = Expect::Refused(Code::PermissionDenied, "ASSIGNED_TO_OTHER");
const TAKEN: Expect = Expect::Refused(Code::FailedPrecondition, "ALREADY_ASSIGNED");
const NO_REPLY: Expect = Expect::Refused(Code::PermissionDenied, "REPLY_NOT_ALLOWED");

type Row = (&'static str, [Expect; 4]);

const TOKEN_CELLS: [Cell; 4] = [
    Cell::NoToken,
    Cell::WrongToken,
    Cell::UserTokenOnSystemRpc,
    Cell::ValidToken,
];
const USER_RPC: [Expect; 4] = [TOKEN_MISSING, TOKEN_INVALID, NA, OK];
const SYSTEM_RPC: [Expect; 4] = [TOKEN_MISSING, TOKEN_INVALID, SYSTEM_ONLY, OK];
#[rustfmt::skip]
const TOKEN_TABLE: &[Row] = &[
    ("AssignConversation", USER_RPC), ("UnassignConversation", USER_RPC),
    ("ReassignConversation", USER_RPC), ("GetConversation", USER_RPC),
    ("ListConversations", USER_RPC), ("ResolveConversation", USER_RPC),
    ("ReopenConversation", USER_RPC), ("CheckReplyPermission", USER_RPC),
    ("ListAssignmentHistory", USER_RPC), ("AutoAssignConversation", SYSTEM_RPC),
    ("GetInboxSettings", USER_RPC), ("UpdateInboxSettings", USER_RPC),
    ("SetAvailability", USER_RPC), ("SetCapacity", USER_RPC), ("PreviewAutoAssign", USER_RPC),
    ("ListWaitingConversations", USER_RPC), ("WatchAssignmentEvents", USER_RPC),
    ("BulkAssign", USER_RPC), ("BulkUnassign", USER_RPC), ("BulkReassign", USER_RPC),
    ("CreateAccessGroup", USER_RPC), ("GetAccessGroup", USER_RPC),
    ("ListAccessGroups", USER_RPC), ("UpdateAccessGroup", USER_RPC),
    ("DeleteAccessGroup", USER_RPC), ("AddOrganizers", USER_RPC), ("RemoveOrganizers", USER_RPC),
    ("CheckAccess", USER_RPC), ("ListEligibleAssignees", USER_RPC),
    ("UpsertUser", SYSTEM_RPC), ("DeactivateUser", SYSTEM_RPC), ("UpsertConversation", SYSTEM_RPC),
    ("RecordReply", USER_RPC), ("SetShiftSchedule", USER_RPC), ("GetShiftSchedule", USER_RPC),
    ("DeleteShiftSchedule", USER_RPC),
];

const ACTOR_CELLS: [Cell; 4] = [
    Cell::NoActor,
    Cell::ActorOfAnotherCampaign,
    Cell::UnknownActor,
    Cell::InactiveActor,
];
const ACTOR: [Expect; 4] = [NO_ACTOR, UNKNOWN, UNKNOWN, INACTIVE];
const NO_ACTOR_CELLS: [Expect; 4] = [NA, NA, NA, NA];
#[rustfmt::skip]
const ACTOR_TABLE: &[Row] = &[
    ("AssignConversation", ACTOR), ("UnassignConversation", ACTOR),
    ("ReassignConversation", ACTOR), ("GetConversation", ACTOR), ("ListConversations", ACTOR),
    ("ResolveConversation", ACTOR), ("ReopenConversation", ACTOR),
    ("CheckReplyPermission", ACTOR), ("ListAssignmentHistory", ACTOR),
    ("AutoAssignConversation", NO_ACTOR_CELLS), ("GetInboxSettings", ACTOR),
    ("UpdateInboxSettings", ACTOR), ("SetAvailability", [OK, UNKNOWN, UNKNOWN, INACTIVE]),
    ("SetCapacity", ACTOR), ("PreviewAutoAssign", ACTOR), ("ListWaitingConversations", ACTOR),
    ("WatchAssignmentEvents", [OK, UNKNOWN, UNKNOWN, INACTIVE]),
    ("BulkAssign", ACTOR), ("BulkUnassign", ACTOR),
    ("BulkReassign", ACTOR), ("CreateAccessGroup", ACTOR), ("GetAccessGroup", ACTOR),
    ("ListAccessGroups", ACTOR), ("UpdateAccessGroup", ACTOR), ("DeleteAccessGroup", ACTOR),
    ("AddOrganizers", ACTOR), ("RemoveOrganizers", ACTOR), ("CheckAccess", ACTOR),
    ("ListEligibleAssignees", ACTOR), ("UpsertUser", NO_ACTOR_CELLS),
    ("DeactivateUser", NO_ACTOR_CELLS), ("UpsertConversation", NO_ACTOR_CELLS),
    ("RecordReply", [OK, UNKNOWN, UNKNOWN, INACTIVE]),
    ("SetShiftSchedule", [OK, UNKNOWN, UNKNOWN, INACTIVE]),
    ("GetShiftSchedule", [OK, UNKNOWN, UNKNOWN, INACTIVE]),
    ("DeleteShiftSchedule", [OK, UNKNOWN, UNKNOWN, INACTIVE]),
];

const ORGANIZER_CELLS: [Cell; 4] = [
    Cell::OrganizerWithoutView,
    Cell::ViewOnlyOrganizer,
    Cell::OrganizerOnAnothers,
    Cell::Control,
];
const ADMIN_ONLY: [Expect; 4] = [ADMINS, ADMINS, ADMINS, OK];
const SYSTEM: [Expect; 4] = [NA, NA, NA, OK];
#[rustfmt::skip]
const ORGANIZER_TABLE: &[Row] = &[
    //                       without view, view only, on another's, control (admin / system)
    ("AssignConversation",    [HIDDEN, OK, TAKEN, OK]),
    ("UnassignConversation",  [HIDDEN, OK, OWN_ONLY, OK]),
    ("ReassignConversation",  [HIDDEN, NO_REASSIGN, NO_REASSIGN, OK]),
    ("GetConversation",       [HIDDEN, OK, OK, OK]),
    ("ListConversations",     [Listed(false), Listed(true), Listed(true), Listed(true)]),
    ("ResolveConversation",   [HIDDEN, OK, OTHERS, OK]),
    ("ReopenConversation",    [HIDDEN, OK, OTHERS, OK]),
    ("CheckReplyPermission",  [HIDDEN, Reply(Why::NotAssigned), Reply(Why::AssignedToOther),
                               Reply(Why::Admin)]),
    ("ListAssignmentHistory", [HIDDEN, OK, OK, OK]),
    ("AutoAssignConversation", SYSTEM),
    ("GetInboxSettings",      [OK, OK, OK, OK]),
    ("UpdateInboxSettings",   ADMIN_ONLY),
    ("SetAvailability",       [OK, OK, OK, OK]),
    ("SetCapacity",           ADMIN_ONLY),
    ("ListWaitingConversations", [OK, OK, OK, OK]),
    ("WatchAssignmentEvents", [OK, OK, OK, OK]),
    ("PreviewAutoAssign",     [HiddenAs(Code::PermissionDenied, "ADMIN_REQUIRED"), ADMINS, ADMINS,
                               OK]),
    ("BulkAssign",            [HIDDEN, Item(Assigned, ""), Item(Refused, "ALREADY_ASSIGNED"),
                               Item(Unchanged, "")]),
    ("BulkUnassign",          [HIDDEN, Item(Unchanged, ""),
                               Item(Refused, "ORGANIZER_UNASSIGNS_OWN_ONLY"), Item(Unassigned, "")]),
    ("BulkReassign",          [HiddenAs(Code::PermissionDenied, "ORGANIZERS_CANNOT_REASSIGN"),
                               NO_REASSIGN, NO_REASSIGN, Item(Reassigned, "")]),
    ("CreateAccessGroup",     ADMIN_ONLY),
    ("GetAccessGroup",        [NOT_MEMBER, OK, OK, OK]),
    ("ListAccessGroups",      [OK, OK, OK, OK]),
    ("UpdateAccessGroup",     ADMIN_ONLY),
    ("DeleteAccessGroup",     ADMIN_ONLY),
    ("AddOrganizers",         ADMIN_ONLY),
    ("RemoveOrganizers",      ADMIN_ONLY),
    ("CheckAccess",           [HIDDEN, Access(true, false), Access(true, false), Access(true, true)]),
    ("ListEligibleAssignees", [HiddenAs(Code::PermissionDenied, "ADMIN_REQUIRED"), ADMINS, ADMINS,
                               OK]),
    ("UpsertUser", SYSTEM), ("DeactivateUser", SYSTEM), ("UpsertConversation", SYSTEM),
    ("RecordReply",           [HIDDEN, NO_REPLY, NO_REPLY, OK]),
    // Another organizer's schedule (their own is theirs to set).
    ("SetShiftSchedule",      ADMIN_ONLY),
    ("GetShiftSchedule",      ADMIN_ONLY),
    ("DeleteShiftSchedule",   ADMIN_ONLY),
];

const DUPLICATE_CELLS: [Cell; 4] = [
    Cell::DuplicateToken,
    Cell::DuplicateCampaign,
    Cell::DuplicateActor,
    Cell::DuplicateRequestId,
];
const DUPLICATE: Expect = Expect::Refused(Code::InvalidArgument, "DUPLICATE_HEADER");
const DUPLICATES: [Expect; 4] = [DUPLICATE; 4];
#[rustfmt::skip]
const DUPLICATE_TABLE: &[Row] = &[
    ("AssignConversation", DUPLICATES), ("UnassignConversation", DUPLICATES),
    ("ReassignConversation", DUPLICATES), ("GetConversation", DUPLICATES),
    ("ListConversations", DUPLICATES), ("ResolveConversation", DUPLICATES),
    ("ReopenConversation", DUPLICATES), ("CheckReplyPermission", DUPLICATES),
    ("ListAssignmentHistory", DUPLICATES), ("AutoAssignConversation", DUPLICATES),
    ("GetInboxSettings", DUPLICATES), ("UpdateInboxSettings", DUPLICATES),
    ("SetAvailability", DUPLICATES), ("SetCapacity", DUPLICATES),
    ("PreviewAutoAssign", DUPLICATES), ("ListWaitingConversations", DUPLICATES),
    ("WatchAssignmentEvents", DUPLICATES), ("BulkAssign", DUPLICATES),
    ("BulkUnassign", DUPLICATES), ("BulkReassign", DUPLICATES),
    ("CreateAccessGroup", DUPLICATES), ("GetAccessGroup", DUPLICATES),
    ("ListAccessGroups", DUPLICATES), ("UpdateAccessGroup", DUPLICATES),
    ("DeleteAccessGroup", DUPLICATES), ("AddOrganizers", DUPLICATES),
    ("RemoveOrganizers", DUPLICATES), ("CheckAccess", DUPLICATES),
    ("ListEligibleAssignees", DUPLICATES), ("UpsertUser", DUPLICATES),
    ("DeactivateUser", DUPLICATES), ("UpsertConversation", DUPLICATES),
    ("RecordReply", DUPLICATES), ("SetShiftSchedule", DUPLICATES),
    ("GetShiftSchedule", DUPLICATES), ("DeleteShiftSchedule", DUPLICATES),
];

/// Every RPC of package assignment.v1, as (service, method), from the compiled descriptors.
fn rpcs() -> Vec<(String, String)> {
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let rpcs: Vec<(String, String)> = set
        .file
        .iter()
        .filter(|file| file.package() == "assignment.v1")
        .flat_map(|file| &file.service)
        .flat_map(|service| {
            let name = service.name().to_owned();
            service
                .method
                .iter()
                .map(move |method| (name.clone(), method.name().to_owned()))
        })
        .collect();
    assert!(rpcs.len() >= 20, "the descriptors list the RPCs: {rpcs:?}");
    rpcs
}

/// The contract's system RPCs: the directory and auto-assignment.
fn is_system(service: &str, method: &str) -> bool {
    service == "DirectoryService" || method == "AutoAssignConversation"
}

/// How many RPCs there are, and how many of them are system RPCs.
fn rpc_counts() -> (usize, usize) {
    let rpcs = rpcs();
    let system = rpcs.iter().filter(|(s, m)| is_system(s, m)).count();
    (rpcs.len(), system)
}

#[tokio::test]
async fn matrix_token_cells() {
    let fixture = Fixture::start(true).await;
    let ran = fixture.run(TOKEN_CELLS, TOKEN_TABLE).await;
    let (all, system) = rpc_counts();
    assert_eq!(ran, 3 * all + system, "every applicable cell ran");
}

#[tokio::test]
async fn matrix_actor_cells() {
    let fixture = Fixture::start(false).await;
    let ran = fixture.run(ACTOR_CELLS, ACTOR_TABLE).await;
    let (all, system) = rpc_counts();
    assert_eq!(ran, 4 * (all - system), "every applicable cell ran");
}

/// A header that says who calls, where or as which call, sent twice, is refused naming it, on every RPC,
/// before authentication: with two values, the first would win, and a proxy checking the other is fooled.
#[tokio::test]
async fn matrix_duplicate_header_cells() {
    let fixture = Fixture::start(true).await;
    let ran = fixture.run(DUPLICATE_CELLS, DUPLICATE_TABLE).await;
    let (all, _) = rpc_counts();
    assert_eq!(ran, 4 * all, "every applicable cell ran");
}

#[tokio::test]
async fn matrix_organizer_cells() {
    let fixture = Fixture::start(false).await;
    let ran = fixture.run(ORGANIZER_CELLS, ORGANIZER_TABLE).await;
    let (all, system) = rpc_counts();
    assert_eq!(ran, 3 * (all - system) + all, "every applicable cell ran");
}

/// ReassignConversation from an organizer: what they may not view is missing (the matrix checks that);
/// on what they may view, ORGANIZERS_CANNOT_REASSIGN comes before anything else, a stale version included.
#[tokio::test]
async fn organizers_are_refused_reassignment_before_the_version_check() {
    use crate::harness::{as_actor, expect_code, scope_tags};
    let app = TestApp::start().await;
    app.admin("admin").await;
    app.organizer("org").await;
    app.group(
        "admin",
        "Viewers",
        &["org"],
        false,
        scope_tags(&[VIEWABLE_TAG]),
    )
    .await;
    app.conversation("c1", &[VIEWABLE_TAG]).await;
    let reassign = |expected_version| pb::ReassignConversationRequest {
        conversation_id: "c1".into(),
        assignee_id: "admin".into(),
        expected_version,
    };
    let mut client = app.assignments().await;
    for expected_version in [None, Some(1), Some(999)] {
        let status = expect_code(
            client
                .reassign_conversation(as_actor("org", reassign(expected_version)))
                .await,
            Code::PermissionDenied,
        );
        assert_eq!(
            reason(&status),
            "ORGANIZERS_CANNOT_REASSIGN",
            "{expected_version:?}"
        );
    }
    assert_eq!(app.count("assignment_events").await, 0);
}
