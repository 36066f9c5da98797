"""Everything that runs a neural network: the only package that imports torch.

Import it lazily (inside functions) so that `ndup --help` and shell completion stay instant.
"""
