"""The reference docs stay in step with the code they describe."""

import re
from pathlib import Path

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
