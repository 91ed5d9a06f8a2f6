"""``python -m cascade_server`` runs the ``cascade`` command line."""

from cascade_server.cli import main

main()
