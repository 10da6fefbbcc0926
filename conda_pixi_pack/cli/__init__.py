"""The command line: one parser for ``conda pixi-pack``, ``conda-pixi-pack`` and ``python -m``.

``main.py`` builds the parser and runs the standalone command (and renders its errors);
``conda_cli.py`` runs the same parser under conda; each subcommand is a module of its own
(``configure_parser`` + ``execute``) that parses and delegates to the core.
"""
