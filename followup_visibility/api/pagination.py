"""Keyset cursor pages: the whole ordering key in the cursor, and the moment the list ranks at.

DRF's cursor keeps the first ordering field and an offset among rows that tie on it: with many
ties the offset grows with the list, and its ``previous`` link can land on the wrong rows. A
list ranked by values that depend on ``now`` (a score, a lateness, a severity) also drifts
between requests, since each one ranks at its own moment. :class:`Keyset` carries every field
of the ordering (which ends with the key) and, when asked, the first page's moment: each page
is one query at any depth, and a later page ranks as the first one did.

The cursor is ``base64(urlencode(...))`` of ``r=1`` (backwards), ``n=<moment>`` and one ``p``
per ordering field; each value is written and read by the type of its field (a datetime with
its offset, a float exactly, an integer, a decimal). Anything else answers 400 naming
``cursor``. Every ordering field must be non-null.
"""

from __future__ import annotations

import binascii
import functools
import math
from base64 import b64decode, b64encode
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib import parse

from django.db import models
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.utils.urls import remove_query_param, replace_query_param

from followup_visibility.api import base
from followup_visibility.api.fields import MAX_KEY

#: A clock a little ahead on another server of the same site is not a forged moment.
SKEW = timedelta(minutes=1)


@dataclass(frozen=True)
class Cursor:
    """A cursor as read from the query string, before its position is typed."""

    reverse: bool = False
    moment: datetime | None = None
    #: The ordering fields' values as text, in the ordering's order; empty for an end.
    position: tuple[str, ...] = ()


class Keyset(base.Page):
    """Cursor pages over every field of the ordering (``-`` for descending; the last must be
    ``pk`` or ``-pk``, so the order is total).

    ``pin_moment``: the cursor carries the first page's moment (``now``), and a request with a
    cursor ranks at it; such a cursor lasts ``max_age``, then answers 400. The view reads the
    moment with :meth:`moment` before it builds its queryset.
    """

    pin_moment = False
    max_age = timedelta(days=1)
    _cursor: Cursor | None = None
    _moment: datetime | None = None

    def get_ordering(self, request: Request, queryset: Any, view: Any) -> tuple[str, ...]:
        return (self.ordering,) if isinstance(self.ordering, str) else tuple(self.ordering)

    # The cursor --------------------------------------------------------------------------

    def read_cursor(self, request: Request) -> Cursor:
        """The request's cursor, read once (an empty one without ``cursor``)."""
        if self._cursor is None:
            self._cursor = _read(request.query_params.get(self.cursor_query_param))
        return self._cursor

    def moment(self, request: Request, now: datetime) -> datetime:
        """The moment the request ranks at: its cursor's, or ``now`` for a first page."""
        if self._moment is not None:
            return self._moment
        cursor = self.read_cursor(request)
        if not self.pin_moment or request.query_params.get(self.cursor_query_param) is None:
            pinned = now
        elif cursor.moment is None or cursor.moment > now + SKEW:
            raise base.invalid_cursor()
        elif cursor.moment < now - self.max_age:
            raise exceptions.ValidationError(
                {
                    self.cursor_query_param: [
                        _("This cursor has expired: start again from the first page.")
                    ]
                }
            )
        else:
            pinned = cursor.moment
        self._moment = pinned
        return pinned

    # The page ----------------------------------------------------------------------------

    def paginate_queryset(
        self, queryset: QuerySet[Any], request: Request, view: Any = None
    ) -> list[Any]:
        self.request = request
        self.page_size = size = self.get_page_size(request)
        self.base_url = self.url = request.build_absolute_uri()
        self.key_fields = ordering = self.get_ordering(request, queryset, view)
        assert ordering[-1].lstrip("-") == "pk", f"{ordering} does not end with the key"
        cursor = self.read_cursor(request)
        if self.pin_moment:
            self.moment(request, getattr(view, "now", None) or timezone.now())
        elif cursor.moment is not None:
            raise base.invalid_cursor()
        reverse = cursor.reverse
        parts = self.parts(queryset)
        position = _typed(parts[0], ordering, cursor.position) if cursor.position else None
        order = [_flip(name) for name in ordering] if reverse else list(ordering)
        rows: list[Any] = []
        for part in parts:
            if position is not None:
                part = part.filter(_beyond(ordering, position, forward=not reverse))
            rows += part.order_by(*order)[: size + 1]
        if len(parts) > 1:
            rows = sorted(rows, key=functools.cmp_to_key(_comparison(order)))[: size + 1]
        more = len(rows) > size
        page = rows[:size]
        if reverse:
            page.reverse()
            # A backward page from the end has nothing after it.
            self.has_next, self.has_previous = position is not None, more
        else:
            self.has_next, self.has_previous = more, position is not None
        self.page = page
        self.display_page_controls = self.has_next or self.has_previous
        return page

    def parts(self, queryset: QuerySet[Any]) -> list[QuerySet[Any]]:
        """The querysets a page is cut from: each is ordered and cut, then the rows are merged
        in the same order. One by default; a list whose order key is read two ways (stored
        where it holds, derived elsewhere) gives one for each, every one with the same
        annotations."""
        return [queryset]

    def get_next_link(self) -> str | None:
        if not self.has_next:
            return None
        # No row before the cursor's: the first page starts with its row.
        return self._link(False, self._key(self.page[-1]) if self.page else None)

    def get_previous_link(self) -> str | None:
        if not self.has_previous:
            return None
        # No row after the cursor's: the last page ends with its row.
        return self._link(True, self._key(self.page[0]) if self.page else None)

    def _key(self, row: Any) -> tuple[Any, ...]:
        return tuple(getattr(row, name.lstrip("-")) for name in self.key_fields)

    def _link(self, reverse: bool, position: tuple[Any, ...] | None) -> str:
        tokens: list[tuple[str, str]] = [("r", "1")] if reverse else []
        if self.pin_moment and self._moment is not None:
            tokens.append(("n", self._moment.astimezone(UTC).isoformat()))
        tokens += [("p", _write(value)) for value in position or ()]
        if not tokens:
            return remove_query_param(self.url, self.cursor_query_param)
        encoded = b64encode(parse.urlencode(tokens).encode("ascii")).decode("ascii")
        return replace_query_param(self.url, self.cursor_query_param, encoded)


