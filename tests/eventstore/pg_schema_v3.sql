-- The schema script of version 3 (eventstore/pg_schema.py SCHEMA at that version), kept to test
-- what a version-3 node does to a newer database when it opens it.
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

CREATE OR REPLACE FUNCTION ringlog_append(
    p_streams  TEXT[],   -- per append
    p_expected BIGINT[],
    p_users    TEXT[],
    p_keys     TEXT[],
    p_fps      TEXT[],
    p_counts   INT[],
    p_types    TEXT[],   -- per event, the appends' events one after another
    p_prefixes BYTEA[],
    p_suffixes BYTEA[]   -- NULL: the body is the prefix; else prefix || position || suffix
) RETURNS TABLE (outcome TEXT, head_seq BIGINT, head_hash BYTEA, last_position BIGINT, last_hash BYTEA,
                 found_stream TEXT, found_seq BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    pos    BIGINT;
    h_hash BYTEA;
    f      RECORD;
    body   BYTEA;
    k      INT := 0;
BEGIN
    -- Row-locks the counter until commit. Every later statement of this (volatile) function takes
    -- a new snapshot, so the heads and keys below include every commit made before the lock.
    SELECT l.position INTO pos FROM log_head l FOR UPDATE;
    FOR i IN 1 .. COALESCE(array_length(p_streams, 1), 0) LOOP
        found_stream := NULL; found_seq := NULL;
        IF p_keys[i] IS NOT NULL THEN
            SELECT e.idem_fp, e.draft_id, e.seq INTO f FROM events e
                WHERE e.idem_user = p_users[i] AND e.idem_key = p_keys[i] AND e.idem_key IS NOT NULL;
            IF FOUND THEN
                outcome := CASE WHEN f.idem_fp = p_fps[i] THEN 'replay' ELSE 'reused' END;
                found_stream := f.draft_id; found_seq := f.seq;
                head_seq := NULL; head_hash := NULL; last_position := pos; last_hash := NULL;
                k := k + p_counts[i];
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        head_seq := NULL; h_hash := NULL;
        SELECT e.seq, e.hash INTO head_seq, h_hash FROM events e
            WHERE e.draft_id = p_streams[i] ORDER BY e.seq DESC LIMIT 1;
        head_seq := COALESCE(head_seq, 0);
        h_hash := COALESCE(h_hash, decode(repeat('00', 32), 'hex'));
        head_hash := h_hash;
        IF head_seq <> p_expected[i] THEN
            outcome := 'conflict';
        ELSE
            outcome := 'ok';
            FOR j IN 1 .. p_counts[i] LOOP
                pos := pos + 1;
                body := p_prefixes[k + j];
                IF p_suffixes[k + j] IS NOT NULL THEN
                    body := body || convert_to(pos::text, 'UTF8') || p_suffixes[k + j];
                END IF;
                h_hash := sha256(h_hash || int8send(pos) || body);
                INSERT INTO events (position, draft_id, seq, type, body, hash, idem_user, idem_key, idem_fp)
                VALUES (pos, p_streams[i], head_seq + j, p_types[k + j], body, h_hash,
                        CASE WHEN j = 1 AND p_keys[i] IS NOT NULL THEN p_users[i] END,
                        CASE WHEN j = 1 THEN p_keys[i] END,
                        CASE WHEN j = 1 AND p_keys[i] IS NOT NULL THEN p_fps[i] END);
            END LOOP;
        END IF;
        last_position := pos; last_hash := h_hash;
        k := k + p_counts[i];
        RETURN NEXT;
    END LOOP;
END $$;

-- Version 3: the same append, and the records other nodes committed between the caller's read
-- cursor (p_after) and the group's first position, read under the counter lock (at most p_read
-- of them). Once the lock is granted, every position up to the counter is committed and visible
-- to this statement's new snapshot, so they are a gap-free run: the caller publishes them before
-- its own records without a read of its own (docs/POSTGRES.md "The append returns what the node
-- missed"). ringlog_append is left as it was, for nodes of version 2 sharing the database.
CREATE OR REPLACE FUNCTION ringlog_append_after(
    p_after    BIGINT,   -- the caller has every record up to this position
    p_read     INT,      -- return at most this many records after p_after
    p_streams  TEXT[],   -- then ringlog_append's arguments
    p_expected BIGINT[],
    p_users    TEXT[],
    p_keys     TEXT[],
    p_fps      TEXT[],
    p_counts   INT[],
    p_types    TEXT[],
    p_prefixes BYTEA[],
    p_suffixes BYTEA[]
) RETURNS TABLE (outcome TEXT, head_seq BIGINT, head_hash BYTEA, last_position BIGINT, last_hash BYTEA,
                 found_stream TEXT, found_seq BIGINT,
                 r_position BIGINT, r_draft_id TEXT, r_seq BIGINT, r_type TEXT, r_body BYTEA,
                 r_hash BYTEA, r_idem_user TEXT, r_idem_key TEXT, r_idem_fp TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    pos BIGINT;
BEGIN
    -- The lock ringlog_append takes again below (a lock this transaction already holds).
    SELECT l.position INTO pos FROM log_head l FOR UPDATE;
    -- First the records the caller has not seen ('committed' rows, position order)...
    RETURN QUERY
        SELECT 'committed'::TEXT, NULL::BIGINT, NULL::BYTEA, NULL::BIGINT, NULL::BYTEA, NULL::TEXT,
               NULL::BIGINT, e.position, e.draft_id, e.seq, e.type, e.body, e.hash, e.idem_user,
               e.idem_key, e.idem_fp
        FROM events e WHERE e.position > p_after AND e.position <= pos
        ORDER BY e.position LIMIT GREATEST(p_read, 0);
    -- ...then one outcome row per append, exactly as ringlog_append returns them.
    RETURN QUERY
        SELECT a.outcome, a.head_seq, a.head_hash, a.last_position, a.last_hash, a.found_stream,
               a.found_seq, NULL::BIGINT, NULL::TEXT, NULL::BIGINT, NULL::TEXT, NULL::BYTEA,
               NULL::BYTEA, NULL::TEXT, NULL::TEXT, NULL::TEXT
        FROM ringlog_append(p_streams, p_expected, p_users, p_keys, p_fps, p_counts, p_types,
                            p_prefixes, p_suffixes) a;
END $$;

INSERT INTO meta (key, value) VALUES ('schema_version', '3')
    ON CONFLICT (key) DO UPDATE SET value = excluded.value
    WHERE (length(meta.value), meta.value) < (length(excluded.value), excluded.value);
