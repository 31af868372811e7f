import sys

from realgap.cli import main

sys.exit(main())
