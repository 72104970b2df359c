"""The one place that builds services and the daemon's jobs from settings: the CLI, the
daemon and the demo all wire through :class:`Wiring`, so they run the same things.

Every command builds a :class:`Wiring`, ``--help`` and ``--version`` too: what it wires is
imported when first asked for (settings, store, adapters, services), not with this module.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.errors import ConfigError
from bridge.logs import configure as configure_logging

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from bridge.adapters.base import CrmAdapter
    from bridge.checkpoints import Checkpointer
    from bridge.config import Settings
    from bridge.model import System
    from bridge.runtime.daemon import Daemon, Job
    from bridge.sealing import Keyring
    from bridge.services.erasure import Erasure
    from bridge.services.mail import Mailer
    from bridge.services.operators import Operators
    from bridge.services.proofs import Proofs
    from bridge.services.reconcile import Progress, Reconciler
    from bridge.services.retention import Retention
    from bridge.store.db import Store
    from bridge.store.notify import Listener


def connect(settings: Settings) -> dict[System, CrmAdapter]:
    """An adapter for each vendor with credentials in the settings; none at all is an error."""
    from bridge.adapters.registry import VENDORS
    from bridge.adapters.spec import AdapterOptions
    from bridge.model import System

    retention = settings.retention
    options = AdapterOptions(
        purposes=settings.purposes,
        keep_on_anonymize=settings.erasure.keep_on_anonymize,
        read_fields=retention.fields_read,
        mark_due=bool(retention.rules),
    )
    adapters: dict[System, CrmAdapter] = {}
    for vendor in VENDORS.values():
        section = settings.vendor(vendor.name)
        if vendor.configured(section):
            adapters[System(vendor.name)] = vendor.connect(section, options)
    if not adapters:
        hints = " and/or ".join(vendor.credentials_hint for vendor in VENDORS.values())
        raise ConfigError([f"crm: no CRM configured; set {hints}"])
    return adapters


@dataclass
class Wiring:
    """What every command may need, loaded on first use so that --help never fails."""

    config: Path | None
    _settings: Settings | None = None
    _store: Store | None = field(default=None, repr=False)
    _adapters: dict[System, CrmAdapter] | None = field(default=None, repr=False)
    _checkpointer: Checkpointer | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from bridge.config import load_settings

            self._settings = load_settings(self.config)
            configure_logging(self._settings.log_level)
        return self._settings

    def adapters(self) -> dict[System, CrmAdapter]:
        """One adapter per configured CRM, shared by every service of this command."""
        if self._adapters is None:
            self._adapters = connect(self.settings)
        return self._adapters

    def store(self, *, current_schema: bool = True, create: bool = True) -> Store:
        """The database; ``create`` False leaves a SQLite file not there yet uncreated."""
        if self._store is None:
            from bridge.audit import chain_key
            from bridge.store.db import Store

            secret = self._audit_secret()
            key = chain_key(secret) if secret else None  # appending says it is missing
            self._store = Store(self.settings.database_url, key)
            self._store.ping(create=create)
        if current_schema:
            self._store.require_current_schema()
        return self._store

    def _audit_secret(self) -> bytes | None:
        """What the audit log's keys derive from: ``[audit] key``, else the pseudonym key."""
        chosen = self.settings.audit.key or self.settings.pseudonym_key
        return chosen.get_secret_value().encode() if chosen else None

    def signing_key(self) -> Ed25519PrivateKey:
        """The key checkpoints of the audit chain are signed with."""
        from bridge.checkpoints import signing_key

        configured = self.settings.audit.signing_key
        return signing_key(
            configured.get_secret_value() if configured else None, self._audit_secret()
        )

    def checkpointer(self) -> Checkpointer:
        """Signed checkpoints of the audit chain's head, to the log and ``[audit]
        checkpoint_path``; one per process, which remembers what it last published."""
        if self._checkpointer is None:
            from bridge.checkpoints import Checkpointer

            self._checkpointer = Checkpointer(
                self.store(), self.signing_key(), self.settings.audit.checkpoint_path
            )
        return self._checkpointer

    def checkpoint_if_appended(self) -> None:
        """After a command, or the daemon's stop: a checkpoint of the audit chain's head, if
        this process appended to it."""
        if self._store is not None and self._store.audit.appended:
            self.checkpointer().publish_if_moved()

    def keyring(self) -> Keyring:
        """The configured encryption keys, for personal data held while work is in flight."""
        from bridge.sealing import Keyring

        return Keyring(self.settings.require_encryption_keys())

    def operators(self) -> Operators:
        """The console's operator accounts."""
        from bridge.audit import derive
        from bridge.services.operators import Operators

        secret = self.settings.require_pseudonym_key()
        return Operators(self.store(), self.settings.web, derive(secret, "console clients"))

    def mailer(self) -> Mailer:
        """Email through ``[smtp]`` (``configured`` False without a host)."""
        from bridge.services.mail import Mailer

        return Mailer(self.settings.smtp)

    def proofs(self) -> Proofs:
        """The privacy portal's sign-in proofs and sessions."""
        from bridge.services.proofs import Proofs

        settings = self.settings
        return Proofs(
            self.store(), self.keyring(), settings.require_pseudonym_key(), settings.portal
        )

    def erasure(self, adapters: Mapping[System, CrmAdapter] | None = None) -> Erasure:
        """The erasure service over every configured CRM (through ``adapters``, when a
        thread of its own needs connections of its own)."""
        from bridge.services.erasure import Erasure, Escalation

        settings = self.settings
        return Erasure(
            self.store(),
            adapters or self.adapters(),
            self.keyring(),
            settings.require_pseudonym_key(),
            holds=settings.erasure.legal_holds,
            lease_seconds=settings.erasure.lease_seconds,
            escalation=Escalation.of(settings.erasure),
        )

    def reconciler(
        self,
        progress: Progress | None = None,
        adapters: Mapping[System, CrmAdapter] | None = None,
    ) -> Reconciler:
        """The sync over every configured CRM; erased people who re-appear are erased again
        when ``erasure.reerase_reappeared`` says so."""
        from bridge.policies.minimisation import Minimisation
        from bridge.services.reconcile import Reconciler
        from bridge.services.watch import Watch

        settings = self.settings
        key = settings.require_pseudonym_key()
        adapters = adapters or self.adapters()
        again = self.erasure(adapters) if settings.erasure.reerase_reappeared else None
        return Reconciler(
            self.store(),
            adapters,
            key,
            settings.purposes,
            Minimisation(settings.minimisation.allowed),
            watch=Watch(self.store(), key, again),
            progress=progress,
        )

    def retention(self, adapters: Mapping[System, CrmAdapter] | None = None) -> Retention:
        """The retention rules over every configured CRM; none configured is an error."""
        from bridge.services.retention import Retention

        settings = self.settings
        if not settings.retention.rules:
            raise ConfigError(
                [
                    "retention.rules: none configured; add [[retention.rules]] tables to "
                    "config/bridge.toml (see config/bridge.example.toml)"
                ]
            )
        return Retention(
            self.store(),
            adapters or self.adapters(),
            settings.require_pseudonym_key(),
            settings.purposes,
            settings.retention.rules,
            settings.erasure.legal_holds,
        )

    def wake_on_new_work(self, daemon: Daemon) -> Listener | None:
        """Wake the daemon's inbox and erasure jobs as soon as work for them commits: in this
        process (the receiver, the console) through the store's signals, and on PostgreSQL
        from every other process too, through a :class:`~bridge.store.notify.Listener`,
        returned started (stop it when the daemon stops). Their polls stay, as the fallback."""
        from bridge.store import notify

        store = self.store()
        jobs = {notify.INBOX: "inbox", notify.ERASURE: "erasure"}
        for channel, name in jobs.items():
            store.signals.subscribe(channel, functools.partial(daemon.wake, name))
        if store.is_sqlite:  # one daemon per file; a CLI elsewhere is found by the poll
            return None
        listener = notify.Listener(store.url, store.signals, list(jobs))
        listener.start()
        return listener

    def daemon_jobs(self, *, leader_jobs: bool = True) -> list[Job]:
        """The daemon's jobs. Every instance drains the inbox and runs open erasure requests
        (the work items are leased, so instances share them); the leader alone runs the
        leader-only jobs (``leader_jobs=False`` leaves them out). Jobs run in threads of
        their own, side by side: each gets vendor connections of its own."""
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        from bridge.events.inbox import BatchHandler, Handler, InboxWorker
        from bridge.events.propagate import Propagation
        from bridge.events.triggers import ErasureTriggers
        from bridge.runtime.daemon import Job
        from bridge.store import data_keys

        settings = self.settings
        schedule = settings.schedule
        inbox_erasure = self.erasure(connect(settings))
        handlers: dict[str, Handler | BatchHandler] = {
            "deletion": ErasureTriggers(inbox_erasure, inbox_erasure.adapters),
            "consent": Propagation(self.reconciler(adapters=inbox_erasure.adapters)),
        }
        inbox = InboxWorker(self.store(), self.keyring(), handlers)
        erasure = self.erasure(connect(settings))
        checkpointer = self.checkpointer()
        jobs = [
            Job(
                "inbox",
                # one deletion at a time; consent events ``Propagation.batch`` at a time
                lambda stop: inbox.drain(batch=1, stop=stop),
                IntervalTrigger(seconds=schedule.inbox_seconds),
            ),
            Job("erasure", erasure.drain, IntervalTrigger(seconds=schedule.erasure_seconds)),
            Job(
                "audit_checkpoint",
                lambda stop: checkpointer.publish_if_moved(),
                IntervalTrigger(seconds=settings.audit.checkpoint_seconds),
            ),
        ]
        if not leader_jobs:
            return jobs
        reconciler = self.reconciler(adapters=connect(settings))
        one_sync_at_a_time = threading.Lock()
        store = self.store()

        def sync(full: bool) -> Callable[[threading.Event], object]:
            def run(stop: threading.Event) -> object:
                with one_sync_at_a_time:
                    return reconciler.sync(full=full, stop=stop, trigger="daemon")

            return run

        jobs += [
            Job(
                "incremental_sync",
                sync(full=False),
                IntervalTrigger(minutes=schedule.incremental_sync_minutes),
                leader_only=True,
            ),
            Job(
                "full_sync",
                sync(full=True),
                CronTrigger.from_crontab(schedule.full_sync_cron),
                leader_only=True,
            ),
            # Destroyed data keys out of the database's files, whoever destroyed them (every
            # instance, the CLI); a run the database is too busy for is simply tried again.
            Job(
                "scrub",
                lambda stop: data_keys.scrub(store),
                IntervalTrigger(seconds=schedule.erasure_seconds),
                leader_only=True,
            ),
        ]
        if settings.retention.rules:
            # Daily: mark who enters a warning period, hand who is due to the erasure job.
            retention = self.retention(connect(settings))
            jobs.append(
                Job(
                    "retention",
                    lambda stop: retention.apply(erasure),
                    CronTrigger.from_crontab(schedule.retention_cron),
                    leader_only=True,
                )
            )
        return jobs
