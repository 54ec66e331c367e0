"""``import aiollm`` stays cheap: aiohttp is imported by the first request, not by the import."""

from __future__ import annotations

import subprocess
import sys


def test_import_aiollm_does_not_import_aiohttp() -> None:
    code = (
        "import sys, aiollm, aiollm.bench\n"
        "assert 'aiohttp' not in sys.modules, 'aiohttp imported'\n"
        "import aiollm.transport as t\n"
        "t.aiohttp.ClientTimeout  # first use imports it\n"
        "assert 'aiohttp' in sys.modules and t.aiohttp is sys.modules['aiohttp']\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
