-- Secrets the replicas share through the database (they share nothing else). `opaque_ids` keys the
-- permutations that turn the campaigns' counters (feed numbers, queue keys) into the event ids, cursors and
-- page tokens clients see (src/domain/opaque.rs), so any replica decodes what another issued and nobody
-- counts hidden or other campaigns' activity from them. Made once, here, from PostgreSQL's strong random
-- source (two version-4 UUIDs: 244 random bits); never sent to a client. Not keyed by campaign: one small
-- row, a reference table if the others are distributed by campaign.
CREATE TABLE service_secrets (
    name   text  PRIMARY KEY,
    secret bytea NOT NULL CHECK (length(secret) = 32)
);

INSERT INTO service_secrets (name, secret)
VALUES ('opaque_ids', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));
