"""The app's admin on a host's own admin site, and the setting that chooses the sites."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.core.management import CommandError, call_command
from django.test import override_settings

from followup_visibility.admin import MODEL_ADMINS, register
from followup_visibility.choices import AlertSignal
from tests.host_admin_urls import crm_site
from tests.test_admin_alerts import (  # noqa: F401 (fixtures)
    World,
    around_the_clock,
    frozen,
    staff,
    world,
)

pytestmark = pytest.mark.django_db


def test_every_model_admin_is_on_the_default_site() -> None:
    registered = {
        model for model in admin.site._registry if model._meta.app_label == "followup_visibility"
    }
    assert registered == {model for model, _admin in MODEL_ADMINS}


def test_register_on_a_host_site_is_idempotent() -> None:
    site = admin.AdminSite(name="elsewhere")
    register(site)
    register(site)  # a site both named in the setting and registered by hand
    assert len(site._registry) == len(MODEL_ADMINS)


@override_settings(ROOT_URLCONF="tests.host_admin_urls")
def test_the_host_site_serves_the_pages_with_its_own_links(client: Any, world: World) -> None:  # noqa: F811
    client.force_login(world.rep)
    page = client.get("/crm-admin/followup_visibility/alert/")
    assert page.status_code == 200
    html = page.content.decode()
    # Links are reversed on the site in use: the host's, not Django's default "admin:".
    assert (
        f'href="/crm-admin/followup_visibility/trackedopportunity/{world.mine.pk}/change/"' in html
    )
    assert "/admin/followup_visibility" not in html
    assert world.theirs.title not in html  # scoped there as here


@override_settings(ROOT_URLCONF="tests.host_admin_urls")
def test_an_action_form_on_the_host_site_links_back_to_it(client: Any, world: World) -> None:  # noqa: F811
    client.force_login(world.rep)
    alert = world.alert(world.mine, AlertSignal.NO_FIRST_RESPONSE)
    page = client.post(
        "/crm-admin/followup_visibility/alert/",
        {"action": "dismiss", "_selected_action": [alert.pk]},
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/crm-admin/"' in html
    assert 'href="/crm-admin/followup_visibility/alert/"' in html


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (["nowhere.to.be.found.site"], "does not import"),
        (["django.contrib.admin"], "is not an AdminSite instance"),
        ("django.contrib.admin.site", "must be a list"),
    ],
)
def test_a_wrong_admin_site_setting_fails_the_check(value: Any, problem: str) -> None:
    with (
        override_settings(FOLLOWUP_VISIBILITY_ADMIN_SITES=value),
        pytest.raises(CommandError) as error,
    ):
        call_command("check")
    assert "followup_visibility.E030" in str(error.value)
    assert problem in str(error.value)


def test_an_empty_admin_site_setting_passes_the_check() -> None:
    with override_settings(FOLLOWUP_VISIBILITY_ADMIN_SITES=[]):
        call_command("check")
    assert crm_site.is_registered(MODEL_ADMINS[0][0])
