//! The bad-input cases, one entry each: name, request, the fields the BadRequest must name (or another
//! expected answer), and any header changes. Constructors are in `requests.rs`.

use tonic::Code;

use super::Expect::{Code as Status, ItemsRefused, Refused};
use super::requests::*;
use super::{Case, raw};

/// Every case the server answers as the contract says; `g` is an existing access group's id.
#[rustfmt::skip]
pub fn cases(g: &str) -> Vec<Case> {
    let uuid = "0b6c1ce4-5f1e-4c1a-9d07-3c3f5cbd6f0e";
    let huge_tags = vec!["t".repeat(50_000); 100];
    let mut cases = vec![
        // Malformed ids.
        bad("get: empty id", get(""), &["conversation_id"]),
        bad("get: 129-character id", get(&long()), &["conversation_id"]),
        bad("get: id with a space", get("c 1"), &["conversation_id"]),
        bad("get: non-ASCII id", get("cé"), &["conversation_id"]),
        bad("get: tab in id", get("c\t1"), &["conversation_id"]),
        bad("get: NUL in id", get("c\u{0}1"), &["conversation_id"]),
        bad("get: DEL in id", get("c\u{7f}"), &["conversation_id"]),
        bad("get: blank id", get("   "), &["conversation_id"]),
        bad("assign: empty assignee", assign("c2", ""), &["assignee_id"]),
        bad("assign: both ids bad", assign("", "a b"), &["conversation_id", "assignee_id"]),
        bad("reassign: both ids bad", reassign(&long(), "é"), &["conversation_id", "assignee_id"]),
        bad("unassign: newline in id", unassign("c1\n"), &["conversation_id"]),
        bad("resolve: non-ASCII id", resolve("ç"), &["conversation_id"]),
        bad("reopen: 129-character id", reopen(&long()), &["conversation_id"]),
        bad("reply: user id with a space", reply("c1", "a b"), &["user_id"]),
        bad("reply: both ids bad", reply("", &long()), &["conversation_id", "user_id"]),
        bad("access: both ids bad", access(" ", "é"), &["conversation_id", "user_id"]),
        bad("access: 129-character user id", access("c1", &long()), &["user_id"]),
        bad("deactivate: empty user id", deactivate(""), &["user_id"]),
        // Paging and enums.
        bad("list: negative page_size", list("", false, 0, -1, ""), &["page_size"]),
        bad("list: page_token not base64", list("", false, 0, 0, "!!!"), &["page_token"]),
        bad("list: page_token of another RPC", list("", false, 0, 0, &token("access_groups", "team")), &["page_token"]),
        bad("list: status 99", list("", false, 99, 0, ""), &["status"]),
        bad("list: status -1", list("", false, -1, 0, ""), &["status"]),
        bad("list: assignee_id with unassigned", list("org", true, 0, 0, ""), &["unassigned"]),
        bad("list: every field bad", list("a b", false, 99, -1, "%%"), &["assignee_id", "status", "page_size", "page_token"]),
        bad("history: negative page_size", history("c1", -5, ""), &["page_size"]),
        bad("history: page_token with a non-numeric key", history("c1", 0, &token("events", "abc")), &["page_token"]),
        bad("history: every field bad", history("a b", i32::MIN, "x"), &["conversation_id", "page_size", "page_token"]),
        bad("groups: every field bad", groups("é", -3, &token("conversations", "c1")), &["organizer_id", "page_size", "page_token"]),
        bad("upsert user: role 99", user("u9", 99, "U"), &["role"]),
        bad("upsert user: role unspecified", user("u9", 0, "U"), &["role"]),
        bad("upsert user: role -1", user("u9", -1, "U"), &["role"]),
        bad("upsert user: display name of 201 characters", user("u9", ROLE, &"n".repeat(201)), &["display_name"]),
        bad("upsert user: every field bad", user("", 99, "Ann\u{7}"), &["user_id", "role", "display_name"]),
        // Member data, auto-assign triggers, oversized lists and messages.
        bad("upsert conversation: empty member", conversation("c9", "", vec![]), &["member_id"]),
        bad("upsert conversation: 101 tags", conversation("c9", "m", ids(101)), &["member_tags"]),
        bad("upsert conversation: empty tag", conversation("c9", "m", strings(&[""])), &["member_tags[0]"]),
        bad("upsert conversation: 65-character tag", conversation("c9", "m", vec!["t".repeat(65)]), &["member_tags[0]"]),
        bad("upsert conversation: every field bad", conversation("c 9", "", strings(&["ok", "\n"])), &["conversation_id", "member_id", "member_tags[1]"]),
        bad("auto-assign: empty trigger id", auto("c1", "", "m", vec![]), &["trigger_id"]),
        bad("auto-assign: every field bad", auto("", "t 1", "é", strings(&[""])), &["conversation_id", "trigger_id", "member_id", "member_tags[0]"]),
        Case::new("upsert conversation: a message over the size limit", conversation("c9", "m", huge_tags), Status(Code::OutOfRange)),
        Case::new("bulk unassign: a later message over the size limit", bulk_unassign(vec![Some(strings(&["c404"])), Some(vec!["c".repeat(50_000); 100])]), Status(Code::OutOfRange)),
        Case::new("bulk assign: a later message over the size limit", bulk_assign(vec![to(&["admin"]), Msg::Batch(strings(&["c404"])), Msg::Batch(vec!["c".repeat(50_000); 100])]), Status(Code::OutOfRange)),
        // Access groups: scope, permissions, names, UUIDs, lists.
        bad("create group: no scope", create("G", perms(true, false), None, vec![]), &["scope"]),
        bad("create group: empty scope", create("G", perms(true, false), Some(Default::default()), vec![]), &["scope"]),
        bad("create group: reply without view", create("G", perms(false, true), all(), vec![]), &["permissions"]),
        bad("create group: no permissions", create("G", None, all(), vec![]), &["permissions"]),
        bad("create group: empty name", create("", perms(true, true), all(), vec![]), &["name"]),
        bad("create group: blank name", create(" \t ", perms(true, true), all(), vec![]), &["name"]),
        bad("create group: name of 101 characters", create(&"n".repeat(101), perms(true, true), all(), vec![]), &["name"]),
        bad("create group: name with a control character", create("G\u{1b}", perms(true, true), all(), vec![]), &["name"]),
        bad("create group: 1001 organizers", create("G", perms(true, true), all(), ids(OVER)), &["organizer_ids"]),
        bad("create group: organizer id with a space", create("G", perms(true, true), all(), strings(&["o 1"])), &["organizer_ids[0]"]),
        bad("create group: 10001 listed conversations", create("G", perms(true, true), listed(ids(10_001)), vec![]), &["scope.conversation_ids"]),
        bad("create group: non-ASCII listed conversation", create("G", perms(true, true), listed(strings(&["cé"])), vec![]), &["scope.conversation_ids[0]"]),
        bad("create group: empty scope tag", create("G", perms(true, true), tags(strings(&[""])), vec![]), &["scope.member_tags[0]"]),
        bad("update group: id not a UUID", update("team", Some("T"), None, None), &["access_group_id"]),
        bad("update group: empty name", update(g, Some(""), None, None), &["name"]),
        bad("update group: empty scope", update(g, None, None, Some(Default::default())), &["scope"]),
        bad("update group: reply without view", update(g, None, perms(false, true), None), &["permissions"]),
        bad("update group: three fields bad", update(g, Some(""), perms(false, false), tags(strings(&[""]))), &["name", "permissions", "scope.member_tags[0]"]),
        bad("update group: every field bad", update("1234", Some(" "), perms(false, false), Some(Default::default())), &["access_group_id", "name", "permissions", "scope"]),
        bad("get group: empty id", get_group(""), &["access_group_id"]),
        bad("get group: UUID with a non-hex digit", get_group("00000000-0000-0000-0000-00000000000g"), &["access_group_id"]),
        bad("delete group: id not a UUID", delete_group("Team"), &["access_group_id"]),
        bad("add organizers: truncated UUID", add(&uuid[..30], strings(&["org"])), &["access_group_id"]),
        bad("add organizers: empty organizer id", add(g, strings(&["org", ""])), &["organizer_ids[1]"]),
        bad("remove organizers: 1001 organizers", remove(g, ids(OVER)), &["organizer_ids"]),
        bad("remove organizers: organizer id with a space", remove(uuid, strings(&["o 1"])), &["organizer_ids[0]"]),
        bad("eligible: no conversations", eligible(vec![]), &["conversation_ids"]),
        bad("eligible: 10001 conversations", eligible(ids(10_001)), &["conversation_ids"]),
        bad("eligible: a malformed id", eligible(strings(&["c1", "c 2"])), &["conversation_ids[1]"]),
        // Bulk stream misuse.
        bad("bulk assign: a batch before the options", bulk_assign(vec![Msg::Batch(strings(&["c2"]))]), &["options"]),
        bad("bulk assign: no messages", bulk_assign(vec![]), &["options"]),
        bad("bulk assign: options twice", bulk_assign(vec![to(&["admin"]), to(&["admin"])]), &["options"]),
        bad("bulk assign: options again after a batch", bulk_assign(vec![to(&["admin"]), Msg::Batch(strings(&["c404"])), to(&["admin"])]), &["options"]),
        bad("bulk assign: 5001 ids in one message", bulk_assign(vec![to(&["admin"]), Msg::Batch(ids(5_001))]), &["conversations.conversation_ids"]),
        bad("bulk assign: a target twice", bulk_assign(vec![to(&["admin", "org", "admin"])]), &["options.assignee_ids"]),
        bad("bulk assign: no targets", bulk_assign(vec![to(&[])]), &["options"]),
        bad("bulk assign: 1001 targets", bulk_assign(vec![to_all(ids(OVER))]), &["options.assignee_ids"]),
        bad("bulk assign: target id with a space", bulk_assign(vec![to(&["a b"])]), &["options.assignee_ids[0]"]),
        bad("bulk assign: group id not a UUID", bulk_assign(vec![options(&[], &["team"], false, "")]), &["options.access_group_ids"]),
        bad("bulk assign: grant_access without a group name", bulk_assign(vec![options(&["org"], &[], true, "")]), &["options.new_access_group_name"]),
        bad("bulk assign: group name with a control character", bulk_assign(vec![options(&["org"], &[], true, "new\u{0}")]), &["options.new_access_group_name"]),
        bad("bulk reassign: a batch before the options", bulk_reassign(vec![Msg::Batch(strings(&["c1"]))]), &["options"]),
        bad("bulk reassign: options twice", bulk_reassign(vec![to(&["admin"]), to(&["org"])]), &["options"]),
        bad("bulk reassign: a target twice", bulk_reassign(vec![to(&["org", "org"])]), &["options.assignee_ids"]),
        bad("bulk unassign: 5001 ids in the first message", bulk_unassign(vec![Some(ids(5_001))]), &["conversations.conversation_ids"]),
        bad("bulk unassign: 5001 ids in a later message", bulk_unassign(vec![Some(strings(&["c404"])), Some(ids(5_001))]), &["conversations.conversation_ids"]),
        bad("bulk unassign: a message without a batch", bulk_unassign(vec![None]), &["conversations"]),
        bad("bulk unassign: no messages", bulk_unassign(vec![]), &["conversations"]),
        Case::new("bulk assign: malformed conversation ids", bulk_assign(vec![to(&["admin"]), Msg::Batch(malformed_ids())]), ItemsRefused("INVALID_CONVERSATION_ID")),
        Case::new("bulk unassign: malformed conversation ids", bulk_unassign(vec![Some(malformed_ids())]), ItemsRefused("INVALID_CONVERSATION_ID")),
        // Metadata headers.
        bad("no x-campaign-id", get("c1"), &[CAMPAIGN]).without(CAMPAIGN),
        bad("empty x-campaign-id", get("c1"), &[CAMPAIGN]).header(CAMPAIGN, b""),
        bad("129-character x-campaign-id", get("c1"), &[CAMPAIGN]).header(CAMPAIGN, long().as_bytes()),
        bad("x-campaign-id with a space", get("c1"), &[CAMPAIGN]).header(CAMPAIGN, b"camp 1"),
        bad("non-ASCII x-campaign-id", get("c1"), &[CAMPAIGN]).header(CAMPAIGN, "camp-é".as_bytes()),
        bad("non-ASCII x-actor-id", get("c1"), &[ACTOR]).header(ACTOR, "adminé".as_bytes()),
        bad("x-actor-id with a space", get("c1"), &[ACTOR]).header(ACTOR, b"ad min"),
        bad("129-character x-actor-id", get("c1"), &[ACTOR]).header(ACTOR, long().as_bytes()),
        Case::new("empty x-actor-id: as if missing", get("c1"), Refused("ACTOR_MISSING", &[])).header(ACTOR, b""),
        Case::new("blank x-actor-id: as if missing", get("c1"), Refused("ACTOR_MISSING", &[])).header(ACTOR, b"  "),
        Case::new("bulk assign with an empty x-actor-id", bulk_assign(vec![to(&["admin"])]), Refused("ACTOR_MISSING", &[])).header(ACTOR, b""),
        // A header that says who calls, sent twice: the first value would win.
        twice("x-actor-id twice, the admin first", get("c1"), ACTOR).again(ACTOR, b"org"),
        twice("x-actor-id twice, the same value", assign("c2", "admin"), ACTOR).again(ACTOR, b"admin"),
        twice("x-campaign-id twice", get("c1"), CAMPAIGN).again(CAMPAIGN, b"camp-2"),
        twice("authorization twice", get("c1"), "authorization").header("authorization", b"Bearer a").again("authorization", b"Bearer b"),
        twice("x-request-id twice", assign("c2", "admin"), "x-request-id").header("x-request-id", b"r-1").again("x-request-id", b"r-2"),
        twice("bulk assign with x-actor-id twice", bulk_assign(vec![to(&["admin"]), Msg::Batch(strings(&["c2"]))]), ACTOR).again(ACTOR, b"org"),
        twice("system RPC with x-campaign-id twice", user("u9", ROLE, "U"), CAMPAIGN).without(ACTOR).again(CAMPAIGN, b"camp-2"),
        bad("system RPC without x-campaign-id", user("u9", ROLE, "U"), &[CAMPAIGN]).without(CAMPAIGN),
        bad("bulk assign with a non-ASCII x-campaign-id", bulk_assign(vec![to(&["admin"])]), &[CAMPAIGN]).header(CAMPAIGN, &[0xff]),
        bad("bulk unassign with a non-ASCII x-actor-id", bulk_unassign(vec![Some(strings(&["c1"]))]), &[ACTOR]).header(ACTOR, &[0xe9]),
    ];
    cases.extend(raw::controls());
    cases
}

