"""`python -m maskpair COMMAND ...`: the console script `maskpair`."""
import sys

from maskpair.cli import main

sys.exit(main())
