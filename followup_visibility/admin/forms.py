"""Admin forms: the SLA policy form, and the intermediate pages of actions that ask for input."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from datetime import timedelta
from typing import Any, TypeVar, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.widgets import AdminSplitDateTime
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.functional import Promise
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _

from followup_visibility.choices import AlertSignal, SnoozeCondition
from followup_visibility.config import policies
from followup_visibility.engine.sla import validate_values
from followup_visibility.models import SlaPolicy, SlaPolicyVersion
from followup_visibility.models.policy import DURATION_FIELDS, ZERO_ALLOWED

T = TypeVar("T")
#: A message for ``ModelAdmin.message_user``: its level and text.
Message = tuple[int, str]

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
    help_text = _("Business time until “%(signal)s” fires.") % {"signal": AlertSignal(signal).label}
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
            validate_values(
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


# Intermediate action pages --------------------------------------------------------------------

#: The submit button of an intermediate page: its presence means "the form was filled in".
APPLY = "apply"
#: How many of the selected objects an intermediate page names before "and N more".
SHOWN_ON_PAGE = 20


class InputRefused(Exception):
    """The domain refused the form's input (not one object's state): undo the whole action."""

    def __init__(self, error: ValidationError) -> None:
        super().__init__(error)
        self.error = error


def call_each(
    items: Iterable[T], call: Callable[[T], object], fields: Collection[str] = ()
) -> tuple[list[T], list[tuple[T, ValidationError]]]:
    """Call ``call`` per item; return the items done and those refused, with the reason.

    Each call runs in its own savepoint, so a refused item leaves nothing behind. An error on
    one of the form's ``fields`` is about the input, the same for every item: it raises
    ``InputRefused`` so that the caller rolls back the items already done and shows the form.
    """
    done: list[T] = []
    refused: list[tuple[T, ValidationError]] = []
    for item in items:
        try:
            with transaction.atomic():
                call(item)
        except ValidationError as exc:
            if hasattr(exc, "error_dict") and set(exc.error_dict) & set(fields):
                raise InputRefused(exc) from exc
            refused.append((item, exc))
        else:
            done.append(item)
    return done, refused


def refusal_messages(
    refused: Iterable[tuple[Any, ValidationError]], describe: Callable[[Any], str] = str
) -> list[Message]:
    """One warning per refused object, naming it."""
    return [
        (messages.WARNING, f"{describe(item)}: {' '.join(exc.messages)}") for item, exc in refused
    ]


def action_page(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    form_class: type[forms.Form],
    title: str | Promise,
    submit: str | Promise,
    perform: Callable[[forms.Form], list[Message]],
    initial: dict[str, Any] | None = None,
    describe: Callable[[Any], str] = str,
) -> TemplateResponse | None:
    """An action that asks for input first: show the form, then ``perform`` it once valid.

    ``perform`` runs in one transaction and returns the messages to show; ``InputRefused``
    from it undoes everything and shows the form again with the domain's field errors.
    Returning None sends the admin back to the change list, as a plain action does.
    """
    form = form_class(request.POST if APPLY in request.POST else None, initial=initial)
    if form.is_bound and form.is_valid():
        try:
            with transaction.atomic():
                report = perform(form)
        except InputRefused as exc:
            for name, errors in exc.error.error_dict.items():
                form.add_error(name if name in form.fields else None, errors)
        else:
            for level, text in report:
                model_admin.message_user(request, text, level)
            return None
    objects = list(queryset.order_by("pk"))
    opts = model_admin.model._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "subtitle": None,
        "opts": opts,
        "form": form,
        "media": model_admin.media + form.media,
        "objects": objects,
        "shown": [describe(obj) for obj in objects[:SHOWN_ON_PAGE]],
        "more": max(len(objects) - SHOWN_ON_PAGE, 0),
        "action": request.POST.get("action", ""),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "apply": APPLY,
        "submit": submit,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/followup_visibility/action_form.html", context)


class _DateTimeField(forms.SplitDateTimeField):
    widget = AdminSplitDateTime


class DismissForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason"),
        max_length=255,
        help_text=_(
            "Why this episode needs no action; kept in the alert's history. The signal's next "
            "episode alerts again."
        ),
    )


class ResolveForm(forms.Form):
    evidence = forms.CharField(
        label=_("Evidence"),
        max_length=255,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_(
            "What was done, such as “called back 14:05, demo booked” (the CRM may not show it yet)."
        ),
    )


class SnoozeForm(forms.Form):
    condition = forms.ChoiceField(
        label=_("Snooze"),
        choices=SnoozeCondition.choices,
        required=False,
        widget=forms.RadioSelect,
        initial=SnoozeCondition.TIME,
    )
    until = _DateTimeField(
        label=_("Until"),
        required=False,
        help_text=_(
            "Required when snoozing until a time. With a condition it is the limit: the alert "
            "comes back then at the latest (empty: the longest snooze allowed)."
        ),
    )
    reason = forms.CharField(label=_("Reason"), max_length=255)


#: Suppress only the selected alert's signal on its opportunity, or every signal.
SUPPRESS_SIGNAL, SUPPRESS_ALL = "signal", "all"


class SuppressAlertsForm(forms.Form):
    scope = forms.ChoiceField(
        label=_("Suppress"),
        choices=[
            (SUPPRESS_SIGNAL, _("Only the alert's signal on its opportunity")),
            (SUPPRESS_ALL, _("Every signal on the opportunity")),
        ],
        widget=forms.RadioSelect,
        initial=SUPPRESS_SIGNAL,
    )
    comment = forms.CharField(
        label=_("Comment"),
        max_length=255,
        help_text=_("Why nobody should be alerted; shown on the suppression rule."),
    )
    ends_at = _DateTimeField(
        label=_("Ends at"),
        required=False,
        help_text=_("Empty: until someone ends the rule."),
    )


class StallForm(forms.Form):
    until = _DateTimeField(
        label=_("Resumes on"),
        help_text=_("Staleness and missing next steps are not alerted before this time."),
    )
    reason = forms.CharField(
        label=_("Reason"),
        max_length=255,
        help_text=_("Such as “customer's budget round closes in June”."),
    )
