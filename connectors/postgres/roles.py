"""Least privilege as code: the NOLOGIN roles and exactly what each may do.

`logins migrate` creates the roles (cluster-wide, once) and, in every database it migrates,
makes `logins_owner` the owner of every object and grants the others what their job needs,
no more. Operators grant the roles to login users (docs/vault.md#roles); nobody logs in as
a role itself. The grants are re-applied from scratch at each migration (REVOKE ALL, then
GRANT), so a privilege an earlier release or a hand gave does not linger.

    logins_owner     owns every table, view, sequence and function; runs the migrations
    logins_pipeline  the flow: INSERT what it writes; SELECT only the message ids that
                     ON CONFLICT and RETURNING read. No UPDATE, DELETE, TRUNCATE, DDL; no
                     token, vault ciphertext, sealed body or audit row
    logins_analyst   the analysts' table, the unified view, duplicates, the ledger, the
                     rejected rows without their sealed body, vault counts by field
    logins_revealer  `logins reveal`: read the vault, the erasure markers, the user's rows
    logins_eraser    `logins forget`, `logins purge`: read what they need; change nothing
                     but through their functions
    logins_rotator   `logins rotate run`, `logins vault rekey|status`: likewise
    logins_auditor   `logins audit list|verify|anchor`: read the audit trail

No role but the owner may INSERT, UPDATE or DELETE the vault, its inbox, the aliases, the
erasures, the token columns, the rejected bodies or the audit table: the revealer, eraser,
rotator and pipeline change them only through the SECURITY DEFINER functions of
logins/core/vaultsql.py, each of which writes its own kind of audit row in the same
transaction (the pipeline's vault write, `<vault>_put`, reports nothing and writes none).
"""

from __future__ import annotations

from collections.abc import Iterable

from psycopg import sql

from connectors.postgres.ledger import maintain_signature as ledger_maintain_signature
from connectors.postgres.schemaversion import VERSION_TABLE
from logins.core import controlsql, vaultsql
from logins.core.auditsql import append_function_signature
from logins.core.config import AppConfig
from logins.core.vaultschema import tables

OWNER = "logins_owner"
PIPELINE = "logins_pipeline"
ANALYST = "logins_analyst"
REVEALER = "logins_revealer"
ERASER = "logins_eraser"
ROTATOR = "logins_rotator"
AUDITOR = "logins_auditor"
ROLES = (OWNER, PIPELINE, ANALYST, REVEALER, ERASER, ROTATOR, AUDITOR)
GRANTEES = ROLES[1:]  # everyone but the owner, who has every privilege by owning
AUDIT_WRITERS = (REVEALER, ERASER, ROTATOR)
# who may call each function of logins/core/vaultsql.py (nobody else, PUBLIC included)
FUNCTION_ROLES = {
    "forget": (ERASER,),
    "purge": (ERASER,),
    "rotate": (ROTATOR,),
    "rekey": (ROTATOR,),
    "reveal": (REVEALER,),
    "put": (PIPELINE,),
    "flush": (PIPELINE, REVEALER, ERASER, ROTATOR),
}

_REJECTED_WRITTEN = (
    "message_id",
    "reason",
    "detail",
    "sealed_body",
    "vault_key_id",
    "sent_at",
    "create_date",
    "receive_count",
)
_REJECTED_UNSEALED = (
    "message_id",
    "reason",
    "detail",
    "vault_key_id",
    "sent_at",
    "create_date",
    "receive_count",
    "rejected_at",
    "body_erased_at",
)


