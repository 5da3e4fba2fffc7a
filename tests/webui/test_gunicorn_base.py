"""``webui.gunicorn_base`` keeps ``pkg_resources`` out of the UI's processes: Debian 12's
gunicorn imports it at load (about 12 MB per process) and never uses it with our options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from webui.gunicorn_base import DeferredModule, defer_import


def test_a_deferred_module_runs_only_on_the_first_attribute_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "eg_heavy_example.py").write_text(
        "import sys\nsys.eg_heavy_loads = getattr(sys, 'eg_heavy_loads', 0) + 1\nVALUE = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "eg_heavy_example", raising=False)
    defer_import("eg_heavy_example")
    import eg_heavy_example  # type: ignore[import-not-found]  # the import must not load it

    monkeypatch.setattr(sys, "eg_heavy_loads", 0, raising=False)
    assert isinstance(eg_heavy_example, DeferredModule)
    assert sys.eg_heavy_loads == 0  # type: ignore[attr-defined]
    assert eg_heavy_example.VALUE == 42  # first read: the real module runs and answers
    assert sys.eg_heavy_loads == 1  # type: ignore[attr-defined]
    assert not isinstance(sys.modules["eg_heavy_example"], DeferredModule)
    assert eg_heavy_example.VALUE == 42  # later reads go to the real module, loaded once
    assert sys.eg_heavy_loads == 1  # type: ignore[attr-defined]
    monkeypatch.delitem(sys.modules, "eg_heavy_example")


def test_a_missing_or_already_imported_module_is_left_alone() -> None:
    defer_import("eg_no_such_module_anywhere")
    assert "eg_no_such_module_anywhere" not in sys.modules
    import json

    defer_import("json")
    assert sys.modules["json"] is json


def test_the_ui_server_does_not_load_pkg_resources() -> None:
    code = (
        "import sys\n"
        "import webui.server\n"
        "import gunicorn.workers.gthread\n"
        "m = sys.modules.get('pkg_resources')\n"
        "print('absent' if m is None else type(m).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() in ("absent", "DeferredModule")
