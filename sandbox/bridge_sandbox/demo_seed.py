"""The people ``bridge demo`` seeds: realistic, overlapping, and disagreeing, as real CRMs are.

Deterministic for a given count, so that every run tells the same story. Names carry
apostrophes and accents (O'Brien, Nuñez); addresses are the ASCII ones people really have,
under the reserved ``example.*`` domains. The mix:

- most people are in both CRMs; Salesforce holds some as a Lead, some as a Contact *and* a
  Lead, often with the address in another case (``Ada.OBrien@Example.com``);
- some are only in HubSpot, some only in Salesforce;
- consent disagrees: an unsubscribe-all on one side, a withdrawal on one side newer than a
  grant on the other, a grant on one side only, and a few evidenced Salesforce grants newer
  than a HubSpot opt-out (which HubSpot leaves to the person);
- the lawful basis is set on one side, on both (sometimes differently), or nowhere;
- Dynamics 365 holds most of them too (a contact, some a lead), telling HubSpot's story,
  Salesforce's or one of its own; it is drawn from a random stream of its own, so the
  HubSpot and Salesforce sides are the same whether Dynamics is seeded or not.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from bridge.model import Purpose
from bridge_sandbox.emulators.people import GRANTED, WITHDRAWN, Act, Held, Person, normalise_email

MARKETING, UPDATES = "marketing_email", "product_updates"
PURPOSES = (
    Purpose(
        id=MARKETING,
        description="Marketing newsletters and offers by email",
        hubspot_subscription_id="1",
        salesforce_data_use_purpose="Marketing",
        dynamics_purpose="Marketing",
    ),
    Purpose(
        id=UPDATES,
        description="Product announcements by email",
        hubspot_subscription_id="2",
        salesforce_data_use_purpose="Product Updates",
        dynamics_purpose="Product updates",
    ),
)
CONSENT = "consent"
# Bases both vendors can hold (HubSpot's hs_legal_basis has no public task and the like).
BASES = (CONSENT, "contract", "legitimate_interests")
EPOCH = datetime(2023, 1, 1, 9, 0, tzinfo=UTC)

# fmt: off
FIRST_NAMES = (
    "Ada", "Grace", "Alan", "Katherine", "Hedy", "Mary", "Seán", "Siobhán", "Zoë", "José",
    "Björn", "Chloé", "Renée", "Ngozi", "Wei", "Priya", "Oluwaseun", "Dorothy", "Margaret",
    "Radia", "Barbara", "Frances", "Annie", "Edsger", "Niklaus", "Dennis", "Linus", "Guido",
    "Yukihiro", "Anders", "Bjarne", "Sophie", "Karen", "Joan", "Lynn", "Shafi", "Leslie",
    "Jean", "Carol", "Evelyn", "Marian", "Ida", "Łukasz", "Dagmar", "Aoife", "Mirela",
)
LAST_NAMES = (
    "O'Brien", "O'Neill", "D'Souza", "D'Angelo", "McAllister", "Müller", "García", "Nuñez",
    "van der Berg", "de la Cruz", "Lovelace", "Hopper", "Turing", "Johnson", "Lamarr",
    "Jackson", "Okafor", "Zhang", "Patel", "Nakamura", "Kowalski", "Novák", "Smith-Jones",
    "Fitzgerald", "Larsen", "Rossi", "Dubois", "Schmidt", "Ivanova", "Haddad", "Cohen", "Kim",
    "Nguyen", "Silva", "Murphy", "Byrne", "Walsh", "Chen", "Singh", "Wójcik", "Ó Súilleabháin",
)
DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "corp.example.org")
# fmt: on


# The people the demo's steps act on, seeded first. Each is in both CRMs, which agree about
# them, so the sync leaves their records alone and their acts are theirs alone.
UNSUBSCRIBER, REP_OPT_OUT, ERASED = "hubspot_unsubscriber", "salesforce_opt_out", "erased"
# Three people no one has worked with for 25 months, for the retention rule (24 months): one
# with nothing to keep them, one kept by an open opportunity, one by their consent.
STALE, KEPT_BY_DEAL, KEPT_BY_CONSENT = "stale", "kept_by_deal", "kept_by_consent"
# Who signs in to the privacy page, withdraws a purpose there and asks to be forgotten: in both
# CRMs, subscribed to marketing in both once the sync has run (last, so the others' names stay
# as they were).
PORTAL_USER = "portal_user"
# Who a seller opts out of bulk email in Dynamics 365 (last: the roles before keep their names).
SELLER_OPT_OUT = "dynamics_opt_out"
ROLES = (UNSUBSCRIBER, REP_OPT_OUT, ERASED, STALE, KEPT_BY_DEAL, KEPT_BY_CONSENT, PORTAL_USER,
         SELLER_OPT_OUT)  # fmt: skip
IDLE_DAYS = 25 * 31  # the three above: past the retention rule's 24 months


@dataclass(frozen=True)
class Cast:
    """The seeded people: one ``Person`` per record set to seed (a person with a Contact and a
    Lead is two entries, one address in two cases), and who plays which role."""

    entries: tuple[Person, ...]
    roles: dict[str, str]
    """role -> the person's address, as HubSpot holds it."""

    def playing(self, role: str) -> Person:
        """The (HubSpot) entry of the person playing ``role``."""
        return next(p for p in self.entries if p.email == self.roles[role])

    @property
    def addresses(self) -> list[str]:
        """Every seeded address, normalised, once."""
        return sorted({normalise_email(p.email) for p in self.entries})

    def spellings(self) -> list[str]:
        """Every seeded address as seeded (all its cases), for leak checks."""
        return sorted({p.email for p in self.entries} | set(self.addresses))

    def counts(self) -> dict[str, int]:
        hubspot = sum(p.hubspot is not None for p in self.entries)
        sf = [p.salesforce for p in self.entries if p.salesforce is not None]
        dynamics = [p.dynamics for p in self.entries if p.dynamics is not None]
        return {
            "people": len(self.addresses),
            "hubspot_contacts": hubspot,
            "salesforce_contacts": sum(h.object_type == "contact" for h in sf),
            "salesforce_leads": sum(h.object_type == "lead" for h in sf),
            "dynamics_contacts": sum(h.object_type == "contact" for h in dynamics),
            "dynamics_leads": sum(h.object_type == "lead" for h in dynamics),
        }


