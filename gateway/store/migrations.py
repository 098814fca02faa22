"""Versioned schema migrations, applied in order by each store on first use.

A migration is never edited once released: add a new version instead. DESIGN.md
§9 asks for ``rate_limit`` and ``source_cidrs`` from the start, so later issues
need no migration for them.
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
)
