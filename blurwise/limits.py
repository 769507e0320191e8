"""Limits shared by the image readers and the command line, in a module that imports nothing.

``blurwise.io.image`` enforces them; ``blurwise.cli`` names them in its help, and importing this module
(instead of the image code) keeps building the parser free of numpy, Pillow and torch.
"""

from __future__ import annotations

MAX_PIXELS = 400_000_000
"""Inputs above this many pixels need ``allow_large=True`` / ``--allow-large`` (a 400 MP float32 RGB image is
~4.8 GB, and the output of an upscale is larger still)."""
