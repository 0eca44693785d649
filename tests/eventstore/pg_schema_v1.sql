-- The PostgreSQL schema as version 1 of ringlog created it (eventstore/pg_schema.py before
-- ringlog_append): tests open a database made with it to prove the in-place migration.
CREATE TABLE IF NOT EXISTS events (
    position  BIGINT PRIMARY KEY,
    draft_id  TEXT   NOT NULL,
    seq       BIGINT NOT NULL CHECK (seq >= 1),
    type      TEXT   NOT NULL,
    body      BYTEA  NOT NULL,
    hash      BYTEA  NOT NULL,
    idem_user TEXT,
    idem_key  TEXT,
    idem_fp   TEXT,
    UNIQUE (draft_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency
    ON events (idem_user, idem_key) WHERE idem_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS log_head (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    position  BIGINT  NOT NULL
);
INSERT INTO log_head (singleton, position)
    SELECT TRUE, COALESCE((SELECT MAX(position) FROM events), 0)
    ON CONFLICT (singleton) DO NOTHING;

CREATE TABLE IF NOT EXISTS snapshots (
    draft_id TEXT   PRIMARY KEY,
    seq      BIGINT NOT NULL,
    state    BYTEA  NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE OR REPLACE FUNCTION ringlog_events_next_only() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    next_position BIGINT;
    head_seq      BIGINT;
    head_hash     BYTEA;
BEGIN
    -- Row-locks the counter until commit: the next writer waits here, then sees our rows.
    UPDATE log_head SET position = position + 1 RETURNING position INTO next_position;
    IF next_position IS NULL OR NEW.position IS DISTINCT FROM next_position THEN
        RAISE EXCEPTION 'ringlog: an event must take the next position (expected %, got %)',
            next_position, NEW.position USING ERRCODE = 'check_violation';
    END IF;
    SELECT seq, hash INTO head_seq, head_hash
        FROM events WHERE draft_id = NEW.draft_id ORDER BY seq DESC LIMIT 1;
    IF NEW.seq IS DISTINCT FROM COALESCE(head_seq, 0) + 1 THEN
        RAISE EXCEPTION 'ringlog: draft % must take seq %, got %',
            NEW.draft_id, COALESCE(head_seq, 0) + 1, NEW.seq USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.hash IS DISTINCT FROM
            sha256(COALESCE(head_hash, decode(repeat('00', 32), 'hex')) || int8send(NEW.position) || NEW.body) THEN
        RAISE EXCEPTION 'ringlog: draft % seq % breaks the hash chain', NEW.draft_id, NEW.seq
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION ringlog_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ringlog: the event log is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE OR REPLACE FUNCTION ringlog_log_head_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Depth 1 is a statement on log_head itself; the insert trigger updates it at depth 2.
    IF TG_OP <> 'UPDATE' OR pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'ringlog: log_head moves only when an event is inserted'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'events_next_only'
                   AND tgrelid = 'events'::regclass) THEN
        CREATE TRIGGER events_next_only BEFORE INSERT ON events
            FOR EACH ROW EXECUTE FUNCTION ringlog_events_next_only();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'events_append_only'
                   AND tgrelid = 'events'::regclass) THEN
        CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
            FOR EACH ROW EXECUTE FUNCTION ringlog_append_only();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'events_no_truncate'
                   AND tgrelid = 'events'::regclass) THEN
        CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
            FOR EACH STATEMENT EXECUTE FUNCTION ringlog_append_only();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'log_head_guard'
                   AND tgrelid = 'log_head'::regclass) THEN
        CREATE TRIGGER log_head_guard BEFORE UPDATE OR DELETE ON log_head
            FOR EACH ROW EXECUTE FUNCTION ringlog_log_head_guard();
        CREATE TRIGGER log_head_no_truncate BEFORE TRUNCATE ON log_head
            FOR EACH STATEMENT EXECUTE FUNCTION ringlog_append_only();
    END IF;
END $$;

INSERT INTO meta (key, value) VALUES ('schema_version', '1') ON CONFLICT (key) DO NOTHING;
