"""`python -m mnist_gluon train ...`: the `mnist` command group."""

from .cli import main

main()
