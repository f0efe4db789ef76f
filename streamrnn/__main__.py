"""``python -m streamrnn`` runs the command line."""

from streamrnn.cli import main

# Guarded: the background trainer's spawned process imports this module as __mp_main__.
if __name__ == "__main__":
    raise SystemExit(main())
