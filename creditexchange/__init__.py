"""Credit Exchange Node: the one import root of the project.

The folders the project is known by (``node/``, ``policy/``, ``certs/``, and the
wire contract generated from ``proto/``) are subpackages of this package through
the links beside this file, so an installed node puts a single name,
``creditexchange``, into site-packages.
"""
