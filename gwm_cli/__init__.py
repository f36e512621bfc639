"""The ``gwm`` command: the project's top floor.

It only dispatches: training commands live in :mod:`training.cli`, service commands in
:mod:`service.cli`, and imports point down (``gwm_cli`` → ``service`` → ``training`` → ``models``).
"""
