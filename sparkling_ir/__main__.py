"""`python -m sparkling_ir` is the `sparkling` command."""

import sys

from sparkling_ir.cli import main

sys.exit(main())
