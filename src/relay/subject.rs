//! Campaign ids as NATS subject tokens, and feed ids as message ids.
//!
//! A campaign id is printable ASCII without spaces (`domain::validate::id`); a subject token may not hold
//! `.`, `*` or `>`. Those, and `%` itself, are percent-escaped (`%2E`, `%2A`, `%3E`, `%25`): reversible, and
//! the ids without them (nearly all) stay as they are.

/// `campaign_id` as one subject token.
pub fn token(campaign_id: &str) -> String {
    let mut token = String::with_capacity(campaign_id.len());
    for c in campaign_id.chars() {
        match c {
            '.' => token.push_str("%2E"),
            '*' => token.push_str("%2A"),
            '>' => token.push_str("%3E"),
            '%' => token.push_str("%25"),
            c => token.push(c),
        }
    }
    token
}

/// The campaign id a subject token was made from ([`token`]'s inverse); `None` if it is not one.
pub fn campaign_of(token: &str) -> Option<String> {
    let mut id = String::with_capacity(token.len());
    let mut rest = token;
    while let Some(at) = rest.find('%') {
        id.push_str(&rest[..at]);
        let escaped = rest.get(at..at + 3)?;
        id.push(match escaped {
            "%2E" => '.',
            "%2A" => '*',
            "%3E" => '>',
            "%25" => '%',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    id.push_str(rest);
    Some(id)
}

/// The subject a campaign's events go to: `<prefix>.<token>`.
pub fn of(prefix: &str, campaign_id: &str) -> String {
    format!("{prefix}.{}", token(campaign_id))
}

/// An event's feed id, `<campaign>:<seq>`: its `Nats-Msg-Id`.
pub fn message_id(campaign_id: &str, seq: i64) -> String {
    format!("{campaign_id}:{seq}")
}

/// The feed number a message id names (after its last `:`; campaign ids may hold `:` themselves).
pub fn seq_of(message_id: &str) -> Option<i64> {
    message_id.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaign_ids_become_single_tokens_and_back() {
        for id in [
            "camp-1", "a.b", "x*y>z", "100%", "a:b", "%2E", "...", "$sys",
        ] {
            let t = token(id);
            assert!(!t.contains(['.', '*', '>', ' ']), "{id} -> {t}");
            assert_eq!(campaign_of(&t).as_deref(), Some(id), "{id} -> {t}");
        }
        assert_eq!(token("camp-1"), "camp-1");
        assert_eq!(
            of("assignment.v1.events", "a.b"),
            "assignment.v1.events.a%2Eb"
        );
        assert_eq!(campaign_of("bad%2"), None);
        assert_eq!(campaign_of("bad%41"), None);
    }

    #[test]
    fn message_ids_name_the_campaign_and_the_feed_number() {
        assert_eq!(message_id("camp-1", 42), "camp-1:42");
        assert_eq!(seq_of("camp-1:42"), Some(42));
        assert_eq!(seq_of("a:b:7"), Some(7));
        assert_eq!(seq_of("nothing"), None);
    }
}
