"""The ``captum-fam`` command line (``python -m captum_fam``).

:mod:`captum_fam.cli.main` holds the parser and :func:`~captum_fam.cli.main.main`; each command
lives in a module of its own (:mod:`~captum_fam.cli.demo`, :mod:`~captum_fam.cli.explain`), and
the figures in :mod:`~captum_fam.cli.figures`. What a Python user needs (loading models, reading
images, retrieval over a folder) is in the library: :mod:`captum_fam.models`,
:mod:`captum_fam.images`, :mod:`captum_fam.gallery`, :mod:`captum_fam.backbones`.
"""
