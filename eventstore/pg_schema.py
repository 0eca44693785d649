"""The PostgreSQL schema of the log: tables, and the triggers that keep its invariants.

The database itself refuses what would break the log, whoever writes to it (the store, a bulk
import, or someone at a ``psql`` prompt):

* ``events_lock_counter`` (BEFORE INSERT, once per statement; version 4): row-locks the
  single-row counter ``log_head`` until commit, before the statement writes a row (which is what
  serialises writers and makes positions commit-ordered, see :mod:`eventstore.postgres`).
* ``events_next_only`` (AFTER INSERT, once per statement, over the statement's new rows; per row,
  taking the lock itself, up to version 3): refuses the statement unless its rows take exactly the next positions after the counter, each
  row follows its stream's previous seq (which must exist and come earlier in position, so a
  stream's seqs stay 1..n in position order) and its ``hash`` is
  ``sha256(previous hash ‖ position (8 bytes, big-endian) ‖ body)``, then moves the counter to
  the last of them.
* ``events_append_only`` / ``events_no_truncate``: refuse UPDATE, DELETE and TRUNCATE.
* ``log_head_guard``: the counter can only move through ``events_next_only``.

``ringlog_append`` (version 2) is the whole append transaction of a group as one function:
lock the counter, decide each append (idempotency replay or reuse, ``expected_seq`` conflict)
in order, insert the accepted events, writing each one's position into its body where the
caller split the body around it; the trigger above still checks every row.
``ringlog_append_after`` (version 3) does the same and also returns, read under the lock, the
records other nodes committed since the caller's read cursor (at most a given number).
``ringlog_append_group`` (version 4) takes the same arguments and gives the same answer as
``ringlog_append_after``, but reads every head and idempotency key of the group in one statement
each and inserts the group's events in one statement, which the trigger checks once: the
per-event statements (and their executor start-up, a third of the function's time) are gone.

The column ``draft_id`` holds the stream id (the first schema's name, kept so that existing
databases need no migration; see :mod:`eventstore.sql`).
"""

from __future__ import annotations

from eventstore.sql import FEED_TABLE

SCHEMA_VERSION = "4"
"""Version 2 added ``ringlog_append``, version 3 ``ringlog_append_after``, version 4
``ringlog_append_group`` and the per-statement insert check. Opening an older database runs
:data:`SCHEMA`, which adds (``CREATE … IF NOT EXISTS``, ``CREATE OR REPLACE`` of unchanged
functions) and replaces the per-row ``events_next_only`` trigger by the per-statement one under
the same name, so it migrates in place, and nodes of an older version keep working on it: they
call the functions they know, which are unchanged, and their one-row inserts are checked (and
move the counter) one statement each. An older node's script run on a newer database finds the
trigger by its name and leaves it, and never lowers the recorded version."""

