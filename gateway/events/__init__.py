"""Lifecycle events: the outbox's values (:mod:`.model`), webhook delivery
(:mod:`.deliver`) and the scheduler that finds expiring keys (:mod:`.scheduler`)."""