def cast(count: int, seed: int = 9, today: datetime | None = None) -> Cast:
    """``count`` distinct people (at least one per role), the same for the same arguments.
    Everyone was last active within the past ten months of ``today``, except the three
    people the retention step is about, idle for 25 months."""
    if count < len(ROLES):
        raise ValueError(f"the demo needs at least {len(ROLES)} people")
    rng = random.Random(seed)
    other = random.Random(f"dynamics-{seed}")  # Dynamics' own stream: see the module's note
    now = today or datetime.now(UTC)
    taken: set[str] = set()
    entries: list[Person] = []
    roles: dict[str, str] = {}
    for index in range(count):
        role = ROLES[index] if index < len(ROLES) else None
        if role == ERASED:  # an apostrophe in the address, another case in Salesforce
            first, last = "Siobhán", "O'Brien"
            email = _address(rng, first, last, taken, keep_apostrophe=True)
        else:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            email = _address(rng, first, last, taken)
        if role is None:
            made = _person(rng, index, email, first, last)
            made[0] = replace(made[0], dynamics=_dynamics(other, made[0]))
        elif role in (STALE, KEPT_BY_DEAL):
            made = [Person(email, first, last, hubspot=Held(), salesforce=Held(), dynamics=Held())]
        elif role == PORTAL_USER:
            made = [_told_hubspot(email, first, last)]
        else:
            made = _agreed(email, first, last, with_lead=role == ERASED)
        if role is not None:
            roles[role] = email
        idle = IDLE_DAYS if role in (STALE, KEPT_BY_DEAL, KEPT_BY_CONSENT) else None
        last_active = now - timedelta(days=idle or rng.randrange(1, 300))
        entries += [_active(person, last_active) for person in made]
    return Cast(tuple(entries), roles)


