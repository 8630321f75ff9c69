"""A migration operation of our own (the loader skips modules whose name starts with ``_``)."""

from __future__ import annotations

from typing import Any

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState


class CreateModels(Operation):
    """``CreateModel`` for several models, with their states rendered once for all of them.

    After each ``CreateModel`` Django renders again every model related to the new one, and
    in a host that is nearly all of its models, since they all reach the user model: with a
    hundred host models, that rendering was most of the time our migrations took. Here the
    model states are added first and rendered together, once; the tables are then created
    one by one, exactly as ``CreateModel`` creates them (foreign keys between them may point
    either way: PostgreSQL adds the constraints at the end of the migration, SQLite does not
    check them while it creates tables).

    ``migrate --fake-initial`` does not look inside this operation: it will not treat a
    migration made of it as applied because its tables already exist.
    """

    reduces_to_sql = True
    reversible = True

    def __init__(self, operations: list[migrations.CreateModel]) -> None:
        self.operations = operations
        super().__init__()

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return self.__class__.__qualname__, [], {"operations": self.operations}

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        # Without rendered apps, add_model only records the state; they are put back and the
        # new models (with everything related to them) rendered in one pass.
        rendered = state.__dict__.pop("apps", None)
        for operation in self.operations:
            operation.state_forwards(app_label, state)
        if rendered is not None:
            state.__dict__["apps"] = rendered
            keys = [(app_label, operation.name_lower) for operation in self.operations]
            state.reload_models(keys, delay=False)

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        for operation in self.operations:
            operation.database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        for operation in reversed(self.operations):
            operation.database_backwards(app_label, schema_editor, from_state, to_state)

    def references_model(self, name: str, app_label: str) -> bool:
        return any(op.references_model(name, app_label) for op in self.operations)

    def describe(self) -> str:
        return f"Create {len(self.operations)} models: " + ", ".join(
            operation.name for operation in self.operations
        )

    @property
    def migration_name_fragment(self) -> str:
        return "create_models"
