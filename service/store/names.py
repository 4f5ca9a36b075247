"""Model names: their aliases, the history of each alias's moves, and traffic splits. They
belong to the models' aggregate (``ModelRecords`` extends these): a version that an alias or
a split names is not deleted (409), and every change is one transaction, so a refused one
stores nothing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.errors import Conflict, InvalidInput, NotFound, clip, not_found
from service.store.session import Page, Records
from service.store.tables import (
    AliasMoveRow,
    ModelAliasRow,
    ModelRow,
    TrafficSplitRow,
    utcnow,
)

LATEST = "latest"
"""The built-in alias: a name's newest version. Never stored, never moved by hand."""

_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
ALIAS_WORDS = ("1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
               "(a number names a version)")


def next_version(s: Session, tenant: str, name: str) -> int:
    """The next version number of a model name, in the caller's transaction: on PostgreSQL
    one allocation at a time per name (an advisory lock held to the commit; on SQLite the
    caller's write lock does it, or its insert meets the unique version and tries again)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(select(func.pg_advisory_xact_lock(func.hashtext(
            f"fitserve-model:{tenant}:{name}"))))
    latest = s.scalar(select(func.max(ModelRow.version)).where(
        ModelRow.tenant == tenant, ModelRow.name == name))
    return (latest or 0) + 1


def check_alias(alias: str, field: str = "alias") -> None:
    """An alias a user may set: not ``latest`` (built in), not a number (a version)."""
    if alias == LATEST:
        raise InvalidInput("'latest' is a built-in alias (always the newest version); "
                           "choose another name", field=field)
    if not _ALIAS.match(alias):
        raise InvalidInput(f"alias {clip(alias, 80)!r} must be {ALIAS_WORDS}", field=field)


def parse_target(target: str, field: str) -> int | str:
    """A version number (``3``), ``latest`` or a settable alias."""
    if target.isascii() and target.isdigit():
        if int(target) < 1:
            raise InvalidInput(f"versions are numbers from 1, not {clip(target, 20)}",
                               field=field)
        return int(target)
    if target != LATEST:
        check_alias(target, field)
    return target


@dataclass(frozen=True)
class Route:
    """One target of a traffic split, resolved: its weight (percent) and model."""

    target: str
    weight: int
    model: ModelRow


@dataclass(frozen=True)
class NameView:
    versions: list[ModelRow]  # oldest first
    aliases: dict[str, int]  # latest first, then the set ones by name
    traffic: list[tuple[str, int]] | None


class NameRecords(Records):

    # ------------------------------------------------------------ resolving

    def _resolve_in(self, s: Session, tenant: str, name: str, target: str | int,
                    field: str) -> ModelRow:
        """The model a version, ``latest`` or an alias of a name points at now."""
        q = select(ModelRow).where(ModelRow.tenant == tenant, ModelRow.name == name)
        if target == LATEST:
            row = s.scalars(q.order_by(ModelRow.version.desc()).limit(1)).first()
            if row is None:
                raise not_found("model", name)
            return row
        if isinstance(target, str):
            version = s.scalar(select(ModelAliasRow.version).where(
                ModelAliasRow.tenant == tenant, ModelAliasRow.name == name,
                ModelAliasRow.alias == target))
            if version is None:
                if not self._has_versions(s, tenant, name):
                    raise not_found("model", name)
                raise NotFound(f"model {clip(name, 60)!r} has no alias {clip(target, 60)!r}",
                               field=field)
            target = version
        row = s.scalars(q.where(ModelRow.version == target)).first()
        if row is None:
            if not self._has_versions(s, tenant, name):
                raise not_found("model", name)
            raise NotFound(f"model {clip(name, 60)!r} has no version {target}", field=field)
        return row

    @staticmethod
    def _has_versions(s: Session, tenant: str, name: str) -> bool:
        return s.scalar(select(func.count()).select_from(ModelRow).where(
            ModelRow.tenant == tenant, ModelRow.name == name)) != 0

    def resolve_name(self, name: str, target: str, tenant: str = "default",
                     field: str = "model") -> ModelRow:
        """``name@target``: a version number, ``latest`` or an alias (404 naming ``field``
        when the name has no such alias or version; 422 when target is neither)."""
        parsed = parse_target(target, field)
        with self.session() as s:
            return self._resolve_in(s, tenant, name, parsed, field)

    def traffic_routes(self, name: str, tenant: str = "default") -> list[Route] | None:
        """A name's traffic split, each target resolved now; None when it has none."""
        with self.session() as s:
            split = s.scalar(select(TrafficSplitRow).where(
                TrafficSplitRow.tenant == tenant, TrafficSplitRow.name == name))
            if split is None:
                return None
            return [Route(t, w, self._resolve_in(s, tenant, name, parse_target(t, t), t))
                    for t, w in split.weights]

    # ------------------------------------------------------------ aliases

    def set_alias(self, name: str, alias: str, version: int, tenant: str,
                  key_id: str | None) -> tuple[ModelRow, int | None]:
        """Point an alias at a version (recording the move); returns the model and the
        version it pointed at before (None: the alias is new)."""
        check_alias(alias)
        for attempt in range(3):
            try:
                with self.write_session() as s:
                    model = self._resolve_in(s, tenant, name, version, "version")
                    current = s.scalars(select(ModelAliasRow).where(
                        ModelAliasRow.tenant == tenant, ModelAliasRow.name == name,
                        ModelAliasRow.alias == alias).with_for_update()).first()
                    previous = None if current is None else current.version
                    if previous == version:
                        return model, previous  # not a move: nothing to record
                    now = utcnow()
                    if current is None:
                        s.add(ModelAliasRow(tenant=tenant, name=name, alias=alias,
                                            version=version, updated_at=now))
                    else:
                        current.version, current.updated_at = version, now
                    s.add(AliasMoveRow(tenant=tenant, name=name, alias=alias,
                                       from_version=previous, to_version=version,
                                       key_id=key_id, moved_at=now))
                return model, previous
            except IntegrityError:  # the same new alias set twice at once: read it again
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def delete_alias(self, name: str, alias: str, tenant: str, key_id: str | None) -> int:
        """Remove an alias (recording it); returns the version it pointed at. An alias the
        name's traffic split routes to is refused (409): clear or change the split first."""
        check_alias(alias)
        with self.write_session() as s:
            current = s.scalars(select(ModelAliasRow).where(
                ModelAliasRow.tenant == tenant, ModelAliasRow.name == name,
                ModelAliasRow.alias == alias).with_for_update()).first()
            if current is None:
                if not self._has_versions(s, tenant, name):
                    raise not_found("model", name)
                raise NotFound(f"model {clip(name, 60)!r} has no alias {clip(alias, 60)!r}",
                               field="alias")
            split = self._split_in(s, tenant, name)
            if split is not None and alias in [t for t, _ in split.weights]:
                raise Conflict(f"the traffic split of {clip(name, 60)!r} routes to "
                               f"{alias!r}: change or clear it first", field="alias")
            s.delete(current)
            s.add(AliasMoveRow(tenant=tenant, name=name, alias=alias,
                               from_version=current.version, to_version=None, key_id=key_id,
                               moved_at=utcnow()))
            return current.version

    def name_view(self, name: str, tenant: str = "default") -> NameView:
        """A name's versions, aliases (``latest`` first) and traffic split."""
        with self.session() as s:
            versions = list(s.scalars(select(ModelRow).where(
                ModelRow.tenant == tenant, ModelRow.name == name).order_by(ModelRow.version)))
            if not versions:
                raise not_found("model", name)
            aliases = {LATEST: versions[-1].version or 0}
            aliases.update((a.alias, a.version) for a in s.scalars(
                select(ModelAliasRow).where(ModelAliasRow.tenant == tenant,
                                            ModelAliasRow.name == name)
                .order_by(ModelAliasRow.alias)))
            split = self._split_in(s, tenant, name)
        return NameView(versions, aliases,
                        None if split is None else [(t, int(w)) for t, w in split.weights])

    def alias_history(self, name: str, tenant: str, limit: int, cursor: str | None) -> Page:
        """Every move of the name's aliases, newest first (``cursor``: the last id seen)."""
        filters = [AliasMoveRow.tenant == tenant, AliasMoveRow.name == name]
        with self.session() as s:
            count = s.scalar(select(func.count()).select_from(AliasMoveRow).where(*filters))
            if not count and not self._has_versions(s, tenant, name):
                raise not_found("model", name)
            q = select(AliasMoveRow).where(*filters)
            if cursor:
                if not cursor.isdigit():
                    raise InvalidInput("cursor must be the next of a previous page",
                                       field="cursor")
                q = q.where(AliasMoveRow.id < int(cursor))
            rows = list(s.scalars(q.order_by(AliasMoveRow.id.desc()).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, count or 0, str(rows[-1].id) if more and rows else None)

    # ------------------------------------------------------------ traffic

    @staticmethod
    def _split_in(s: Session, tenant: str, name: str) -> TrafficSplitRow | None:
        return s.scalar(select(TrafficSplitRow).where(
            TrafficSplitRow.tenant == tenant, TrafficSplitRow.name == name))

    def set_traffic(self, name: str, weights: dict[str, Any], tenant: str) -> list[Route]:
        """Split predict-by-name over aliases or versions by whole percents summing to 100;
        each target must resolve now."""
        if not weights:
            raise InvalidInput('give each alias or version its percent: {"champion": 90, '
                               '"challenger": 10}')
        for target, weight in weights.items():
            parse_target(target, target)
            if not isinstance(weight, int) or isinstance(weight, bool) \
                    or not 0 <= weight <= 100:
                raise InvalidInput(f"{clip(target, 60)}: a weight is a whole percent from 0 "
                                   f"to 100, not {clip(repr(weight), 40)}", field=target)
        total = sum(weights.values())
        if total != 100:
            shown = ", ".join(f"{clip(t, 30)} {w}" for t, w in list(weights.items())[:10])
            raise InvalidInput(f"the weights sum to {total} ({shown}); they must sum to 100",
                               field=list(weights)[-1])
        with self.write_session() as s:
            routes = [Route(t, w, self._resolve_in(s, tenant, name, parse_target(t, t), t))
                      for t, w in weights.items()]
            split = self._split_in(s, tenant, name)
            pairs = [[t, w] for t, w in weights.items()]
            if split is None:
                s.add(TrafficSplitRow(tenant=tenant, name=name, weights=pairs,
                                      updated_at=utcnow()))
            else:
                split.weights, split.updated_at = pairs, utcnow()
        return routes

    def clear_traffic(self, name: str, tenant: str) -> None:
        with self.session() as s:
            gone = s.execute(delete(TrafficSplitRow).where(
                TrafficSplitRow.tenant == tenant, TrafficSplitRow.name == name)
                .returning(TrafficSplitRow.id)).first()
        if gone is None:
            raise NotFound(f"model {clip(name, 60)!r} has no traffic split")

    def _refuse_named_version(self, s: Session, row: ModelRow) -> None:
        """Before a model's deletion commits: a version an alias or the split names stays."""
        if row.name is None:
            return
        alias = s.scalar(select(ModelAliasRow.alias).where(
            ModelAliasRow.tenant == row.tenant, ModelAliasRow.name == row.name,
            ModelAliasRow.version == row.version).limit(1))
        if alias is not None:
            raise Conflict(f"alias {alias!r} of {row.name!r} points at version {row.version} "
                           f"({row.id}): move or delete it first")
        split = self._split_in(s, row.tenant, row.name)
        if split is not None and str(row.version) in [t for t, _ in split.weights]:
            raise Conflict(f"the traffic split of {row.name!r} routes to version "
                           f"{row.version} ({row.id}): change or clear it first")
