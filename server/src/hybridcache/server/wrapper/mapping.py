"""How to call a Wrapper whose API is not ours: a mapping file (HYBRIDCACHE_WRAPPER_MAP).

Per kind it says how to fetch one entity (a URL template with `{key}`) and how to list a
tenant's entities (a URL template, a paging style: none, cursor or offset), where the
fields sit in the JSON answers, and the Wrapper's "not found" convention. The built-in
`DEFAULT_MAP` is hybridcache's own contract (docs/wrapper-api.yaml), so without a file
nothing changes. docs/WRAPPER.md is the reference; docs/examples/ holds both mappings.

Field paths are plain dotted paths (`meta.version`), not JMESPath: every Wrapper shape we
have met needs only member access, a dotted path is checked at start in one line, and it
adds no dependency. A mapped answer is rewritten into the contract's shape and parsed by
`codec`, so there is one parser whatever the Wrapper.

URL templates keep `urls.py`'s guarantee: a placeholder must be a whole path segment
and is filled with `urls.segment` (percent-encoded, never a dot segment); literal
segments are checked here, and the built path goes through `urls.resolve`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.policy import SNAPSHOT_KINDS
from hybridcache.server.wrapper import urls

_STRICT = ConfigDict(extra="forbid", frozen=True)
_LITERAL_SEGMENT = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@-]+$")
_FIELD_PATH = re.compile(r"^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # a query parameter or header name
FieldPath = Annotated[StrictStr, Field(pattern=_FIELD_PATH.pattern)]
ParamName = Annotated[StrictStr, Field(pattern=_NAME.pattern)]


class TenantIn(StrEnum):
    PATH = "path"  # `{tenant}` is a segment of every URL template
    QUERY = "query"  # ?<name>=<tenant>
    HEADER = "header"  # <name>: <tenant>


class TenantPlacement(BaseModel):
    model_config = _STRICT
    in_: TenantIn = Field(TenantIn.PATH, alias="in")
    name: ParamName | None = None  # the query parameter or header (needed unless in: path)


class Paging(BaseModel):
    """`none`: one answer holds every item. `cursor`: each page names the next
    (`next`: its path in the answer; absent, null or "" on the last). `offset`: pages of
    `limit` items from `offset`, until a short page (or `total`, when given, is reached)."""

    model_config = _STRICT
    style: Literal["none", "cursor", "offset"] = "none"
    limit: Annotated[StrictInt, Field(ge=1, le=10_000)] = 500
    limit_param: ParamName | None = "limit"  # null: the Wrapper picks the page size
    cursor_param: ParamName = "cursor"
    next: FieldPath = "nextCursor"
    offset_param: ParamName = "offset"
    total: FieldPath | None = None
    max_pages: Annotated[StrictInt, Field(ge=1)] = 10_000  # a Wrapper that never ends is an error


class ListEndpoint(BaseModel):
    model_config = _STRICT
    url: StrictStr
    items: FieldPath = "items"  # where the list of entities is in each page
    revision: FieldPath | None = "revision"  # the tenant's revision (first page); null: none (0)
    paging: Paging = Paging()


class FetchEndpoint(BaseModel):
    model_config = _STRICT
    url: StrictStr
    item: FieldPath | None = None  # where the entity is in the answer; null: the answer itself


class KindMap(BaseModel):
    model_config = _STRICT
    fetch: FetchEndpoint
    list: ListEndpoint | None = None  # null: no list endpoint (the kind cannot be replicated)
    # contract field name -> its dotted path in the Wrapper's entity; unnamed fields are
    # read under their contract names (docs/wrapper-api.yaml).
    fields: dict[StrictStr, FieldPath] = {}


class NotFoundConvention(BaseModel):
    """A 404 is "not found"; `tenant_code` at `code` in its body means the tenant is unknown."""

    model_config = _STRICT
    code: FieldPath = "error"
    tenant_code: StrictStr = "tenant_not_found"


class WrapperMap(BaseModel):
    model_config = _STRICT
    tenant: TenantPlacement = TenantPlacement()
    not_found: NotFoundConvention = NotFoundConvention()
    kinds: dict[Kind, KindMap]

    @field_validator("kinds")
    @classmethod
    def _templates(cls, kinds: dict[Kind, KindMap]) -> dict[Kind, KindMap]:
        for kind, entry in kinds.items():
            _check_template(entry.fetch.url, f"{kind}: fetch.url", key=True)
            if entry.list is not None:
                _check_template(entry.list.url, f"{kind}: list.url", key=False)
            for name in entry.fields:
                if name not in _CONTRACT_FIELDS[kind]:
                    known = ", ".join(sorted(_CONTRACT_FIELDS[kind]))
                    raise ValueError(f"{kind}: fields: {name!r} is no {kind} field (one of {known})")
        return kinds

    # --- requests

    def entry(self, kind: Kind) -> KindMap | None:
        return self.kinds.get(kind)

    def fetch_request(self, tenant_id: str, kind: KindMap, key: str) -> tuple[str, dict[str, str]]:
        """(path with query, extra headers) of one entity's fetch."""
        return self._request(kind.fetch.url, tenant_id, key, {})

    def list_request(
        self, tenant_id: str, endpoint: ListEndpoint, cursor: str | None, offset: int
    ) -> tuple[str, dict[str, str]]:
        """(path with query, extra headers) of one page of a list."""
        paging = endpoint.paging
        params: dict[str, str] = {}
        if paging.style != "none" and paging.limit_param:
            params[paging.limit_param] = str(paging.limit)
        if paging.style == "cursor" and cursor:
            params[paging.cursor_param] = cursor
        if paging.style == "offset":
            params[paging.offset_param] = str(offset)
        return self._request(endpoint.url, tenant_id, None, params)

    def _request(
        self, template: str, tenant_id: str, key: str | None, params: dict[str, str]
    ) -> tuple[str, dict[str, str]]:
        headers: dict[str, str] = {}
        path = template.replace("{tenant}", urls.segment(tenant_id))
        if key is not None:
            path = path.replace("{key}", urls.segment(key))
        urls.segment(tenant_id)  # an unsafe tenant is refused wherever it goes
        if self.tenant.in_ is TenantIn.QUERY:
            assert self.tenant.name is not None
            params = {self.tenant.name: tenant_id, **params}
        elif self.tenant.in_ is TenantIn.HEADER:
            assert self.tenant.name is not None
            headers[self.tenant.name] = tenant_id
        if params:
            path += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())
        return path, headers

    # --- answers

    def tenant_unknown(self, body: Any) -> bool:
        """Whether a 404's body says the tenant (not the entity) is unknown."""
        return bool(dig(body, self.not_found.code) == self.not_found.tenant_code)


