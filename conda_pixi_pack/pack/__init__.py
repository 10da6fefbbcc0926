"""The pack flow: a source's locked environment -> a pack (see ``pipeline.py``).

``sources/`` read what is to be packed (one module per kind of input), ``download.py`` and
``cache.py`` fetch and verify the files, ``inject.py`` adds local ones, ``output.py`` decides where
the pack goes and ``writers/`` write it. Nothing here imports the unpack flow.
"""
