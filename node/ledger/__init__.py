"""The node's audit ledger: an RFC 9162 Merkle log of every cross-city lookup, with
signed checkpoints.
"""
