-- Dead-letter tools for operators (GET /dead-letters, replay, discard): a
-- dead letter is never deleted; it is resolved, replayed through the
-- consumer's own path or discarded with a reason, and says by whom and when.
ALTER TABLE dead_letters
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN resolution  text CHECK (resolution IN ('replayed', 'discarded')),
    ADD COLUMN resolved_by text,
    ADD COLUMN note        text,
    ADD CHECK ((resolved_at IS NULL) = (resolution IS NULL));
CREATE INDEX dead_letters_open ON dead_letters (id) WHERE resolved_at IS NULL;
