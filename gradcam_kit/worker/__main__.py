"""``python -m gradcam_kit.worker``: see :mod:`gradcam_kit.worker.entry`."""

from gradcam_kit.worker.entry import main

raise SystemExit(main())
