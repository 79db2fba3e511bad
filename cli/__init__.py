"""The ``revmed`` command-line interface (installed as ``revmed.cli``).

Commands are thin: they parse arguments, call library functions and print. All logic lives in
the ``revmed`` library, which never imports typer.
"""
