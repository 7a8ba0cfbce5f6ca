"""The sharing memorandum: its document, signatures and trust rules, and the decision engine."""
