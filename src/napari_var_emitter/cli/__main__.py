"""``python -m napari_var_emitter.cli``: the same as the ``napari-var-emitter`` command."""

import sys

from . import main

sys.exit(main())
