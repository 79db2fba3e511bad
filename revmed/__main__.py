"""``python -m revmed`` runs the command-line interface (e.g. under ``torchrun``)."""

from revmed.cli.app import main

if __name__ == "__main__":
    main()
