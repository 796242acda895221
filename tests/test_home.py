"""The deployment project's page at `/`."""

from __future__ import annotations

import re

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_home_links_the_admin_the_docs_and_the_quota():
    response = Client().get("/", HTTP_HOST="localhost:8123")
    assert response.status_code == 200
    page = response.content.decode()
    links = re.findall(r'href="([^"]+)"', page)
    assert {"/admin/", "/api/docs/", "http://localhost:8123/v1/quota", "#quick-start"} <= set(links)
    assert 'id="quick-start"' in page
    assert 'base_url="http://localhost:8123/v1"' in page


@pytest.mark.parametrize(("path", "status"), [("/admin/", 302), ("/api/docs/", 200)])
def test_the_linked_pages_answer(path, status):
    assert Client().get(path).status_code == status