SCHEMA = r"""
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

-- Version 4: the insert check, once per statement over its new rows. The per-row function above
-- is kept (an older node's script replaces it; no trigger calls it any more).
CREATE OR REPLACE FUNCTION ringlog_events_lock() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Before the statement writes a row: the counter's row lock, held until commit (a no-op for
    -- ringlog_append*, which took it first). The next writer waits here, before it has written
    -- anything another writer could wait for, then sees these rows.
    PERFORM 1 FROM log_head FOR UPDATE;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ringlog_events_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    before_pos BIGINT;
    c          RECORD;
BEGIN
    -- The counter lock is held (events_lock_counter); every statement here takes a new
    -- snapshot, so the counter and the predecessors below include every commit made before it.
    SELECT l.position INTO before_pos FROM log_head l;
    SELECT count(*) AS n, min(r.position) AS lo, max(r.position) AS hi,
           min(r.position) FILTER (
               WHERE (r.seq > 1 AND (p.position IS NULL OR p.position >= r.position))
                  OR r.hash IS DISTINCT FROM sha256(COALESCE(p.hash, decode(repeat('00', 32), 'hex'))
                                                    || int8send(r.position) || r.body)) AS bad
        INTO c
        FROM new_rows r
        LEFT JOIN LATERAL (SELECT e.position, e.hash FROM events e
                           WHERE e.draft_id = r.draft_id AND e.seq = r.seq - 1 LIMIT 1) p ON TRUE;
    IF c.n = 0 THEN
        RETURN NULL;
    END IF;
    -- Positions are unique (primary key), so n rows from before + 1 to before + n are exactly those.
    IF c.lo IS DISTINCT FROM before_pos + 1 OR c.hi IS DISTINCT FROM before_pos + c.n THEN
        RAISE EXCEPTION 'ringlog: events must take the next positions (expected % to %, got % to %)',
            before_pos + 1, before_pos + c.n, c.lo, c.hi USING ERRCODE = 'check_violation';
    END IF;
    -- Each row's predecessor in its stream exists and comes first (with UNIQUE (draft_id, seq),
    -- a stream's seqs stay 1..n in position order), and the hash chains from it.
    IF c.bad IS NOT NULL THEN
        RAISE EXCEPTION 'ringlog: the event at position % does not follow its draft''s head (seq or hash chain)',
            c.bad USING ERRCODE = 'check_violation';
    END IF;
    UPDATE log_head SET position = c.hi;
    RETURN NULL;
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
    -- Up to version 3 the insert check ran per row; version 4 replaces it, keeping the name so
    -- that an older node's script, which creates it only when the name is missing, leaves it.
    IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'events_next_only'
               AND tgrelid = 'events'::regclass
               AND tgfoid = 'ringlog_events_next_only'::regproc) THEN
        DROP TRIGGER events_next_only ON events;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'events_lock_counter'
                   AND tgrelid = 'events'::regclass) THEN
        CREATE TRIGGER events_lock_counter BEFORE INSERT ON events
            FOR EACH STATEMENT EXECUTE FUNCTION ringlog_events_lock();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'events_next_only'
                   AND tgrelid = 'events'::regclass) THEN
        CREATE TRIGGER events_next_only AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION ringlog_events_check();
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

-- Version 4: ringlog_append_after's arguments and answer, decided the same way, with one statement
-- for the group's heads, one for its idempotency keys and one insert for all its events (checked
-- once by the statement trigger) instead of three statements per append and one per event. Later
-- appends of the group see earlier ones through the local arrays: a stream's head moves as its
-- appends are accepted, and an accepted key is replayed by a later append that uses it again.
-- Generic plans: a custom plan per call (the default for the first calls of each session, and
-- whenever a generic plan looks dearer) costs more than the statement it plans.
CREATE OR REPLACE FUNCTION ringlog_append_group(
    p_after    BIGINT,
    p_read     INT,
    p_streams  TEXT[],
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
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    pos      BIGINT;
    n        INT := COALESCE(array_length(p_streams, 1), 0);
    s_ids    TEXT[];    -- each stream of the group, its head seq and hash (moved as appends land)
    s_seq    BIGINT[];
    s_hash   BYTEA[];
    c_ids    TEXT[];    -- each key already used (the log's, then this group's): length:user key
    c_fp     TEXT[];
    c_stream TEXT[];
    c_seq    BIGINT[];
    e_pos    BIGINT[] := '{}';  -- the events to insert, column by column
    e_stream TEXT[]   := '{}';
    e_seq    BIGINT[] := '{}';
    e_type   TEXT[]   := '{}';
    e_body   BYTEA[]  := '{}';
    e_hash   BYTEA[]  := '{}';
    e_user   TEXT[]   := '{}';
    e_key    TEXT[]   := '{}';
    e_fp     TEXT[]   := '{}';
    si       INT;
    ci       INT;
    k        INT := 0;
    m        INT := 0;
    hs       BIGINT;
    h        BYTEA;
    body     BYTEA;
    key_id   TEXT;
BEGIN
    -- The counter lock, then (new snapshots from here on) what the caller has not seen.
    SELECT l.position INTO pos FROM log_head l FOR UPDATE;
    RETURN QUERY
        SELECT 'committed'::TEXT, NULL::BIGINT, NULL::BYTEA, NULL::BIGINT, NULL::BYTEA, NULL::TEXT,
               NULL::BIGINT, e.position, e.draft_id, e.seq, e.type, e.body, e.hash, e.idem_user,
               e.idem_key, e.idem_fp
        FROM events e WHERE e.position > p_after AND e.position <= pos
        ORDER BY e.position LIMIT GREATEST(p_read, 0);
    SELECT array_agg(u.id), array_agg(COALESCE(t.seq, 0)),
           array_agg(COALESCE(t.hash, decode(repeat('00', 32), 'hex')))
        INTO s_ids, s_seq, s_hash
        FROM (SELECT DISTINCT x AS id FROM unnest(p_streams) x) u
        LEFT JOIN LATERAL (SELECT e.seq, e.hash FROM events e WHERE e.draft_id = u.id
                           ORDER BY e.seq DESC LIMIT 1) t ON TRUE;
    IF EXISTS (SELECT 1 FROM unnest(p_keys) x WHERE x IS NOT NULL) THEN
        SELECT array_agg(format('%s:%s%s', length(f.idem_user), f.idem_user, f.idem_key)),
               array_agg(f.idem_fp), array_agg(f.draft_id), array_agg(f.seq)
            INTO c_ids, c_fp, c_stream, c_seq
            FROM (SELECT DISTINCT x.u, x.kk FROM unnest(p_users, p_keys) AS x(u, kk)
                  WHERE x.kk IS NOT NULL) q
            CROSS JOIN LATERAL (SELECT e.idem_user, e.idem_key, e.idem_fp, e.draft_id, e.seq
                                FROM events e
                                WHERE e.idem_user = q.u AND e.idem_key = q.kk AND e.idem_key IS NOT NULL
                                LIMIT 1) f;
    END IF;
    c_ids := COALESCE(c_ids, '{}'); c_fp := COALESCE(c_fp, '{}');
    c_stream := COALESCE(c_stream, '{}'); c_seq := COALESCE(c_seq, '{}');
    FOR i IN 1 .. n LOOP
        found_stream := NULL; found_seq := NULL;
        IF p_keys[i] IS NOT NULL AND p_users[i] IS NOT NULL THEN  -- NULL = NULL never matches
            key_id := format('%s:%s%s', length(p_users[i]), p_users[i], p_keys[i]);
            ci := array_position(c_ids, key_id);
            IF ci IS NOT NULL THEN
                outcome := CASE WHEN c_fp[ci] = p_fps[i] THEN 'replay' ELSE 'reused' END;
                found_stream := c_stream[ci]; found_seq := c_seq[ci];
                head_seq := NULL; head_hash := NULL; last_position := pos; last_hash := NULL;
                k := k + p_counts[i];
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        si := array_position(s_ids, p_streams[i]);
        hs := s_seq[si]; h := s_hash[si];
        head_seq := hs; head_hash := h;
        IF hs <> p_expected[i] THEN
            outcome := 'conflict';
        ELSE
            outcome := 'ok';
            FOR j IN 1 .. p_counts[i] LOOP
                pos := pos + 1; m := m + 1;
                body := p_prefixes[k + j];
                IF p_suffixes[k + j] IS NOT NULL THEN
                    body := body || convert_to(pos::text, 'UTF8') || p_suffixes[k + j];
                END IF;
                h := sha256(h || int8send(pos) || body);
                e_pos[m] := pos; e_stream[m] := p_streams[i]; e_seq[m] := hs + j;
                e_type[m] := p_types[k + j]; e_body[m] := body; e_hash[m] := h;
                e_user[m] := CASE WHEN j = 1 AND p_keys[i] IS NOT NULL THEN p_users[i] END;
                e_key[m] := CASE WHEN j = 1 THEN p_keys[i] END;
                e_fp[m] := CASE WHEN j = 1 AND p_keys[i] IS NOT NULL THEN p_fps[i] END;
            END LOOP;
            IF p_counts[i] > 0 THEN
                s_seq[si] := hs + p_counts[i]; s_hash[si] := h;
                IF p_keys[i] IS NOT NULL AND p_users[i] IS NOT NULL THEN
                    c_ids := c_ids || key_id; c_fp := c_fp || p_fps[i];
                    c_stream := c_stream || p_streams[i]; c_seq := c_seq || (hs + 1);
                END IF;
            END IF;
        END IF;
        last_position := pos; last_hash := h;
        k := k + p_counts[i];
        RETURN NEXT;
    END LOOP;
    IF m > 0 THEN
        INSERT INTO events (position, draft_id, seq, type, body, hash, idem_user, idem_key, idem_fp)
            SELECT * FROM unnest(e_pos, e_stream, e_seq, e_type, e_body, e_hash, e_user, e_key, e_fp);
    END IF;
END $$;

INSERT INTO meta (key, value) VALUES ('schema_version', '4')
    ON CONFLICT (key) DO UPDATE SET value = excluded.value
    WHERE (length(meta.value), meta.value) < (length(excluded.value), excluded.value);
"""

SCHEMA_LOCK = 0x72696E676C6F67
"""Advisory lock key held while the schema is created, so nodes starting together do not race."""


FEED_SCHEMA = (
    FEED_TABLE
    + """;
INSERT INTO meta (key, value) VALUES ('feed_checkpoint', '0') ON CONFLICT (key) DO NOTHING;
"""
)
"""The feed index (:data:`eventstore.sql.FEED_TABLE`) and its checkpoint row, run at every open
(under :data:`SCHEMA_LOCK`) whatever the schema version: it only adds, so a database of any
version gains the index in place without a version bump; the row exists so that index writers
can lock it (``SELECT … FOR UPDATE``)."""
