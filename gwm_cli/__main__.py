"""``python -m gwm_cli`` is ``gwm``."""

import sys

from gwm_cli.main import main

sys.exit(main())
