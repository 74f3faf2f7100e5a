"""The attribution engine: models, contract compilation, scores and methods.

Importing this package loads no torch; submodules that compute do.
"""
