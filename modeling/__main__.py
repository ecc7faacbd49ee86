"""`python -m modeling <command>`; see modeling.cli."""

import sys

from modeling.cli import main

sys.exit(main())
