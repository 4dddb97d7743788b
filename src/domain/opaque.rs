//! Opaque numbers: what a client sees instead of the service's counters.
//!
//! A campaign's feed numbers (`seq`: 1, 2, 3, … for every event of the campaign) and queue keys (one
//! sequence across all campaigns) count everything, including what a viewer may not see and other
//! campaigns' activity. Clients get them only through a keyed permutation per campaign: event ids, feed
//! cursors and page tokens are these permuted values, so two consecutive events a viewer sees are as far
//! apart as any two, and a campaign's values say nothing about another's. The key derives from one secret
//! every replica reads from the database (`service_secrets`), so any replica decodes any replica's values.
//!
//! The permutation is a Feistel network with HMAC-SHA256 round functions: six rounds, enough for a strong
//! pseudorandom permutation of halves this small (Patarin), on 62-bit values for event ids (they stay
//! positive `int64`s) and 64-bit values for queue keys (negative at the queue's front).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const ROUNDS: u8 = 6;
/// Bytes of the shared secret.
pub const SECRET_LEN: usize = 32;

/// The secret every replica shares through the database; each campaign's keys derive from it.
#[derive(Clone)]
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    /// `None` unless exactly [`SECRET_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One campaign's permutations: feed numbers ↔ event ids, queue keys ↔ their page-token form.
#[derive(Clone)]
pub struct CampaignIds {
    events: Feistel,
    queue: Feistel,
}

impl CampaignIds {
    pub fn new(secret: &Secret, campaign_id: &str) -> Self {
        Self {
            events: Feistel::new(secret, "event_ids", campaign_id, 31),
            queue: Feistel::new(secret, "queue_keys", campaign_id, 32),
        }
    }

    /// The public id of the campaign's event numbered `seq`: unique in the campaign, in `[0, 2^62)`.
    pub fn event_id(&self, seq: i64) -> i64 {
        // Feed numbers are positive and far below 2^62; a value out of range would be a broken invariant,
        // and masking keeps the answer a valid id rather than panicking mid-stream.
        debug_assert!((0..1 << 62).contains(&seq), "feed number {seq}");
        self.events.encrypt(seq as u64 & self.events.mask()) as i64
    }

    /// The feed number of an event id of this campaign; `None` for a value no feed number maps to.
    pub fn seq(&self, event_id: i64) -> Option<i64> {
        let value = u64::try_from(event_id).ok()?;
        (value <= self.events.mask()).then(|| self.events.decrypt(value) as i64)
    }

    /// A queue key as page tokens carry it.
    pub fn queue_token_key(&self, position: i64) -> i64 {
        self.queue.encrypt(position as u64) as i64
    }

    /// The queue key a page token's key stands for.
    pub fn queue_position(&self, token_key: i64) -> i64 {
        self.queue.decrypt(token_key as u64) as i64
    }
}

impl std::fmt::Debug for CampaignIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CampaignIds(..)")
    }
}

/// A balanced Feistel network on `2 * half_bits`-bit values.
#[derive(Clone)]
struct Feistel {
    /// HMAC keyed with the campaign's key for this purpose; cloned per round (its key is processed once).
    mac: HmacSha256,
    half_bits: u32,
}

impl Feistel {
    fn new(secret: &Secret, purpose: &str, campaign_id: &str, half_bits: u32) -> Self {
        let mut derive = HmacSha256::new_from_slice(&secret.0).expect("HMAC takes any key length");
        // Length-prefixed, so no two (purpose, campaign) pairs derive from the same input.
        for part in [purpose, campaign_id] {
            derive.update(&(part.len() as u64).to_be_bytes());
            derive.update(part.as_bytes());
        }
        let key = derive.finalize().into_bytes();
        Self {
            mac: HmacSha256::new_from_slice(&key).expect("HMAC takes any key length"),
            half_bits,
        }
    }

    fn mask(&self) -> u64 {
        u64::MAX >> (64 - 2 * self.half_bits)
    }

    fn half_mask(&self) -> u64 {
        (1 << self.half_bits) - 1
    }

    fn round(&self, round: u8, half: u64) -> u64 {
        let mut mac = self.mac.clone();
        mac.update(&[round]);
        mac.update(&half.to_be_bytes());
        let out = mac.finalize().into_bytes();
        let word = u64::from_be_bytes(out[..8].try_into().expect("32 bytes"));
        word & self.half_mask()
    }

    fn encrypt(&self, value: u64) -> u64 {
        let (mut left, mut right) = (value >> self.half_bits, value & self.half_mask());
        for round in 0..ROUNDS {
            (left, right) = (right, left ^ self.round(round, right));
        }
        (left << self.half_bits) | right
    }

    fn decrypt(&self, value: u64) -> u64 {
        let (mut left, mut right) = (value >> self.half_bits, value & self.half_mask());
        for round in (0..ROUNDS).rev() {
            (left, right) = (right ^ self.round(round, left), left);
        }
        (left << self.half_bits) | right
    }
}

#[cfg(test)]
mod tests;
