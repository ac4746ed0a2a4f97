"""``python -m dja_sepp`` runs the command line."""
import sys

from .cli import main

sys.exit(main())
