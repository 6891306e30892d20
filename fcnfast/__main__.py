"""``python -m fcnfast ...``: the command line of ``fcnfast.cli``."""
import sys

from .cli import main

sys.exit(main())
