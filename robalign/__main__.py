import sys

from robalign.cli import main

sys.exit(main())
