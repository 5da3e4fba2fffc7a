"""Fixtures for the web UI: an app on a temporary state dir, and logged-in clients."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from webui.app import create_app
from webui.config import UiConfig
from webui.store import Role, UiStore

PASSWORD = "correct horse battery"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    application = create_app(UiConfig(state_dir=tmp_path / "state", secure_cookies=False))
    application.config["TESTING"] = True
    yield application
    application.extensions["edgeguard_store"].close()


def ui_store(app: Flask) -> UiStore:
    found: UiStore = app.extensions["edgeguard_store"]
    return found


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def logged_in(app: Flask, name: str = "alice", role: Role = "admin") -> FlaskClient:
    store = ui_store(app)
    if store.user_by_name(name) is None:
        store.add_user(name, PASSWORD, role)
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    resp = client.post(
        "/login", data={"username": name, "password": PASSWORD, "csrf_token": csrf_of(page)}
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return client


def token_of(client: FlaskClient, path: str = "/") -> str:
    return csrf_of(client.get(path).get_data(as_text=True))


@pytest.fixture
def admin(app: Flask) -> FlaskClient:
    return logged_in(app, "alice", "admin")


@pytest.fixture
def viewer(app: Flask) -> FlaskClient:
    ui_store(app).add_user("alice", PASSWORD, "admin") if ui_store(app).needs_setup() else None
    return logged_in(app, "victor", "viewer")
