"""Serving internals: the request path's building blocks, shared by the public modules.

Nothing here is public API: names may change between releases without notice. The public surface is
``edgerec_sdk.__all__`` and the ``__all__`` of the subpackages listed in ``docs/api.md``.
"""
