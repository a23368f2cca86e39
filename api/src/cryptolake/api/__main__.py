import sys

from cryptolake.api.cli import main

sys.exit(main())
