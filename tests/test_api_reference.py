"""``reference/``: the OpenAPI document as a page, complete, self-contained, for signed-in users."""

import re

import pytest
from django.urls import reverse

from followup_visibility.api import reference


@pytest.fixture
def document(api, make_user):
    response = api(make_user()).get(reverse("followup_visibility_api:schema"), {"format": "json"})
    assert response.status_code == 200
    return response.json()


@pytest.fixture
def page(api, make_user):
    response = api(make_user()).get(reverse("followup_visibility_api:reference"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    return response.content.decode()


def test_the_page_lists_every_path_and_method_of_the_schema(document, page):
    prefix = reverse("followup_visibility_api:schema").rsplit("schema/", 1)[0].rstrip("/")
    operations = [
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in reference.METHODS
    ]
    assert ("get", "/register/") in operations
    for method, path in operations:
        operation = document["paths"][path][method]
        assert f'id="op-{operation["operationId"]}"' in page, (method, path)
        heading = f'<span class="method {method}">{method}</span> <code>{prefix}{path}</code>'
        assert heading in page, (method, path)
    # Not the page itself, nor the schema: they are not operations of the API.
    assert "/reference/" not in document["paths"] and "/schema/" not in document["paths"]


def test_the_page_shows_parameters_bodies_responses_and_components(document, page):
    # A filter with its type and values, a nested field of a paginated body, the errors.
    assert "<code>ordering</code>" in page
    assert '<td class="enum"><code>age</code>' in page
    assert "<code>results[].score</code>" in page
    assert re.search(r'<span class="status">404</span>|<span class="status">401</span>', page)
    assert 'href="#errors"' in page and '<section id="errors">' in page
    assert "<code>status</code>" in page and "<code>fields</code>" in page
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in page, name
    # Every in-page link leads somewhere on the page.
    targets = set(re.findall(r'id="([^"]+)"', page))
    assert set(re.findall(r'href="#([^"]+)"', page)) <= targets


def test_the_page_loads_nothing_from_elsewhere_and_runs_no_script(page):
    assert "<script" not in page.lower()
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?(?:https?:)?//""", page, re.I)
    assert not re.search(r"(?:url\(|@import)\s*[\"']?(?:https?:)?//", page, re.I)
    assert "https://" not in page and "http://" not in page


def test_an_anonymous_caller_gets_401_and_how_to_sign_in(api, db):
    response = api().get(reverse("followup_visibility_api:reference"))
    assert response.status_code == 401
    assert "sign in" in response.content.decode()
    assert "<script" not in response.content.decode().lower()


def test_an_inactive_user_is_refused(api, make_user):
    response = api(make_user(is_active=False)).get(reverse("followup_visibility_api:reference"))
    assert response.status_code in (401, 403)