def _active(person: Person, last_active: datetime) -> Person:
    """The person as each CRM holding them has them last active at ``last_active``."""
    hubspot, salesforce, dynamics = person.hubspot, person.salesforce, person.dynamics
    return replace(
        person,
        hubspot=replace(hubspot, last_active=last_active) if hubspot else None,
        salesforce=replace(salesforce, last_active=last_active) if salesforce else None,
        dynamics=replace(dynamics, last_active=last_active) if dynamics else None,
    )


def _agreed(email: str, first: str, last: str, with_lead: bool) -> list[Person]:
    """Subscribed to marketing in every CRM on a consent basis: nothing for a sync to do."""
    hubspot = Held((Act(MARKETING, GRANTED, EPOCH),), lawful_basis=CONSENT)
    later = EPOCH + timedelta(days=30)
    salesforce = Held((Act(MARKETING, GRANTED, later),), lawful_basis=CONSENT)
    entries = [Person(email, first, last, hubspot, salesforce, dynamics=salesforce)]
    if with_lead:
        lead = Held((Act(MARKETING, GRANTED, later),), None, CONSENT, "lead")
        entries.append(Person(_other_case(email), first, last, hubspot=None, salesforce=lead))
    return entries


def _told_hubspot(email: str, first: str, last: str) -> Person:
    """Subscribed to marketing on a consent basis in HubSpot; Salesforce, holding them too,
    was told neither: the sync carries both over (so even the smallest demo plans a change).
    Dynamics holds the subscription without a basis, so that any two CRMs hold it once
    synced."""
    hubspot = Held((Act(MARKETING, GRANTED, EPOCH),), lawful_basis=CONSENT)
    dynamics = Held((Act(MARKETING, GRANTED, EPOCH),))
    return Person(email, first, last, hubspot=hubspot, salesforce=Held(), dynamics=dynamics)


def _dynamics(rng: random.Random, person: Person) -> Held | None:
    """What Dynamics holds about a person: most as a contact, some as a lead, some not at
    all; HubSpot's story, Salesforce's, or its own, with a basis of its own."""
    shape, story = rng.random(), rng.random()
    own = _consent_story(rng)[rng.randrange(2)]
    basis = rng.choice((None, *BASES))
    if shape >= 0.75:
        return None
    told = person.hubspot if story < 0.35 else person.salesforce if story < 0.6 else own
    told = told or own
    kind: Literal["contact", "lead"] = "lead" if shape >= 0.6 else "contact"
    return Held(told.acts, told.opted_out_at, basis, kind)


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.replace("Ł", "L").replace("ł", "l"))
    return "".join(c for c in folded if not unicodedata.combining(c)).replace(" ", "")


def _address(
    rng: random.Random, first: str, last: str, taken: set[str], keep_apostrophe: bool = False
) -> str:
    """A lower-case address; apostrophes kept in some (``o'brien@...`` is a real address)."""
    given, family = _ascii(first).lower(), _ascii(last).lower()
    if not keep_apostrophe and rng.random() < 0.6:
        family = family.replace("'", "")
    local = rng.choice((f"{given}.{family}", f"{given[0]}.{family}", f"{given}{family}",
                        f"{family}.{given}", f"{given}_{family}"))  # fmt: skip
    domain = rng.choice(DOMAINS)
    email, number = f"{local}@{domain}", 1
    while email in taken:
        number += 1
        email = f"{local}{number}@{domain}"
    taken.add(email)
    return email


