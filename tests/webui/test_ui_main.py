"""The UI service's light entry point takes ``edgeguard ui serve``'s arguments and leaves the
appliance's other commands unimported (memory on the box, issue #9)."""

from __future__ import annotations

import subprocess
import sys


def test_ui_main_imports_no_other_command_and_parses_like_the_cli() -> None:
    code = (
        "import sys\n"
        "from webui.ui_main import main\n"
        "try:\n    main(['ui', 'serve', '--help'])\n"
        "except SystemExit:\n    pass\n"
        "print([m for m in ('appliance.cli', 'appliance.dns_cmd', 'appliance.lab',"
        " 'appliance.anomaly.serve_cmd') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "--policy-base" in out.stdout and "--plain-http" in out.stdout
