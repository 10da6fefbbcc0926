"""The unpack flow: a pack -> an environment, all or nothing (see ``pipeline.py``).

``reader/`` opens every kind of pack, ``validate.py`` checks it, ``target.py`` resolves and guards
the prefix, ``install/`` makes the environment with conda or rattler and ``activation.py`` writes
the activation script. Nothing here imports the pack flow.
"""
