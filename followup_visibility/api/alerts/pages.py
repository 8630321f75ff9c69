"""The queue's pages: keyset cursors in severity order, one query at any depth."""

from __future__ import annotations

import binascii
from base64 import b64decode, b64encode
from datetime import datetime
from typing import Any
from urllib import parse

from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.utils.urls import remove_query_param, replace_query_param

from followup_visibility.api import base
from followup_visibility.api.fields import MAX_KEY

#: (rank, due_at, pk): the rank is the severity, 0 for an alert not yet due.
Position = tuple[int, datetime, int]
FORWARD = ("-fv_rank", "due_at", "pk")
BACKWARD = ("fv_rank", "-due_at", "-pk")


class BySeverity(base.Page):
    """Keyset pages: most severe first (not yet due last), then the earliest due, then the key.

    DRF's cursor keeps the first ordering field and an offset among equal values; severity
    has five values, so the offset would grow with the queue. The cursor here carries the
    whole key instead, and each page is one query whatever its depth.
    """

    def paginate_queryset(
        self, queryset: QuerySet[Any], request: Request, view: Any = None
    ) -> list[Any]:
        self.request = request
        self.page_size = size = self.get_page_size(request) or self.page_size
        self.base_url = url = request.build_absolute_uri()
        self.url = url
        reverse, position = self._decode(request)
        queryset = queryset.annotate(fv_rank=Coalesce(F("severity"), Value(0)))
        if position is not None:
            queryset = queryset.filter(_before(position) if reverse else _after(position))
        rows = list(queryset.order_by(*(BACKWARD if reverse else FORWARD))[: size + 1])
        more = len(rows) > size
        page = rows[:size]
        if reverse:
            page.reverse()
            self.has_next, self.has_previous = position is not None, more
        else:
            self.has_next, self.has_previous = more, position is not None
        self.page = page
        self.display_page_controls = self.has_next or self.has_previous
        return page

    def get_next_link(self) -> str | None:
        if not self.has_next:
            return None
        if not self.page:
            # Nothing before the cursor's row: the first page starts with it.
            return remove_query_param(self.url, self.cursor_query_param)
        return self._link(False, _key(self.page[-1]))

    def get_previous_link(self) -> str | None:
        if not self.has_previous:
            return None
        if not self.page:
            # Nothing after the cursor's row: the last page ends with it.
            return self._link(True, None)
        return self._link(True, _key(self.page[0]))

    def _link(self, reverse: bool, position: Position | None) -> str:
        tokens = {"r": "1"} if reverse else {}
        if position is not None:
            rank, due_at, pk = position
            tokens["p"] = f"{rank}|{due_at.isoformat()}|{pk}"
        encoded = b64encode(parse.urlencode(tokens).encode("ascii")).decode("ascii")
        return replace_query_param(self.url, self.cursor_query_param, encoded)

    def _decode(self, request: Request) -> tuple[bool, Position | None]:
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return False, None
        try:
            tokens = parse.parse_qs(b64decode(encoded.encode("ascii"), validate=True).decode())
            reverse = tokens.get("r", ["0"])[0] == "1"
            raw = tokens.get("p", [None])[0]
            if raw is None:
                return reverse, None
            raw_rank, raw_due, raw_pk = raw.split("|")
            rank, due, pk = (int(raw_rank), datetime.fromisoformat(raw_due), int(raw_pk))
            if timezone.is_naive(due) or rank not in range(5) or not 0 < pk <= MAX_KEY:
                raise ValueError(raw)
            return reverse, (rank, due, pk)
        except (ValueError, UnicodeError, binascii.Error, OverflowError) as exc:
            raise base.invalid_cursor() from exc


def _key(alert: Any) -> Position:
    return (alert.fv_rank, alert.due_at, alert.pk)


def _after(position: Position) -> Q:
    rank, due_at, pk = position
    return (
        Q(fv_rank__lt=rank)
        | Q(fv_rank=rank, due_at__gt=due_at)
        | Q(fv_rank=rank, due_at=due_at, pk__gt=pk)
    )


def _before(position: Position) -> Q:
    rank, due_at, pk = position
    return (
        Q(fv_rank__gt=rank)
        | Q(fv_rank=rank, due_at__lt=due_at)
        | Q(fv_rank=rank, due_at=due_at, pk__lt=pk)
    )
