"""Alert rules over the store, delivered as messages on an `alerts` channel."""
