"""The controller's children start through ``appliance.child``, which imports only their own
command: the same arguments as ``edgeguard``, a fraction of the memory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from appliance.child import main


def test_a_child_imports_neither_the_resolver_nor_the_other_commands() -> None:
    code = (
        "import sys\n"
        "from appliance.child import main\n"
        "try:\n    main(['anomaly', 'serve', '--help'])\n"
        "except SystemExit:\n    pass\n"
        "heavy = [m for m in ('appliance.runtime', 'dns_filter.server', 'appliance.lab',"
        " 'appliance.webfilter', 'webui') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", [["dns", "serve"], ["sync", "serve"]])
def test_anything_but_anomaly_is_refused(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(command)
    assert "a child runs 'anomaly ...'" in capsys.readouterr().err
