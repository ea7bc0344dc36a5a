"""``python -m orchestrator`` runs the kernel-matrix CLI."""

import sys

from orchestrator.cli import main

sys.exit(main())
