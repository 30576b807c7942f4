"""`python -m edgec.runtime serve|run|keys`: the board's command line (edgec.runtime.cli)."""

from edgec.runtime.cli import main

main()
