"""Allow ``python -m cno_annotate``."""

import sys

from cno_annotate.cli import main

sys.exit(main())
