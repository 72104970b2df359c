"""Table definitions. Migrations create them; code reads and writes them through ``store``.

No column holds an email, name or phone in clear: people appear only as ``subject_ref``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for long logs.
BigId = BigInteger().with_variant(Integer(), "sqlite")

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=False),
    Column("occurred_at", String(32), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("action", String(100), nullable=False),
    Column("outcome", String(50), nullable=False),
    Column("system", String(50)),
    Column("record_id", String(100)),
    Column("subject_ref", String(64), index=True),
    Column("reason", Text),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
)

# Webhook events, stored before they are acknowledged and processed in order of receipt.
# ``payload`` is the vendor event sealed with a data key of its own (``data_keys``); both are
# deleted once it is processed.
inbox = Table(
    "inbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source", String(20), nullable=False),
    Column("event_key", String(200), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("object_type", String(50)),
    Column("object_id", String(100)),
    Column("occurred_at", String(32)),
    Column("received_at", String(32), nullable=False),
    Column("payload", LargeBinary),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("available_at", String(32)),
    Column("last_error", Text),
    Column("processed_at", String(32)),
    UniqueConstraint("source", "event_key", name="uq_inbox_source_event_key"),
    Index("ix_inbox_claim", "status", "available_at"),
)

# Erasure requests (GDPR Art. 17). The subject's emails are held sealed with a data key of
# their own (``data_keys``) while the request runs, and destroyed with it when it completes;
# the receipt that remains holds no personal data.
erasure_requests = Table(
    "erasure_requests",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("subject_ref", String(64), nullable=False, index=True),
    Column("emails_encrypted", LargeBinary),
    Column("mode", String(10), nullable=False),
    Column("reason", Text),
    Column("trigger", String(100), nullable=False),  # cli, retention, operator:NAME, ...
    Column("status", String(20), nullable=False),
    Column("received_at", String(32), nullable=False),
    Column("due_at", String(32), nullable=False),
    Column("completed_at", String(32)),
    Column("receipt", Text),
    Column("origin", String(200), unique=True),  # the triggering event, for one request each
    # Art. 12(3) extensions, a JSON list of {"months", "reason", "at"}; due_at includes them.
    Column("extensions", Text),
    # A failing request: since when, how often (the daemon's backoff), when the daemon tries
    # again (None: not before the operator does), the latest problem (no personal data), and
    # when it was flagged (audited once).
    Column("failing_since", String(32)),
    Column("failures", Integer, nullable=False, default=0),
    Column("retry_at", String(32)),
    Column("problem", Text),
    Column("flagged_at", String(32)),
)

# One step per system and record (or address) to erase; claimed with a lease like the inbox.
erasure_steps = Table(
    "erasure_steps",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("request_id", String(36), ForeignKey("erasure_requests.id"), nullable=False),
    Column("target_key", String(200), nullable=False),
    Column("system", String(20), nullable=False),
    Column("object_type", String(50), nullable=False),
    Column("record_id", String(100)),
    Column("email_ref", String(64)),
    Column("action", String(10)),  # a legal hold's: anonymize or refuse; None: the request's
    Column("hold", String(100)),
    Column("hold_reason", Text),
    Column("status", String(20), nullable=False),
    Column("outcome", String(30)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("available_at", String(32)),
    Column("last_error", Text),
    Column("finished_at", String(32)),
    UniqueConstraint("request_id", "target_key", name="uq_erasure_steps_target"),
)

# The data key of each held value (bridge/sealing.py), wrapped by the configured keys and
# named by the row holding the value: ``holder`` is "inbox" or "erasure_request", ``holder_id``
# that row's id. Deleting it destroys the value; kept apart so that the daemon can rewrite this
# small table and leave no deleted key's bytes behind (PostgreSQL's VACUUM FULL).
data_keys = Table(
    "data_keys",
    metadata,
    Column("holder", String(20), primary_key=True),
    Column("holder_id", String(64), primary_key=True),
    Column("wrapped", LargeBinary, nullable=False),
)

# Pseudonyms of every email of every erased subject: never synced, linked or re-created.
suppression = Table(
    "suppression",
    metadata,
    Column("subject_ref", String(64), primary_key=True),
    Column("source", String(200), nullable=False),  # the request, or the vendor's own erasure
    Column("added_at", String(32), nullable=False),
)

# Which pseudonyms each CRM record held when the bridge last read it: finds a person's other
# records after one is gone (a vendor's own privacy deletion leaves no email behind).
record_index = Table(
    "record_index",
    metadata,
    Column("system", String(20), primary_key=True),
    Column("object_type", String(50), primary_key=True),
    Column("record_id", String(100), primary_key=True),
    Column("subject_ref", String(64), primary_key=True, index=True),
    Column("seen_at", String(32), nullable=False),
)

# Erased people found again in a CRM (a form fill, a rep typing them in).
reappearances = Table(
    "reappearances",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("subject_ref", String(64), nullable=False),
    Column("system", String(20), nullable=False),
    Column("object_type", String(50), nullable=False),
    Column("record_id", String(100), nullable=False),
    Column("detected_at", String(32), nullable=False),
    Column("request_id", String(36)),  # the erasure that followed, when configured
    UniqueConstraint(
        "system", "object_type", "record_id", "subject_ref", name="uq_reappearances_record"
    ),
)

# Where each incremental read left off, per reader and system: an ISO timestamp, or a
# vendor's change-tracking token (``track:<system>``).
cursors = Table(
    "cursors",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)

# The lawful basis both CRMs last agreed on, per subject: the base of the three-way merge
# that tells which system changed it since (a record's own timestamp moves with any edit).
sync_state = Table(
    "sync_state",
    metadata,
    Column("subject_ref", String(64), primary_key=True),
    Column("lawful_basis", String(30), nullable=False),
    Column("agreed_at", String(32), nullable=False),
)

# What the sync wrote to each record field, and the person's act it followed: recognises
# the bridge's own writes when they come back (echoes) and remembers what the vendor left
# to the person (needs_self_service), so it is not retried until a newer act.
sync_writes = Table(
    "sync_writes",
    metadata,
    Column("system", String(20), primary_key=True),
    Column("object_type", String(50), primary_key=True),
    Column("record_id", String(100), primary_key=True),
    Column("field", String(100), primary_key=True),  # opt_out, consent:<purpose>, lawful_basis
    Column("value", String(30), nullable=False),
    Column("act_system", String(20), nullable=False),
    Column("act_record", String(100), nullable=False),
    Column("act_at", String(32)),
    Column("outcome", String(30), nullable=False),
    Column("written_at", String(32), nullable=False, index=True),
)

# The console's operator accounts (bridge users): a name, a role, an argon2 hash. ``epoch``
# moves on a reset or a disable, which ends every session signed under the old one.
operators = Table(
    "operators",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("role", String(10), nullable=False),  # viewer, operator, admin
    Column("password_hash", Text, nullable=False),
    Column("epoch", Integer, nullable=False, default=0),
    Column("created_at", String(32), nullable=False),
    Column("password_set_at", String(32), nullable=False),
    Column("disabled_at", String(32)),
)

# Failed console sign-ins, for the lockout: by the name typed and the client's address, both
# kept as keyed hashes, never in clear. Rows older than a day are pruned.
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("account", String(100), nullable=False, index=True),
    Column("client_ref", String(64), nullable=False, index=True),
    Column("failed_at", String(32), nullable=False, index=True),
)

# A retention purge needs two operators: one proposes what the preview showed (its digest),
# another approves it; only then is it applied.
retention_proposals = Table(
    "retention_proposals",
    metadata,
    Column("id", String(36), primary_key=True),
    # proposed, applying, applied, withdrawn, stale, failed
    Column("status", String(20), nullable=False),
    Column("within_days", Integer, nullable=False),
    Column("digest", String(64), nullable=False),  # of the candidates the proposer saw
    Column("people", Integer, nullable=False),
    Column("proposed_by", String(100), nullable=False),
    Column("proposed_at", String(32), nullable=False),
    Column("decided_by", String(100)),
    Column("decided_at", String(32)),
    Column("outcome", Text),  # the apply's counts, JSON
)

# Each sync run's outcome, for the console: counts by outcome and, per system, records read
# and the last error (its class and vendor code, never a value).
sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("trigger", String(100), nullable=False),  # daemon, cli, operator:<name>
    Column("full", Integer, nullable=False),
    Column("dry_run", Integer, nullable=False),
    Column("started_at", String(32), nullable=False, index=True),
    Column("finished_at", String(32), nullable=False),
    Column("outcome", String(20), nullable=False),  # ok, failed, stopped
    Column("counts", Text, nullable=False),  # JSON: records, subjects, changes by outcome
    Column("systems", Text, nullable=False),  # JSON: per system, records and error
)

# The privacy portal's sign-in proofs: one per email sent, its link's token and its code
# (bound to the proof) kept only as keyed hashes, the address only sealed (its data key in
# ``data_keys``, destroyed once the proof is spent or expired), the client's address as a
# keyed hash. Rows are kept a day after they expire: the caps count them.
portal_proofs = Table(
    "portal_proofs",
    metadata,
    Column("id", String(32), primary_key=True),  # random, shown on the code form
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("code_hash", String(64), nullable=False),
    Column("subject_ref", String(64), nullable=False),
    Column("client_ref", String(64), nullable=False),
    Column("email_sealed", LargeBinary),
    Column("session_id", String(32)),  # the session adding this address, if any
    Column("issued_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),  # wrong codes typed
    Column("spent", String(10)),  # why it no longer works: used, attempts
    Index("ix_portal_proofs_subject", "subject_ref", "issued_at"),
    Index("ix_portal_proofs_client", "client_ref", "issued_at"),
)

# Portal sessions, on the server: the cookie's token kept only as a keyed hash, the addresses
# proved in the session sealed (a JSON list; data key in ``data_keys``). Deleted when ended
# or expired.
portal_sessions = Table(
    "portal_sessions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("subject_ref", String(64), nullable=False),  # the address it began with
    Column("emails_sealed", LargeBinary, nullable=False),
    Column("began_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False, index=True),
)

# What each apply batch of the sync is about to write, committed before its vendor call and
# deleted in the transaction that audits its outcomes: intents that outlive their batch's lock
# (``store.sync``) were cut short by a dead process, and the next sync audits what the vendor
# holds of them (``sync.recovered``). Record keys, fields, values and the act followed only.
sync_intents = Table(
    "sync_intents",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("batch", String(32), nullable=False, index=True),
    Column("system", String(20), nullable=False),
    Column("object_type", String(50), nullable=False),
    Column("record_id", String(100), nullable=False),
    Column("field", String(100), nullable=False),  # opt_out, consent:<purpose>, lawful_basis
    Column("kind", String(20), nullable=False),
    Column("purpose", String(100)),
    Column("value", String(30), nullable=False),
    Column("implied", Text, nullable=False),  # JSON: the fields the write may change too
    Column("act_system", String(20), nullable=False),
    Column("act_record", String(100), nullable=False),
    Column("act_at", String(32)),
    Column("subject_ref", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", String(100), nullable=False),  # sync, propagate, an operator, the portal
    Column("created_at", String(32), nullable=False),
)

# A sync's records while it runs: read page by page, linked into people here (the pseudonyms
# of their addresses), and planned partition by partition, so that a run's memory does not
# grow with the number of people. Each record is sealed under a key only the running process
# holds (``services.staging``); the run deletes its rows as it ends, and one that died leaves
# rows no one can open, deleted by the next run (its lock free, as an intent's batch).
sync_staged = Table(
    "sync_staged",
    metadata,
    Column("run", String(32), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("system", String(20), nullable=False),
    Column("object_type", String(50), nullable=False),
    Column("record_id", String(100), nullable=False),
    Column("part", String(100), nullable=False),  # the person: the least pseudonym linked
    Column("sealed", LargeBinary, nullable=False),
    UniqueConstraint("run", "system", "object_type", "record_id"),
    Index("ix_sync_staged_part", "run", "part"),
)

# The pseudonyms of each staged record's addresses: what links records into people.
sync_staged_refs = Table(
    "sync_staged_refs",
    metadata,
    Column("run", String(32), primary_key=True),
    Column("subject_ref", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    # Both ways round, each covering: linking looks up a record's refs, then each ref's records.
    Index("ix_sync_staged_refs_seq", "run", "seq", "subject_ref"),
)
