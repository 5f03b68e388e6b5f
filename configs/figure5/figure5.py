"""The Figure 5 runner is clipood_plugin/figure5.py, reached as `clipood figure5 run|summary ...`; this path
runs it too (with the package installed)."""
import sys

from clipood_plugin.figure5 import main

if __name__ == "__main__":
    sys.exit(main())
