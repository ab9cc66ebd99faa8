"""Learning algorithms: one folder each (config, networks, loss, learner)."""
