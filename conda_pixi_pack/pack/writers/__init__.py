"""Pack writers: the staging folder -> a tar (``tar.py``) or a folder pack (``folder.py``); or a
tar laid out around the files still to come, filled in place (``tar.archive_around``).

All read the staging tree the same way (``tree.py``) and give the same bytes for the same inputs.
"""
