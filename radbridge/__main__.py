"""`python -m radbridge` runs the command-line interface."""

from radbridge.interfaces.cli import main

raise SystemExit(main())
