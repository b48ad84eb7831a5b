"""Online delivery tooling: what talks to the outside world during a deploy (ARCHITECTURE.md, section 8)."""
