"""``python -m gradcam_kit``: the same as the ``gradcam-kit`` command."""

from gradcam_kit.cli import main

raise SystemExit(main())
