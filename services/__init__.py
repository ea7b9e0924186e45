"""FerrumDeck services: the control plane (gateway), the data plane (worker) and their contract."""
