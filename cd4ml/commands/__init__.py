"""One module per `cd4ml` subcommand (see cd4ml/cli.py)."""
