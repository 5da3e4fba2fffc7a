"""gunicorn's ``BaseApplication``, imported with ``pkg_resources`` deferred.

Debian 12's gunicorn (20.1, the one the appliance image installs) imports ``pkg_resources``
at module load, and uses it only to resolve ``egg:`` worker URIs, which we never pass.
Importing it scans every installed distribution and keeps about 12 MB in each UI process;
the image's services share a 150 MB budget (issue #9). Here ``pkg_resources`` is bound to a
stand-in module that imports the real one on the first attribute read, so it is really
imported only if gunicorn ever needs it. (``importlib.util.LazyLoader`` does not do here:
the import statement itself reads the module's ``__spec__``, which makes it load.) Newer
gunicorn releases do not import ``pkg_resources`` at all.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


class DeferredModule(types.ModuleType):
    """Stands in for a module until one of its attributes is read; then imports the real
    module (which replaces it in ``sys.modules``) and forwards every read to it."""

    def __getattr__(self, attr: str) -> Any:
        real = self.__dict__.get("_deferred_real")
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
            self.__dict__["_deferred_real"] = real
        return getattr(real, attr)


def defer_import(name: str) -> None:
    """Put a ``DeferredModule`` for ``name`` in ``sys.modules``, unless the module is
    already imported or not installed."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None:
        return
    module = DeferredModule(name)
    module.__spec__ = spec  # so find_spec(name) still answers; no loader runs
    sys.modules[name] = module


defer_import("pkg_resources")

from gunicorn.app.base import BaseApplication  # noqa: E402 - after the deferral, on purpose

__all__ = ["BaseApplication", "DeferredModule", "defer_import"]