def dig(body: Any, path: str) -> Any:
    """The value at a dotted path, or None when any step is missing."""
    for step in path.split("."):
        if not isinstance(body, Mapping) or step not in body:
            return None
        body = body[step]
    return body


def next_page(paging: Paging, body: Any, page_items: int, loaded: int) -> tuple[bool, str | None]:
    """(whether another page follows, its cursor) after a page of `page_items` items, with
    `loaded` distinct items so far. ValueError when the answer's cursor is no string."""
    if paging.style == "none" or page_items == 0:
        return False, None
    if paging.style == "cursor":
        cursor = dig(body, paging.next)
        if cursor is None or cursor == "":
            return False, None
        if isinstance(cursor, bool) or not isinstance(cursor, str | int):
            raise ValueError(f"the next cursor {paging.next!r} must be a string")
        return True, str(cursor)
    total = dig(body, paging.total) if paging.total else None
    if page_items < paging.limit or (isinstance(total, int) and loaded >= total):
        return False, None
    return True, None


def to_contract(kind: KindMap, entity: Any) -> Any:
    """A Wrapper entity in the contract's shape (fields renamed), for `codec.parse_item`."""
    if not kind.fields or not isinstance(entity, Mapping):
        return entity
    shaped = dict(entity)
    for name, path in kind.fields.items():
        value = dig(entity, path)
        if value is None:
            shaped.pop(name, None)  # absent: the contract's default, or codec names it
        else:
            shaped[name] = value
    return shaped