def _other_case(email: str) -> str:
    """``ada.obrien@example.com`` -> ``Ada.Obrien@Example.com``, as a rep might type it."""
    local, _, domain = email.partition("@")
    return f"{'.'.join(p.capitalize() for p in local.split('.'))}@{domain.capitalize()}"


def _moment(rng: random.Random) -> datetime:
    return EPOCH + timedelta(minutes=rng.randrange(0, 900 * 24 * 60))


def _person(rng: random.Random, index: int, email: str, first: str, last: str) -> list[Person]:
    """One person's entries: where they are held, and what each CRM says about them."""
    shape = rng.random()
    hubspot, salesforce = _consent_story(rng)
    hs_basis, sf_basis = _bases(rng)
    hubspot = Held(hubspot.acts, hubspot.opted_out_at, hs_basis)
    salesforce = Held(salesforce.acts, salesforce.opted_out_at, sf_basis)
    sf_email = _other_case(email) if rng.random() < 0.4 else email
    if shape < 0.45:  # both CRMs, Salesforce Contact
        return [Person(email, first, last, hubspot=hubspot, salesforce=salesforce)]
    if shape < 0.60:  # both CRMs, Salesforce Lead
        lead = Held(salesforce.acts, salesforce.opted_out_at, sf_basis, "lead")
        return [Person(email, first, last, hubspot=hubspot, salesforce=lead)]
    if shape < 0.70:  # both CRMs, a Contact and a Lead in Salesforce (the Lead in another case)
        lead = Held(lawful_basis=None, object_type="lead")
        return [
            Person(email, first, last, hubspot=hubspot, salesforce=salesforce),
            Person(_other_case(email), first, last, hubspot=None, salesforce=lead),
        ]
    if shape < 0.85:  # HubSpot only
        return [Person(email, first, last, hubspot=hubspot, salesforce=None)]
    kind: Literal["contact", "lead"] = "lead" if index % 2 else "contact"  # Salesforce only
    only = Held(salesforce.acts, salesforce.opted_out_at, sf_basis, kind)
    return [Person(sf_email, first, last, hubspot=None, salesforce=only)]


def _consent_story(rng: random.Random) -> tuple[Held, Held]:
    """What HubSpot and Salesforce say about the person's email consent."""
    early, late = sorted((_moment(rng), _moment(rng)))
    story = rng.random()
    if story < 0.20:  # agree: subscribed to marketing on both sides
        return Held(acts=(Act(MARKETING, GRANTED, early),)), Held(
            acts=(Act(MARKETING, GRANTED, late),)
        )
    if story < 0.35:  # unsubscribed from all email in HubSpot; Salesforce never heard
        return Held(opted_out_at=late), Held(acts=(Act(MARKETING, GRANTED, early),))
    if story < 0.47:  # a rep ticked Email Opt Out in Salesforce
        return Held(acts=(Act(UPDATES, GRANTED, early),)), Held(opted_out_at=late)
    if story < 0.62:  # withdrew marketing in Salesforce after subscribing in HubSpot
        return Held(acts=(Act(MARKETING, GRANTED, early),)), Held(
            acts=(Act(MARKETING, WITHDRAWN, late),)
        )
    if story < 0.74:  # subscribed to product updates in HubSpot only
        return Held(acts=(Act(UPDATES, GRANTED, late),)), Held()
    if story < 0.80:  # an evidenced Salesforce grant newer than a HubSpot withdrawal
        return Held(acts=(Act(MARKETING, WITHDRAWN, early),)), Held(
            acts=(Act(MARKETING, GRANTED, late),)
        )
    return Held(), Held()  # nothing said anywhere


def _bases(rng: random.Random) -> tuple[str | None, str | None]:
    """The lawful basis each side holds: one side, both (agreeing or not), or none."""
    roll = rng.random()
    one, other = rng.choice(BASES), rng.choice(BASES)
    if roll < 0.25:
        return one, None
    if roll < 0.45:
        return None, one
    if roll < 0.60:
        return one, one
    if roll < 0.80:
        return one, other
    return None, None
