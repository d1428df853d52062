"""`python -m download_edge`: the HTTP(S) range server for packages."""

import sys

from download_edge.main import main

if __name__ == "__main__":
    sys.exit(main())
