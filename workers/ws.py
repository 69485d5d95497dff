"""``python -m workers.ws`` from a checkout (the sidecar's main lives in the package)."""

import sys

from zoldyq.serve.workers.ws import main

if __name__ == "__main__":
    sys.exit(main())
