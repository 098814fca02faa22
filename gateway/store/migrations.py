"""Versioned schema migrations, applied in order by each store on first use.

A migration is never edited once released: add a new version instead. DESIGN.md
§9 asks for ``rate_limit`` and ``source_cidrs`` from the start, so later issues
need no migration for them. Version 2 (the admin API): per-minute usage counts
per key, route, status and source address (``GET /v1/keys/{id}/activity``), TOTP
enrolments (seed wrapped under the KEK, last accepted time step), and audit indexes
for the actor filters. Version 3 (lifecycle events, issue 11): the ``events`` outbox,
webhook endpoints (secret wrapped under the KEK), one delivery row per (event,
webhook) with its retry state and lease, and named leases (one scheduler at a time).
``events.dedup`` is NULL for changes and set for what the scheduler finds, so two
instances racing can never both insert the same ``key.expiring``.
"""

from __future__ import annotations

__all__ = ["POSTGRES_MIGRATIONS", "SQLITE_MIGRATIONS"]

Migration = tuple[int, tuple[str, ...]]

SQLITE_MIGRATIONS: tuple[Migration, ...] = (
    (1, (
        """CREATE TABLE keys (
            key_id          TEXT PRIMARY KEY,
            principal       TEXT NOT NULL,
            name            TEXT NOT NULL,
            scopes          TEXT NOT NULL,          -- JSON list
            created_at      TEXT NOT NULL,          -- fixed-width RFC 3339, UTC
            expires_at      TEXT,
            last_used_at    TEXT,
            revoked_at      TEXT,                   -- in the future while rotating
            revoke_reason   TEXT,
            revoked_by      TEXT,
            issued_with_mfa INTEGER NOT NULL,
            created_by      TEXT NOT NULL,
            rate_limit      TEXT,                   -- JSON {"rps", "burst"} or NULL
            source_cidrs    TEXT,                   -- JSON list or NULL
            rotated_from    TEXT,
            rotated_to      TEXT,
            kek_version     INTEGER NOT NULL,
            nonce           BLOB NOT NULL,
            ciphertext      BLOB NOT NULL,
            secret_sha256   BLOB NOT NULL UNIQUE
        )""",
        "CREATE INDEX keys_created ON keys (created_at, key_id)",
        "CREATE INDEX keys_principal ON keys (principal, created_at)",
        "CREATE INDEX keys_kek_version ON keys (kek_version)",
        """CREATE TABLE audit (
            id              INTEGER PRIMARY KEY AUTOINCREMENT,
            at              TEXT NOT NULL,
            actor_key_id    TEXT,
            actor_principal TEXT NOT NULL,
            action          TEXT NOT NULL,
            target          TEXT,
            source          TEXT NOT NULL,
            outcome         TEXT NOT NULL,
            details         TEXT NOT NULL           -- JSON object, never a secret
        )""",
        "CREATE INDEX audit_target ON audit (target, id)",
        """CREATE TABLE key_changes (
            seq    INTEGER PRIMARY KEY AUTOINCREMENT,
            key_id TEXT NOT NULL,
            kind   TEXT NOT NULL,
            at     TEXT NOT NULL
        )""",
    )),
    (2, (
        """CREATE TABLE key_usage (
            key_id  TEXT NOT NULL,
            minute  TEXT NOT NULL,                  -- start of the minute, fixed-width RFC 3339
            route   TEXT NOT NULL,                  -- the configured route prefix
            status  INTEGER NOT NULL,
            source  TEXT NOT NULL,                  -- client address
            count   INTEGER NOT NULL,
            PRIMARY KEY (key_id, minute, route, status, source)
        )""",
        "CREATE INDEX key_usage_minute ON key_usage (minute)",
        """CREATE TABLE mfa_enrolments (
            principal   TEXT PRIMARY KEY,
            kek_version INTEGER NOT NULL,
            nonce       BLOB NOT NULL,
            ciphertext  BLOB NOT NULL,              -- the TOTP seed, wrapped like secrets
            created_at  TEXT NOT NULL,
            last_step   INTEGER NOT NULL            -- highest accepted time step (no reuse)
        )""",
        "CREATE INDEX audit_actor_principal ON audit (actor_principal, id)",
        "CREATE INDEX audit_actor_key ON audit (actor_key_id, id)",
        "CREATE INDEX audit_at ON audit (at, id)",
    )),
    (3, (
        """CREATE TABLE events (
            seq         INTEGER PRIMARY KEY AUTOINCREMENT,
            id          TEXT NOT NULL UNIQUE,       -- evt_..., the receivers' de-duplication key
            type        TEXT NOT NULL,
            target      TEXT NOT NULL,              -- key ID, or kek:N
            occurred_at TEXT NOT NULL,
            payload     TEXT NOT NULL,              -- JSON object, never a secret
            dedup       TEXT UNIQUE                 -- key|type|deadline for scheduled events
        )""",
        "CREATE INDEX events_target ON events (target, seq)",
        """CREATE TABLE webhooks (
            id            TEXT PRIMARY KEY,         -- whk_..., the RFC 9421 keyid
            url           TEXT NOT NULL,
            events_filter TEXT NOT NULL,            -- '' = every type, else ',a,b,'
            created_at    TEXT NOT NULL,
            created_by    TEXT NOT NULL,
            kek_version   INTEGER NOT NULL,
            nonce         BLOB NOT NULL,
            ciphertext    BLOB NOT NULL             -- the signing secret, wrapped
        )""",
        """CREATE TABLE event_deliveries (
            event_seq       INTEGER NOT NULL REFERENCES events (seq),
            webhook_id      TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
            state           TEXT NOT NULL,          -- pending | delivered | failed
            attempts        INTEGER NOT NULL,
            next_attempt_at TEXT NOT NULL,          -- also the lease of a claimed delivery
            claim           TEXT,                   -- who holds the lease
            last_status     INTEGER,
            last_error      TEXT,
            delivered_at    TEXT,
            PRIMARY KEY (event_seq, webhook_id)
        )""",
        "CREATE INDEX event_deliveries_due ON event_deliveries (state, next_attempt_at)",
        """CREATE TABLE leases (
            name   TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            until  TEXT NOT NULL
        )""",
    )),
)

POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    (1, (
        """CREATE TABLE keys (
            key_id          text PRIMARY KEY,
            principal       text NOT NULL,
            name            text NOT NULL,
            scopes          jsonb NOT NULL,
            created_at      timestamptz NOT NULL,
            expires_at      timestamptz,
            last_used_at    timestamptz,
            revoked_at      timestamptz,            -- in the future while rotating
            revoke_reason   text,
            revoked_by      text,
            issued_with_mfa boolean NOT NULL,
            created_by      text NOT NULL,
            rate_limit      jsonb,
            source_cidrs    jsonb,
            rotated_from    text,
            rotated_to      text,
            kek_version     integer NOT NULL,
            nonce           bytea NOT NULL,
            ciphertext      bytea NOT NULL,
            secret_sha256   bytea NOT NULL UNIQUE
        )""",
        "CREATE INDEX keys_created ON keys (created_at, key_id)",
        "CREATE INDEX keys_principal ON keys (principal, created_at)",
        "CREATE INDEX keys_kek_version ON keys (kek_version)",
        """CREATE TABLE audit (
            id              bigserial PRIMARY KEY,
            at              timestamptz NOT NULL,
            actor_key_id    text,
            actor_principal text NOT NULL,
            action          text NOT NULL,
            target          text,
            source          text NOT NULL,
            outcome         text NOT NULL,
            details         jsonb NOT NULL
        )""",
        "CREATE INDEX audit_target ON audit (target, id)",
        """CREATE TABLE key_changes (
            seq    bigserial PRIMARY KEY,
            key_id text NOT NULL,
            kind   text NOT NULL,
            at     timestamptz NOT NULL
        )""",
    )),
    (2, (
        """CREATE TABLE key_usage (
            key_id  text NOT NULL,
            minute  timestamptz NOT NULL,
            route   text NOT NULL,
            status  integer NOT NULL,
            source  text NOT NULL,
            count   bigint NOT NULL,
            PRIMARY KEY (key_id, minute, route, status, source)
        )""",
        "CREATE INDEX key_usage_minute ON key_usage (minute)",
        """CREATE TABLE mfa_enrolments (
            principal   text PRIMARY KEY,
            kek_version integer NOT NULL,
            nonce       bytea NOT NULL,
            ciphertext  bytea NOT NULL,
            created_at  timestamptz NOT NULL,
            last_step   bigint NOT NULL
        )""",
        "CREATE INDEX audit_actor_principal ON audit (actor_principal, id)",
        "CREATE INDEX audit_actor_key ON audit (actor_key_id, id)",
        "CREATE INDEX audit_at ON audit (at, id)",
    )),
    (3, (
        """CREATE TABLE events (
            seq         bigserial PRIMARY KEY,
            id          text NOT NULL UNIQUE,
            type        text NOT NULL,
            target      text NOT NULL,
            occurred_at timestamptz NOT NULL,
            payload     jsonb NOT NULL,
            dedup       text UNIQUE
        )""",
        "CREATE INDEX events_target ON events (target, seq)",
        """CREATE TABLE webhooks (
            id            text PRIMARY KEY,
            url           text NOT NULL,
            events_filter text NOT NULL,
            created_at    timestamptz NOT NULL,
            created_by    text NOT NULL,
            kek_version   integer NOT NULL,
            nonce         bytea NOT NULL,
            ciphertext    bytea NOT NULL
        )""",
        """CREATE TABLE event_deliveries (
            event_seq       bigint NOT NULL REFERENCES events (seq),
            webhook_id      text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
            state           text NOT NULL,
            attempts        integer NOT NULL,
            next_attempt_at timestamptz NOT NULL,
            claim           text,
            last_status     integer,
            last_error      text,
            delivered_at    timestamptz,
            PRIMARY KEY (event_seq, webhook_id)
        )""",
        "CREATE INDEX event_deliveries_due ON event_deliveries (state, next_attempt_at)",
        """CREATE TABLE leases (
            name   text PRIMARY KEY,
            holder text NOT NULL,
            until  timestamptz NOT NULL
        )""",
    )),
)
