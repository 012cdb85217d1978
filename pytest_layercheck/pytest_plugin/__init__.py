"""pytest_plugin layer (see ARCHITECTURE.md).

pytest imports this package first (the entry point is ``.plugin``, which imports torch), so this is
where OpenMP's wait policy can still be chosen: sleeping threads unless the user set a policy
(:func:`pytest_layercheck.model.threads.prefer_sleeping_threads`).
"""

from pytest_layercheck.model.threads import prefer_sleeping_threads

prefer_sleeping_threads()
