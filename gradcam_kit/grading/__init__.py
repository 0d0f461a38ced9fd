"""The grading engine: the student's code runs in a sandboxed worker, the judge never runs it.

Modules
-------
notebook
    ``read_submission``: which cells of a submission are run, and every problem found in it.
protocol
    Length-prefixed frames of plain data (JSON and ``.npy`` arrays) between judge and worker, and
    the records that cross (``ModelSpec``, ``LayerRef``).
sandbox
    Isolation levels (``bwrap`` > ``uid`` > ``process``), resource limits, launching the worker.
isolation
    The level a grading run uses: the strongest this machine supports, or a weaker one asked for.
worker_code
    The kit modules the worker imports (derived from its imports), staged for the sandbox.
syscalls
    The worker's seccomp filter (libseccomp): Docker's default denials, keyrings, namespaces.
mounts
    What a worker wrote in its sandbox, found from the sandbox's mount table, and removed.
judge_status
    The judge's status channel: one record per graded notebook, on a pipe of its own.
safe_text
    Text from a submission made safe (encodable, bounded, no control characters) for any output.
worker
    The process that runs the student's cells (``python -m gradcam_kit.grading.worker``).
session
    ``WorkerSession``: the judge's handle on one submission's worker.
zygote, zygote_server
    A pre-started sandbox that imports torch once and forks each worker (the grader's side, and
    the side inside the sandbox).
reference_cache
    Where the judges keep their reference values, and how a judge waits while they are prepared.
processes
    ``process_alive(pid)``.
models
    ``build_model(spec)``: the models the judge and the worker both build, identically.
"""
