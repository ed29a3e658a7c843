"""``python -m nbcontainer``: the command line."""

from nbcontainer.cli import entry

entry()
