"""``python -m launchers.serving``: runs the prediction server in this process."""

import sys

from launchers.serving.app import main

sys.exit(main())
