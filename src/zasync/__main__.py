"""``python -m zasync``: the `zasync` command line."""

from zasync.cli.cli import main

if __name__ == "__main__":
    main()
