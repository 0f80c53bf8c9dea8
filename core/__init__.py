"""chamlab.core: shared foundations (errors, atomic files, locks, the Parquet store).

Every other chamlab package may import it; it imports none of them, and ``agent`` (which ships alone
to devices) does not import it either.
"""
