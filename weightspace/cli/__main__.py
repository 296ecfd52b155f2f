"""`python -m weightspace.cli`: the `weightspace` command."""

import sys

from weightspace.cli import main

sys.exit(main())