# Reading and writing ---------------------------------------------------------------------

_TOKENS = {"r", "n", "p"}


def _read(encoded: str | None) -> Cursor:
    if encoded is None:
        return Cursor()
    try:
        text = b64decode(encoded.encode("ascii"), validate=True).decode("ascii")
        # Strict: a link we made always holds a token (the first page has no cursor).
        tokens = parse.parse_qs(text, keep_blank_values=True, strict_parsing=True)
        if not tokens or not set(tokens) <= _TOKENS:
            raise ValueError(text)
        if tokens.get("r", ["1"]) != ["1"] or len(tokens.get("n", [""])) != 1:
            raise ValueError(text)
        moment = _datetime(tokens["n"][0]) if "n" in tokens else None
        return Cursor("r" in tokens, moment, tuple(tokens.get("p", ())))
    except (ValueError, UnicodeError, binascii.Error, OverflowError) as exc:
        raise base.invalid_cursor() from exc


def _datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if timezone.is_naive(value):
        raise ValueError(text)
    return value.astimezone(UTC)


def _write(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float
    if isinstance(value, int | Decimal):
        return str(value)
    raise TypeError(f"a keyset cursor cannot hold {value!r}")


def _field(queryset: QuerySet[Any], name: str) -> Any:
    if name == "pk":
        return queryset.model._meta.pk
    annotation = queryset.query.annotations.get(name)
    if annotation is not None:
        return annotation.output_field
    return queryset.model._meta.get_field(name)


def _parse(field: Any, text: str) -> Any:
    if isinstance(field, models.DateTimeField):
        return _datetime(text)
    if isinstance(field, models.FloatField):
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(text)
        return number
    if isinstance(field, models.IntegerField):
        integer = int(text)
        if not -MAX_KEY <= integer <= MAX_KEY:
            raise ValueError(text)
        return integer
    if isinstance(field, models.DecimalField):
        decimal = Decimal(text)
        if not decimal.is_finite():
            raise ValueError(text)
        return decimal
    raise TypeError(f"a keyset cursor cannot order by {field!r}")


def _typed(queryset: QuerySet[Any], ordering: tuple[str, ...], raw: tuple[str, ...]) -> Any:
    if len(raw) != len(ordering):
        raise base.invalid_cursor()
    try:
        return tuple(
            _parse(_field(queryset, name.lstrip("-")), text)
            for name, text in zip(ordering, raw, strict=True)
        )
    except (ValueError, InvalidOperation, OverflowError) as exc:
        raise base.invalid_cursor() from exc


def _comparison(order: list[str]) -> Any:
    """A comparison of two rows by ``order`` (``-`` for descending), for merging parts."""
    fields = [(name.lstrip("-"), name.startswith("-")) for name in order]

    def compare(a: Any, b: Any) -> int:
        for field, descending in fields:
            x, y = getattr(a, field), getattr(b, field)
            if x != y:
                return (1 if x < y else -1) if descending else (-1 if x < y else 1)
        return 0

    return compare


def _flip(name: str) -> str:
    return name[1:] if name.startswith("-") else f"-{name}"


def _beyond(ordering: tuple[str, ...], position: tuple[Any, ...], *, forward: bool) -> Q:
    """Rows after ``position`` in ``ordering`` (before it, if not ``forward``), as
    ``a <= x AND (a < x OR (b <= y AND (b < y OR ...)))``: each field named twice at most,
    since a field may be a long expression (a score) that SQL computes at each mention."""
    condition: Q | None = None
    for name, value in reversed(list(zip(ordering, position, strict=True))):
        field = name.lstrip("-")
        lookup = "lt" if name.startswith("-") == forward else "gt"
        strictly = Q(**{f"{field}__{lookup}": value})
        if condition is None:
            condition = strictly
        else:
            condition = Q(**{f"{field}__{lookup}e": value}) & (strictly | condition)
    assert condition is not None
    return condition
