"""pytest_plugin layer (see ARCHITECTURE.md).

pytest imports this package first (the entry point is ``.plugin``, which imports torch), so this is
where OpenMP's wait policy can still be chosen, and glibc's malloc arenas capped before other threads
start: sleeping threads and one shared arena unless the user set ``OMP_WAIT_POLICY`` or
``MALLOC_ARENA_MAX`` (:func:`pytest_layercheck.model.threads.prepare_process`).
"""

from pytest_layercheck.model.threads import prepare_process

prepare_process()
