"""The REST gateway: partner systems, joint reward and punishment screening, auditors.

Each city runs it beside its node (``credit-node serve``) or alone (``credit-node
gateway``). It holds no keys of the node's own that a partner could reach, and it
asks the region only through the node's client path (``node.federation``), so a
partner's lookup is signed, sealed, verified and recorded exactly as one from the
command line.

    access      the callers' keys (hashes only), their purposes and rates
    auth        who is calling: key, role, officer, rate (FastAPI dependencies)
    problems    errors as RFC 9457 problem documents
    context     the running gateway: the node's parts, and how a call is recorded
    partners    the partner routes: report, own records, checks, report verification
    screenings  joint reward and punishment: screenings and their feedback
    auditors    the auditors' read-only API over the ledger
    app         the FastAPI application, its body limit and metrics
    server      serving it (uvicorn, TLS) alone or beside the node
"""
