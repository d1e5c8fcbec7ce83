"""``python -m forwarder`` runs the command line."""

from forwarder.cli import main

raise SystemExit(main())
