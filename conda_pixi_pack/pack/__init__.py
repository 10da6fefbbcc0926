"""The pack flow: a source's locked environment -> a pack (see ``pipeline.py``).

``sources/`` read what is to be packed (one module per kind of input), ``download.py`` and
``cache.py`` fetch and verify the files into a ``destination.py`` (a folder, or their slots in the
archive), ``inject.py`` adds local ones, ``output.py`` decides where the pack goes and ``writers/``
write it. Nothing here imports the unpack flow.
"""
