"""What runs inside the sandbox: the worker, the only process that runs a student's code.

Nothing here imports the grader's side (:mod:`gradcam_kit.host`); the two sides share only
:mod:`gradcam_kit.wire`. The sandbox sees this package, the wire and the kit modules they import,
nothing else of the kit (:mod:`gradcam_kit.host.worker_code` derives that list from this package).

:mod:`~gradcam_kit.worker.entry`
    The command line (``python -m gradcam_kit.worker``) and a worker's life (``run_worker``).
:mod:`~gradcam_kit.worker.boot`
    Start-up: uid, resource limits, scratch folder, libraries, the CPU budget.
:mod:`~gradcam_kit.worker.tripwire`
    The audit hook that refuses reading the course, writing elsewhere, processes, signals, network.
:mod:`~gradcam_kit.worker.syscalls`
    The system-call filter (libseccomp), loaded here or given to bubblewrap by the grader.
:mod:`~gradcam_kit.worker.loading`
    Running the notebook's cells, and what they defined.
:mod:`~gradcam_kit.worker.runtime`
    ``Worker``: the namespace, and the answers to ``call``, ``probe`` and ``explore``.
:mod:`~gradcam_kit.worker.failures`
    The student's errors, located in their cells.
:mod:`~gradcam_kit.worker.describe`, :mod:`~gradcam_kit.worker.images`
    Plain-data descriptions of returned values, and of the images a figure draws.
:mod:`~gradcam_kit.worker.observe`
    Hook tables, and what a call did to its model.
:mod:`~gradcam_kit.worker.ipython`
    ``get_ipython()`` and ``display`` stand-ins.
:mod:`~gradcam_kit.worker.exploration`
    Running an exploration cell and keeping what it shows.
:mod:`~gradcam_kit.worker.models`
    ``build_model(spec)``: the models the worker builds (and the judge, identically).
:mod:`~gradcam_kit.worker.zygote_server`, :mod:`~gradcam_kit.worker.mounts`
    The zygote that forks workers in one sandbox, and the clean-up of that sandbox between two.
"""
