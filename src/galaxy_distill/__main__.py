"""`python -m galaxy_distill` runs the command-line interface (where the console script is not installed)."""

from galaxy_distill.cli import main

main()
