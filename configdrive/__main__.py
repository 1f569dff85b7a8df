"""``python -m configdrive``."""

import sys

from configdrive.cli import main

sys.exit(main())
