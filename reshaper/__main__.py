import sys

from reshaper.bridge.cli import main

sys.exit(main())
