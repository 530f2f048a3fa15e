"""Demo and benchmark data for the development Wrapper.

Every tenant uses the SAME ids (operation codes, role ids, user ids, flag keys, org unit
ids) with DIFFERENT values, so a test that reads `acme` and `globex` side by side catches
any cache key that forgot its tenant.

Everything is a pure function of its arguments (no randomness, no clock): two runs give
byte-identical databases, so benchmarks and failing tests can be reproduced.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from hybridcache.server.core.values import canonical_decimal


class CreditCostRow(NamedTuple):
    operation_code: str
    cost: str  # canonical decimal text
    config_id: str


class RoleRow(NamedTuple):
    role_id: str
    permissions: tuple[str, ...]


class UserStatusRow(NamedTuple):
    user_id: str
    active: bool
    roles: tuple[str, ...]


class FlagRow(NamedTuple):
    flag_key: str
    enabled: bool
    value: str


class ProfileRow(NamedTuple):
    user_id: str
    display_name: str
    email: str
    title: str
    department: str
    org_unit_id: str
    phone: str


class OrgUnitRow(NamedTuple):
    org_unit_id: str
    name: str
    parent_id: str | None
    manager_user_id: str | None


@dataclass(frozen=True)
class TenantSeed:
    """All rows of one tenant, ready for `Store.load`."""

    tenant_id: str
    name: str
    credit_costs: Sequence[CreditCostRow]
    roles: Sequence[RoleRow]
    users: Sequence[UserStatusRow]
    flags: Sequence[FlagRow]
    profiles: Sequence[ProfileRow]
    org_units: Sequence[OrgUnitRow]


# The operation codes every tenant has, with Acme's cost (other tenants derive theirs).
# crm.leads.create is 2.5 as in the design note's example event (oldValue 2.5).
BASE_COSTS: tuple[tuple[str, str], ...] = (
    ("crm.leads.create", "2.5"),
    ("crm.leads.read", "0.1"),
    ("crm.leads.update", "0.5"),
    ("crm.leads.delete", "0.25"),
    ("crm.leads.convert", "3"),
    ("crm.contacts.read", "0.1"),
    ("crm.contacts.create", "1"),
    ("crm.contacts.export", "5"),
    ("crm.contacts.import", "4.5"),
    ("crm.deals.create", "2"),
    ("crm.deals.close", "1.75"),
    ("crm.ai.summarize", "7.5"),
    ("hrms.employees.read", "0.2"),
    ("hrms.employees.update", "0.75"),
    ("hrms.payroll.run", "12"),
    ("hrms.leave.approve", "0.5"),
    ("finance.invoice.create", "1.5"),
    ("finance.invoice.send", "0.3"),
    ("finance.payment.refund", "2.25"),
    ("finance.reports.export", "6"),
)
OPERATION_CODES: tuple[str, ...] = tuple(code for code, _ in BASE_COSTS)

BASE_ROLES: dict[str, tuple[str, ...]] = {
    "admin": ("*",),
    "sales-manager": ("crm.*",),
    "sales-rep": ("crm.leads.read", "crm.leads.create", "crm.contacts.*"),
    "hr": ("hrms.*",),
    "viewer": ("crm.leads.read",),
    "finance-clerk": ("finance.invoice.*", "finance.reports.export"),
}
ROLE_IDS: tuple[str, ...] = tuple(BASE_ROLES)

FLAG_KEYS: tuple[str, ...] = (
    "crm.ai-summaries",
    "crm.bulk-export",
    "hrms.self-service",
    "finance.multi-currency",
)

# (org unit id, parent id): the same tree in every tenant; names and managers differ.
ORG_TREE: tuple[tuple[str, str | None], ...] = (
    ("org-root", None),
    ("org-sales", "org-root"),
    ("org-sales-emea", "org-sales"),
    ("org-sales-amer", "org-sales"),
    ("org-sales-apac", "org-sales"),
    ("org-hr", "org-root"),
    ("org-finance", "org-root"),
    ("org-finance-ap", "org-finance"),
    ("org-engineering", "org-root"),
    ("org-engineering-platform", "org-engineering"),
)
ORG_UNIT_IDS: tuple[str, ...] = tuple(unit for unit, _ in ORG_TREE)

_DEFAULT_ORG_NAMES: dict[str, str] = {
    "org-sales": "Sales",
    "org-sales-emea": "Sales EMEA",
    "org-sales-amer": "Sales Americas",
    "org-sales-apac": "Sales APAC",
    "org-hr": "Human Resources",
    "org-finance": "Finance",
    "org-finance-ap": "Accounts Payable",
    "org-engineering": "Engineering",
    "org-engineering-platform": "Platform",
}

# Which roles users get, in turn; a tenant's offset shifts the rotation so that the same
# user id has different roles in different tenants.
_ROLE_ROTATION: tuple[str, ...] = (
    "sales-rep",
    "sales-rep",
    "sales-manager",
    "viewer",
    "hr",
    "finance-clerk",
    "sales-rep",
    "viewer",
)
_SALES_UNITS: tuple[str, ...] = ("org-sales-emea", "org-sales-amer", "org-sales-apac")
_UNIT_OF_ROLE: dict[str, str] = {
    "admin": "org-root",
    "sales-manager": "org-sales",
    "hr": "org-hr",
    "viewer": "org-engineering-platform",
    "finance-clerk": "org-finance-ap",
}
_DEPARTMENT_OF_UNIT: dict[str, str] = {
    "org-root": "Executive",
    "org-sales": "Sales",
    "org-sales-emea": "Sales",
    "org-sales-amer": "Sales",
    "org-sales-apac": "Sales",
    "org-hr": "Human Resources",
    "org-finance": "Finance",
    "org-finance-ap": "Finance",
    "org-engineering": "Engineering",
    "org-engineering-platform": "Engineering",
}
_DEFAULT_TITLES: dict[str, str] = {
    "admin": "Chief Operating Officer",
    "sales-manager": "Sales Manager",
    "sales-rep": "Account Executive",
    "hr": "HR Business Partner",
    "viewer": "Software Engineer",
    "finance-clerk": "Accounts Clerk",
}
_FIRST_NAMES: tuple[str, ...] = (
    "Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
    "Kara", "Luis", "Mei", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara",
    "Umar", "Vera", "Wen", "Xavi", "Yara",
)  # fmt: skip
_LAST_NAMES: tuple[str, ...] = (
    "Abbott", "Brandt", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hoffmann",
    "Ivanova", "Jensen", "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov",
    "Quist", "Rossi", "Schmidt", "Tanaka", "Urbano", "Vargas", "Weber", "Xu", "Yilmaz",
)  # fmt: skip


@dataclass(frozen=True)
class TenantStyle:
    """What makes one tenant's values differ from another's (same ids throughout)."""

    tenant_id: str
    name: str
    domain: str
    users: int
    cost_factor: Decimal
    cost_offset: Decimal
    rotation_offset: int
    admin_user: int
    inactive_users: frozenset[int]
    phone_prefix: str
    config_base: int
    role_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    flags: dict[str, tuple[bool, str]] = field(default_factory=dict)
    org_names: dict[str, str] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    operation_codes: Sequence[str] = OPERATION_CODES


DEMO_STYLES: tuple[TenantStyle, ...] = (
    TenantStyle(
        tenant_id="acme",
        name="Acme Corp",
        domain="acme.example",
        users=50,
        cost_factor=Decimal(1),
        cost_offset=Decimal(0),
        rotation_offset=0,
        admin_user=1,
        inactive_users=frozenset({7, 19, 33}),
        phone_prefix="+1-555-01",
        config_base=100,
        flags={
            "crm.ai-summaries": (True, "model=small"),
            "crm.bulk-export": (False, ""),
            "hrms.self-service": (True, ""),
            "finance.multi-currency": (False, "USD"),
        },
    ),
    TenantStyle(
        tenant_id="globex",
        name="Globex Corporation",
        domain="globex.example",
        users=50,
        cost_factor=Decimal(2),
        cost_offset=Decimal("0.05"),
        rotation_offset=3,
        admin_user=2,
        inactive_users=frozenset({1, 3, 12, 41, 48}),
        phone_prefix="+44-20-7946-",
        config_base=700,
        role_overrides={
            "sales-manager": ("crm.*", "finance.reports.export"),
            "sales-rep": ("crm.leads.read", "crm.leads.create", "crm.contacts.*", "crm.deals.*"),
            "hr": ("hrms.*", "crm.contacts.read"),
            "viewer": ("crm.leads.read", "crm.contacts.read"),
            "finance-clerk": ("finance.*",),
        },
        flags={
            "crm.ai-summaries": (False, ""),
            "crm.bulk-export": (True, "limit=500"),
            "hrms.self-service": (False, ""),
            "finance.multi-currency": (True, "EUR,GBP,USD"),
        },
        org_names={
            "org-sales": "Global Sales",
            "org-sales-emea": "EMEA Sales",
            "org-hr": "People Operations",
            "org-engineering": "Research & Development",
        },
        titles={"sales-rep": "Sales Associate", "viewer": "Analyst"},
    ),
    TenantStyle(
        tenant_id="initech",
        name="Initech",
        domain="initech.example",
        users=10,
        cost_factor=Decimal("1.5"),
        cost_offset=Decimal(0),
        rotation_offset=5,
        admin_user=3,
        inactive_users=frozenset({5}),
        phone_prefix="+1-512-555-",
        config_base=900,
        role_overrides={
            "sales-rep": ("crm.leads.*",),
            "viewer": ("crm.leads.read", "hrms.employees.read"),
        },
        flags={
            "crm.ai-summaries": (True, "model=large"),
            "crm.bulk-export": (True, ""),
            "hrms.self-service": (True, "pto-only"),
            "finance.multi-currency": (False, ""),
        },
        org_names={"org-engineering-platform": "TPS Reports"},
        titles={"viewer": "Software Engineer II"},
    ),
)


def demo_tenants() -> list[TenantSeed]:
    """The demo tenants: acme and globex (50 users each) and a small initech (10 users)."""
    return [build_tenant(style) for style in DEMO_STYLES]


def scaled_tenants(tenants: int, users: int, operations: int) -> Iterator[TenantSeed]:
    """Big deterministic tenants for benchmarks: `tenant-0001`... with `user-1`... each.

    Yields one tenant at a time so that loading N x M rows never holds them all in memory.
    The first 20 operation codes are the demo ones; more are `bench.op00021.run`...
    """
    if tenants < 1 or users < 1 or operations < 1:
        raise ValueError("tenants, users and operations must each be at least 1")
    codes = list(OPERATION_CODES[:operations])
    codes += [f"bench.op{j:05d}.run" for j in range(len(codes) + 1, operations + 1)]
    for t in range(1, tenants + 1):
        style = TenantStyle(
            tenant_id=f"tenant-{t:04d}",
            name=f"Tenant {t}",
            domain=f"tenant-{t:04d}.example",
            users=users,
            # The offset alone (t cents) keeps any two tenants' costs apart after rounding.
            cost_factor=Decimal(100 + t) / 100,
            cost_offset=Decimal(t) / 100,
            rotation_offset=t,
            admin_user=1 + (t % users),
            inactive_users=frozenset(range(t % 17 + 1, users + 1, 17)),
            phone_prefix=f"+1-{200 + t % 800:03d}-",
            config_base=t * 100_000,
            flags={key: ((t + k) % 2 == 0, f"v{t}") for k, key in enumerate(FLAG_KEYS)},
            operation_codes=codes,
        )
        yield build_tenant(style)


def build_tenant(style: TenantStyle) -> TenantSeed:
    """All rows of one tenant, from its style."""
    users = [_user_status(style, i) for i in range(1, style.users + 1)]
    return TenantSeed(
        tenant_id=style.tenant_id,
        name=style.name,
        credit_costs=[_credit_cost(style, j, code) for j, code in enumerate(style.operation_codes)],
        roles=[RoleRow(role, style.role_overrides.get(role, perms)) for role, perms in BASE_ROLES.items()],
        users=users,
        flags=[FlagRow(key, *style.flags.get(key, (False, ""))) for key in FLAG_KEYS],
        profiles=[_profile(style, i, status.roles[0]) for i, status in enumerate(users, start=1)],
        org_units=[_org_unit(style, unit, parent) for unit, parent in ORG_TREE],
    )


def _credit_cost(style: TenantStyle, index: int, code: str) -> CreditCostRow:
    if index < len(BASE_COSTS) and BASE_COSTS[index][0] == code:
        base = Decimal(BASE_COSTS[index][1])
    else:  # synthetic benchmark codes: 0.01 .. 10.00
        base = Decimal(index * 37 % 1000 + 1) / 100
    # Quantize to cents so derived costs stay short, exact decimal text.
    cost = (base * style.cost_factor + style.cost_offset).quantize(Decimal("0.01"))
    return CreditCostRow(code, canonical_decimal(cost), f"cfg-{style.config_base + index + 1}")


def _roles_of(style: TenantStyle, i: int) -> tuple[str, ...]:
    if i == style.admin_user:
        return ("admin",)
    turn = i + style.rotation_offset
    role = _ROLE_ROTATION[turn % len(_ROLE_ROTATION)]
    # Every ninth user (counting from the tenant's offset) holds a second role.
    if turn % 9 == 0 and role != "viewer":
        return (role, "viewer")
    return (role,)


def _user_status(style: TenantStyle, i: int) -> UserStatusRow:
    return UserStatusRow(f"user-{i}", i not in style.inactive_users, _roles_of(style, i))


def _profile(style: TenantStyle, i: int, role: str) -> ProfileRow:
    shift = style.rotation_offset
    first = _FIRST_NAMES[(i * 7 + shift) % len(_FIRST_NAMES)]
    last = _LAST_NAMES[(i * 11 + shift * 3) % len(_LAST_NAMES)]
    unit = _UNIT_OF_ROLE.get(role) or _SALES_UNITS[(i + shift) % len(_SALES_UNITS)]
    return ProfileRow(
        user_id=f"user-{i}",
        display_name=f"{first} {last}",
        email=f"{first.lower()}.{last.lower()}{i}@{style.domain}",
        title=style.titles.get(role, _DEFAULT_TITLES[role]),
        department=_DEPARTMENT_OF_UNIT[unit],
        org_unit_id=unit,
        phone=f"{style.phone_prefix}{i:04d}",
    )


def _org_unit(style: TenantStyle, unit: str, parent: str | None) -> OrgUnitRow:
    name = style.org_names.get(unit) or (style.name if unit == "org-root" else _DEFAULT_ORG_NAMES[unit])
    # Managers differ per tenant; the root's manager is the tenant's admin.
    index = ORG_UNIT_IDS.index(unit)
    manager = style.admin_user if parent is None else 1 + (index * 5 + style.rotation_offset) % style.users
    return OrgUnitRow(unit, name, parent, f"user-{manager}")
