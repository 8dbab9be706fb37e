"""``python -m envs``: see envs/check.py."""

import sys

from envs.check import main

sys.exit(main())
