-- Dead letters (lib/consumer.h, lib/deadletters.h): messages the consumer
-- could not handle, kept whole. A dead letter is never deleted: an operator
-- resolves it (GET /dead-letters, replay, discard), replaying it through
-- the consumer's own path or discarding it with a reason, and the row says
-- by whom and when.
CREATE TABLE IF NOT EXISTS dead_letters (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,
    partition   int NOT NULL,
    "offset"    bigint NOT NULL,
    key         bytea,
    payload     bytea,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    resolution  text CHECK (resolution IN ('replayed', 'discarded')),
    resolved_by text,
    note        text,
    CHECK ((resolved_at IS NULL) = (resolution IS NULL))
);
-- A database made before the dead-letter tools had the table without them.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute
                   WHERE attrelid = 'dead_letters'::regclass AND attname = 'resolved_at') THEN
        ALTER TABLE dead_letters
            ADD COLUMN resolved_at timestamptz,
            ADD COLUMN resolution  text CHECK (resolution IN ('replayed', 'discarded')),
            ADD COLUMN resolved_by text,
            ADD COLUMN note        text,
            ADD CHECK ((resolved_at IS NULL) = (resolution IS NULL));
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS dead_letters_open ON dead_letters (id) WHERE resolved_at IS NULL;
