import sys

from app.audit.cli import main

sys.exit(main())
