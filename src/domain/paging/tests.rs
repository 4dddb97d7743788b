//! Unit and property tests of page sizes and page tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;

use super::*;

fn message_of(err: AppError) -> String {
    match err {
        AppError::InvalidArgument(violations) => {
            assert_eq!(violations.len(), 1);
            assert_eq!(violations[0].field, "page_token");
            violations[0].message.clone()
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn page_size_defaults_caps_and_rejects_negative() {
    assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
    assert_eq!(page_size(7).unwrap(), 7);
    assert_eq!(page_size(100_000).unwrap(), MAX_PAGE_SIZE);
    assert!(page_size(-1).is_err());
}

#[test]
fn tokens_round_trip_and_an_empty_token_is_the_first_page() {
    let scope = PageScope::conversations("camp-1", Some("u1"), false, None, false);
    assert_eq!(scope.after("").unwrap(), None);
    let token = scope.token("c:42");
    assert_eq!(scope.after(&token).unwrap(), Some("c:42".into()));
    let history = PageScope::history("camp-1", None);
    assert_eq!(
        history.after(&history.token("17")).unwrap(),
        Some("17".into())
    );
    let groups = PageScope::access_groups("camp-1", None);
    let key = "field team – north";
    assert_eq!(groups.after(&groups.token(key)).unwrap(), Some(key.into()));
}

#[test]
fn tokens_are_bound_to_their_list_campaign_and_filter() {
    let scope = PageScope::conversations("camp-1", None, true, None, false);
    let token = scope.token("c1");

    let other_campaign = PageScope::conversations("camp-2", None, true, None, false);
    assert!(message_of(other_campaign.after(&token).unwrap_err()).contains("another campaign"));

    for other_filter in [
        PageScope::conversations("camp-1", None, false, None, false),
        PageScope::conversations("camp-1", None, true, Some(ConversationStatus::Open), false),
        PageScope::conversations("camp-1", Some("u1"), true, None, false),
    ] {
        assert!(message_of(other_filter.after(&token).unwrap_err()).contains("another filter"));
    }

    let groups = PageScope::access_groups("camp-1", None);
    let message = message_of(groups.after(&token).unwrap_err());
    assert!(message.contains("issued by ListConversations, not ListAccessGroups"));
    assert!(message.contains("next_page_token"));
}

#[test]
fn filters_hash_unambiguously() {
    let a = PageScope::new(List::Conversations, "c", &[("a", Some("bc")), ("d", None)]);
    let b = PageScope::new(List::Conversations, "c", &[("a", Some("b")), ("cd", None)]);
    let c = PageScope::new(List::Conversations, "c", &[("a", Some("")), ("d", None)]);
    let d = PageScope::new(List::Conversations, "c", &[("a", None), ("d", None)]);
    assert_ne!(a, b);
    assert_ne!(c, d);
}

#[test]
fn forged_keys_that_the_list_could_not_hold_are_refused() {
    // A token with any body and a correct checksum, as a client that read this code could make.
    let forge_version = |version: u8, scope: &PageScope, key: &[u8]| {
        let mut bytes = vec![version, scope.list.tag()];
        bytes.extend_from_slice(&scope.campaign);
        bytes.extend_from_slice(&scope.filter);
        bytes.extend_from_slice(key);
        let sum = checksum(&bytes);
        bytes.extend_from_slice(&sum);
        URL_SAFE_NO_PAD.encode(bytes)
    };
    let forge = |scope: &PageScope, key: &[u8]| forge_version(scope.list.version(), scope, key);
    let conversations = PageScope::conversations("camp-1", None, false, None, false);
    let history = PageScope::history("camp-1", None);
    let groups = PageScope::access_groups("camp-1", None);
    assert_eq!(
        conversations.after(&forge(&conversations, b"c1")).unwrap(),
        Some("c1".into())
    );
    for key in [&b"c\0"[..], b"", b"has space", b"\xff\xfe", "é".as_bytes()] {
        assert!(
            conversations.after(&forge(&conversations, key)).is_err(),
            "{key:?}"
        );
    }
    for key in ["", "-1", "+1", "01", "1.0", "9223372036854775808", "x"] {
        assert!(
            history
                .after_event(&ids(), &forge(&history, key.as_bytes()))
                .is_err(),
            "{key:?}"
        );
    }
    for key in ["", "a\0b", "a\nb"] {
        assert!(
            groups.after(&forge(&groups, key.as_bytes())).is_err(),
            "{key:?}"
        );
    }
    let future = forge_version(conversations.list.version() + 1, &conversations, b"c1");
    assert!(message_of(conversations.after(&future).unwrap_err()).contains("malformed"));
}

fn ids() -> CampaignIds {
    let secret = crate::domain::opaque::Secret::from_slice(&[9; 32]).unwrap();
    CampaignIds::new(&secret, "camp-1")
}

#[test]
fn feed_and_queue_keys_travel_opaque_and_round_trip() {
    let ids = ids();
    let history = PageScope::history("camp-1", None);
    let token = history.event_token(ids.event_id(17));
    assert_eq!(history.after_event(&ids, &token).unwrap(), Some(17));
    let waiting = PageScope::waiting("camp-1", Some("org1"));
    for position in [-5, 0, 42] {
        let token = waiting.queue_token(&ids, position);
        assert_eq!(
            waiting.after_position(&ids, &token).unwrap(),
            Some(position)
        );
    }
    // An id past the range of event ids is no event of the campaign.
    let past = history.event_token(1 << 62);
    assert!(message_of(history.after_event(&ids, &past).unwrap_err()).contains("malformed"));
}

#[test]
fn version_1_tokens_of_the_feed_and_the_queue_are_refused() {
    // Version 1 carried the feed number in clear: accepting one would let a client resume at any number.
    let v1 = |scope: &PageScope, key: &str| {
        let mut bytes = vec![1, scope.list.tag()];
        bytes.extend_from_slice(&scope.campaign);
        bytes.extend_from_slice(&scope.filter);
        bytes.extend_from_slice(key.as_bytes());
        let sum = checksum(&bytes);
        bytes.extend_from_slice(&sum);
        URL_SAFE_NO_PAD.encode(bytes)
    };
    for scope in [
        PageScope::feed("camp-1"),
        PageScope::history("camp-1", None),
        PageScope::waiting("camp-1", None),
    ] {
        assert!(message_of(scope.after(&v1(&scope, "3")).unwrap_err()).contains("malformed"));
    }
    // Lists whose keys did not change still take the tokens issued before.
    let conversations = PageScope::conversations("camp-1", None, false, None, false);
    assert_eq!(
        conversations.after(&v1(&conversations, "c1")).unwrap(),
        Some("c1".into())
    );
}

#[test]
fn garbage_and_oversized_tokens_are_refused() {
    let scope = PageScope::history("camp-1", Some("c1"));
    for token in ["%%%", "garbage", "AAAA", "Y29udmVyc2F0aW9uczpjMQ"] {
        assert!(scope.after(token).is_err(), "{token:?}");
    }
    assert!(scope.after(&"A".repeat(MAX_TOKEN_CHARS + 4)).is_err());
}

// ----- properties -----

fn any_list() -> impl Strategy<Value = List> {
    prop::sample::select(List::ALL.to_vec())
}

/// A key the list could hold: an id, an event id, or a lowercase group name.
fn key_for(list: List) -> BoxedStrategy<String> {
    match list {
        List::Conversations => "[!-~]{1,128}".boxed(),
        List::AssignmentHistory | List::Feed => (0..=i64::MAX).prop_map(|n| n.to_string()).boxed(),
        List::AccessGroups => "[^\\p{Cc}]{1,100}".boxed(),
        List::WaitingConversations => any::<i64>().prop_map(|n| n.to_string()).boxed(),
    }
}

fn any_filter() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
    prop::collection::vec(("[a-z_]{1,12}", prop::option::of(".{0,20}")), 0..4)
}

fn scope_of(list: List, campaign: &str, filter: &[(String, Option<String>)]) -> PageScope {
    let fields: Vec<(&str, Option<&str>)> = filter
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_deref()))
        .collect();
    PageScope::new(list, campaign, &fields)
}

