"""``python -m aiollm``: the same as the ``aiollm`` command."""

import sys

from .cli import main

sys.exit(main())