def _check_template(template: str, where: str, *, key: bool) -> None:
    if not template.startswith("/") or "?" in template or "#" in template:
        raise ValueError(f"{where}: must be a path starting with '/' (no query string; paging adds one)")
    segments = template[1:].split("/")
    for segment in segments:
        if segment in ("{tenant}", "{key}"):
            continue
        if "{" in segment or "}" in segment:
            raise ValueError(f"{where}: {{tenant}} and {{key}} must each be a whole path segment")
        if not _LITERAL_SEGMENT.match(segment) or not segment.strip("."):
            raise ValueError(f"{where}: segment {segment!r} is empty, a dot segment or not URL-safe")
    if segments.count("{key}") != (1 if key else 0):
        raise ValueError(f"{where}: needs {{key}} exactly once" if key else f"{where}: may not hold {{key}}")
    if segments.count("{tenant}") > 1:
        raise ValueError(f"{where}: {{tenant}} at most once")


def _tenant_in_urls(mapping: WrapperMap) -> None:
    placed_in_path = mapping.tenant.in_ is TenantIn.PATH
    if not placed_in_path and mapping.tenant.name is None:
        raise ValueError(f"tenant: name: needed with in: {mapping.tenant.in_}")
    for kind, entry in mapping.kinds.items():
        templates = [("fetch.url", entry.fetch.url)] + ([("list.url", entry.list.url)] if entry.list else [])
        for where, url in templates:
            if ("{tenant}" in url) != placed_in_path:
                wanted = (
                    "needs {tenant}"
                    if placed_in_path
                    else f"may not hold {{tenant}} (in: {mapping.tenant.in_})"
                )
                raise ValueError(f"{kind}: {where}: {wanted}")


class MappingError(ValueError):
    """A mapping file that cannot be used; the message is one line naming file, kind and field."""


def parse_map(data: Any, source: str) -> WrapperMap:
    try:
        mapping = WrapperMap.model_validate(data)
        _tenant_in_urls(mapping)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(part) for part in error["loc"]]
        if loc[:1] == ["kinds"] and (len(loc) > 1 or error["type"] == "value_error"):
            # `<kind>: <field.path>` (the template check names the kind itself)
            rest = ["kind" if part == "[key]" else part for part in loc[2:]]
            loc = loc[1:2] + ([".".join(rest)] if rest else [])
        where = ": ".join(loc)
        message = str(error["msg"]).removeprefix("Value error, ")
        raise MappingError(f"{source}: {where + ': ' if where else ''}{message}".replace("\n", " ")) from None
    except ValueError as exc:
        raise MappingError(f"{source}: {exc}") from None
    return mapping


def load_map(path: str) -> WrapperMap:
    """The mapping in a YAML (or JSON) file; MappingError names what is wrong."""
    import yaml  # noqa: PLC0415 (only when a mapping file is configured)

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise MappingError(f"{path}: not YAML{at}") from None
    return parse_map(data, path)


# The contract's field names per kind (docs/wrapper-api.yaml): what `fields` may rename.
_CONTRACT_FIELDS: dict[Kind, frozenset[str]] = {
    Kind.CREDIT_COSTS: frozenset({"operationCode", "cost", "version"}),
    Kind.ROLE_PERMISSIONS: frozenset({"roleId", "permissions", "version"}),
    Kind.USER_STATUS: frozenset({"userId", "active", "roles", "version"}),
    Kind.FEATURE_FLAGS: frozenset({"flagKey", "enabled", "value", "version"}),
    Kind.USER_PROFILES: frozenset(
        {"userId", "displayName", "email", "title", "department", "orgUnitId", "phone", "version"}
    ),
    Kind.ORG_UNITS: frozenset(
        {"orgUnitId", "name", "parentId", "managerUserId", "ancestors", "children", "version"}
    ),
}

_ITEM_PATHS: dict[Kind, str] = {  # today's contract, docs/wrapper-api.yaml
    Kind.CREDIT_COSTS: "credit-costs/{key}",
    Kind.ROLE_PERMISSIONS: "roles/{key}",
    Kind.USER_STATUS: "users/{key}/status",
    Kind.FEATURE_FLAGS: "feature-flags/{key}",
    Kind.USER_PROFILES: "users/{key}/profile",
    Kind.ORG_UNITS: "org-units/{key}",
}

DEFAULT_MAP = WrapperMap(
    kinds={
        kind: KindMap(
            fetch=FetchEndpoint(url=f"/api/tenants/{{tenant}}/{path}"),
            list=ListEndpoint(url=f"/api/tenants/{{tenant}}/snapshots/{kind}")
            if kind in SNAPSHOT_KINDS
            else None,
        )
        for kind, path in _ITEM_PATHS.items()
    }
)
