"""The squashed migration: what a fresh database runs instead of 0001..0017.

It must leave exactly the state (and so the schema) and the rows the replaced migrations leave,
and render the host's models once rather than once per model (docs/performance.md,
"Migrations").
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

import pytest
from django.apps.registry import Apps
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.state import ProjectState

from followup_visibility import checks

APP = "followup_visibility"
SQUASH = "0001_squashed_0017_tenant_sweep_ranges"
LAST_REPLACED = "0017_tenant_sweep_ranges"


def squash_module() -> Any:
    return import_module(f"{APP}.migrations.{SQUASH}")


def app_models(state: ProjectState) -> dict[str, Any]:
    return {name: model for (app, name), model in state.models.items() if app == APP}


def test_a_fresh_database_runs_the_squash_only() -> None:
    loader = MigrationLoader(None)  # no connection: nothing applied, as on a fresh database
    replaced = {name for _, name in loader.get_migration(APP, SQUASH).replaces}
    plan = [name for app, name in loader.graph.forwards_plan((APP, SQUASH)) if app == APP]

    assert plan == [SQUASH]
    # Every migration file that predates the squash is one it replaces; later ones follow it.
    names = {name for app, name in loader.disk_migrations if app == APP and name != SQUASH}
    older = {name for name in names if name <= LAST_REPLACED}
    assert older <= replaced and LAST_REPLACED in replaced
    for name in names - older:
        assert (APP, SQUASH) in loader.graph.forwards_plan((APP, name)), name


def test_the_squash_leaves_the_state_of_the_replaced_migrations() -> None:
    chain = MigrationLoader(None, replace_migrations=False).project_state((APP, LAST_REPLACED))
    squashed = MigrationLoader(None).project_state((APP, SQUASH))
    old, new = app_models(chain), app_models(squashed)

    assert new.keys() == old.keys()
    for name, model in old.items():
        assert new[name] == model, name
        # ModelState equality ignores the field order; the column order of the tables is it.
        assert list(new[name].fields) == list(model.fields), name


def test_the_squash_renders_the_models_once(monkeypatch: pytest.MonkeyPatch) -> None:
    loader = MigrationLoader(None)
    squash = loader.get_migration(APP, SQUASH)
    state = loader.project_state((APP, SQUASH), at_end=False)
    state.apps  # rendered, as migrate renders it before the first migration  # noqa: B018
    renders: list[set[tuple[str, str]]] = []
    reload = ProjectState._reload

    def counted(self: ProjectState, related_models: set[tuple[str, str]]) -> None:
        renders.append(related_models)
        reload(self, related_models)

    monkeypatch.setattr(ProjectState, "_reload", counted)
    state = squash.mutate_state(state, preserve=False)

    # One CreateModel per model would render their related models (the host's) 31 times.
    assert len(renders) == 1
    assert {(APP, name) for name in app_models(state)} <= renders[0]
    assert state.apps.get_model(APP, "Alert")._meta.get_field("opportunity").related_model


# Keys and clocks differ from run to run.
VOLATILE = {"id", "calendar_id", "policy_id", "token", "effective_from", "changed_at"}
VOLATILE |= {"created_at", "updated_at"}
DATA_MODELS = [
    "Calendar",
    "WorkingWindow",
    "SlaPolicy",
    "SlaPolicyVersion",
    "EscalationPolicy",
    "EscalationLevel",
    "InhibitionRule",
    "ConfigurationGeneration",
]


def default_rows(apps: Apps) -> dict[str, list[dict[str, Any]]]:
    """The rows the data migrations create, without keys and clocks."""
    return {
        name: [
            {field: value for field, value in row.items() if field not in VOLATILE}
            for row in apps.get_model(APP, name).objects.order_by("pk").values()
        ]
        for name in DATA_MODELS
    }


def delete_default_rows(apps: Apps) -> None:
    for name in reversed(DATA_MODELS):
        apps.get_model(APP, name).objects.all().delete()


@pytest.mark.django_db
def test_the_squash_creates_the_rows_the_replaced_migrations_created() -> None:
    # Historical models, as the migrations see them: no history rows, no receivers.
    apps = MigrationLoader(None).project_state((APP, SQUASH)).apps
    delete_default_rows(apps)
    import_module(f"{APP}.migrations.0003_company_defaults").create_defaults(apps, None)
    import_module(f"{APP}.migrations.0006_default_escalation_policy").create(apps, None)
    import_module(f"{APP}.migrations.0015_outbox_generation").create_generation(apps, None)
    replaced = default_rows(apps)
    delete_default_rows(apps)

    squash_module().create_default_rows(apps, None)

    assert default_rows(apps) == replaced
    assert all(replaced.values())  # a row of each
    assert apps.get_model(APP, "ConfigurationGeneration").objects.get().pk == 1


@pytest.mark.django_db
def test_no_model_change_lacks_a_migration() -> None:
    # Exits non-zero when the models differ from the state the migrations leave.
    call_command("makemigrations", APP, check=True, dry_run=True, verbosity=0)


@pytest.mark.django_db
def test_the_row_checks_wait_for_a_partly_migrated_database() -> None:
    """A host upgrading from an older migration runs ``migrate``, whose checks read our rows
    before the newer tables exist: the row checks must wait, not fail the command."""
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE followup_visibility_configurationgeneration RENAME TO fv_not_yet"
        )
    assert checks.check_configuration_rows(databases=["default"]) == []
