"""What runs inside the sandbox: the worker, the only process that runs a student's code.

Nothing here imports the grader's side (:mod:`gradcam_kit.host`); the two sides share only
:mod:`gradcam_kit.wire`. The sandbox sees this package, the wire and the kit modules they import,
nothing else of the kit (:mod:`gradcam_kit.host.worker_code` derives that list from this package).
``docs/design.md`` gives each module's job.
"""
