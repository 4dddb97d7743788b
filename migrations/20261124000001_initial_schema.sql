-- Every table is keyed by campaign_id first so the schema can be distributed by campaign (e.g. Citus).

CREATE TABLE users (
    campaign_id  text        NOT NULL,
    user_id      text        NOT NULL,
    role         text        NOT NULL CHECK (role IN ('ADMIN', 'ORGANIZER')),
    display_name text        NOT NULL DEFAULT '',
    active       boolean     NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, user_id)
);

CREATE TABLE conversations (
    campaign_id     text        NOT NULL,
    conversation_id text        NOT NULL,
    member_id       text        NOT NULL,
    member_tags     text[]      NOT NULL DEFAULT '{}',
    status          text        NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'RESOLVED')),
    assignee_id     text,
    assigned_at     timestamptz,
    assigned_by     text,
    version         bigint      NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, conversation_id),
    FOREIGN KEY (campaign_id, assignee_id) REFERENCES users (campaign_id, user_id),
    CHECK ((assignee_id IS NULL) = (assigned_at IS NULL))
);

CREATE INDEX conversations_by_assignee ON conversations (campaign_id, assignee_id, conversation_id);
CREATE INDEX conversations_by_tag ON conversations USING gin (member_tags);

CREATE TABLE access_groups (
    campaign_id     text        NOT NULL,
    access_group_id uuid        NOT NULL,
    name            text        NOT NULL,
    can_view        boolean     NOT NULL,
    can_reply       boolean     NOT NULL,
    scope_all       boolean     NOT NULL DEFAULT false,
    scope_tags      text[]      NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, access_group_id),
    CHECK (can_view OR NOT can_reply)
);

CREATE UNIQUE INDEX access_groups_name ON access_groups (campaign_id, lower(name));

CREATE TABLE access_group_organizers (
    campaign_id     text NOT NULL,
    access_group_id uuid NOT NULL,
    user_id         text NOT NULL,
    PRIMARY KEY (campaign_id, access_group_id, user_id),
    FOREIGN KEY (campaign_id, access_group_id) REFERENCES access_groups ON DELETE CASCADE,
    FOREIGN KEY (campaign_id, user_id) REFERENCES users (campaign_id, user_id)
);

-- Access checks start from the organizer.
CREATE INDEX access_group_organizers_by_user ON access_group_organizers (campaign_id, user_id);

CREATE TABLE access_group_conversations (
    campaign_id     text NOT NULL,
    access_group_id uuid NOT NULL,
    conversation_id text NOT NULL,
    PRIMARY KEY (campaign_id, access_group_id, conversation_id),
    FOREIGN KEY (campaign_id, access_group_id) REFERENCES access_groups ON DELETE CASCADE,
    FOREIGN KEY (campaign_id, conversation_id) REFERENCES conversations (campaign_id, conversation_id)
);

CREATE TABLE assignment_events (
    campaign_id     text        NOT NULL,
    event_id        bigint      GENERATED ALWAYS AS IDENTITY,
    conversation_id text        NOT NULL,
    action          text        NOT NULL CHECK (action IN ('ASSIGN', 'UNASSIGN', 'REASSIGN')),
    from_user_id    text,
    to_user_id      text,
    actor_id        text,
    source          text        NOT NULL CHECK (source IN ('MANUAL', 'BULK', 'AUTO')),
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, event_id),
    FOREIGN KEY (campaign_id, conversation_id) REFERENCES conversations (campaign_id, conversation_id)
);

CREATE INDEX assignment_events_by_conversation ON assignment_events (campaign_id, conversation_id, event_id);
