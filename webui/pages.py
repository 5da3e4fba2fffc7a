"""Small pages: the dashboard, anomalies (filled by the scoring issue) and hardware health."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

bp = Blueprint("pages", __name__)


@bp.route("/")
def dashboard() -> Any:
    return render_template("dashboard.html")
