"""``python -m captum_fam``: the ``captum-fam`` command line."""

from captum_fam.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
