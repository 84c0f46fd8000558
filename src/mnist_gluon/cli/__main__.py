"""`python -m mnist_gluon.cli train ...`: the `mnist` command group."""

from . import main

main()
