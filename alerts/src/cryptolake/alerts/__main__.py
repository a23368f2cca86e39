import sys

from cryptolake.alerts.cli import main

sys.exit(main())
