"""Access: who is calling and what they may spend. Virtual keys and teams (`keys`), per-key
RPM/TPM limits (`ratelimit`), budgets with their holds and settlements (`budgets`), and the
per-request gate that checks them all before any provider is called (`gate`)."""
