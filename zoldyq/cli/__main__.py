"""``python -m zoldyq.cli``: the same as the ``zoldyq`` command."""

import sys

from zoldyq.cli.main import main

sys.exit(main())
