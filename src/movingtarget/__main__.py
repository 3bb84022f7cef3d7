"""``python -m movingtarget`` is the ``movingtarget`` command."""

import sys

from movingtarget.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
