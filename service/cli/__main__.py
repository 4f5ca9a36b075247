"""``python -m service.cli``: the same as the ``fitserve`` command."""

from service.cli.app import main

main()
