import sys

from deit_tt.cli import main

sys.exit(main())
