"""`python -m runner` is `gtrun`."""

import sys

from runner.cli import main

sys.exit(main())
