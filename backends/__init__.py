"""The toolkit's array backends and host services (installed as ``toolkit_backends``): the only
package that knows NumPy, numba, CuPy, JAX, PyTorch and array-api-strict.

Nothing here is imported by name from ``toolkit/``: each backend class and service module is
registered as an entry point in ``pyproject.toml`` (``toolkit.registry`` reads them), and imported
only when asked for, so the others' libraries are never loaded.
"""
