//! A raw gRPC client, whose codec sends message bytes exactly as given, and the malformed protobuf frames
//! sent with it.

use assignment_service::pb;
use http::uri::PathAndQuery;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::{Answer, Case, Expect, Req};
use crate::raw_codec::RawCodec;

async fn ready(channel: &Channel) -> Result<tonic::client::Grpc<Channel>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    Ok(grpc)
}

/// Sends `request`'s bytes as the one message of the unary RPC at `path`.
pub async fn unary(channel: &Channel, request: Request<Vec<u8>>, path: &'static str) -> Answer {
    let mut grpc = ready(channel).await?;
    grpc.unary::<_, Vec<u8>, _>(request, PathAndQuery::from_static(path), RawCodec)
        .await
        .map(|_| Vec::new())
}

/// Sends each of `request`'s byte strings as a message of the streaming RPC at `path`, then reads the
/// answers to the end.
pub async fn streaming(
    channel: &Channel,
    request: Request<Vec<Vec<u8>>>,
    path: &'static str,
) -> Answer {
    let mut grpc = ready(channel).await?;
    let request = request.map(tokio_stream::iter);
    let mut answers = grpc
        .streaming(request, PathAndQuery::from_static(path), RawCodec)
        .await?
        .into_inner();
    while answers.message().await?.is_some() {}
    Ok(Vec::new())
}

const GET: &str = "/assignment.v1.AssignmentService/GetConversation";
const LIST: &str = "/assignment.v1.AssignmentService/ListConversations";
const ASSIGN: &str = "/assignment.v1.AssignmentService/AssignConversation";
const BULK_UNASSIGN: &str = "/assignment.v1.AssignmentService/BulkUnassign";
const UPSERT_USER: &str = "/assignment.v1.DirectoryService/UpsertUser";
const UPSERT_CONVERSATION: &str = "/assignment.v1.DirectoryService/UpsertConversation";
const CREATE_GROUP: &str = "/assignment.v1.AccessGroupService/CreateAccessGroup";

fn frame(name: &'static str, path: &'static str, bytes: &[u8]) -> Case {
    Case::new(
        name,
        Req::Raw(path, bytes.to_vec()),
        Expect::Code(Code::InvalidArgument),
    )
}

/// Frames that are not valid protobuf for their RPC: each must be INVALID_ARGUMENT (a malformed request),
/// not INTERNAL.
pub fn frames() -> Vec<Case> {
    let overlong_varint = [&[0x20][..], &[0xff; 10], &[0x01]].concat();
    vec![
        frame(
            "raw: invalid UTF-8 in conversation_id",
            GET,
            &[0x0a, 0x02, 0xff, 0xfe],
        ),
        frame(
            "raw: length past the end of the message",
            GET,
            &[0x0a, 0x0a, b'c', b'1'],
        ),
        frame("raw: string field sent as a varint", GET, &[0x08, 0x01]),
        frame("raw: field number 0", GET, &[0x00, 0x01]),
        frame("raw: end-group tag without a start", GET, &[0x0c]),
        frame("raw: page_size varint cut short", LIST, &[0x20, 0xff]),
        frame("raw: page_size varint of 11 bytes", LIST, &overlong_varint),
        frame(
            "raw: tag with no value",
            ASSIGN,
            &[0x0a, 0x02, b'c', b'1', 0x12],
        ),
        frame(
            "raw: invalid UTF-8 in display_name",
            UPSERT_USER,
            &[0x0a, 0x01, b'u', 0x10, 0x02, 0x1a, 0x02, 0xc3, 0x28],
        ),
        frame(
            "raw: invalid UTF-8 in a member tag",
            UPSERT_CONVERSATION,
            &[0x0a, 0x02, b'c', b'9', 0x12, 0x01, b'm', 0x1a, 0x01, 0x80],
        ),
        frame(
            "raw: nested permissions cut short",
            CREATE_GROUP,
            &[0x0a, 0x01, b'g', 0x12, 0x05, 0x08],
        ),
        Case::new(
            "raw: bulk stream with invalid UTF-8 in a conversation id",
            Req::RawStream(BULK_UNASSIGN, vec![vec![0x0a, 0x03, 0x0a, 0x01, 0xff]]),
            Expect::Code(Code::InvalidArgument),
        ),
        // A unary RPC takes exactly one message: a second is not dropped, none is not INTERNAL.
        framing(
            "raw: a unary read with two messages",
            GET,
            vec![get_message("c1"), get_message("c2")],
        ),
        framing(
            "raw: a unary write with two messages",
            ASSIGN,
            vec![assign_message("admin"), assign_message("org")],
        ),
        framing("raw: a unary request with no message", GET, vec![]),
        framing(
            "raw: a unary request with an empty message and another",
            GET,
            vec![vec![], get_message("c1")],
        ),
    ]
}

fn framing(name: &'static str, path: &'static str, messages: Vec<Vec<u8>>) -> Case {
    Case::new(
        name,
        Req::RawStream(path, messages),
        Expect::Refused("MALFORMED_FRAMING", &[]),
    )
}

fn get_message(id: &str) -> Vec<u8> {
    pb::GetConversationRequest {
        conversation_id: id.into(),
    }
    .encode_to_vec()
}

/// Assigns c2, which is unassigned, to `assignee`.
fn assign_message(assignee: &str) -> Vec<u8> {
    pb::AssignConversationRequest {
        conversation_id: "c2".into(),
        assignee_id: assignee.into(),
        expected_version: None,
    }
    .encode_to_vec()
}

/// Well-formed raw frames: they show the raw client reaches the handlers (these pass today).
pub fn controls() -> Vec<Case> {
    vec![
        Case::new(
            "raw control: an empty GetConversation message",
            Req::Raw(GET, vec![]),
            Expect::Invalid(&["conversation_id"]),
        ),
        Case::new(
            "raw control: an unknown field is skipped",
            Req::Raw(GET, vec![0x78, 0x05]),
            Expect::Invalid(&["conversation_id"]),
        ),
    ]
}
