"""What every FerrumDeck process shares for being operated: logs and service-manager
notifications, kept apart from either plane so neither imports the other."""
