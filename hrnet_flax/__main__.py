import sys

from hrnet_flax.cli import main

sys.exit(main())
