"""`python -m w2s ...` is the `w2s` command."""
import sys

from w2s.cli import main

sys.exit(main())
