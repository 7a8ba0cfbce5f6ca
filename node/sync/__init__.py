"""Change feeds between members: what a member publishes (customs above all) and what
the others sync, each feed a transparency log verified batch by batch.

    feed        a published theme's feed: its Merkle tree, leaves and signed checkpoints
    publish     turning the changes of a published theme's records into the feed's leaves
    service     the ``Sync`` gRPC service: ``Pull`` (pages) and ``Follow`` (a stream)
    subscribe   verifying a batch and applying it, with its cursor, in one transaction
"""
