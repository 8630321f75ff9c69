"""The team tree: a team with every team below it, as the tree is now."""

from __future__ import annotations

from collections.abc import Iterable

from followup_visibility.models import Team


def subtrees(roots: Iterable[int]) -> dict[int, set[int]]:
    """Each of ``roots`` with the set of itself and every team below it (one query).

    Managers see, escalation policies govern and suppression rules match a team's whole
    subtree, read when they are applied, so moving a team in the tree takes effect at once.
    """
    wanted = set(roots)
    if not wanted:
        return {}
    children: dict[int | None, list[int]] = {}
    for pk, parent in Team.objects.values_list("pk", "parent_id"):
        children.setdefault(parent, []).append(pk)
    found: dict[int, set[int]] = {}
    for root in wanted:
        below: set[int] = set()
        stack = [root]
        while stack:
            pk = stack.pop()
            if pk not in below:  # a cycle written around the admin must not loop forever
                below.add(pk)
                stack.extend(children.get(pk, []))
        found[root] = below
    return found


def with_subteams(roots: Iterable[int]) -> set[int]:
    """``roots`` and every team below any of them."""
    return set().union(*subtrees(roots).values())
