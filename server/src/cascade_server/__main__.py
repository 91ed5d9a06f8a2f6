"""``python -m cascade_server`` runs the ``cascade`` command line."""

from cascade_server.entry import main

main()
