"""Generated wire contract of the credit exchange (package creditexchange.v1)."""
