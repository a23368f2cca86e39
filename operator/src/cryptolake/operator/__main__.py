import sys

from cryptolake.operator.cli import main

sys.exit(main())
