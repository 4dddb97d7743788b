-- The NATS JetStream relay (`relay`): per campaign, how far its feed has been published and acknowledged,
-- and which replica relays it now. The position moves only after JetStream acknowledged the messages up to
-- it; a replica holds a campaign for `lease_until`, renewed as it goes, and another takes it once that passed.
CREATE TABLE relay_positions (
    campaign_id text   PRIMARY KEY,
    -- The feed number of the last event JetStream acknowledged (0: none yet).
    relayed_seq bigint NOT NULL DEFAULT 0,
    -- That message's stream sequence: the next publish expects it as the subject's last
    -- (Nats-Expected-Last-Subject-Sequence), so the server refuses a gap or a repeat.
    subject_seq bigint NOT NULL DEFAULT 0,
    -- The replica relaying the campaign (its instance id), until when.
    holder      text,
    lease_until timestamptz
);
