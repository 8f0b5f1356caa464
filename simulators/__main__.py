"""`python -m simulators`: the `hazardwatch simulate` verb on its own, for trying things."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from simulators.cli import add_arguments, run


def main() -> int:
    """Parse the options and run the simulators."""
    parser = argparse.ArgumentParser(
        prog="python -m simulators",
        description="Simulated smoke, gas and CO detectors publishing to an MQTT broker.",
    )
    add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
