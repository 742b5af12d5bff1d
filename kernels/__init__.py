"""Attention kernels for longdoc (installed as ``longdoc.kernels``).

``local_global_attention`` is the one public entry point (``dispatch.py`` says where a call runs);
``band_with_tile`` serves the sharded encoder's halo runs.
"""
if __name__ == "kernels":
    # Imported under the top-level name: the checkout's root is on sys.path (``python -m ...`` run
    # from it), so this folder shadows the PyPI package ``kernels``, which transformers depends on
    # and imports (from 5.x). That name is the PyPI package's; hand the import over to it.
    from ._name_clash import hand_over_to_installed

    hand_over_to_installed()
else:
    from .dispatch import band_with_tile, local_global_attention, local_global_attention_triton
    from .reference import local_global_attention_dense, local_global_attention_reference

    __all__ = ["local_global_attention", "band_with_tile", "local_global_attention_reference",
               "local_global_attention_dense", "local_global_attention_triton"]
