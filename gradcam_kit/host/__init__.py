"""The grader's side of the sandbox: everything that starts, watches and judges a worker.

Nothing here runs inside the sandbox; the worker's side is :mod:`gradcam_kit.worker`, and the two
share only :mod:`gradcam_kit.wire`.

:mod:`~gradcam_kit.host.session`
    ``WorkerSession``: one submission's worker; decides what to skip, when to restart, whose fault.
:mod:`~gradcam_kit.host.outcomes`
    ``Outcome`` and ``LoadResult``: what a call and a load gave.
:mod:`~gradcam_kit.host.launcher`
    Starting a worker: its paths, its ``start`` message, its process (or a fork of the zygote).
:mod:`~gradcam_kit.host.channel`
    The two pipes of a worker, read and written against deadlines.
:mod:`~gradcam_kit.host.postmortem`
    Why a worker was lost: timeouts, limits, signals, exits.
:mod:`~gradcam_kit.host.sandbox`
    The bubblewrap command line, the worker's environment and scratch folder.
:mod:`~gradcam_kit.host.isolation`
    The isolation levels, which work here, and which one a grading run uses.
:mod:`~gradcam_kit.host.uids`
    A uid of its own for each worker, leased once.
:mod:`~gradcam_kit.host.zygote`
    The client of the zygote that forks workers in one pre-started sandbox.
:mod:`~gradcam_kit.host.worker_code`
    The kit code the sandbox may see, derived from the worker package, staged for it.
"""
