"""The names a matrix and the command line choose from (a module of its own, so that
the command line's parser is built without loading the matrix reader)."""

BACKENDS = ("local", "docker")
TIERS = ("build", "configure")
