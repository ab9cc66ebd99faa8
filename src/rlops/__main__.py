"""``python -m rlops`` runs the CLI."""

import sys

from rlops.cli.main import main

sys.exit(main())