def _cols(names: Iterable[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def create_roles() -> list[sql.Composed]:
    """CREATE ROLE ... NOLOGIN for each role that does not exist yet. Two migrations of two
    databases may race to create one; the loser's error is swallowed."""
    return [
        sql.SQL(
            "DO $logins$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {n})"
            " THEN CREATE ROLE {r} NOLOGIN; END IF;"
            " EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $logins$"
        ).format(n=sql.Literal(role), r=sql.Identifier(role))
        for role in ROLES
    ]


def object_names(config: AppConfig) -> list[tuple[str, str]]:
    """(kind, name) of every object the migrations create, for the ownership transfer."""
    t = tables(config)
    sink = config.sink
    return [
        *(
            ("TABLE", name)
            for name in (
                t.sink,
                t.rejected,
                sink.duplicates_table,
                sink.ledger_table,
                t.vault,
                t.audit,
                t.erasures,
                t.aliases,
                VERSION_TABLE,
                controlsql.CONTROL_TABLE,
                vaultsql.inbox_table(config),
            )
        ),
        ("VIEW", t.unified_view),
    ]


def grants(
    config: AppConfig, row_columns: list[str], schema: str, audit_sequence: str
) -> list[sql.Composed]:
    """REVOKE everything from PUBLIC and the roles, then GRANT each role its part. Run as the
    owner, inside the migration's transaction, so no other session sees a gap.
    `audit_sequence` is the audit id sequence's name as pg_get_serial_sequence quotes it."""
    t = tables(config)
    sink = config.sink
    table, view = sql.Identifier(t.sink), sql.Identifier(t.unified_view)
    ledger, rejected = sql.Identifier(sink.ledger_table), sql.Identifier(t.rejected)
    duplicates = sql.Identifier(sink.duplicates_table)
    vault, audit = sql.Identifier(t.vault), sql.Identifier(t.audit)
    erasures, aliases = sql.Identifier(t.erasures), sql.Identifier(t.aliases)
    version = sql.Identifier(VERSION_TABLE)
    control = sql.Identifier(controlsql.CONTROL_TABLE)
    inbox = sql.Identifier(vaultsql.inbox_table(config))
    everyone = sql.SQL(", ").join(sql.Identifier(r) for r in GRANTEES)
    sequence = sql.SQL(audit_sequence)  # already quoted and qualified by PostgreSQL

    def grant(
        privileges: str, on: sql.Composable, *roles: str, columns: Iterable[str] = ()
    ) -> sql.Composed:
        cols = list(columns)
        what = (
            sql.SQL(privileges)
            if not cols
            else sql.SQL("{} ({})").format(sql.SQL(privileges), _cols(cols))
        )
        return sql.SQL("GRANT {} ON {} TO {}").format(
            what, on, sql.SQL(", ").join(sql.Identifier(r) for r in roles)
        )

    statements: list[sql.Composed] = [
        sql.SQL("REVOKE ALL ON {} FROM PUBLIC, {}").format(relation, everyone)
        for relation in (
            table,
            view,
            ledger,
            rejected,
            duplicates,
            vault,
            audit,
            erasures,
            aliases,
            version,
            control,
            inbox,
        )
    ]
    maintain = ledger_maintain_signature(sink.ledger_table, schema)
    for internal in (
        append_function_signature(config, schema),
        controlsql.take_lock_signature(schema),
    ):  # called only by the owner's functions
        statements.append(
            sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC, {}").format(internal, everyone)
        )
    for operation, allowed in FUNCTION_ROLES.items():
        function = vaultsql.signature(config, schema, operation)
        statements += [
            sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC, {}").format(function, everyone),
            sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                function, sql.SQL(", ").join(sql.Identifier(r) for r in allowed)
            ),
        ]
    statements += [
        # the sink makes the ledger's day partitions ahead and drops expired ones through it
        sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC, {}").format(maintain, everyone),
        sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(maintain, sql.Identifier(PIPELINE)),
        sql.SQL("REVOKE ALL ON SEQUENCE {} FROM PUBLIC, {}").format(sequence, everyone),
        grant("SELECT", sequence, AUDITOR),
        grant("SELECT", version, *GRANTEES),
        # the pipeline: INSERT what it writes; SELECT only the ledger's conflict key and what
        # its RETURNING reads (the outcome tables' inserts return a constant: no SELECT there)
        grant("INSERT", table, PIPELINE, columns=row_columns),
        grant("INSERT", ledger, PIPELINE, columns=["message_id", "outcome", "sent_at"]),
        grant("SELECT", ledger, PIPELINE, columns=["sent_at", "message_id", "outcome"]),
        grant("INSERT", rejected, PIPELINE, columns=_REJECTED_WRITTEN),
        grant(
            "INSERT",
            duplicates,
            PIPELINE,
            columns=["message_id", "sent_at", "create_date"],
        ),
        # analysts: the rows, the view, the counts; nothing sealed
        grant("SELECT", table, ANALYST, REVEALER),
        grant("SELECT", view, ANALYST),
        grant("SELECT", duplicates, ANALYST),
        grant("SELECT", ledger, ANALYST),
        grant("SELECT", rejected, ANALYST, columns=_REJECTED_UNSEALED),
        grant("SELECT", vault, ANALYST, columns=["field", "vault_key_id", "created_at"]),
        grant("SELECT", aliases, ANALYST),
        # revealers
        grant(
            "SELECT",
            vault,
            REVEALER,
            columns=["entry_id", "token", "field", "sealed", "vault_key_id"],
        ),
        grant("SELECT", erasures, REVEALER, ERASER, ROTATOR),
        # erasers (forget, purge): reads only; changes through their functions
        grant("SELECT", vault, ERASER, columns=["entry_id", "token", "field", "vault_key_id"]),
        grant("SELECT", table, ERASER),
        grant("SELECT", aliases, ERASER),
        grant(
            "SELECT",
            rejected,
            ERASER,
            columns=["message_id", "sealed_body", "vault_key_id", "rejected_at", "body_erased_at"],
        ),
        # rotators (rotate run, vault rekey, vault status): reads only, likewise
        grant("SELECT", vault, ROTATOR),
        grant("SELECT", aliases, ROTATOR),
        grant(
            "SELECT",
            rejected,
            ROTATOR,
            columns=["message_id", "sealed_body", "vault_key_id", "body_erased_at"],
        ),
        # auditors
        grant("SELECT", audit, AUDITOR),
    ]
    return statements
