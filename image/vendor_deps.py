"""Copy the runtime dependencies of the installed ``edgeguard`` distribution into a target
site-packages, from the Python environment that runs this script (the project's .venv, filled
by `make setup`). Nothing is downloaded: the files are the ones already installed here, listed
by each distribution's RECORD. Dev extras are left out; distributions that live outside this
environment's own site-packages (Debian's, via --system-site-packages) are skipped and named,
so build.sh installs their Debian package in the image instead.

usage: python vendor_deps.py TARGET_SITE_PACKAGES
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(root: str) -> list[metadata.Distribution]:
    seen: dict[str, metadata.Distribution] = {}
    todo = [Requirement(r) for r in metadata.requires(root) or []]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        dist = metadata.distribution(req.name)
        seen[name] = dist
        todo.extend(Requirement(r) for r in dist.requires or [])
    return sorted(seen.values(), key=lambda d: canonicalize_name(d.metadata["Name"]))


def main() -> int:
    target = Path(sys.argv[1])
    own = Path(sysconfig.get_paths()["purelib"]).resolve()
    copied, skipped = [], []
    for dist in closure("edgeguard"):
        name = f"{dist.metadata['Name']}=={dist.version}"
        base = Path(str(dist.locate_file(""))).resolve()
        if base != own:
            skipped.append(f"{name} ({base})")
            continue
        for f in dist.files or []:
            rel = Path(str(f))
            if rel.parts[0] == ".." or "__pycache__" in rel.parts:
                continue  # console scripts in bin/, byte code (compiled in the image)
            src = base / rel
            if src.is_file():
                dst = target / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        copied.append(name)
    sys.stdout.write("vendored: " + " ".join(copied) + "\n")
    if skipped:
        names = " ".join(skipped)
        sys.stdout.write(f"not vendored (outside the venv; install from Debian): {names}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
