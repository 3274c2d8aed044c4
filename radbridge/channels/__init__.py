"""Channel definitions shipped with Radbridge (YAML data, no code).

`default/` is the set `radbridge run` deploys when given no config; `examples/` shows
one channel per use case.
"""

from pathlib import Path

DEFAULT_DIR = Path(__file__).parent / "default"
EXAMPLES_DIR = Path(__file__).parent / "examples"
