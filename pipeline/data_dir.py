"""Where the data is: the one place that decides it, for the command line and the tests.

    data_dir = resolve_data_dir(args.data_dir)   # --data-dir, else $HONEST_DATA_DIR, else ../shared/data

Library code never assumes a folder: every loader takes its path from the caller. Only here, in
the command-line layer, is there a default: the development data folder beside the repository
(`../shared/data`, as the command is run from the repository root). Serving needs none of it.
"""

import os

ENVIRONMENT_VARIABLE = "HONEST_DATA_DIR"
DEVELOPMENT_DATA = "../shared/data"


def resolve_data_dir(flag=None):
    """The data folder named by the flag, else by $HONEST_DATA_DIR, else the development folder;
    returned as given (it is recorded in the bundle's config), whether or not it exists."""
    return str(flag or os.environ.get(ENVIRONMENT_VARIABLE) or DEVELOPMENT_DATA)

