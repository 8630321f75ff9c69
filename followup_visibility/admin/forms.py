"""The SLA policy form: the scope, and the next version's durations and publishing choice."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _

from followup_visibility import policies
from followup_visibility.choices import Signal
from followup_visibility.models import SlaPolicy, SlaPolicyVersion
from followup_visibility.models.policy import DURATION_FIELDS, ZERO_ALLOWED

APPLY_NEW, APPLY_OPEN = "new", "open"
#: What the next version holds; a save that changes none of them publishes nothing.
VERSION_FIELDS = (*DURATION_FIELDS.values(), "stage_limits", "retired")


def format_duration(value: timedelta) -> str:
    """``40:00:00`` rather than ``1 day, 16:00:00``: a business day is not 24 hours."""
    seconds = int(value.total_seconds())
    sign = "-" if seconds < 0 else ""
    hours, rest = divmod(abs(seconds), 3600)
    return f"{sign}{hours}:{rest // 60:02d}:{rest % 60:02d}"


class BusinessDurationField(forms.DurationField):
    """A duration entered as Django parses them, shown in hours (see ``format_duration``)."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, timedelta):
            return format_duration(value)
        return super().prepare_value(value)


def _version_field(name: str) -> models.Field[Any, Any]:
    return cast("models.Field[Any, Any]", SlaPolicyVersion._meta.get_field(name))


def version_field_label(name: str) -> str:
    return str(capfirst(_version_field(name).verbose_name))


def _duration_field(signal: str, name: str) -> BusinessDurationField:
    label = version_field_label(name)
    help_text = _("Business time until “%(signal)s” fires.") % {"signal": Signal(signal).label}
    if name in ZERO_ALLOWED:
        help_text += " " + _("0:00:00: due the moment the date passes.")
    return BusinessDurationField(label=label, required=False, help_text=help_text)


class SlaPolicyForm(forms.ModelForm):
    """Edits the scope (when adding) and the *next* version, prefilled from the newest one.

    The duration fields are added per instance from ``DURATION_FIELDS``; the admin lists the
    model fields it passes to the form factory itself.
    """

    stage_limits = forms.JSONField(
        label=_("Stage limits"),
        required=False,
        initial=dict,
        help_text=_(
            'Business seconds an opportunity may stay in a stage, e.g. {"proposal": 144000} '
            "(40 hours)."
        ),
    )
    apply_to = forms.ChoiceField(
        label=_("Apply to"),
        choices=[
            (APPLY_NEW, _("New opportunities only (open ones keep their deadlines)")),
            (APPLY_OPEN, _("Also open opportunities (their deadlines are recomputed)")),
        ],
        widget=forms.RadioSelect,
        help_text=_(
            "Open opportunities keep the version they were measured by unless you choose "
            "“also open”. A new company default always applies to open ones too."
        ),
    )
    comment = forms.CharField(
        label=_("Comment"),
        max_length=255,
        required=False,
        help_text=_("Why this change; shown in the version history."),
    )
    retired = forms.BooleanField(
        label=_("Retired"),
        required=False,
        help_text=_version_field("retired").help_text,
    )

    class Meta:
        model = SlaPolicy
        fields = ["name", "team", "segment"]
        help_texts = {
            "team": _("Leave team and segment empty only to create the company default."),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for signal, name in DURATION_FIELDS.items():
            self.fields[name] = _duration_field(signal, name)
        #: The "Preview" button: validate and show the what-if, save nothing.
        self.previewing = "_preview" in self.data
        if self.previewing:
            self.fields["apply_to"].required = False
        self.latest = None
        if self.instance.pk is not None:
            self.latest = self.instance.versions.order_by("-number").first()
            for name, value in policies.current_values(self.instance).items():
                self.initial.setdefault(name, value)
            self.initial.setdefault("retired", bool(self.latest and self.latest.retired))
        if self.instance.pk is None or self.instance.is_default:
            del self.fields["retired"]

    def is_valid(self) -> bool:
        # The admin saves only a valid form; a preview re-renders it like an invalid one.
        return super().is_valid() and not self.previewing

    def is_default_scope(self) -> bool:
        if self.instance.pk is not None:
            return bool(self.instance.is_default)
        return self.cleaned_data.get("team") is None and self.cleaned_data.get("segment") is None

    def version_values(self) -> dict[str, Any]:
        """The next version's durations and stage limits, as ``policies`` functions take them."""
        values = {name: self.cleaned_data.get(name) for name in DURATION_FIELDS.values()}
        values["stage_limits"] = self.cleaned_data.get("stage_limits") or {}
        return values

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.has_error("team") or self.has_error("segment"):
            return cleaned
        is_default = self.is_default_scope()
        try:
            policies.validate_values(
                self.version_values(),
                is_default=is_default,
                retired=bool(cleaned.get("retired")),
            )
        except ValidationError as exc:
            for name, errors in exc.error_dict.items():
                if not self.has_error(name):  # a value that did not parse says so already
                    self.add_error(name if name in self.fields else None, errors)
        if self.instance.pk is None:
            self._check_scope_is_free(is_default)
        return cleaned

    def _check_scope_is_free(self, is_default: bool) -> None:
        team, segment = self.cleaned_data.get("team"), self.cleaned_data.get("segment")
        taken = SlaPolicy.objects.filter(team=team, segment=segment, is_default=is_default).first()
        if taken is not None:
            # On the scope's field, which also spares the constraint's generic message.
            field = "segment" if segment is not None else "team" if team is not None else None
            self.add_error(
                field,
                ValidationError(
                    _("“%(name)s” already covers this scope: publish a new version of it."),
                    params={"name": taken.name},
                    code="scope_taken",
                ),
            )

    def publishes(self) -> bool:
        """Whether saving adds a version: its values changed, or they now reach open ones."""
        if self.latest is None or any(name in self.changed_data for name in VERSION_FIELDS):
            return True
        return self.cleaned_data.get("apply_to") == APPLY_OPEN and not self.latest.applies_to_open
