"""``python -m cryptolake.jobs``."""

import sys

from cryptolake.jobs.cli import main

sys.exit(main())
