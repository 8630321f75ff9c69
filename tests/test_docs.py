"""The reference docs stay in step with the code they describe."""

import re
from pathlib import Path
from typing import Any

import pytest
from django.apps.registry import Apps
from django.contrib import admin

from followup_visibility.conf import PREFIX, Settings
from followup_visibility.models import Touch

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_settings_reference_lists_exactly_the_settings_in_conf():
    documented = set(
        re.findall(r"^### (FOLLOWUP_VISIBILITY_\w+)$", (DOCS / "settings.md").read_text(), re.M)
    )
    defined = {
        PREFIX + name for name, value in vars(Settings).items() if isinstance(value, property)
    }
    assert documented == defined


def test_checks_reference_lists_every_check_id():
    source = (
        Path(__file__).resolve().parent.parent / "followup_visibility" / "checks.py"
    ).read_text()
    ids = set(re.findall(r'"(followup_visibility\.[EW]\d{3})"', source))
    documented = set(
        re.findall(r"followup_visibility\.[EW]\d{3}", (DOCS / "checks.md").read_text())
    )
    assert ids and ids <= documented


def test_every_channel_direction_and_outcome_is_documented():
    text = (DOCS / "touches.md").read_text()
    for field in ("channel", "direction", "outcome"):
        for value, _label in Touch._meta.get_field(field).choices:
            if value:
                assert f"`{value}`" in text, f"{field} {value!r} missing from docs/touches.md"


def test_the_installation_page_names_every_admin_page_of_the_app():
    text = " ".join((DOCS / "installation.md").read_text().lower().split())
    registered = [m for m in admin.site._registry if m._meta.app_label == "followup_visibility"]
    assert len(registered) >= 16
    missing = [
        str(m._meta.verbose_name_plural)
        for m in registered
        if f"*{m._meta.verbose_name_plural}*".lower() not in text
    ]
    assert not missing, f"admin pages missing from docs/installation.md: {missing}"


def _settings_snippets() -> list[str]:
    """The Python blocks of the README and the installation page that add our apps."""
    root = DOCS.parent
    blocks = [
        block
        for page in (root / "README.md", DOCS / "installation.md")
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    ]
    return [block for block in blocks if "INSTALLED_APPS" in block]


HOSTS = {
    "bare": ["django.contrib.auth", "django.contrib.contenttypes"],
    # Most Django CRMs already run DRF and django-simple-history.
    "with DRF and simple_history": [
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "rest_framework",
        "django_filters",
        "simple_history",
    ],
}


@pytest.mark.parametrize("host", HOSTS, ids=list(HOSTS))
@pytest.mark.parametrize("as_tuple", [False, True], ids=["list", "tuple"])
def test_the_settings_snippets_add_only_the_missing_apps(host, as_tuple):
    snippets = _settings_snippets()
    assert len(snippets) == 2  # the README's and the installation page's
    for snippet in snippets:
        apps = HOSTS[host]
        namespace: dict[str, Any] = {"INSTALLED_APPS": tuple(apps) if as_tuple else list(apps)}
        exec(snippet, namespace)  # noqa: S102  # our own documentation
        installed = list(namespace["INSTALLED_APPS"])
        assert installed[: len(apps)] == apps
        assert {"simple_history", "followup_visibility"} <= set(installed)
        assert len(installed) == len(set(installed))
        # What Django does at start-up: a repeated label raises ImproperlyConfigured.
        Apps(installed_apps=installed)


def test_the_permissions_page_names_every_admin_action_of_the_app():
    text = " ".join((DOCS / "permissions.md").read_text().split())
    missing = []
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label != "followup_visibility":
            continue
        for action in model_admin.actions or ():
            function = getattr(model_admin, action) if isinstance(action, str) else action
            label = str(function.short_description).rstrip("…")
            if f"**{label}**" not in text:
                missing.append(f"{model.__name__}: {label}")
    assert not missing, f"admin actions missing from docs/permissions.md: {missing}"
