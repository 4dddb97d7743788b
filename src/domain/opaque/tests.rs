//! Unit and property tests of the opaque numbers.

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;

fn secret(byte: u8) -> Secret {
    Secret::from_slice(&[byte; SECRET_LEN]).unwrap()
}

#[test]
fn a_secret_must_have_its_length() {
    assert!(Secret::from_slice(&[0; SECRET_LEN - 1]).is_none());
    assert!(Secret::from_slice(&[0; SECRET_LEN + 1]).is_none());
    assert_eq!(format!("{:?}", secret(7)), "Secret(..)");
}

#[test]
fn consecutive_feed_numbers_give_unrelated_ids() {
    let ids = CampaignIds::new(&secret(1), "camp-1");
    let public: Vec<i64> = (1..=64).map(|seq| ids.event_id(seq)).collect();
    assert!(public.iter().all(|id| (0..1 << 62).contains(id)));
    assert_eq!(public.iter().collect::<HashSet<_>>().len(), public.len());
    // Neither ordered nor evenly spaced: a viewer cannot tell how many numbers lie between two ids.
    assert!(public.windows(2).any(|w| w[0] > w[1]));
    assert!(public.windows(2).all(|w| (w[1] - w[0]).abs() > 1));
}

#[test]
fn campaigns_and_secrets_have_their_own_ids() {
    let a = CampaignIds::new(&secret(1), "camp-1");
    let b = CampaignIds::new(&secret(1), "camp-2");
    let other_secret = CampaignIds::new(&secret(2), "camp-1");
    for seq in 1..=32 {
        assert_ne!(a.event_id(seq), b.event_id(seq));
        assert_ne!(a.event_id(seq), other_secret.event_id(seq));
        assert_ne!(a.queue_token_key(seq), b.queue_token_key(seq));
    }
}

#[test]
fn values_out_of_the_id_range_are_no_event() {
    let ids = CampaignIds::new(&secret(1), "camp-1");
    assert_eq!(ids.seq(-1), None);
    assert_eq!(ids.seq(1 << 62), None);
    assert_eq!(ids.seq(i64::MAX), None);
}

proptest! {
    #[test]
    fn event_ids_decode_to_their_feed_number(seq in 0i64..(1 << 62), campaign in "[a-z0-9-]{1,20}") {
        let ids = CampaignIds::new(&secret(3), &campaign);
        prop_assert_eq!(ids.seq(ids.event_id(seq)), Some(seq));
    }

    #[test]
    fn every_id_is_some_feed_number(id in 0i64..(1 << 62)) {
        let ids = CampaignIds::new(&secret(3), "camp-1");
        let seq = ids.seq(id).unwrap();
        prop_assert_eq!(ids.event_id(seq), id);
    }

    #[test]
    fn queue_keys_round_trip(position in any::<i64>()) {
        let ids = CampaignIds::new(&secret(4), "camp-1");
        prop_assert_eq!(ids.queue_position(ids.queue_token_key(position)), position);
    }
}
