//! Answers, and how the matrix judges them against a cell's expectation.

use std::panic::{AssertUnwindSafe, catch_unwind};

use assignment_service::pb;
use assignment_service::pb::BulkItemOutcome::{NotFound, Refused};
use tonic::{Code, Status};

use super::Expect;
use crate::harness::{assert_same_as_missing, reason};

#[derive(Debug)]
pub enum Answer {
    Ok(Detail),
    Failed(Status),
    /// A bulk stream that ended without error: every item result.
    Items(Vec<pb::BulkItemResult>),
}

/// What a successful call said that the matrix looks at.
#[derive(Debug)]
pub enum Detail {
    Nothing,
    /// ListConversations: every id listed, over all pages.
    Listed(Vec<String>),
    Reply(pb::ReplyPermissionReason),
    Access {
        view: bool,
        reply: bool,
    },
}

impl Answer {
    /// A short description for failure reports.
    pub fn describe(&self) -> String {
        match self {
            Answer::Ok(detail) => format!("OK {detail:?}"),
            Answer::Failed(status) => format!(
                "{:?} {} ({:?})",
                status.code(),
                reason(status),
                status.message()
            ),
            Answer::Items(items) => {
                let items: Vec<String> = items
                    .iter()
                    .map(|i| format!("{:?} {} ({:?})", i.outcome(), i.reason, i.message))
                    .collect();
                format!("items [{}]", items.join(", "))
            }
        }
    }
}

impl Expect {
    /// Whether the answer refuses the call, which must then write nothing.
    pub fn refuses(self) -> bool {
        match self {
            Expect::Refused(..) | Expect::Hidden | Expect::HiddenAs(..) => true,
            Expect::Item(outcome, _) => matches!(outcome, Refused | NotFound),
            _ => false,
        }
    }

    pub fn check(self, answer: &Answer, conversation: &str) -> Result<(), String> {
        let matches = match (self, answer) {
            (Expect::Ok, Answer::Ok(_) | Answer::Items(_)) => true,
            (Expect::Refused(code, why), Answer::Failed(status)) => {
                status.code() == code && reason(status) == why && !status.message().is_empty()
            }
            (Expect::Item(outcome, why), Answer::Items(items)) => match &items[..] {
                [item] => {
                    item.outcome() == outcome
                        && item.reason == why
                        && item.conversation_id == conversation
                }
                _ => false,
            },
            (Expect::Listed(yes), Answer::Ok(Detail::Listed(ids))) => {
                ids.iter().any(|id| id == conversation) == yes
            }
            (Expect::Reply(wanted), Answer::Ok(Detail::Reply(got))) => *got == wanted,
            (Expect::Access(view, reply), Answer::Ok(Detail::Access { view: v, reply: r })) => {
                (*v, *r) == (view, reply)
            }
            _ => false,
        };
        if matches {
            Ok(())
        } else {
            Err(format!("expected {self:?}, got {}", answer.describe()))
        }
    }
}

/// The answer about a hidden conversation must be the answer about a missing one, once the id is swapped.
pub fn same_as_missing(
    expect: Expect,
    hidden: &Answer,
    hidden_id: &str,
    missing: &Answer,
    missing_id: &str,
) -> Result<(), String> {
    let wanted = match (expect, missing) {
        (Expect::HiddenAs(code, why), _) => Expect::Refused(code, why),
        (_, Answer::Items(_)) => Expect::Item(NotFound, "CONVERSATION_NOT_FOUND"),
        _ => Expect::Refused(Code::NotFound, "CONVERSATION_NOT_FOUND"),
    };
    wanted
        .check(missing, missing_id)
        .map_err(|e| format!("about a nonexistent id: {e}"))?;
    let differ = || {
        format!(
            "hidden: {}; nonexistent: {}",
            hidden.describe(),
            missing.describe()
        )
    };
    match (hidden, missing) {
        (Answer::Failed(hidden), Answer::Failed(missing)) => catch_unwind(AssertUnwindSafe(|| {
            assert_same_as_missing(hidden, hidden_id, missing, missing_id)
        }))
        .map_err(|panic| {
            let why = panic.downcast_ref::<String>().cloned().unwrap_or_default();
            format!("{why}; {}", differ())
        }),
        (Answer::Items(h), Answer::Items(m)) => match (&h[..], &m[..]) {
            ([h], [m])
                if h.conversation_id == hidden_id
                    && (h.outcome, &h.reason, &h.assignee_id, h.access_granted)
                        == (m.outcome, &m.reason, &m.assignee_id, m.access_granted)
                    && h.message.replace(hidden_id, missing_id) == m.message =>
            {
                Ok(())
            }
            _ => Err(differ()),
        },
        _ => Err(differ()),
    }
}