/// A list, a campaign, a filter, and a key valid for the list.
fn issued() -> impl Strategy<Value = (List, String, Vec<(String, Option<String>)>, String)> {
    any_list().prop_flat_map(|list| {
        ("[!-~]{1,128}", any_filter(), key_for(list))
            .prop_map(move |(campaign, filter, key)| (list, campaign, filter, key))
    })
}

/// Refused as an invalid page_token, or decoded to exactly `original`.
fn refused_or_exactly(
    result: AppResult<Option<String>>,
    original: &str,
) -> Result<(), TestCaseError> {
    match result {
        Ok(key) => prop_assert_eq!(key.as_deref(), Some(original)),
        Err(err @ AppError::InvalidArgument(_)) => {
            prop_assert_eq!(err.fields(), vec!["page_token"])
        }
        Err(other) => prop_assert!(false, "unexpected error {:?}", other),
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_valid_key_round_trips((list, campaign, filter, key) in issued()) {
        let scope = scope_of(list, &campaign, &filter);
        prop_assert_eq!(scope.after(&scope.token(&key)).unwrap(), Some(key.clone()));
        if list == List::AssignmentHistory {
            let id: i64 = key.parse().unwrap();
            let decoded = scope.after_event(&ids(), &scope.token(&key));
            // Every id in range is some event's; the rest are malformed.
            prop_assert_eq!(decoded.is_ok(), id < 1 << 62);
        }
    }

    #[test]
    fn mutated_tokens_are_refused_or_decode_to_the_original(
        (list, campaign, filter, key) in issued(),
        at in any::<prop::sample::Index>(),
        with in any::<char>(),
    ) {
        let scope = scope_of(list, &campaign, &filter);
        let token = scope.token(&key);
        let mut chars: Vec<char> = token.chars().collect();
        let i = at.index(chars.len());
        chars[i] = with;
        let mutated: String = chars.into_iter().collect();
        refused_or_exactly(scope.after(&mutated), &key)?;
    }

    #[test]
    fn truncated_or_extended_tokens_are_refused(
        (list, campaign, filter, key) in issued(),
        cut in any::<prop::sample::Index>(),
        tail in "[A-Za-z0-9_-]{1,8}",
    ) {
        let scope = scope_of(list, &campaign, &filter);
        let token = scope.token(&key);
        let truncated = &token[..cut.index(token.len())];
        prop_assert!(truncated.is_empty() || scope.after(truncated).is_err());
        let extended = format!("{token}{tail}");
        prop_assert!(scope.after(&extended).is_err());
    }

    #[test]
    fn random_tokens_never_panic_and_are_refused(token in ".{1,200}", list in any_list()) {
        let scope = PageScope::new(list, "camp-1", &[]);
        let refused = matches!(
            scope.after(&token),
            Err(ref err @ AppError::InvalidArgument(_)) if err.fields() == vec!["page_token"]
        );
        prop_assert!(refused);
    }

    #[test]
    fn random_bytes_with_a_good_checksum_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..200),
        list in any_list(),
    ) {
        let scope = PageScope::new(list, "camp-1", &[]);
        let mut bytes = body.clone();
        bytes.extend_from_slice(&checksum(&body));
        let token = URL_SAFE_NO_PAD.encode(&bytes);
        if let Ok(Some(key)) = scope.after(&token) {
            prop_assert!(list.is_valid_key(&key));
            prop_assert_eq!(scope.token(&key), token);
        }
    }

    #[test]
    fn tokens_work_only_where_they_were_issued(
        (list, campaign, filter, key) in issued(),
        other_list in any_list(),
        other_campaign in "[!-~]{1,128}",
        other_filter in any_filter(),
    ) {
        let token = scope_of(list, &campaign, &filter).token(&key);
        let elsewhere = scope_of(other_list, &other_campaign, &other_filter);
        let same_place = other_list == list && other_campaign == campaign && other_filter == filter;
        prop_assert_eq!(elsewhere.after(&token).is_ok(), same_place);
    }
}
