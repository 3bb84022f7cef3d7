"""``python -m movingtarget`` is the ``movingtarget`` command."""

import sys

from movingtarget.cli.main import main

sys.exit(main())
