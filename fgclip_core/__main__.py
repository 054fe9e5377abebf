"""`python -m fgclip_core ...` is the `fgclip` command."""

from fgclip_core.cli import main

main()
