"""Pack writers: the staging folder -> a tar (``tar.py``) or a folder pack (``folder.py``).

Both read the staging tree the same way (``tree.py``) and give the same bytes for the same inputs.
"""