/// A header sent twice: DUPLICATE_HEADER, its BadRequest naming the header.
fn twice(name: &'static str, request: super::Req, header: &'static str) -> Case {
    let fields: &'static [&'static str] = match header {
        ACTOR => &[ACTOR],
        CAMPAIGN => &[CAMPAIGN],
        "authorization" => &["authorization"],
        _ => &["x-request-id"],
    };
    Case::new(name, request, Refused("DUPLICATE_HEADER", fields))
}

/// Requests with several bad body fields where the server names only the first (see the test running it).
#[rustfmt::skip]
pub fn several_bad_fields() -> Vec<Case> {
    vec![
        bad("create group: every field bad", create("", perms(false, true), None, strings(&["o 1"])), &["name", "permissions", "scope", "organizer_ids[0]"]),
        bad("add organizers: every field bad", add("g-1", strings(&["", "org"])), &["access_group_id", "organizer_ids[0]"]),
        bad("bulk assign: every option bad", bulk_assign(vec![options(&["org", "org"], &["team"], true, "n\u{7}")]), &["options.assignee_ids", "options.access_group_ids", "options.new_access_group_name"]),
    ]
}

/// Requests with a bad header and another bad header or field: every bad header is named, the fields are
/// checked once the headers are good.
#[rustfmt::skip]
pub fn bad_header_and_more() -> Vec<Case> {
    vec![
        bad("two bad headers", get("c1"), &[CAMPAIGN, ACTOR]).header(CAMPAIGN, b"").header(ACTOR, "é".as_bytes()),
        bad("a bad header and a bad field", get(""), &[CAMPAIGN]).without(CAMPAIGN),
        bad("a bad header and a bad bulk option", bulk_assign(vec![to(&["a b"])]), &[ACTOR]).header(ACTOR, b"a b"),
    ]
}
