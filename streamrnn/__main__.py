"""``python -m streamrnn`` runs the command line."""

from streamrnn.cli import main

raise SystemExit(main())
