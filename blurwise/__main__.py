"""``python -m blurwise`` runs the ``blurwise`` command line (same as the console script)."""

from __future__ import annotations

import sys

from blurwise.cli import main

sys.exit(main())
