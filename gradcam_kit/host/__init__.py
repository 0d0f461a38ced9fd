"""The grader's side of the sandbox: everything that starts, watches and judges a worker.

Nothing here runs inside the sandbox; the worker's side is :mod:`gradcam_kit.worker`, and the two
share only :mod:`gradcam_kit.wire`. ``docs/design.md`` gives each module's job.
"""
