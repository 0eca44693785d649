"""Reliability and security proofs (issue 6): crashes, storage faults, hostile input, abuse, slow clients."""
