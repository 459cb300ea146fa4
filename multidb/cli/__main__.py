"""``python -m multidb.cli``: the ``multidb`` command."""
import sys

from multidb.cli import main

sys.exit(main())
